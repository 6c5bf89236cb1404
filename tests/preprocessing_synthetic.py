"""Small synthetic heads for the planning and preprocessing tests: an ellipsoid "head" with smooth internal contrast,
a dark cavity (like ventricles), Rician-like background noise, on any grid (spacing, origin, direction)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from msgldm_auto.dataset.image_io import Image, write_image

RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)   # ITK (LPS) direction of an RAS-stored image
LPS_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# i -> anterior, j -> inferior, k -> left: a permuted and flipped storage order.
PERMUTED_DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def head_volume(shape_kji: tuple[int, int, int], channel: int, seed: int = 0, noise: float = 2.0,
                skull_stripped: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image, true head mask) in (k, j, i) order; each channel has its own smooth contrast."""
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_kji], indexing="ij")
    radius = (k / 0.8) ** 2 + (j / 0.75) ** 2 + (i / 0.7) ** 2
    head = radius < 1
    pattern = [np.sin(3 * i) + 0.5 * np.cos(4 * j), np.cos(3 * k) - 0.5 * np.sin(2 * i),
               k * j + np.sin(2 * j)][channel % 3]
    image = np.where(head, 100.0 + 25.0 * pattern + 10.0 * channel, 0.0)
    image[radius < 0.08] = 5.0 + channel                 # dark cavity inside the head
    if not skull_stripped:
        rng = np.random.default_rng(seed * 10 + channel)
        image = np.abs(image + rng.normal(0, noise, image.shape) + 1j * rng.normal(0, noise, image.shape))
    return image.astype(np.float32), head


def head_case(shape_kji=(24, 30, 28), spacing=(1.2, 1.0, 2.0), direction=RAS_DIRECTION, channels=(0, 1, 2),
              origin=(10.0, -20.0, 5.0), seed: int = 0, skull_stripped: bool = False) -> tuple[dict[int, Image],
                                                                                               np.ndarray]:
    images = {}
    for channel in channels:
        array, head = head_volume(shape_kji, channel, seed, skull_stripped=skull_stripped)
        images[channel] = Image(array, tuple(spacing), tuple(origin), tuple(direction))
    return images, head


def label_image(head: np.ndarray, like: Image) -> Image:
    """A 'lesion' label (value 1) in one octant of the head, 2 in another."""
    label = np.zeros(head.shape, dtype=np.uint8)
    half = [n // 2 for n in head.shape]
    label[: half[0], : half[1], : half[2]] = 1
    label[half[0]:, half[1]:, half[2]:] = 2
    return like.with_array(np.where(head, label, 0).astype(np.uint8))


def write_raw_dataset(raw_root: Path, name: str, cases: dict[str, dict[int, Image]], modalities=("T1", "T2", "FLAIR"),
                      labels: dict[str, Image] | None = None) -> Path:
    folder = Path(raw_root) / name
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    for case_id, images in cases.items():
        for channel, image in images.items():
            write_image(image, folder / "imagesTr" / f"{case_id}_{channel:04d}.nii.gz")
    dataset = {"channel_names": {str(i): m for i, m in enumerate(modalities)}, "file_ending": ".nii.gz",
               "numTraining": len(cases)}
    if labels:
        dataset["labels"] = {"background": 0, "lesion": 1, "edema": 2}
        for case_id, label in labels.items():
            write_image(label, folder / "labelsTr" / f"{case_id}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder
