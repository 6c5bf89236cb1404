"""Fit the regression prior (networks/regression_prior.py) on a fold's training cases, in the normalised space the
networks see: the regression floor's polynomials (inference/baselines.fit_floors) on voxels of the preprocessed
slices, never on the fold's validation cases.

At most `MAX_CASES` cases and `SLICES_PER_CASE` evenly spaced foreground slices each are read (a few seconds on
BraTS-sized data): a polynomial of a few dozen coefficients needs voxels from many cases, not all of them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from msgldm_auto.inference.baselines import FloorModels, fit_floors, voxel_sample
from msgldm_auto.training.augmentation import BACKGROUND
from msgldm_auto.training.data_loader import CaseReader

MAX_CASES = 64
SLICES_PER_CASE = 24


def fit_regression_prior(reader: CaseReader, case_ids: Sequence[str], modalities: Sequence[str], degree: int,
                         seed: int = 0) -> FloorModels:
    """The per-(target, pattern) polynomials of `degree` over the head voxels of the training cases."""
    rng = np.random.default_rng(seed)
    chosen = sorted(case_ids)
    if len(chosen) > MAX_CASES:
        chosen = sorted(rng.choice(chosen, size=MAX_CASES, replace=False).tolist())
    samples = [_head_voxels(reader.open(case_id), modalities) for case_id in chosen]
    return fit_floors(samples, list(modalities), degree, seed=seed)


def _head_voxels(case: Any, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """Voxels of evenly spaced foreground slices where any present modality is above the background."""
    foreground = list(case.foreground_slices)
    if not foreground:
        return {}
    picks = np.unique(np.linspace(0, len(foreground) - 1, num=min(SLICES_PER_CASE, len(foreground))).round())
    data = np.stack([np.asarray(case.data[:, foreground[int(i)]]) for i in picks], axis=1)   # (P, S, H, W)
    volumes = {modalities[channel]: data[row] for row, channel in enumerate(case.present)}
    return voxel_sample(volumes, np.any(data > BACKGROUND, axis=0))
