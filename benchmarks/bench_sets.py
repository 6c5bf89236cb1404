"""Quality per compute on whole benchmark sets: MSG-LDM and the plain UNet control, each trained by the same pipeline
at the `cpu` plans' default budget, against the copy and per-voxel regression floors (section `sets`).

    MSGLDM_HOME=/tmp/bench_icbm python -m benchmarks.make_icbm_dataset          # the measured-contrast set (902)
    python -m benchmarks.bench_sets run --home /tmp/bench_icbm -d 902           # ~25 min on 2 cores, machine idle
    MSGLDM_HOME=/tmp/bench_demo msgldm_make_demo_dataset -d 901                 # the demo set (simulated contrasts)
    python -m benchmarks.bench_sets run --home /tmp/bench_demo -d 901
    python -m benchmarks.bench_sets write                                       # both into documentation/benchmarks.md

Per set: `msgldm_plan_and_preprocess -pl cpu`; `msgldm_train D 2d all` for each method (fold `all`: every training
case, the plans' wall-clock budget, the control with MSG-LDM's whole budget); `msgldm_predict` on imagesTs; the floors
fitted on the training cases; `msgldm_evaluate` against referenceTs (inside masksTs brain masks where the set has
them). Every step runs as the user's command in its own process, with `OMP_NUM_THREADS` as given (default: the
product's own choice), so timings are the product's. Results: benchmarks/results/sets_<dataset>.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks._common import (
    RESULTS,
    home_environment,
    load_results,
    load_summary_means,
    machine_line,
    provenance,
    replace_section,
    run_command,
    save_results,
    today,
    tool,
    trained_iterations,
)

PLANS = "MSGLDMPlans_cpu"
DEFAULT_METHODS = ["msgldm", "unet"]
MSGLDM_STAGES = ("ae", "structure", "ldm")
METHOD_LABELS = {"msgldm": "MSG-LDM", "unet": "plain UNet control", "floor_copy": "copy floor",
                 "floor_regression": "regression floor"}


def run(args: argparse.Namespace) -> dict:
    from msgldm_auto.paths import resolve_dataset_name

    env = home_environment(args.home, args.threads)
    name = resolve_dataset_name(args.dataset)
    raw, out = args.home / "raw" / name, args.home / "bench_sets"
    ds = str(args.dataset)
    run_command([tool("msgldm_plan_and_preprocess"), "-d", ds, "-pl", "cpu", "-np", "2"], env)
    seconds = {}
    for method in args.methods:
        extra = ["--max-minutes", str(args.minutes)] if args.minutes else []
        train = [tool("msgldm_train"), ds, "2d", "all", "-p", PLANS, "-m", method, "-device", "cpu", "--no-progress"]
        seconds[f"train_{method}"] = run_command(train + extra, env)
        predict = [tool("msgldm_predict"), "-i", str(raw / "imagesTs"), "-o", str(out / method), "-d", ds, "-p", PLANS,
                   "-f", "all", "-m", method, "-device", "cpu"]
        seconds[f"predict_{method}"] = run_command(predict, env)
    fit_floors(raw, out)
    summaries = {METHOD_LABELS[folder]: evaluate_predictions(raw, out / folder, ds, env)
                 for folder in [*args.methods, "floor_copy", "floor_regression"]}
    model = args.home / "results" / name / f"{PLANS}__2d"
    # only the stages this run trained: the model folder may hold another method's checkpoints from an earlier run
    stages = [*(MSGLDM_STAGES if "msgldm" in args.methods else ()), *(["unet"] if "unet" in args.methods else [])]
    return {"dataset": name, "summaries": summaries, "iterations": trained_iterations(model, "all", stages),
            "seconds": seconds,
            "threads": args.threads, "minutes": args.minutes, "date": today(),
            "machine": machine_line(threads=args.threads or None),
            "command": f"python -m benchmarks.bench_sets run --home H -d {ds}"
                       + (f" --threads {args.threads}" if args.threads else "")
                       + (f" --methods {' '.join(args.methods)}" if args.methods != DEFAULT_METHODS else "")}


def evaluate_predictions(raw: Path, folder: Path, ds: str, env: dict[str, str]) -> dict:
    """`msgldm_evaluate` of a prediction folder against the set's referenceTs (inside masksTs and with labelsTs where
    the set has them); the summary's means."""
    evaluate = [tool("msgldm_evaluate"), "-ref", str(raw / "referenceTs"), "-pred", str(folder), "-d", ds]
    for flag, sub in (("--mask", "masksTs"), ("--labels", "labelsTs")):
        if (raw / sub).is_dir():
            evaluate += [flag, str(raw / sub)]
    run_command(evaluate, env)
    return load_summary_means(folder / "summary.json")


