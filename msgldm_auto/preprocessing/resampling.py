"""In-plane resampling of (Z, H, W) stacks; the slice axis is never touched (DESIGN.md §5).

Pixel edges are aligned ("grid mode"): the resampled slice covers exactly the same field of view, so the inverse is
the same operation with the sizes swapped. Images use cubic splines (order 3), labels and masks nearest neighbour.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_MASK_WEIGHT = 0.25     # below this share of mask under the kernel a resampled pixel is not trusted


def resampled_size(size: int, spacing: float, target_spacing: float) -> int:
    """Number of pixels covering `size * spacing` mm at `target_spacing` (the planner uses the same rule)."""
    return max(1, int(round(size * spacing / target_spacing)))


def resample_in_plane(stack: np.ndarray, size: tuple[int, int] | list[int], order: int) -> np.ndarray:
    """(Z, H, W) -> (Z, size[0], size[1]), slice by slice."""
    new_h, new_w = int(size[0]), int(size[1])
    z, h, w = stack.shape
    if (h, w) == (new_h, new_w):
        return stack.copy()
    step = np.array([h / new_h, w / new_w])
    offset = 0.5 * step - 0.5  # output pixel centre o maps to input coordinate (o + 0.5) * step - 0.5
    dtype = stack.dtype if order == 0 else np.float32
    out = np.empty((z, new_h, new_w), dtype=dtype)
    source = stack if order == 0 else stack.astype(np.float32, copy=False)
    for index in range(z):
        ndimage.affine_transform(source[index], step, offset=offset, output_shape=(new_h, new_w), output=out[index],
                                 order=order, mode="nearest", prefilter=order > 1)
    return out


def resample_inside_mask(stack: np.ndarray, mask: np.ndarray, size: tuple[int, int] | list[int],
                         order: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: resample `stack` using only the pixels inside `mask`, so values near the mask's edge
    are not blended with what lies outside (air, or the -1 background). Returns (values, trusted) where `trusted`
    marks output pixels with enough mask weight; elsewhere the values are 0."""
    weights = mask.astype(np.float32)
    numerator = resample_in_plane(np.where(mask, stack, 0).astype(np.float32), size, order)
    denominator = resample_in_plane(weights, size, order)
    trusted = denominator > MIN_MASK_WEIGHT
    values = np.zeros_like(numerator)
    values[trusted] = numerator[trusted] / denominator[trusted]
    return values, trusted
