"""Percentile matching at export, paired: the same trained weights predict the same test cases with
`msgldm_predict`'s default (each synthesis's brightest 5 % stretched so that its p99.5 inside the head is the export
scale) and with `--no_percentile_match` (the network's own top); both are scored by `msgldm_evaluate` against the
set's references, beside the regression floor (section `percentile_match`).

    python -m benchmarks.bench_percentile_match run --home H -d D [-p PLANS] [-f FOLD] [--methods msgldm unet]
        --name NAME
    python -m benchmarks.bench_percentile_match write

H is an MSGLDM_HOME whose results hold the trained model (e.g. bench_sets' fold `all`, or `make demo`'s fold 0) and
whose raw dataset has imagesTs and referenceTs. Results: benchmarks/results/percentile_match.json, one record per NAME.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks._common import (
    RESULTS,
    home_environment,
    load_results,
    machine_line,
    provenance,
    replace_section,
    results_lock,
    run_command,
    save_results,
    today,
    tool,
    trained_iterations,
)
from benchmarks.bench_sets import METHOD_LABELS, evaluate_predictions, fit_floors

RESULTS_NAME = "percentile_match"
VARIANTS = {"matched": [], "raw": ["--no_percentile_match"]}


def run(args: argparse.Namespace) -> dict:
    from msgldm_auto.paths import resolve_dataset_name

    env = home_environment(args.home, args.threads)
    name = resolve_dataset_name(args.dataset)
    raw, out = args.home / "raw" / name, args.home / "percentile_match" / args.name
    ds = str(args.dataset)
    summaries = {}
    for method in args.methods:
        for variant, flags in VARIANTS.items():
            folder = out / f"{method}_{variant}"
            run_command([tool("msgldm_predict"), "-i", str(raw / "imagesTs"), "-o", str(folder), "-d", ds,
                         "-p", args.plans, "-f", args.fold, "-m", method, "-device", "cpu", *flags], env)
            summaries[f"{METHOD_LABELS[method]}, {variant}"] = evaluate_predictions(raw, folder, ds, env)
    fit_floors(raw, out)
    summaries[METHOD_LABELS["floor_regression"]] = evaluate_predictions(raw, out / "floor_regression", ds, env)
    model = args.home / "results" / name / f"{args.plans}__2d"
    stages = [{"msgldm": "structure", "unet": "unet"}[m] for m in args.methods]
    return {"name": args.name, "dataset": name, "fold": args.fold, "summaries": summaries,
            "iterations": trained_iterations(model, args.fold, stages), "date": today(),
            "machine": machine_line(threads=args.threads or None),
            "command": f"python -m benchmarks.bench_percentile_match run --home H -d {ds} -p {args.plans} "
                       f"-f {args.fold} --methods {' '.join(args.methods)} --name {args.name}"}


def section(records: dict[str, dict]) -> str:
    from msgldm_auto.evaluation.comparison import comparison_table

    parts = ["## Percentile matching at export, paired", "",
             "The same trained weights predict the same test cases twice: as `msgldm_predict` does by default (each "
             "synthesis's voxels above its head's 95th percentile stretched so that its p99.5 inside the head is the "
             "export scale, the dataset-median p99.5, as a real acquisition's; inference.md) and with "
             "`--no_percentile_match` (the network's own top). Means over the synthesized test volumes, BraSyn-style; "
             "the regression floor as fitted on all the set's training cases, unmatched (`make demo` fits it on fold "
             "0's training cases: the demo's floor there differs slightly).", ""]
    for record in records.values():
        iterations = ", ".join(f"{stage} {count}" for stage, count in record["iterations"].items())
        trained = f"Iterations trained: {iterations}."
        parts += [f"### {record['dataset']} (fold {record['fold']}, {record['name']})", "", "```text",
                  comparison_table(record["summaries"], ("psnr", "ssim")), "```", "", _deltas(record["summaries"]), "",
                  provenance(record["command"], record["machine"], record["date"], trained), ""]
    return "\n".join(parts)


def _deltas(summaries: dict[str, dict]) -> str:
    """Matched − raw for each method: PSNR on the mean and per target, SSIM on the mean."""
    from msgldm_auto.evaluation.comparison import mean_over_targets, targets_of

    lines = []
    for label in sorted({key.rsplit(", ", 1)[0] for key in summaries if key.endswith(", raw")}):
        matched, raw = summaries[f"{label}, matched"], summaries[f"{label}, raw"]
        per_target = ", ".join(
            f"{t} {matched['per_modality'][t]['psnr']['mean'] - raw['per_modality'][t]['psnr']['mean']:+.2f}"
            for t in targets_of({"m": matched}))

        def gap(metric: str) -> float:
            return mean_over_targets(matched, metric) - mean_over_targets(raw, metric)

        lines.append(f"{label}: matched − raw {gap('psnr'):+.2f} dB ({per_target}), SSIM {gap('ssim'):+.3f}, "
                     f"through-plane gradient ratio {gap('gradient_ratio'):+.3f}.")
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="predict matched and raw with one trained model, floor, evaluate")
    runner.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME holding raw/ and results/")
    runner.add_argument("-d", "--dataset", required=True, help="dataset ID or name")
    runner.add_argument("-p", "--plans", default="MSGLDMPlans_cpu")
    runner.add_argument("-f", "--fold", default="all")
    runner.add_argument("--methods", nargs="+", default=["msgldm", "unet"], choices=["msgldm", "unet"])
    runner.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: the product's choice)")
    runner.add_argument("--name", required=True, help="the record's name in percentile_match.json")
    sub.add_parser("write", help="render percentile_match.json into documentation/benchmarks.md")
    args = parser.parse_args(argv)
    if args.command == "run":
        record = run(args)
        with results_lock(RESULTS_NAME):
            records = load_results(RESULTS_NAME) if (RESULTS / f"{RESULTS_NAME}.json").is_file() else {}
            records[record["name"]] = record
            save_results(RESULTS_NAME, records)
        print(section({record["name"]: record}))
        return 0
    replace_section(RESULTS_NAME, section(load_results(RESULTS_NAME)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