def fit_floors(raw: Path, out: Path) -> None:
    """The copy and regression floors, fitted on the set's training cases, predicted into out/floor_*."""
    from msgldm_auto.dataset.cases import training_cases
    from msgldm_auto.dataset.dataset_json import DatasetJson
    from msgldm_auto.inference.baseline_prediction import predict_floor_folders

    dataset = DatasetJson.load(raw / "dataset.json")
    predict_floor_folders(training_cases(raw, dataset), raw / "imagesTs", dataset,
                          {"copy": out / "floor_copy", "regression": out / "floor_regression"})


def section(records: list[dict]) -> str:
    from msgldm_auto.evaluation.comparison import comparison_table

    parts = ["## Quality per compute on two sets: MSG-LDM against the plain UNet control and the floors", "",
             "Each set's model trained on all its training cases (fold `all`) with the `cpu` plans' default budget; "
             "the control trained by the same pipeline with the same budget (`msgldm_train ... -m unet`). Means over "
             "the synthesized test volumes, BraSyn-style. Runs whose heading says 'percentile-matched' predicted with "
             "`msgldm_predict`'s percentile matching (inference.md); the others predate it and score the networks' "
             "own top (the same weights score 1.2–1.5 dB more matched for MSG-LDM, 0.7–1.5 for the control: "
             "percentile matching section). The floors are never matched.", ""]
    for record in records:
        iterations = ", ".join(f"{stage} {count}" for stage, count in record["iterations"].items())
        threads = f", OMP_NUM_THREADS={record['threads']}" if record.get("threads") else ""
        parts += [f"### {record['dataset']}{threads}", "", "```text",
                  comparison_table(record["summaries"], ("psnr", "ssim")),
                  "```", "", _verdict(record["summaries"]), "",
                  provenance(record["command"], record["machine"], record["date"],
                             f"Iterations trained: {iterations}."),
                  ""]
    return "\n".join(parts)


def _verdict(summaries: dict[str, dict]) -> str:
    """The targets of the quality issue, measured: regression floor +1 dB (mean and every target), control parity."""
    from msgldm_auto.evaluation.comparison import mean_over_targets, targets_of

    def psnr(label: str, target: str) -> float:
        return summaries[label]["per_modality"][target]["psnr"]["mean"]

    def gap(other: str, metric: str = "psnr") -> float:
        return mean_over_targets(summaries["MSG-LDM"], metric) - mean_over_targets(summaries[other], metric)

    lines = [f"MSG-LDM − regression floor: mean over targets {gap('regression floor'):+.2f} dB; per target "
             + ", ".join(f"{t} {psnr('MSG-LDM', t) - psnr('regression floor', t):+.2f}" for t in targets_of(summaries))
             + " dB."]
    if "plain UNet control" in summaries:
        lines.append(f"MSG-LDM − plain UNet control: {gap('plain UNet control'):+.2f} dB PSNR, "
                     f"{gap('plain UNet control', 'ssim'):+.3f} SSIM.")
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="plan, train, predict, floors and evaluate one set")
    runner.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME holding raw/DatasetXXX_Name")
    runner.add_argument("-d", "--dataset", required=True, help="dataset ID or name")
    runner.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=DEFAULT_METHODS)
    runner.add_argument("--minutes", type=float, default=None, help="override the plans' budget (default: theirs)")
    runner.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: the product's choice)")
    runner.add_argument("--name", default=None, help="results file sets_<name>.json (default: the dataset name)")
    sub.add_parser("write", help="render every stored sets_*.json into documentation/benchmarks.md")
    args = parser.parse_args(argv)
    if args.command == "run":
        record = run(args)
        save_results(f"sets_{args.name or record['dataset']}", record)
        print(section([record]))
        return 0
    records = [load_results(p.stem) for p in sorted(RESULTS.glob("sets_*.json"))]
    replace_section("sets", section(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
