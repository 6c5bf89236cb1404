"""The two quality floors every synthesis must be compared with (issue 8), fitted on TRAINING voxels only.

1. Copy floor: for a target modality and the modalities present, copy the present one that is most correlated with
   the target on training data (largest |Pearson r|; a negative correlation is inverted by the fit), intensity-matched
   to the target by a linear fit.
2. Regression floor: a per-voxel polynomial (all monomials up to `degree`, cross terms included) from the present
   modalities to the target, one least-squares fit per (target, availability pattern).

On data whose contrasts are voxelwise functions of tissue the regression floor is close to optimal, so it is the honest
bar for a voxelwise model; beating it needs spatial context. Intensities may be raw or normalised ([-1, 1]); the
floors work on whatever scale they were fitted on. Callers pass voxels inside the head mask and mask the output.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json

DEFAULT_DEGREE = 2
DEFAULT_MAX_VOXELS_PER_SAMPLE = 20_000


@dataclass
class LinearFit:
    """target ≈ slope · source + intercept on training voxels where both exist; `correlation` is Pearson's r."""
    correlation: float
    slope: float
    intercept: float
    num_voxels: int


@dataclass
class PolynomialFit:
    """target ≈ Σ coefficient · Π z_i^exponent_i with z_i = (x_i − input_mean_i) / input_scale_i."""
    present: list[str]
    exponents: list[list[int]]
    coefficients: list[float]
    input_mean: list[float]
    input_scale: list[float]
    num_voxels: int


@dataclass
class FloorModels:
    modalities: list[str]
    degree: int
    target_range: dict[str, list[float]] = field(default_factory=dict)       # predictions are clipped to it
    linear: dict[str, dict[str, LinearFit]] = field(default_factory=dict)      # target -> source -> fit
    polynomial: dict[str, dict[str, PolynomialFit]] = field(default_factory=dict)  # target -> pattern key -> fit

    def pattern_key(self, present: Iterable[str]) -> str:
        """Present modalities in model order, joined by '+'."""
        present = set(present)
        return "+".join(m for m in self.modalities if m in present)

    def copy_source(self, target: str, present: Iterable[str]) -> str:
        """The present modality most correlated (|r|) with `target` on the training data."""
        fits = {s: f for s, f in self.linear.get(target, {}).items() if s in set(present) and s != target}
        if not fits:
            raise MSGLDMError(f"copy floor: no training case had '{target}' together with any of {sorted(present)}; "
                              "add such training cases or drop this target")
        return max(fits, key=lambda s: (abs(fits[s].correlation), -self.modalities.index(s)))

    def polynomial_fit(self, target: str, present: Iterable[str]) -> PolynomialFit:
        """The fit for exactly these present modalities, else for the largest fitted subset of them."""
        available = set(present) - {target}
        candidates = [f for f in self.polynomial.get(target, {}).values() if set(f.present) <= available]
        if not candidates:
            raise MSGLDMError(f"regression floor: no training case had '{target}' together with any of "
                              f"{sorted(available)}; add such training cases or drop this target")
        return max(candidates, key=lambda f: (len(f.present), f.num_voxels))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FloorModels":
        return cls(
            modalities=list(data["modalities"]), degree=int(data["degree"]),
            target_range={k: list(v) for k, v in data.get("target_range", {}).items()},
            linear={t: {s: LinearFit(**f) for s, f in fits.items()} for t, fits in data.get("linear", {}).items()},
            polynomial={t: {p: PolynomialFit(**f) for p, f in fits.items()}
                        for t, fits in data.get("polynomial", {}).items()},
        )

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path | str) -> "FloorModels":
        return cls.from_dict(load_json(path, "fit the floors again (it is rewritten)"))


