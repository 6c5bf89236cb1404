"""Markdown tables and the default-choosing rule of bench_quality, from stored scores (no torch needed).

Scores are `metrics[method][case][target] = {metric: value}` as `quality_runs.Scores` stores them. Every difference
"against the full model" is paired: per (case, target) volume, method minus full model, then mean ± std.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from benchmarks._common import fmt_mean_std, markdown_table, mean_std

Metrics = dict[str, dict[str, dict[str, dict[str, float]]]]
GRADIENT_BAND = (0.8, 1.25)          # DESIGN §7: through-plane gradient-energy ratio, synthesis / reference


def volumes(metrics: Metrics, method: str, target: str | None = None, pattern: str | None = None,
            patterns: dict[str, str] | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """(case, target) -> metric dict of one method, optionally restricted to a target and/or a pattern."""
    found = {}
    for case, targets in metrics.get(method, {}).items():
        if pattern is not None and (patterns or {}).get(case) != pattern:
            continue
        for name, values in targets.items():
            if target is None or name == target:
                found[(case, name)] = values
    return found


def values_of(metrics: Metrics, method: str, metric: str, **where: Any) -> list[float]:
    return [v.get(metric, math.nan) for v in volumes(metrics, method, **where).values()]


def paired_differences(metrics: Metrics, method: str, baseline: str, metric: str, **where: Any) -> list[float]:
    """method − baseline on every (case, target) both scored."""
    ours, theirs = volumes(metrics, method, **where), volumes(metrics, baseline, **where)
    return [ours[k][metric] - theirs[k][metric] for k in sorted(ours.keys() & theirs.keys())]


def mean_of(metrics: Metrics, method: str, metric: str = "psnr", **where: Any) -> float:
    return mean_std(values_of(metrics, method, metric, **where))[0]


def targets_and_patterns(metrics: Metrics, patterns: dict[str, str], method: str) -> list[tuple[str, str]]:
    """(pattern, target) pairs that occur for `method`, in a stable order."""
    pairs = {(patterns.get(case, "?"), target)
             for case, targets in metrics.get(method, {}).items() for target in targets}
    return sorted(pairs)


def overview_table(metrics: Metrics, methods: list[str], full: str, seconds: dict[str, list[float]] | None = None,
                   extra: dict[str, str] | None = None, extra_header: str = "") -> str:
    """One row per method, pooled over every synthesized test volume."""
    headers = ["method", "PSNR (dB)", "SSIM", "MAE", "ΔPSNR vs full (paired)", "ΔSSIM vs full (paired)", "grad. ratio"]
    if seconds is not None:
        headers.append("s / case")
    if extra is not None:
        headers.append(extra_header)
    rows = []
    for method in methods:
        if method not in metrics:
            continue
        row = [method if method != full else f"**{method}** (full model)",
               fmt_mean_std(values_of(metrics, method, "psnr"), 2), fmt_mean_std(values_of(metrics, method, "ssim"), 3),
               fmt_mean_std(values_of(metrics, method, "mae"), 4),
               fmt_mean_std(paired_differences(metrics, method, full, "psnr"), 2, signed=True)
               if method != full else "0",
               fmt_mean_std(paired_differences(metrics, method, full, "ssim"), 3, signed=True)
               if method != full else "0",
               fmt_mean_std(values_of(metrics, method, "gradient_ratio"), 2)]
        if seconds is not None:
            row.append(fmt_mean_std((seconds or {}).get(method, []), 1))
        if extra is not None:
            row.append(extra.get(method, ""))
        rows.append(row)
    return markdown_table(headers, rows)


def per_target_table(metrics: Metrics, methods: list[str], full: str, metric: str = "psnr", digits: int = 2) -> str:
    """mean ± std over the test cases per target modality, and the paired difference against the full model."""
    targets = sorted({t for m in methods for case in metrics.get(m, {}).values() for t in case})
    headers = ["method"] + [f"{t} (n={len(volumes(metrics, full, target=t))})" for t in targets]
    rows = []
    for method in methods:
        if method not in metrics:
            continue
        cells = [method]
        for target in targets:
            cell = fmt_mean_std(values_of(metrics, method, metric, target=target), digits)
            if method != full:
                diff = mean_std(paired_differences(metrics, method, full, metric, target=target))[0]
                cell += f" (Δ {diff:+.{digits}f})" if math.isfinite(diff) else ""
            cells.append(cell)
        rows.append(cells)
    return markdown_table(headers, rows)


def per_pattern_table(metrics: Metrics, patterns: dict[str, str], methods: list[str], full: str) -> str:
    """PSNR / SSIM / MAE of each (availability pattern, target); each pattern occurs in one test case here."""
    rows = []
    for pattern, target in targets_and_patterns(metrics, patterns, full):
        cells = [f"{pattern} → {target}"]
        for method in methods:
            found = list(volumes(metrics, method, target=target, pattern=pattern, patterns=patterns).values())
            if not found:
                cells.append("–")
                continue
            psnr, ssim, mae = (mean_std(v[m] for v in found)[0] for m in ("psnr", "ssim", "mae"))
            cells.append(f"{psnr:.2f} / {ssim:.3f} / {mae:.4f}")
        rows.append(cells)
    return markdown_table(["present → target"] + [m for m in methods if m in metrics], rows)


@dataclass
class Choice:
    """What the benchmark decides for the planner."""
    diffusion_default: bool          # False: diffusion never matched the one-pass decoder -> plans use the
                                     # one-pass path
    best_setting: str                # best single-sample diffusion setting at the preset's step count
    best_psnr: float
    one_pass_psnr: float
    margin_db: float                 # best diffusion − one-pass (paired mean)
    reason: str


def choose_default(metrics: Metrics, candidates: list[str], one_pass: str) -> Choice:
    """The best single-sample setting by mean PSNR; diffusion stays the default only if it is not worse than one-pass.

    "Not worse" is judged on the paired mean over every test volume (DESIGN §6: diffusion must never be worse than
    the one-pass synthesis it is guided by) with SSIM as the tie-breaker within 0.05 dB.
    """
    scored = [(mean_of(metrics, c), mean_of(metrics, c, "ssim"), c) for c in candidates if c in metrics]
    if not scored:
        raise SystemExit("no diffusion setting was scored; run the sampling benchmark first")
    best_psnr, _, best = max(scored)
    margin = mean_std(paired_differences(metrics, best, one_pass, "psnr"))[0]
    ssim_margin = mean_std(paired_differences(metrics, best, one_pass, "ssim"))[0]
    keeps = margin > 0.05 or (margin > -0.05 and ssim_margin >= 0)
    reason = (f"best diffusion setting '{best}' is {margin:+.2f} dB PSNR and {ssim_margin:+.3f} SSIM against the "
              "one-pass decoder (paired, all test volumes)")
    return Choice(keeps, best, best_psnr, mean_of(metrics, one_pass), margin, reason)


def gradient_verdict(metrics: Metrics, methods: list[str]) -> dict[str, tuple[float, bool]]:
    """Mean through-plane gradient-energy ratio of each method and whether it lies in the band of DESIGN §7."""
    verdict = {}
    for method in methods:
        if method in metrics:
            ratio = mean_std(values_of(metrics, method, "gradient_ratio"))[0]
            verdict[method] = (ratio, GRADIENT_BAND[0] <= ratio <= GRADIENT_BAND[1])
    return verdict
