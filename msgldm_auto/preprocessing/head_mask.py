"""One head mask per case, used for cropping, normalisation, export and evaluation alike (DESIGN.md §5).

Otsu threshold on the mean of the present modalities (each scaled to its own robust maximum so that no contrast
dominates), largest connected component, holes filled in 3D and then slice by slice. When the data are skull-stripped
(a large share of voxels exactly zero in every modality) the non-zero region is the mask instead: Otsu would cut dark
tissue such as CSF out of an already clean brain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

# Share of exactly-zero voxels above which a volume counts as skull-stripped (BraTS: ~85 %; raw scans: ~0 %).
SKULL_STRIPPED_ZERO_FRACTION = 0.1
# Offset of the log before Otsu, relative to each modality's 99th percentile (= 1 after scaling).
LOG_OFFSET = 1e-3


@dataclass
class HeadMask:
    mask: np.ndarray               # bool, same shape as the inputs
    skull_stripped: bool


def compute_head_mask(volumes: list[np.ndarray]) -> HeadMask:
    """Head mask of a case from its present modalities (all on one grid, any axis order)."""
    all_zero = np.ones(volumes[0].shape, dtype=bool)
    for volume in volumes:
        all_zero &= volume == 0
    if all_zero.mean() >= SKULL_STRIPPED_ZERO_FRACTION:
        return HeadMask(_clean(~all_zero), skull_stripped=True)
    # The threshold comes from the lightly smoothed image, whose histogram separates head from air even with strong
    # noise; Otsu on log intensities splits head from air rather than the (wide) range of tissue intensities. It is
    # applied to the unsmoothed mean so the mask does not grow by the blur; stray noise voxels fall to the
    # largest-component step and dark voxels inside the head to the hole filling.
    mean = _scaled_mean(volumes)
    # strided: same histogram, 8x cheaper
    sample = np.log(ndimage.gaussian_filter(mean, 1.0)[::2, ::2, ::2] + LOG_OFFSET)
    if float(sample.max()) <= float(sample.min()):
        return HeadMask(np.zeros(mean.shape, dtype=bool), skull_stripped=False)
    threshold = float(np.exp(threshold_otsu(sample))) - LOG_OFFSET
    return HeadMask(_clean(mean > threshold), skull_stripped=False)


def _scaled_mean(volumes: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(volumes[0].shape, dtype=np.float32)
    for volume in volumes:
        scale = float(np.percentile(volume[::2, ::2, ::2], 99))
        total += np.asarray(volume, dtype=np.float32) / (scale if scale > 0 else 1.0)
    return total / len(volumes)


def _clean(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    filled = _fill_holes(labels == int(np.argmax(sizes)), ndimage.generate_binary_structure(3, 1), (0, 1, 2))
    # Slice-wise filling closes cavities that are open in 3D only through the volume's border (a cut skull base).
    for axis in range(3):
        in_plane = tuple(a for a in range(3) if a != axis)
        filled = _fill_holes(filled, _in_plane_cross(axis), in_plane)
    return filled


def _fill_holes(mask: np.ndarray, structure: np.ndarray, border_axes: tuple[int, ...]) -> np.ndarray:
    """Fill background components that do not touch the faces of `border_axes` (one labelling pass, no iteration:
    2-3x faster than `binary_fill_holes` on BraTS-sized volumes)."""
    labels, count = ndimage.label(~mask, structure)
    outside = np.zeros(count + 1, dtype=bool)
    outside[0] = True  # label 0 is the mask itself
    for axis in border_axes:
        for index in (0, -1):
            outside[np.unique(np.take(labels, index, axis=axis))] = True
    return mask | ~outside[labels]


def _in_plane_cross(axis: int) -> np.ndarray:
    """4-connectivity inside the planes perpendicular to `axis`, none across them (3x3x3 as `label` wants)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    index: list[int | slice] = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    return structure


