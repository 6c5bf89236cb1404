"""From the model's slice grid back to the user's images: invert preprocessing, rescale, mask, write.

`(y + 1) / 2 · p99.5` maps the normalised range [-1, 1] to the dataset's intensity scale (the dataset-median p99.5 of
that modality, from the plans), so background (-1) becomes exactly 0; everything outside the case's head mask is set
to zero. Files are float32 on the exact grid of the case's input images and are written atomically.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from msgldm_auto.atomic import atomic_path
from msgldm_auto.dataset.image_io import Image, write_image
from msgldm_auto.preprocessing.properties import CaseProperties


def to_dataset_intensity(normalised: np.ndarray, p995: float) -> np.ndarray:
    return ((np.clip(normalised, -1.0, 1.0) + 1.0) / 2.0 * float(p995)).astype(np.float32)


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
