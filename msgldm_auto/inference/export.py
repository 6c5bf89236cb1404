"""From the model's slice grid back to the user's images: invert preprocessing, rescale, mask, write.

`(y + 1) / 2 · p99.5` maps the normalised range [-1, 1] to the dataset's intensity scale (the dataset-median p99.5 of
that modality, from the plans), so background (-1) becomes exactly 0; everything outside the case's head mask is set
to zero. Files are float32 on the exact grid of the case's input images and are written atomically.

Percentile matching (`match_head_percentile`): a real acquisition's p99.5 inside its head mask sits at its own scale by
the definition of the normalisation, and the export scale is the dataset median of those. A synthesis is a conditional
mean: where the references are noisy or vary, its brightest voxels are pulled towards the mean and its own p99.5 falls
below the scale, so every tool that normalises a volume by its own percentiles (the BraSyn scores of
`msgldm_evaluate`) reads its bulk too bright. Stretching only the voxels above the head's 95th percentile puts the
synthesis's p99.5 back at the scale and leaves the rest untouched.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msgldm_auto.atomic import atomic_path
from msgldm_auto.dataset.image_io import Image, write_image
from msgldm_auto.preprocessing.normalization import PERCENTILES
from msgldm_auto.preprocessing.properties import CaseProperties


def to_dataset_intensity(normalised: np.ndarray, p995: float) -> np.ndarray:
    return ((np.clip(normalised, -1.0, 1.0) + 1.0) / 2.0 * float(p995)).astype(np.float32)


# Voxels above this percentile of the head are stretched; the bulk below it keeps its values.
STRETCH_FROM_PERCENTILE = 95.0
MATCHED_PERCENTILE = PERCENTILES[-1]    # the percentile the `p995` normalisation scales each case by
# A top so flat that matching would stretch it more than this is stretched this much only.
MAX_STRETCH = 4.0


@dataclass(frozen=True)
class TailStretch:
    """Monotone map that multiplies every value's distance above `start` by `factor` (1: identity)."""
    start: float
    factor: float = 1.0

    def apply(self, volume: np.ndarray) -> np.ndarray:
        above = volume > self.start
        return np.where(above, self.start + (volume - self.start) * self.factor, volume).astype(volume.dtype)

    def apply_to_std(self, std: np.ndarray, volume: np.ndarray) -> np.ndarray:
        """A std map of `volume` (before `apply`) scaled by the map's slope at each voxel."""
        return np.where(volume > self.start, std * self.factor, std).astype(std.dtype)


def match_head_percentile(volume: np.ndarray, head_mask: np.ndarray, scale: float) -> TailStretch:
    """The stretch that moves `volume`'s p99.5 inside `head_mask` to `scale` (the export scale of its modality)."""
    inside = np.asarray(volume, dtype=np.float64)[head_mask]
    if inside.size == 0:
        return TailStretch(0.0)
    start, top = np.percentile(inside, [STRETCH_FROM_PERCENTILE, MATCHED_PERCENTILE])
    if top <= start or scale <= start:
        return TailStretch(float(start))
    return TailStretch(float(start), min(float((scale - start) / (top - start)), MAX_STRETCH))


def restore_to_input_grid(volume: np.ndarray, properties: CaseProperties, reference: Image,
                          head_aware: bool = True) -> np.ndarray:
    """(Z, H, W) preprocessed-space volume -> array in the input's numpy order and shape (background -1 outside the
    crop); `head_aware` as the plans' `head_aware_restore` (planning/restoration.py)."""
    from msgldm_auto.preprocessing.pipeline import restore_original

    restored = np.asarray(restore_original(volume, properties, order=3, fill=-1.0, head_aware=head_aware),
                          dtype=np.float32)
    if restored.shape != reference.array.shape:
        raise RuntimeError(f"restore_original returned shape {restored.shape}, expected the input's "
                           f"{reference.array.shape}")
    return restored


def head_mask_on_input_grid(properties: CaseProperties, reference: Image) -> np.ndarray:
    """The case's one head mask (the one preprocessing cropped with), on the input grid."""
    from msgldm_auto.preprocessing.pipeline import head_mask_original

    mask = np.asarray(head_mask_original(properties), dtype=bool)
    if mask.shape != reference.array.shape:
        raise RuntimeError(f"head mask has shape {mask.shape}, expected the input's {reference.array.shape}")
    return mask


def finish_volume(restored_intensity: np.ndarray, head_mask: np.ndarray, reference: Image) -> Image:
    """Zero outside the head and wrap on the reference grid as float32."""
    array = np.where(head_mask, restored_intensity, 0.0).astype(np.float32)
    return reference.with_array(array)


def write_output_image(image: Image, path: Path) -> None:
    """float32 NIfTI (or whatever the ending says), atomically."""
    write_image(image.with_array(np.asarray(image.array, dtype=np.float32)), path)


def copy_atomic(source: Path, target: Path) -> None:
    """Byte-for-byte copy under a temporary name, then rename (used for --complete)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
