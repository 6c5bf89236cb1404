"""The two quality sections of documentation/benchmarks.md, rendered from benchmarks/results/quality_*.json."""
from __future__ import annotations

import math
import re
from typing import Any

from benchmarks._common import mean_std, provenance
from benchmarks.quality_tables import (
    GRADIENT_BAND,
    Choice,
    choose_default,
    gradient_verdict,
    mean_of,
    overview_table,
    paired_differences,
    per_pattern_table,
    per_target_table,
)

ONE_PASS = "one-pass decoder"
CEILING = "ceiling: autoencoder reconstruction"
FLOORS = ["copy floor", "regression floor"]
VARIANT_TITLES = {"control": "full model retrained (control)", "latent": "target latent (paper)",
                  "no_multiscale": "no multiscale injection (input concat only)",
                  "no_hfib": "no HFIB", "no_style": "no style-consistency loss"}
SETTING_NAME = re.compile(r"^DDIM (\d+), start (noise|one-pass t0=([0-9.]+))(, independent noise)?( ×\d+)?$")


def setting_name(steps: int, start: str, t0: float, noise: str = "shared") -> str:
    start_text = "noise" if start == "noise" else f"one-pass t0={t0:g}"
    return f"DDIM {steps}, start {start_text}" + ("" if noise == "shared" else ", independent noise")


def full_model_name(record: dict[str, Any]) -> str:
    diffusion = record["model"]["diffusion"]
    return setting_name(diffusion["steps"], diffusion["sampling_start"], diffusion["t0"])


def diffusion_methods(metrics: dict) -> list[str]:
    """Sampling settings in reading order: start, t0, then steps from many to few, 1 sample before ×K."""
    def key(name: str):
        match = SETTING_NAME.match(name)
        steps, start, t0, independent, averaged = match.groups()
        return (bool(independent), start != "noise", float(t0 or 0), -int(steps), bool(averaged))
    return sorted((m for m in metrics if SETTING_NAME.match(m)), key=key)


def single_sample_candidates(metrics: dict, max_steps: int) -> list[str]:
    return [m for m in diffusion_methods(metrics)
            if "×" not in m and "independent" not in m and int(SETTING_NAME.match(m).group(1)) <= max_steps]


def minimum_steps_within(metrics: dict, start_text: str,
                         tolerance_db: float = 0.5) -> tuple[int | None, dict[int, float]]:
    """Fewest steps whose mean PSNR is within `tolerance_db` of 50 steps, for one start (single samples)."""
    by_steps = {}
    for method in metrics:
        match = SETTING_NAME.match(method)
        if match and not match.group(4) and not match.group(5) and method.endswith(start_text):
            by_steps[int(match.group(1))] = mean_of(metrics, method)
    if 50 not in by_steps:
        return None, by_steps
    close = [n for n, psnr in by_steps.items() if psnr >= by_steps[50] - tolerance_db]
    return min(close), by_steps


def per_sample_seconds(metrics: dict, seconds: dict[str, list[float]]) -> dict[str, list[float]]:
    """Seconds per case of ONE sample: a setting run with K samples is timed as a whole under its 1-sample name."""
    found = {}
    for method, values in seconds.items():
        averaged = [m for m in metrics if m.startswith(method + " ×")]
        samples = int(averaged[0].rsplit("×", 1)[1]) if averaged else 1
        found[method] = [v / samples for v in values]
    return found


