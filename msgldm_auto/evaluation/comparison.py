"""Side-by-side comparison of several methods' evaluation summaries (same references, same cases)."""
from __future__ import annotations

from typing import Any

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "mae": False}


def _mean(summary: dict[str, Any], target: str, metric: str) -> float | None:
    return (summary.get("per_modality", {}).get(target, {}).get(metric) or {}).get("mean")


def targets_of(summaries: dict[str, dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(t for s in summaries.values() for t in s.get("per_modality", {})))


def comparison_table(summaries: dict[str, dict[str, Any]], metrics: tuple[str, ...] = ("psnr", "ssim", "mae")) -> str:
    """One row per target modality and metric, one column per method (mean over the synthesized volumes)."""
    methods = list(summaries)
    rows = [["target", "metric"] + methods]
    for target in targets_of(summaries):
        for metric in metrics:
            cells = [_mean(summaries[m], target, metric) for m in methods]
            rows.append([target, metric]
                        + ["-" if c is None else f"{c:.{2 if metric == 'psnr' else 3}f}" for c in cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def beats(model: dict[str, Any], baseline: dict[str, Any], metric: str = "psnr") -> dict[str, bool]:
    """Per target modality: is the model's mean strictly better than the baseline's? (False when either is missing.)"""
    better = HIGHER_IS_BETTER[metric]
    verdict = {}
    for target in targets_of({"model": model, "baseline": baseline}):
        a, b = _mean(model, target, metric), _mean(baseline, target, metric)
        verdict[target] = a is not None and b is not None and (a > b if better else a < b)
    return verdict


def mean_over_targets(summary: dict[str, Any], metric: str = "psnr") -> float | None:
    """The unweighted mean of the per-target means (each target counts once, however many volumes it has)."""
    values = [_mean(summary, t, metric) for t in summary.get("per_modality", {})]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def quality_gate(model: dict[str, Any], copy_floor: dict[str, Any], regression_floor: dict[str, Any]) -> list[str]:
    """What the model fails of `make demo`'s bar (PSNR): beat the copy floor on every target and the regression floor
    on the mean over targets. Empty when it passes."""
    failed = [f"the copy floor on {t}" for t, ok in beats(model, copy_floor).items() if not ok]
    ours, floor = mean_over_targets(model), mean_over_targets(regression_floor)
    if ours is None or floor is None or ours <= floor:
        failed.append("the regression floor on the mean over targets")
    return failed