def voxel_sample(volumes: Mapping[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One training sample for `fit_floors`: each present modality's voxels inside `mask` as a 1-D array.

    Default mask: voxels where any modality is above its own minimum (background is 0 raw, −1 normalised).
    """
    arrays = {name: np.asarray(v) for name, v in volumes.items()}
    if mask is None:
        mask = np.any([a > a.min() for a in arrays.values()], axis=0)
    return {name: a[np.asarray(mask, dtype=bool)] for name, a in arrays.items()}


def fit_floors(samples: Iterable[Mapping[str, np.ndarray]], modalities: Sequence[str] | None = None,
               degree: int = DEFAULT_DEGREE, max_voxels_per_sample: int = DEFAULT_MAX_VOXELS_PER_SAMPLE,
               seed: int = 0) -> FloorModels:
    """Fit both floors from training samples: dicts of modality -> 1-D voxel arrays (aligned voxel by voxel).

    A sample may lack modalities (missing files). Each sample contributes at most `max_voxels_per_sample` voxels,
    drawn with a seeded generator, so memory stays bounded however large the volumes are.
    """
    if degree < 1:
        raise ValueError(f"degree must be at least 1, got {degree}")
    rng = np.random.default_rng(seed)
    reduced, ranges = [], {}
    for sample in samples:
        reduced.append(_subsample(sample, max_voxels_per_sample, rng))
        for name, values in sample.items():
            if np.size(values):
                low, high = ranges.get(name, (np.inf, -np.inf))
                ranges[name] = (min(low, float(np.min(values))), max(high, float(np.max(values))))
    names = list(modalities) if modalities is not None else list(dict.fromkeys(n for s in reduced for n in s))
    models = FloorModels(names, degree, {n: list(r) for n, r in ranges.items() if n in names})
    for target in names:
        models.linear[target] = _fit_linear_floors(reduced, target, names)
        models.polynomial[target] = _fit_polynomial_floors(reduced, target, names, degree, models)
    return models


def _subsample(sample: Mapping[str, np.ndarray], limit: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in sample.items()}
    lengths = {a.size for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"voxel arrays of one sample must have one length, got {sorted(lengths)}")
    size = lengths.pop() if lengths else 0
    if size <= limit:
        return arrays
    keep = rng.choice(size, size=limit, replace=False)
    return {name: a[keep] for name, a in arrays.items()}


def _stack(samples: list[dict[str, np.ndarray]], names: Sequence[str]) -> list[np.ndarray]:
    """Concatenated voxels of `names` over the samples that hold all of them."""
    usable = [s for s in samples if all(n in s for n in names)]
    return [np.concatenate([s[n] for s in usable]) if usable else np.empty(0) for n in names]


def _fit_linear_floors(samples: list[dict[str, np.ndarray]], target: str, names: Sequence[str]) -> dict[str, LinearFit]:
    fits = {}
    for source in names:
        if source == target:
            continue
        x, y = _stack(samples, [source, target])
        if x.size >= 2:
            fits[source] = _linear_fit(x, y)
    return fits


def _linear_fit(x: np.ndarray, y: np.ndarray) -> LinearFit:
    x_var, y_var = float(np.var(x)), float(np.var(y))
    covariance = float(np.mean((x - x.mean()) * (y - y.mean())))
    slope = covariance / x_var if x_var > 0 else 0.0
    correlation = covariance / np.sqrt(x_var * y_var) if x_var > 0 and y_var > 0 else 0.0
    return LinearFit(float(correlation), slope, float(y.mean() - slope * x.mean()), int(x.size))


def _fit_polynomial_floors(samples: list[dict[str, np.ndarray]], target: str, names: Sequence[str], degree: int,
                           models: FloorModels) -> dict[str, PolynomialFit]:
    others = [n for n in names if n != target]
    fits = {}
    for size in range(1, len(others) + 1):
        for present in itertools.combinations(others, size):
            *inputs, y = _stack(samples, [*present, target])
            if y.size > 0:
                fits[models.pattern_key(present)] = _polynomial_fit(list(present), inputs, y, degree)
    return fits


def monomial_exponents(num_inputs: int, degree: int) -> list[list[int]]:
    """Exponent vectors of every monomial of total degree ≤ `degree` in `num_inputs` variables (constant first)."""
    exponents = []
    for total in range(degree + 1):
        for combo in itertools.combinations_with_replacement(range(num_inputs), total):
            exponents.append([combo.count(i) for i in range(num_inputs)])
    return exponents


def _design_matrix(z: np.ndarray, exponents: list[list[int]]) -> np.ndarray:
    return np.stack([np.prod(z ** np.asarray(e), axis=1) for e in exponents], axis=1)


def _polynomial_fit(present: list[str], inputs: list[np.ndarray], y: np.ndarray, degree: int) -> PolynomialFit:
    x = np.stack(inputs, axis=1)
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)   # standardising keeps high powers well conditioned
    exponents = monomial_exponents(len(present), degree)
    coefficients, *_ = np.linalg.lstsq(_design_matrix((x - mean) / scale, exponents), y, rcond=None)
    return PolynomialFit(present, exponents, coefficients.tolist(), mean.tolist(), scale.tolist(), int(y.size))


def predict_copy(models: FloorModels, present: Mapping[str, np.ndarray], target: str) -> np.ndarray:
    """Copy floor: the best-correlated present modality, linearly matched to `target` (same shape as the inputs)."""
    source = models.copy_source(target, present)
    fit = models.linear[target][source]
    x = np.asarray(present[source], dtype=np.float64)
    return _clip_to_target(models, target, fit.slope * x + fit.intercept).astype(np.float32)


def predict_regression(models: FloorModels, present: Mapping[str, np.ndarray], target: str) -> np.ndarray:
    """Regression floor: the polynomial of the present modalities fitted for this pattern (same shape as the inputs)."""
    fit = models.polynomial_fit(target, present)
    shape = np.shape(present[fit.present[0]])
    x = np.stack([np.asarray(present[n], dtype=np.float64).ravel() for n in fit.present], axis=1)
    z = (x - np.asarray(fit.input_mean)) / np.asarray(fit.input_scale)
    y = _design_matrix(z, fit.exponents) @ np.asarray(fit.coefficients)
    return _clip_to_target(models, target, y.reshape(shape)).astype(np.float32)


def _clip_to_target(models: FloorModels, target: str, values: np.ndarray) -> np.ndarray:
    """Keep predictions inside the intensity range the target had in training (a polynomial can run away)."""
    if target not in models.target_range:
        return values
    low, high = models.target_range[target]
    return np.clip(values, low, high)
