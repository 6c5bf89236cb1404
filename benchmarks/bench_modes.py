"""What each prediction mode is for, measured (section `modes`): the `cpu` plans with the LDM trained, fold 0, then
`msgldm_find_best_configuration` on fold 0's held-out cases — PSNR/SSIM beside realism (in-plane high-frequency and
through-plane ratios) and, for the mean of K samples, uncertainty (Spearman(std, |error|), ±2 std coverage).

    python -m benchmarks.bench_modes run --home /tmp/bench_icbm -d 902     # ~25 min on 2 cores, machine idle
    python -m benchmarks.bench_modes choose --home /tmp/bench_icbm -d 902 --plans P   # a retrained variant's choice
    python -m benchmarks.bench_modes write

The plans are the `cpu` preset's with `ablations.diffusion: true` (so the autoencoder and the LDM are trained, at the
preset's 2 + 10 + 2 minutes), saved under their own plans name beside the preset's. Every step is the user's command
in its own process. Results: benchmarks/results/modes_<dataset>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks._common import (
    RESULTS,
    home_environment,
    load_results,
    machine_line,
    replace_section,
    run_command,
    save_results,
    today,
    tool,
    trained_iterations,
    validation_provenance,
)
from benchmarks.plans_edits import plans_variant
from msgldm_auto.evaluation.model_choice import ModelChoice, format_choice
from msgldm_auto.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS_NAME

BASE_PLANS = f"{DEFAULT_PLANS_NAME}_cpu"           # what msgldm_plan_and_preprocess -pl cpu writes
PLANS = f"{BASE_PLANS}_diffusion"
# The targets of the diffusion issue: (what, the check on the chosen table).
HF_BAND, GRADIENT_BAND, MEAN_GAP_DB, SPEARMAN_MIN = (0.9, 1.1), (0.8, 1.25), 0.5, 0.3


def _write_diffusion_plans(home: Path, dataset_name: str) -> None:
    from msgldm_auto.plans import Plans

    folder = home / "preprocessed" / dataset_name
    plans = Plans.load(folder / f"{BASE_PLANS}.json")
    plans_variant(plans, DEFAULT_CONFIGURATION, {"ablations": {"diffusion": True}},
                  plans_name=PLANS).save(folder / f"{PLANS}.json")


def run(args: argparse.Namespace) -> dict:
    from msgldm_auto.paths import resolve_dataset_name

    env = home_environment(args.home)
    name, ds = resolve_dataset_name(args.dataset), str(args.dataset)
    run_command([tool("msgldm_plan_and_preprocess"), "-d", ds, "-pl", "cpu", "-np", "2"], env)
    _write_diffusion_plans(args.home, name)
    extra = ["--val-cases", str(args.max_cases)] + (["--max-minutes", str(args.minutes)] if args.minutes else [])
    train = [tool("msgldm_train"), ds, DEFAULT_CONFIGURATION, "0", "-p", PLANS, "-device", "cpu", "--no-progress"]
    seconds = {"train": run_command(train + extra, env)}
    return choose(args, PLANS, seconds)


def choose(args: argparse.Namespace, plans_name: str, seconds: dict[str, float] | None = None) -> dict:
    """`msgldm_find_best_configuration` on fold 0 of a trained model (bench_modes' own, or a variant whose LDM
    `bench_refine train` retrained) and its record."""
    from msgldm_auto.paths import resolve_dataset_name

    env = home_environment(args.home)
    name, ds = resolve_dataset_name(args.dataset), str(args.dataset)
    seconds = dict(seconds or {})
    seconds["choose"] = run_command([tool("msgldm_find_best_configuration"), ds, "-p", plans_name, "-f", "0",
                                     "--samples", str(args.samples), "--max-cases", str(args.max_cases),
                                     "-device", "cpu"], env)
    model = args.home / "results" / name / f"{plans_name}__{DEFAULT_CONFIGURATION}"
    variant = "" if plans_name == PLANS else f" (variant {plans_name})"
    return {"dataset": name, "choice": json.loads((model / "best_configuration.json").read_text()),
            "iterations": trained_iterations(model, "0"), "seconds": seconds, "date": today(),
            "machine": machine_line(), "max_cases": args.max_cases, "minutes": args.minutes,
            "plans": plans_name, "command": f"python -m benchmarks.bench_modes {args.command} --home H -d {ds} "
                                            f"--samples {args.samples} --max-cases {args.max_cases}{variant}"}


def _verdict(value: float | None, ok: bool) -> str:
    return "not measured" if value is None else ("met" if ok else "missed")


def _in(value: float | None, band: tuple[float, float]) -> bool:
    return value is not None and band[0] <= value <= band[1]


def targets(choice: ModelChoice) -> list[str]:
    """Each target of the diffusion issue, met or missed by how much (or not measured: a metric came out NaN)."""
    scores = {s.mode.name: s for s in choice.scores}
    one_pass, single = scores.get("one_pass"), scores.get("diffusion")
    mean = next((s for n, s in scores.items() if n.startswith("diffusion_mean")), None)
    chosen = scores[choice.chosen.name]
    lines = []
    if mean and one_pass:
        gap = None if mean.psnr is None or one_pass.psnr is None else mean.psnr - one_pass.psnr
        lines.append(f"{mean.mode.name} − one-pass decoder: {_signed(gap)} dB (target ≥ −{MEAN_GAP_DB}: "
                     f"{_verdict(gap, gap is not None and gap >= -MEAN_GAP_DB)}).")
    if single and one_pass:
        lines.append(f"HF ratio of one sample {_number(single.hf_ratio)} (target {HF_BAND[0]}–{HF_BAND[1]}: "
                     f"{_verdict(single.hf_ratio, _in(single.hf_ratio, HF_BAND))}); one-pass decoder "
                     f"{_number(one_pass.hf_ratio)}.")
    grad = chosen.gradient_ratio
    lines.append(f"Through-plane ratio of the chosen mode ({chosen.mode.name}) {_number(grad)} (target "
                 f"{GRADIENT_BAND[0]}–{GRADIENT_BAND[1]}: {_verdict(grad, _in(grad, GRADIENT_BAND))}).")
    if mean:
        rho = mean.std_error_spearman
        lines.append(f"Spearman(std, |error|) of {mean.mode.name} {_number(rho)} (target ≥ {SPEARMAN_MIN}: "
                     f"{_verdict(rho, rho is not None and rho >= SPEARMAN_MIN)}).")
    return lines


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def section(records: list[dict]) -> str:
    parts = ["## Prediction modes: what diffusion is for, chosen by cross-validation", "",
             "The `cpu` plans with the LDM trained (2 + 10 + 2 minutes), fold 0; `msgldm_find_best_configuration` "
             "validated every mode on the same held-out cases (each single-missing and only-one-present pattern). "
             "HF ratio: in-plane high-frequency energy ÷ the reference's (1 = as sharp, < 1 = blur); grad ratio: the "
             "same across slices; the last two columns score the std map of the mean of K samples. Validation "
             "scores inside reference > 0 (held-out training cases have no brain masks), so its SSIM is not "
             "comparable with the test-set tables above. Where the command names a variant, `bench_refine train` "
             "retrained that model's LDM (the plans' 2 minutes) on the same autoencoder and disentangler.", ""]
    for record in records:
        choice = ModelChoice.from_dict(record["choice"])
        parts += [f"### {record['dataset']}", "", "```text", format_choice(choice), "```", "", *targets(choice), "",
                  validation_provenance(record), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="plan, train fold 0 with the LDM, choose the mode")
    runner.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME holding raw/DatasetXXX_Name")
    runner.add_argument("-d", "--dataset", required=True)
    runner.add_argument("--samples", type=int, default=8)
    runner.add_argument("--max-cases", type=int, default=2, help="held-out cases validated per mode")
    runner.add_argument("--minutes", type=float, default=None,
                        help="per-stage budget (default: the plans'; smoke runs)")
    chooser = sub.add_parser("choose", help="only the choice, on a trained model (e.g. a bench_refine variant)")
    chooser.add_argument("--home", type=Path, required=True)
    chooser.add_argument("-d", "--dataset", required=True)
    chooser.add_argument("--plans", default=PLANS, help="plans name of the trained model")
    chooser.add_argument("--samples", type=int, default=8)
    chooser.add_argument("--max-cases", type=int, default=2)
    chooser.set_defaults(minutes=None)                          # the plans' budgets trained the model
    sub.add_parser("write", help="render every stored record into documentation/benchmarks.md")
    args = parser.parse_args(argv)
    if args.command in ("run", "choose"):
        record = run(args) if args.command == "run" else choose(args, args.plans)
        save_results(f"modes_{record['dataset']}", record)
        print("\n".join(targets(ModelChoice.from_dict(record["choice"]))))
        return 0
    records = [load_results(p.stem) for p in sorted(RESULTS.glob("modes_*.json"))]
    replace_section("modes", section(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
