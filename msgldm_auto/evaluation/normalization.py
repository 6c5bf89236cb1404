"""BraSyn-style intensity normalisation: every volume is judged on its own robust [0, 1] scale.

Synthesis models are free to get the global intensity scale slightly wrong (the scale of MR intensities is arbitrary),
so prediction and reference are each clipped to their own (0.5, 99.5) percentiles inside the brain mask and mapped to
[0, 1] before any metric is computed. The lower bound is never below 0 because MR magnitudes are non-negative and a
negative 0.5th percentile only means interpolation ringing.
"""
from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


def robust_range(volume: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(low, high) = the (0.5, 99.5) percentiles of `volume` inside `mask`, low clamped at 0."""
    inside = np.asarray(volume, dtype=np.float64)[mask]
    if inside.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(inside, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return max(float(low), 0.0), float(high)


def normalize_brasyn(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`volume` clipped to its own robust range inside `mask`, scaled to [0, 1]; 0 outside the mask.

    A volume that is constant inside the mask has no range to scale by and maps to all zeros.
    """
    mask = np.asarray(mask, dtype=bool)
    low, high = robust_range(volume, mask)
    out = np.zeros(np.shape(volume), dtype=np.float64)
    if high > low:
        scaled = (np.asarray(volume, dtype=np.float64) - low) / (high - low)
        out[mask] = np.clip(scaled[mask], 0.0, 1.0)
    return out
