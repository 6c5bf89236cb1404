"""Availability patterns: which of a case's present modalities the model sees as input during training.

A valid pattern keeps a non-empty subset of the present modalities and drops at least one of them (the dropped ones
are the synthesis targets). For a case with p present modalities there are 2^p - 2 valid patterns; we draw one
uniformly, so every pattern of that case is equally likely (DESIGN §6).
"""
from __future__ import annotations

import numpy as np


def count_valid_patterns(present: np.ndarray) -> int:
    p = int(np.count_nonzero(present))
    return max(2**p - 2, 0)


def draw_kept(present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (M,) bool mask: a uniformly drawn non-empty proper subset of the present modalities."""
    present = np.asarray(present, dtype=bool)
    present_index = np.flatnonzero(present)
    if present_index.size < 2:
        raise ValueError("a training slice needs at least two present modalities to drop one")
    code = int(rng.integers(1, 2**present_index.size - 1))   # 1 .. 2^p - 2: never empty, never all
    kept = np.zeros_like(present)
    for bit, modality in enumerate(present_index):
        kept[modality] = bool((code >> bit) & 1)
    return kept


def pattern_code(kept: np.ndarray) -> int:
    """The integer `sum(kept[m] << m)` that the denoiser uses as class label."""
    return int(sum(int(bool(k)) << m for m, k in enumerate(kept)))
