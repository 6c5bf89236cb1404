"""The evaluation summary, one schema for `msgldm_evaluate` and the fold validation: every scored volume, and their
aggregates (mean ± std per target modality, per availability pattern × target, overall); and the stdout table."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

METRIC_ORDER = ("psnr", "ssim", "mae", "ssim_tumour", "ssim_non_tumour", "gradient_ratio", "hf_ratio",
                "std_error_spearman", "coverage_2std")
METRIC_TITLES = {"psnr": "PSNR dB", "ssim": "SSIM", "mae": "MAE", "ssim_tumour": "SSIM tum",
                 "ssim_non_tumour": "SSIM non-tum", "gradient_ratio": "grad ratio", "hf_ratio": "HF ratio",
                 "std_error_spearman": "rho(std,err)", "coverage_2std": "cover 2std"}
ALL = "all"


@dataclass(frozen=True)
class ScoredVolume:
    """One synthesized volume scored against its reference."""
    case: str
    modality: str                       # the target's name
    channel: int
    pattern: str                        # the present (input) modalities, "T1+T2"
    slice_axis: int                     # numpy axis of the through-plane metrics
    metrics: dict[str, float]
    reference: str | None = None        # the files, when scored from folders
    prediction: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoredVolume":
        """One `per_volume` entry of a written summary (null metrics, NaN or infinite when scored, stay None)."""
        return cls(data["case"], data["modality"], int(data["channel"]), data["pattern"], int(data["slice_axis"]),
                   dict(data["metrics"]), data.get("reference"), data.get("prediction"))


def summarise(volumes: list[ScoredVolume], header: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready summary: `header`, then `num_cases`, `per_volume` (every record) and the aggregates."""
    summary = dict(header)
    summary["num_cases"] = len({v.case for v in volumes})
    summary["per_volume"] = [asdict(v) for v in volumes]
    summary.update(aggregate(volumes))
    return json_safe(summary)


def metric_stats(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (0 for a single value) and count of the finite values; None when there are
    none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def group_stats(volumes: list[ScoredVolume]) -> dict[str, dict[str, Any]]:
    """{metric: stats} over `volumes` for every metric that any of them has."""
    names = [m for m in METRIC_ORDER if any(m in v.metrics for v in volumes)]
    return {m: metric_stats(v.metrics.get(m) for v in volumes) for m in names}


def aggregate(volumes: list[ScoredVolume]) -> dict[str, Any]:
    """Per target modality, per availability pattern × target modality, and over everything."""
    modalities = list(dict.fromkeys(v.modality for v in volumes))
    patterns = list(dict.fromkeys(v.pattern for v in volumes))
    per_pattern = {}
    for pattern in patterns:
        in_pattern = [v for v in volumes if v.pattern == pattern]
        per_pattern[pattern] = {m: group_stats([v for v in in_pattern if v.modality == m])
                                for m in modalities if any(v.modality == m for v in in_pattern)}
    return {
        "mean": group_stats(volumes),
        "per_modality": {m: group_stats([v for v in volumes if v.modality == m]) for m in modalities},
        "per_pattern": per_pattern,
    }


def _cell(stats: dict[str, Any] | None, metric: str) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    digits = 2 if metric == "psnr" else 3
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def format_table(summary: dict[str, Any]) -> str:
    """A fixed-width table: one row per (present modalities, target), one per target over all patterns, one overall."""
    metrics = list(summary["mean"].keys())
    rows = [["present", "target", "n"] + [METRIC_TITLES.get(m, m) for m in metrics]]
    for pattern, per_target in summary["per_pattern"].items():
        for target, stats in per_target.items():
            rows.append([pattern, target, _count(stats)] + [_cell(stats.get(m), m) for m in metrics])
    for target, stats in summary["per_modality"].items():
        rows.append([ALL, target, _count(stats)] + [_cell(stats.get(m), m) for m in metrics])
    rows.append([ALL, ALL, _count(summary["mean"])] + [_cell(summary["mean"].get(m), m) for m in metrics])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _count(stats: dict[str, Any]) -> str:
    return str(max((s.get("n", 0) for s in stats.values()), default=0))


def json_safe(value: Any) -> Any:
    """Replace NaN and ±inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
