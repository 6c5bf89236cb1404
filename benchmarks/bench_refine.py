"""Diffusion as a refiner (section `refine`): the one-pass start t0 swept against the number of samples averaged, on a
fold trained by `bench_modes run` (the `cpu` plans with the LDM), scored by the fold validation of
`msgldm_find_best_configuration` on the same held-out cases.

    python -m benchmarks.bench_refine run --home /tmp/bench_icbm -d 902            # ~15 min on 2 cores, idle
    # the LDM retrained under changed plans (same autoencoder and disentangler, the plans' 2 minutes), then swept
    python -m benchmarks.bench_refine train --home H -d 902 --tag sampled diffusion.train_timesteps='"sampled"'
    python -m benchmarks.bench_refine run --home H -d 902 --tag sampled
    python -m benchmarks.bench_refine write

Each (t0, K) is an `MSGLDMPredictor` on the fold's networks whose plans differ only in `diffusion.t0`
(`plans_edits.model_variant`), so the figures are those `msgldm_predict` gives with that t0 in plans.json.
Results: benchmarks/results/refine_<dataset>[_<tag>].json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    RESULTS,
    home_environment,
    load_results,
    machine_line,
    markdown_table,
    replace_section,
    run_command,
    save_results,
    today,
    tool,
    trained_iterations,
    validation_provenance,
)
from benchmarks.bench_modes import PLANS
from msgldm_auto.plans import DEFAULT_CONFIGURATION

FOLD = "0"
COLUMNS = ("psnr", "ssim", "hf_ratio", "gradient_ratio", "std_error_spearman", "coverage_2std")


def _score(predictor, model_folder: Path, cases: list, max_cases: int, mode) -> dict:
    from msgldm_auto.evaluation.model_choice import ModeScore
    from msgldm_auto.evaluation.table import ScoredVolume
    from msgldm_auto.training.validation import validate_predictor

    with tempfile.TemporaryDirectory(prefix="bench_refine_") as folder:
        started = time.perf_counter()
        summary = validate_predictor(predictor, model_folder, FOLD, cases, Path(folder), max_cases=max_cases,
                                     num_previews=0, compare_one_pass=False)
        seconds = time.perf_counter() - started
    score = ModeScore.from_volumes(mode, [ScoredVolume.from_dict(v) for v in summary["per_volume"]])
    row = {name: getattr(score, name) for name in COLUMNS}
    return {**row, "psnr_per_target": score.psnr_per_target, "seconds": seconds}


def run(args: argparse.Namespace) -> dict:
    os.environ.update(home_environment(args.home))
    import torch

    from benchmarks.plans_edits import model_variant
    from msgldm_auto.evaluation.model_choice import PredictionMode
    from msgldm_auto.inference.model_loading import ALL_STAGES, load_fold_networks, load_trained_model
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions
    from msgldm_auto.paths import resolve_dataset_name
    from msgldm_auto.training.best_configuration import held_out_cases

    torch.set_num_threads(args.threads)
    name = resolve_dataset_name(args.dataset)
    folder = args.home / "results" / name / f"{variant_plans(args.tag)}__{DEFAULT_CONFIGURATION}"
    model = load_trained_model(folder)
    networks = [load_fold_networks(model, FOLD, "final", torch.device("cpu"), ALL_STAGES)]
    cases = held_out_cases(model, FOLD)
    rows = []
    decoder = PredictionMode.decoder()
    one_pass = MSGLDMPredictor(model, networks, torch.device("cpu"), PredictionOptions().with_mode(decoder))
    rows.append({"t0": None, "samples": 1, **_score(one_pass, folder, cases, args.max_cases, decoder)})
    print(f"one_pass: {rows[-1]['psnr']:.2f} dB, HF {rows[-1]['hf_ratio']:.3f}", flush=True)
    for t0 in args.t0:
        variant = model_variant(model, {"diffusion": {"t0": t0}})
        for samples in args.samples:
            mode = PredictionMode.diffusion(samples)
            predictor = MSGLDMPredictor(variant, networks, torch.device("cpu"), PredictionOptions().with_mode(mode))
            rows.append({"t0": t0, "samples": samples, **_score(predictor, folder, cases, args.max_cases, mode)})
            print(f"t0 {t0:g} K {samples}: {rows[-1]['psnr']:.2f} dB, HF {rows[-1]['hf_ratio']:.3f} "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    diffusion = model.configuration.diffusion
    return {"dataset": name, "tag": args.tag, "plans": variant_plans(args.tag), "rows": rows,
            "training": {"t0": diffusion.t0, "target": diffusion.target,
                         "train_timesteps": diffusion.train_timesteps},
            "iterations": trained_iterations(folder, FOLD), "max_cases": args.max_cases, "date": today(),
            "machine": machine_line(), "command": f"python -m benchmarks.bench_refine run --home H -d {args.dataset} "
                                                  f"--tag {args.tag} --t0 {' '.join(map(str, args.t0))} "
                                                  f"--samples {' '.join(map(str, args.samples))}"}


def variant_plans(tag: str) -> str:
    return f"{PLANS}_{tag}" if tag else PLANS


def train(args: argparse.Namespace) -> None:
    """The LDM of `bench_modes run`'s fold 0 retrained under edited plans (saved under their own plans name); the
    autoencoder and the disentangler are copied, so only what the edit changes differs."""
    from benchmarks.plans_edits import dotted_changes, plans_variant
    from msgldm_auto.paths import resolve_dataset_name
    from msgldm_auto.plans import Plans, plans_file_name

    env = home_environment(args.home)
    name = resolve_dataset_name(args.dataset)
    preprocessed = args.home / "preprocessed" / name
    plans = Plans.load(preprocessed / plans_file_name(PLANS))
    changes = dotted_changes(args.edits)
    variant = plans_variant(plans, DEFAULT_CONFIGURATION, changes, plans_name=variant_plans(args.tag))
    variant.save(preprocessed / plans_file_name(variant.plans_name))
    source = args.home / "results" / name / f"{PLANS}__{DEFAULT_CONFIGURATION}" / f"fold_{FOLD}"
    target = args.home / "results" / name / f"{variant.plans_name}__{DEFAULT_CONFIGURATION}" / f"fold_{FOLD}"
    for stage in ("ae", "structure"):
        if not (target / stage).exists():
            shutil.copytree(source / stage, target / stage)
    run_command([tool("msgldm_train"), str(args.dataset), DEFAULT_CONFIGURATION, FOLD, "-p", variant.plans_name,
                 "--stage", "ldm", "-device", "cpu", "--no-progress", "--val-cases", "1"], env)


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(record: dict) -> str:
    rows = []
    for row in record["rows"]:
        setting = "one-pass decoder" if row["t0"] is None else f"t0 {row['t0']:g}, mean of {row['samples']}"
        if row["t0"] is not None and row["samples"] == 1:
            setting = f"t0 {row['t0']:g}, one sample"
        rows.append([setting, _cell(row["psnr"], 2), _cell(row["ssim"], 3), _cell(row["hf_ratio"], 3),
                     _cell(row["gradient_ratio"], 3), _cell(row["std_error_spearman"], 3),
                     _cell(row["coverage_2std"], 3), f"{row['seconds']:.0f}"])
    return markdown_table(["setting", "PSNR dB", "SSIM", "HF ratio", "grad ratio", "rho(std,err)", "cover 2std",
                           "seconds"], rows)


def section(records: list[dict]) -> str:
    parts = ["## Diffusion as a refiner: the one-pass start t0 against the samples averaged", "",
             "Fold 0 of the `cpu` plans with the LDM trained (`bench_modes run`), validated like "
             "`msgldm_find_best_configuration` on the same held-out cases; only `diffusion.t0` changes between rows "
             "(DDIM steps as planned). How the denoiser was trained is named per table.", ""]
    for record in records:
        training = record["training"]
        title = f"### {record['dataset']}" + (f" ({record['tag']})" if record.get("tag") else "")
        parts += [title, "", f"Denoiser trained with target `{training['target']}`, timesteps "
                  f"`{training['train_timesteps']}` (planned t0 {training['t0']:g})."
                  + (f" Note: {record['note']}." if record.get("note") else ""), "", table(record), "",
                  validation_provenance(record), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="sweep t0 x samples on a trained fold 0")
    runner.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME of a `bench_modes run`")
    runner.add_argument("-d", "--dataset", required=True)
    runner.add_argument("--tag", default="", help="a variant made by `train --tag` (default: bench_modes' plans)")
    runner.add_argument("--t0", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.25])
    runner.add_argument("--samples", type=int, nargs="+", default=[1, 4, 8])
    runner.add_argument("--max-cases", type=int, default=2)
    runner.add_argument("--threads", type=int, default=2)
    trainer = sub.add_parser("train", help="retrain fold 0's LDM under edited plans")
    trainer.add_argument("--home", type=Path, required=True)
    trainer.add_argument("-d", "--dataset", required=True)
    trainer.add_argument("--tag", required=True, help="names the variant's plans and results")
    trainer.add_argument("edits", nargs="+", help="plans edits, e.g. diffusion.train_timesteps='\"sampled\"'")
    sub.add_parser("write", help="render every stored record into documentation/benchmarks.md")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
        return 0
    if args.command == "run":
        record = run(args)
        save_results(f"refine_{record['dataset']}" + (f"_{args.tag}" if args.tag else ""), record)
        print(table(record))
        return 0
    records = [load_results(p.stem) for p in sorted(RESULTS.glob("refine_*.json"))]
    replace_section("refine", section(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
