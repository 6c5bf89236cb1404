"""Training augmentation on batchgenerators transforms.

The loader packs a batch as `data` (B, M*C, H, W): every modality and context slice of a sample is a channel, so a
batchgenerators spatial transform moves them all with the *same* deformation (and the segmentation with them).
Intensity augmentation then touches only the channels of *kept* modalities (the model's inputs), never the dropped
ones that are its targets. Images live in [-1, 1] with background exactly -1; every transform keeps both true.
"""
from __future__ import annotations

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

from msgldm_auto.preprocessing.orientation import left_right_axis

BACKGROUND = -1.0


class IntensityOnKeptTransform(AbstractTransform):
    """Gamma and brightness on the kept modalities of each sample, mapped so that -1 stays -1 and values stay in
    [-1, 1].

    Uses the global numpy RNG like every batchgenerators transform, so single-process runs resume exactly (the trainer
    checkpoints that state) and worker processes get their own seeds from the augmenter.
    """

    def __init__(self, context_slices: int, p_per_sample: float = 0.3, gamma_range=(0.7, 1.5),
                 brightness_range=(0.85, 1.15)):
        self.context_slices = context_slices
        self.p_per_sample = p_per_sample
        self.gamma_range = gamma_range
        self.brightness_range = brightness_range

    def __call__(self, **data_dict):
        data, kept = data_dict["data"], data_dict["kept"]
        for sample in range(data.shape[0]):
            for modality in np.flatnonzero(kept[sample]):
                if np.random.uniform() >= self.p_per_sample:
                    continue
                channels = slice(modality * self.context_slices, (modality + 1) * self.context_slices)
                data[sample, channels] = self._augment(data[sample, channels])
        return data_dict

    def _augment(self, image: np.ndarray) -> np.ndarray:
        unit = np.clip((image + 1.0) / 2.0, 0.0, 1.0)            # background -> 0 stays 0 under both operations
        unit = unit ** np.random.uniform(*self.gamma_range)
        unit = np.clip(unit * np.random.uniform(*self.brightness_range), 0.0, 1.0)
        return (2.0 * unit - 1.0).astype(image.dtype)


class ClipTransform(AbstractTransform):
    """Interpolation overshoots slightly; the contract is [-1, 1]."""

    def __call__(self, **data_dict):
        np.clip(data_dict["data"], -1.0, 1.0, out=data_dict["data"])
        return data_dict


def build_transforms(image_size: list[int], context_slices: int, augment: bool, slice_axis: int = 2) -> Compose:
    if not augment:
        return Compose([ClipTransform()])
    spatial = SpatialTransform(
        tuple(image_size), patch_center_dist_from_border=None, do_elastic_deform=False,
        do_rotation=True, angle_x=(-np.pi / 12, np.pi / 12), do_scale=True, scale=(0.9, 1.1),
        border_mode_data="constant", border_cval_data=BACKGROUND, order_data=1,
        border_mode_seg="constant", border_cval_seg=0, order_seg=0, random_crop=False,
        p_rot_per_sample=0.2, p_scale_per_sample=0.2,
    )
    transforms = [spatial]
    mirror_axis = left_right_axis(slice_axis)
    if mirror_axis is not None:   # no other flip is anatomically plausible
        transforms.append(MirrorTransform(axes=(mirror_axis,), p_per_sample=0.5))
    return Compose(transforms + [IntensityOnKeptTransform(context_slices), ClipTransform()])
