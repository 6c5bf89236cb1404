"""One case through preprocessing, and the one function that inverts it (DESIGN.md §5).

read present modalities -> grid check -> reorient to RAS (permutation and flips only) -> one head mask -> crop to its
box -> slices across `slice_axis` (Z, H, W) -> in-plane resampling (order 3 images, 0 labels) -> normalisation
(background exactly -1) -> centred pad (with -1) or crop to the plans' `image_size`. With `whole_head` (prediction) the
canvas instead grows past `image_size` to the next size the networks take, so no head row is ever cropped away (the
networks are convolutional; only training needs one fixed size).

`CaseProperties` (properties.py, stored as CASE.json) records every step, so `restore_original` maps a (Z, H, W)
volume in preprocessed space back onto the case's original (k, j, i) grid and `head_mask_original` gives the head mask
there; prediction export uses both.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask

from msgldm_auto.dataset.cases import Case
from msgldm_auto.dataset.image_io import Image, read_image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.preprocessing.grids import harmonise_grids
from msgldm_auto.preprocessing.head_mask import compute_head_mask
from msgldm_auto.preprocessing.normalization import get_scheme, head_percentiles
from msgldm_auto.preprocessing.orientation import Reorientation, from_slices, slice_layout, to_slices
from msgldm_auto.preprocessing.properties import CaseProperties, OriginalGrid, PackedMask
from msgldm_auto.preprocessing.resampling import resample_in_plane, resample_inside_mask, resampled_size

BACKGROUND = -1.0


def read_raw_case(case: Case) -> tuple[dict[int, Image], Image | None]:
    """The present modalities (channel -> Image) and the label of a raw case."""
    images = {channel: read_image(path) for channel, path in sorted(case.images.items())}
    return images, (read_image(case.label) if case.label is not None else None)


def preprocess_case(images: dict[int, Image], config: ConfigurationPlan, seg: Image | None = None, *,
                    resample_mismatched: bool = False, case_id: str = "", whole_head: bool = False
                    ) -> tuple[np.ndarray, list[int], np.ndarray | None, CaseProperties]:
    """-> (data (P, Z, H, W) float32, present channel ids, seg (Z, H, W) uint8 or None, properties).

    H, W is the plans' `image_size`, or with `whole_head` at least the resampled head box (see the module docstring)."""
    images, seg, resampled_channels = harmonise_grids(images, seg, resample_mismatched, case_id)
    present = sorted(images)
    reference = images[present[0]]
    reorientation = Reorientation.from_direction(reference.direction)
    ras = {channel: reorientation.to_ras(images[channel].array) for channel in present}
    head = compute_head_mask(list(ras.values()))
    if not head.mask.any():
        raise MSGLDMError(f"case {case_id}: no head voxels found (the images are empty or constant); check or remove "
                          "its files")
    box = get_bbox_from_mask(head.mask)
    crop = bounding_box_to_slice(box)
    geometry = _SliceGeometry.plan(reorientation.ras_spacing(reference.spacing), head.mask[crop].shape, config,
                                   whole_head)

    mask_resampled = resample_in_plane(to_slices(head.mask[crop], config.slice_axis), geometry.resampled_hw, order=0)
    mask_stack = geometry.place(mask_resampled, False)
    scheme = get_scheme(config.normalization)
    rows: list[np.ndarray] = []
    percentiles: dict[int, list[float]] = {}
    scales: dict[int, float] = {}
    for channel in present:
        volume = ras[channel][crop]
        stats = head_percentiles(volume, head.mask[crop])
        scale = scheme.scale(stats)
        if not scale > 0:
            raise MSGLDMError(f"case {case_id}: channel {channel:04d} has no positive intensity inside the head; check "
                              "the image")
        # Head pixels only: the air outside must not darken the rim of the head (normalised convolution).
        stack, _ = resample_inside_mask(to_slices(volume, config.slice_axis),
                                        to_slices(head.mask[crop], config.slice_axis),
                                        geometry.resampled_hw, order=3)
        normalised = scheme.normalize(stack, mask_resampled, scale)
        rows.append(geometry.place(normalised, BACKGROUND))
        percentiles[channel], scales[channel] = stats, scale
    seg_stack = _preprocess_seg(seg, reorientation, crop, geometry, config.slice_axis, case_id)

    properties = CaseProperties(
        case_id=case_id, present=present, resampled_channels=resampled_channels,
        original=_original_grid(reference), reorientation=reorientation,
        ras_shape=[int(s) for s in head.mask.shape], ras_spacing=reorientation.ras_spacing(reference.spacing),
        crop_box=box, head_mask=PackedMask.pack(head.mask[crop]), skull_stripped=head.skull_stripped,
        slice_axis=geometry.slice_axis, cropped_shape=geometry.cropped_shape,
        resampled_shape=[geometry.cropped_shape[0], *geometry.resampled_hw], image_size=geometry.image_size,
        in_plane_offset=geometry.offset, spacing=geometry.spacing,
        normalization=scheme.name, percentiles=percentiles, scale=scales,
        foreground_slices=[int(z) for z in np.flatnonzero(mask_stack.any(axis=(1, 2)))],
    )
    return np.stack(rows).astype(np.float32, copy=False), present, seg_stack, properties