def sampling_section(record: dict[str, Any], max_steps: int = 10) -> tuple[str, Choice]:
    scores = record["scores"]
    metrics, patterns, seconds = scores["metrics"], scores["patterns"], scores["seconds"]
    full = full_model_name(record)
    choice = choose_default(metrics, single_sample_candidates(metrics, max_steps), ONE_PASS)
    best_avg = max((m for m in diffusion_methods(metrics) if "×" in m and "independent" not in m),
                   key=lambda m: mean_of(metrics, m), default=None)
    ordered = FLOORS + [ONE_PASS] + diffusion_methods(metrics) + [CEILING]
    key_methods = [m for m in [full, choice.best_setting, best_avg, ONE_PASS] + FLOORS + [CEILING] if m]
    key_methods = list(dict.fromkeys(key_methods))
    iterations = record["model"].get("iterations", {})
    cases = ", ".join(f"{c} ({patterns.get(c, '?')} present)" for c in record.get("test_cases", sorted(patterns)))
    parts = [
        "## Quality: sampling settings, one-pass decoder, floors and ceiling",
        "",
        f"Fixed split: fold {record['model']['fold']}'s model of `{record['model']['plans']}` (iterations trained per "
        f"stage: {_iterations_text(iterations)}, ae/structure/ldm); test set: the demo's 4 `imagesTs` cases, "
        f"{cases}, each missing contrast scored against `referenceTs` like `msgldm_evaluate` (BraSyn normalisation, "
        "head mask = reference > 0). Floors fitted on fold 0's training cases. *n* counts synthesized volumes; "
        "± is the standard deviation over them; Δ is paired (same case and target) against the full model "
        f"(**{full}**, the plans' diffusion setting, used when `ablations.diffusion` is switched on). \"×K\" averages "
        "K samples in image space. s / case is the wall time of one sample of one case (the whole synthesis) on the "
        "machine below; bench_speed's table is the timing to quote.",
        "",
        overview_table(metrics, ordered, full, seconds=per_sample_seconds(metrics, seconds)),
        "",
        "PSNR (dB) per target, mean ± std over the test cases (Δ = paired difference against the full model):",
        "",
        per_target_table(metrics, key_methods, full, "psnr", 2),
        "",
        "SSIM per target:",
        "",
        per_target_table(metrics, key_methods, full, "ssim", 3),
        "",
        "Per availability pattern (PSNR / SSIM / MAE; each pattern occurs in one test case):",
        "",
        per_pattern_table(metrics, patterns, key_methods, full),
        "",
        decision_text(metrics, choice, full, best_avg),
        "",
        provenance(record["command"], record["machine"], record["date"]),
    ]
    return "\n".join(parts), choice


def decision_text(metrics: dict, choice: Choice, full: str, best_avg: str | None) -> str:
    lines = ["**What this decides.**"]
    verdict = "diffusion stays the default" if choice.diffusion_default else \
        ("no diffusion setting matches the one-pass decoder at this budget, so the `cpu` plans default to the "
         "one-pass path")
    lines.append(f"- Default: {choice.reason}; {verdict}.")
    if best_avg:
        margin = mean_std(paired_differences(metrics, best_avg, ONE_PASS, "psnr"))[0]
        lines.append(f"- Sample averaging: best averaged setting '{best_avg}' is {margin:+.2f} dB against the one-pass "
                     "decoder.")
    for floor in FLOORS:
        for method in (full, ONE_PASS):
            diffs = paired_differences(metrics, method, floor, "psnr")
            if diffs:
                wins = sum(d > 0 for d in diffs)
                lines.append(f"- {method} vs {floor}: {mean_std(diffs)[0]:+.2f} dB (beats it on {wins} of {len(diffs)} "
                             "volumes).")
    for start_text in ("start noise", f"t0={_parts_of(full)[2]:g}"):
        fewest, by_steps = minimum_steps_within(metrics, start_text)
        if fewest is not None:
            steps = ", ".join(f"{n}: {v:.2f}" for n, v in sorted(by_steps.items(), reverse=True))
            lines.append(f"- Steps ({start_text}; mean PSNR {steps} dB): fewest within 0.5 dB of 50 steps = "
                         f"**{fewest}**.")
    noise = gradient_verdict(metrics, [full, setting_name(*_parts_of(full), noise="independent")])
    if len(noise) == 2:
        text = "; ".join(f"{m}: {r:.2f} ({'inside' if ok else 'outside'} {GRADIENT_BAND[0]}–{GRADIENT_BAND[1]})"
                         for m, (r, ok) in noise.items())
        closest = min(noise, key=lambda m: abs(math.log(noise[m][0])) if noise[m][0] > 0 else math.inf)
        strategy = "independent" if "independent" in closest else "shared"
        lines.append(f"- Slice noise, through-plane gradient-energy ratio: {text}. Closer to 1 (in ratio): "
                     f"**{strategy}** noise, the predictor's default (`--noise {strategy}`)"
                     + ("" if noise[closest][1] else "; neither lies in the band, see the one-pass and floor rows for "
                        "what the networks themselves do") + ".")
    return "\n".join(lines)


