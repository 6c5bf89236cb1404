"""Intensity normalisation schemes, one tiny class each, looked up by the name stored in the plans.

The MSG-LDM scheme (`p995`) maps a modality to `2 * clip(x / p99.5, 0, 1) - 1`, where p99.5 is the case's own 99.5th
percentile inside its head mask; everything outside the mask is exactly -1, which maps back to 0. `invert` is what
export applies to a synthesized image with the dataset-median p99.5 of the modality (DESIGN.md §7).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Protocol

import numpy as np

from msgldm_auto.errors import MSGLDMError

PERCENTILES = (0.5, 50.0, 99.5)


def head_percentiles(volume: np.ndarray, mask: np.ndarray) -> list[float]:
    """(p0.5, p50, p99.5) of `volume` inside `mask` — the statistics the fingerprint and the normaliser share."""
    values = volume[mask]
    if values.size == 0:
        return [0.0, 0.0, 0.0]
    return [float(v) for v in np.percentile(values, PERCENTILES)]


class NormalizationScheme(Protocol):
    name: str

    def scale(self, percentiles: list[float]) -> float: ...

    def normalize(self, volume: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray: ...

    def invert(self, normalized: np.ndarray, scale: float) -> np.ndarray: ...


class P995Normalization:
    """`2 * clip(x / p99.5, 0, 1) - 1` inside the head, -1 outside."""

    name = "p995"

    def scale(self, percentiles: list[float]) -> float:
        return float(percentiles[2])

    def normalize(self, volume: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
        out = np.clip(np.asarray(volume, dtype=np.float32) / np.float32(scale), 0.0, 1.0) * 2.0 - 1.0
        out[~mask] = -1.0
        return out.astype(np.float32, copy=False)

    def invert(self, normalized: np.ndarray, scale: float) -> np.ndarray:
        return ((np.asarray(normalized, dtype=np.float32) + 1.0) * 0.5 * np.float32(scale)).astype(np.float32)


SCHEMES: MappingProxyType[str, type] = MappingProxyType({P995Normalization.name: P995Normalization})


def get_scheme(name: str) -> NormalizationScheme:
    if name not in SCHEMES:
        raise MSGLDMError(f"plans: normalization '{name}' is unknown; use one of {sorted(SCHEMES)}")
    return SCHEMES[name]()