def _original_grid(reference: Image) -> OriginalGrid:
    return OriginalGrid([int(n) for n in reference.array.shape], [float(s) for s in reference.spacing],
                        [float(o) for o in reference.origin], [float(d) for d in reference.direction])


def _preprocess_seg(seg: Image | None, reorientation: Reorientation, crop: tuple[slice, ...],
                    geometry: "_SliceGeometry",
                    slice_axis: int, case_id: str) -> np.ndarray | None:
    if seg is None:
        return None
    labels = reorientation.to_ras(seg.array)[crop]
    if labels.min() < 0 or labels.max() > 255 or not np.all(np.mod(labels, 1) == 0):
        raise MSGLDMError(f"case {case_id}: the label image must hold integers 0..255; fix labelsTr/{case_id}")
    return geometry.forward(to_slices(labels.astype(np.uint8), slice_axis), order=0, fill=0)


class _SliceGeometry:
    """Cropped RAS box -> (Z, H, W) at the target in-plane spacing -> placed into image_size, and back."""

    def __init__(self, slice_axis: int, cropped_shape: list[int], resampled_hw: list[int], image_size: list[int],
                 spacing: list[float]):
        self.slice_axis, self.cropped_shape = slice_axis, cropped_shape
        self.resampled_hw, self.image_size, self.spacing = resampled_hw, image_size, spacing
        # Where the resampled slice's first pixel lands in the stored slice: >0 padding, <0 cropping (centred).
        self.offset = [(target - n) // 2 if target >= n else -((n - target) // 2) for n, target in zip(resampled_hw,
                                                                                                       image_size)]

    @classmethod
    def plan(cls, ras_spacing: list[float], cropped_ras_shape: tuple[int, ...], config: ConfigurationPlan,
             whole_head: bool = False) -> "_SliceGeometry":
        layout = slice_layout(config.slice_axis)
        cropped = [int(cropped_ras_shape[a]) for a in layout]
        in_plane_spacing = [ras_spacing[layout[1]], ras_spacing[layout[2]]]
        resampled = [resampled_size(n, s, t) for n, s, t in zip(cropped[1:], in_plane_spacing, config.spacing)]
        # The stored spacing is the exact one that keeps the field of view (n * s / n'), not the rounded target.
        effective = [n * s / m for n, s, m in zip(cropped[1:], in_plane_spacing, resampled)]
        canvas = list(config.image_size)
        if whole_head:
            multiple = config.size_multiple
            canvas = [max(size, -(-n // multiple) * multiple) for size, n in zip(canvas, resampled)]
        return cls(config.slice_axis, cropped, resampled, canvas, [float(ras_spacing[layout[0]]), *effective])

    @classmethod
    def from_properties(cls, properties: CaseProperties) -> "_SliceGeometry":
        return cls(properties.slice_axis, list(properties.cropped_shape), list(properties.resampled_shape[1:]),
                   list(properties.image_size), list(properties.spacing))

    def forward(self, stack: np.ndarray, order: int, fill: Any) -> np.ndarray:
        return self.place(resample_in_plane(stack, self.resampled_hw, order), fill)

    def place(self, stack: np.ndarray, fill: Any) -> np.ndarray:
        return _place(stack, self.offset, self.image_size, fill)

    def inverse(self, stack: np.ndarray, order: int, fill: float) -> np.ndarray:
        unplaced = _place(stack, [-o for o in self.offset], self.resampled_hw, fill)
        return resample_in_plane(unplaced, self.cropped_shape[1:], order)


def _place(stack: np.ndarray, offset: list[int], size: list[int], fill: Any) -> np.ndarray:
    """Copy (Z, h, w) into a (Z, *size) canvas of `fill` with its pixel (0, 0) at `offset` (clipped at the edges)."""
    out = np.full((stack.shape[0], *size), fill, dtype=stack.dtype)
    src, dst = [], []
    for n, target, shift in zip(stack.shape[1:], size, offset):
        start, stop = max(0, shift), min(target, n + shift)
        dst.append(slice(start, stop))
        src.append(slice(start - shift, stop - shift))
    out[(slice(None), *dst)] = stack[(slice(None), *src)]
    return out


def restore_original(volume: np.ndarray, properties: CaseProperties, order: int = 3, fill: float = 0.0,
                     head_aware: bool = True) -> np.ndarray:
    """(Z, H, W) volume in preprocessed space -> float32 array on the case's original (k, j, i) grid.

    Inverts placement, in-plane resampling (with `order`), slicing, cropping (`fill` outside the crop box and in rows
    that placement cropped away) and reorientation. Intensities are left as they are: apply the normalisation's
    `invert` (or export's scaling) before or after, and zero voxels outside `head_mask_original` as export does.
    With `head_aware` (and order > 0) head voxels are interpolated from head pixels only (normalised convolution), so
    the -1 background does not darken the rim of the head.
    """
    volume = np.asarray(volume, dtype=np.float32)
    expected = (properties.resampled_shape[0], *properties.image_size)
    if volume.shape != tuple(expected):
        raise ValueError(f"volume of shape {volume.shape} is not in this case's preprocessed space {tuple(expected)}")
    geometry = _SliceGeometry.from_properties(properties)
    restored = geometry.inverse(volume, order, fill)
    if head_aware and order > 0:
        restored = _head_aware_inverse(volume, restored, geometry, properties, order)
    return _uncrop_to_original(from_slices(restored, geometry.slice_axis), properties, fill)


def _head_aware_inverse(volume: np.ndarray, plain: np.ndarray, geometry: "_SliceGeometry", properties: CaseProperties,
                        order: int) -> np.ndarray:
    head = to_slices(properties.head_mask.unpack(), geometry.slice_axis)                 # cropped grid, original pixels
    stored_mask = geometry.forward(head, order=0, fill=False)                             # the mask preprocessing used
    unplaced_mask = _place(stored_mask, [-o for o in geometry.offset], geometry.resampled_hw, False)
    unplaced = _place(volume, [-o for o in geometry.offset], geometry.resampled_hw, BACKGROUND)
    values, trusted = resample_inside_mask(unplaced, unplaced_mask, geometry.cropped_shape[1:], order)
    out = plain.copy()
    use = head & trusted   # head voxels with enough head pixels around; elsewhere the plain interpolation
    out[use] = values[use]
    return out


def head_mask_original(properties: CaseProperties) -> np.ndarray:
    """The case's head mask (the one preprocessing cropped and normalised with) on its original (k, j, i) grid."""
    return _uncrop_to_original(properties.head_mask.unpack(), properties, False)


def restore_original_image(volume: np.ndarray, properties: CaseProperties, order: int = 3, fill: float = 0.0) -> Image:
    """`restore_original` wrapped with the case's original geometry, ready for `write_image`."""
    original = properties.original
    return Image(restore_original(volume, properties, order, fill), tuple(original.spacing), tuple(original.origin),
                 tuple(original.direction))


def _uncrop_to_original(cropped_ras: np.ndarray, properties: CaseProperties, fill: Any) -> np.ndarray:
    full = np.full(properties.ras_shape, fill, dtype=cropped_ras.dtype)
    full[tuple(slice(start, stop) for start, stop in properties.crop_box)] = cropped_ras
    return properties.reorientation.from_ras(full)