def _parts_of(name: str) -> tuple[int, str, float]:
    steps, start, t0, _, _ = SETTING_NAME.match(name).groups()
    return int(steps), "noise" if start == "noise" else "one_pass", float(t0 or 0.5)


def same_source(sampling: dict[str, Any], variants: dict[str, Any]) -> bool:
    """Were the variants retrained from the model the sampling table measured? (Else their Δ compare two models.)"""
    return variants.get("source_iterations") == sampling["model"].get("iterations")


def variants_section(sampling: dict[str, Any], variants: dict[str, Any]) -> str:
    setting = variants["setting"]
    chosen = setting_name(setting["steps"], setting["start"], setting["t0"])
    averaged = f" ×{setting['samples']}"
    base = sampling["scores"]["metrics"]
    metrics = dict(variants["scores"]["metrics"])
    demo = f"demo model: {chosen}"
    for suffix in ("", averaged):
        if chosen + suffix in base:
            metrics[demo + suffix] = base[chosen + suffix]
    metrics[f"demo model: {ONE_PASS}"] = base[ONE_PASS]
    control = f"{VARIANT_TITLES['control']}: {chosen}"
    full = control if control in metrics else demo
    retrained = sorted(variants["scores"]["metrics"], key=lambda m: (not m.startswith(VARIANT_TITLES["control"]), m))
    ordered = [demo, demo + averaged, f"demo model: {ONE_PASS}"] + retrained
    iterations = {demo: _iterations_text(sampling["model"].get("iterations", {}))}
    for method in retrained:
        for variant, its in variants["iterations"].items():
            if method.startswith(_title(variant)):
                iterations[method] = _iterations_text(its)
    trained = set(variants["iterations"])
    missing = [VARIANT_TITLES[v] for v in VARIANT_TITLES if v not in trained]
    parts = [
        "## Quality: diffusion target and ablations (retrained)",
        "",
        *([] if same_source(sampling, variants) else [
            "**Stale:** these variants were retrained from another demo model than the one the table above measured "
            "(its iterations differ), so the demo-model rows and the Δ against them compare two models. Re-run "
            "`python -m benchmarks.bench_quality train` and `variants`.", ""]),
        "Each variant copies the demo model's fold 0 and retrains only what its change touches (`msgldm_train "
        "--stage`, edited plans under another plans name, the same preprocessed data), for whole epochs covering the "
        "iterations the demo model reached in its time budget, so every variant gets the same budget however busy the "
        "shared CPU is. The *control* retrains the LDM with the unchanged plans in the same way: it, not the demo "
        "model, is the fair reference (**full model** below) for the retrained rows. Scored on the same test set at "
        f"**{chosen}**; Δ is paired against the full model.",
        "",
        overview_table(metrics, ordered, full, extra=iterations, extra_header="iterations (ae/structure/ldm)"),
        "",
        "PSNR (dB) per target:",
        "",
        per_target_table(metrics, ordered, full, "psnr", 2),
        "",
        one_pass_comparison(metrics, f"demo model: {ONE_PASS}"),
        "",
        ("Not run (CPU time): " + ", ".join(missing) + "." if missing else "All variants were run."),
        "",
        provenance(variants["command"], variants["machine"], variants["date"]),
    ]
    return "\n".join(parts)


def one_pass_comparison(metrics: dict, demo_one_pass: str) -> str:
    """Variants that retrain the disentangler change the one-pass decoder too: paired against the demo's."""
    lines = []
    for method in sorted(metrics):
        if method.endswith(f": {ONE_PASS}") and method != demo_one_pass:
            diffs = paired_differences(metrics, method, demo_one_pass, "psnr")
            ssim = paired_differences(metrics, method, demo_one_pass, "ssim")
            lines.append(f"- {method} vs the demo model's one-pass decoder: {mean_std(diffs)[0]:+.2f} dB PSNR, "
                         f"{mean_std(ssim)[0]:+.3f} SSIM (paired, {len(diffs)} volumes).")
    return "\n".join(lines)


def _title(variant: str) -> str:
    return VARIANT_TITLES[variant]


def _iterations_text(iterations: dict[str, int]) -> str:
    return "/".join(str(iterations.get(s, "–")) for s in ("ae", "structure", "ldm"))


def finite(value: float) -> bool:
    return value is not None and math.isfinite(value)
