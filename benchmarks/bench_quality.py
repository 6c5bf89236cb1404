"""Quality of MSG-LDM on the demo test set against its one-pass decoder, the copy and regression floors and the
autoencoder ceiling; sampling settings; retrained variants (diffusion target, ablations). Issue 8.

    # from the repository root:
    # 1. sampling settings, one-pass decoder, floors, ceiling (fold 0 of a trained demo model; ~35 min on 2 cores)
    .venv/bin/python -m benchmarks.bench_quality sampling --source /tmp/demo_full
    # 2. retrain what changes, at the same number of iterations per stage as the source model
    .venv/bin/python -m benchmarks.bench_quality train --source /tmp/demo_full --home /tmp/bench_quality \
        control latent no_multiscale no_hfib no_style
    # 3. score the retrained variants at the setting step 1 chose
    .venv/bin/python -m benchmarks.bench_quality variants --source /tmp/demo_full --home /tmp/bench_quality --samples 2
    # 4. tables into documentation/benchmarks.md (sections quality-sampling, quality-variants) and the planner choice
    .venv/bin/python -m benchmarks.bench_quality write

`--source` is the MSGLDM_HOME of a `make demo` run (Dataset901_Demo, plans MSGLDMPlans_cpu, fold 0) whose LDM was
then trained too (the cpu plans skip it: `MSGLDM_HOME=<demo home> msgldm_train 901 2d 0 -p MSGLDMPlans_cpu --stage
ldm -device cpu`); it is only read.
The test set is fixed: the dataset's imagesTs cases (their held-out truth in referenceTs, lesions in labelsTs), and
the floors are fitted on fold 0's training cases. Raw numbers go to benchmarks/results/quality_*.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    REPO,
    load_results,
    machine_line,
    replace_section,
    save_results,
    today,
    trained_iterations,
)
from benchmarks.quality_report import VARIANT_TITLES

DATASET = "Dataset901_Demo"
PLANS = "MSGLDMPlans_cpu"
FOLD = "0"
# The cpu plans' diffusion setting (chosen by an earlier run of this benchmark); the plans switch diffusion itself off.
FULL_SETTING = dict(steps=5, start="one_pass", t0=0.25)
# What each retrained variant changes in the plans, and the stages it retrains (the others are copied).
VARIANTS = {
    "control": ({}, ["ldm"]),           # the full model's plans, LDM retrained like the others: the fair reference
    "latent": ({"diffusion": {"target": "latent"}}, ["ldm"]),
    "no_multiscale": ({"ablations": {"multiscale_injection": False}}, ["ldm"]),
    "no_hfib": ({"ablations": {"hfib": False}}, ["structure", "ldm"]),
    "no_style": ({"ablations": {"style_consistency": False}}, ["structure", "ldm"]),
}


# ----------------------------------------------------------------------------------------------- sampling benchmark
def sampling_grid(steps: list[int], t0s: list[float], sweep_steps: list[int], samples: int) -> list:
    """Noise start and one-pass start at the plans' t0 at every step count, each with `samples` averaged (sample 0
    alone is scored too); the other t0 values (one sample) only at `sweep_steps`; independent slice noise at the
    plans' setting."""
    from benchmarks.quality_runs import Setting

    grid = []
    for n in steps:
        grid += [Setting(steps=n, start="noise", samples=samples),
                 Setting(steps=n, start="one_pass", t0=FULL_SETTING["t0"], samples=samples)]
        if n in sweep_steps:
            grid += [Setting(steps=n, start="one_pass", t0=t0, samples=1) for t0 in t0s if t0 != FULL_SETTING["t0"]]
    grid.append(Setting(**FULL_SETTING, samples=1, noise="independent"))
    return grid


def load_model(model_folder: Path):
    from benchmarks.quality_runs import load_fold

    return load_fold(model_folder, FOLD)


def test_set(raw_dataset: Path):
    from benchmarks.quality_runs import load_test_cases
    from msgldm_auto.dataset.dataset_json import DatasetJson

    dataset = DatasetJson.load(raw_dataset / "dataset.json")
    return dataset, load_test_cases(raw_dataset, dataset)


def stage_iterations(model_folder: Path) -> dict[str, int]:
    """Iterations each MSG-LDM stage of the fold actually trained (the control's, if any, is not compared here)."""
    return trained_iterations(model_folder, FOLD, ("ae", "structure", "ldm"))


def run_sampling(args: argparse.Namespace) -> None:
    import torch

    from benchmarks.quality_runs import Scores, Setting, run_ceiling, run_floors, run_setting
    from msgldm_auto.dataset.cases import training_cases

    torch.set_num_threads(args.threads)
    source = Path(args.source)
    model_folder = source / "results" / DATASET / f"{PLANS}__2d"
    dataset, cases = test_set(source / "raw" / DATASET)
    predictor = load_model(model_folder)
    scores = Scores()
    settings = [Setting(one_pass=True)] + sampling_grid(args.steps, args.t0, args.sweep_steps, args.samples)
    for setting in settings:
        started = time.perf_counter()
        run_setting(predictor, cases, setting, scores)
        print(f"{setting.name} x{setting.samples}: {time.perf_counter() - started:.0f} s", flush=True)
    run_ceiling(predictor, cases, scores)
    splits = json.loads((source / "preprocessed" / DATASET / "splits_final.json").read_text())
    train_ids = set(splits[int(FOLD)]["train"])
    train = [c for c in training_cases(source / "raw" / DATASET, dataset) if c.case_id in train_ids]
    with tempfile.TemporaryDirectory(prefix="bench_floors_") as folder:
        run_floors(train, source / "raw" / DATASET, dataset, cases, Path(folder), scores)
    record = {"scores": scores.to_dict(), "settings": [s.__dict__ for s in settings], "machine": machine_line(),
              "date": today(), "command": "python -m benchmarks.bench_quality sampling --source <demo home>",
              "model": {"plans": PLANS, "fold": FOLD, "iterations": stage_iterations(model_folder),
                        "diffusion": predictor.model.configuration.diffusion.__dict__},
              "test_cases": [c.case_id for c in cases]}
    print("stored", save_results("quality_sampling", record))


# ----------------------------------------------------------------------------------------------- retrained variants
def variant_plans_name(variant: str) -> str:
    return f"{PLANS}_{variant}"


def prepare_variant(source: Path, home: Path, variant: str) -> list[str]:
    """Edited plans under another plans name (same preprocessed data), the reused stages copied; -> stages to train."""
    from benchmarks.plans_edits import plans_variant
    from msgldm_auto.plans import Plans, plans_file_name

    changes, stages = VARIANTS[variant]
    name = variant_plans_name(variant)
    src_pre, dst_pre = source / "preprocessed" / DATASET, home / "preprocessed" / DATASET
    dst_pre.mkdir(parents=True, exist_ok=True)
    for file in ("dataset.json", "dataset_fingerprint.json", "splits_final.json"):
        shutil.copyfile(src_pre / file, dst_pre / file)
    plans = Plans.load(src_pre / plans_file_name(PLANS))
    data_folder = plans.configuration("2d").data_identifier
    if not (dst_pre / data_folder).exists():
        (dst_pre / data_folder).symlink_to(src_pre / data_folder)      # read only: training never writes there
    plans_variant(plans, "2d", changes, plans_name=name).save(dst_pre / plans_file_name(name))
    src_model = source / "results" / DATASET / f"{PLANS}__2d" / f"fold_{FOLD}"
    dst_model = home / "results" / DATASET / f"{name}__2d" / f"fold_{FOLD}"
    for stage in ("ae", "structure", "ldm"):
        if stage not in stages and not (dst_model / stage).exists():
            shutil.copytree(src_model / stage, dst_model / stage)
    return stages


def train_variant(source: Path, home: Path, variant: str, threads: int) -> None:
    from msgldm_auto.plans import Plans, plans_file_name

    stages = prepare_variant(source, home, variant)
    iterations = stage_iterations(source / "results" / DATASET / f"{PLANS}__2d")
    config = Plans.load(source / "preprocessed" / DATASET / plans_file_name(PLANS)).configuration("2d")
    # An empty raw root: training then skips its case-level validation (this benchmark scores the test set itself).
    (home / "no_raw").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MSGLDM_RAW=str(home / "no_raw"), MSGLDM_PREPROCESSED=str(home / "preprocessed"),
               MSGLDM_RESULTS=str(home / "results"), OMP_NUM_THREADS=str(threads), MSGLDM_NUM_WORKERS="1")
    for stage in stages:
        schedule = config.schedule[stage]
        # Whole epochs covering the iterations the source model reached in its time budget: the same budget for every
        # variant however busy the shared CPU is (a wall-clock budget would not be). The control gets the same.
        epochs = max(1, math.ceil(iterations[stage] / schedule.iterations_per_epoch))
        command = [sys.executable, "-m", "msgldm_auto.cli.train", "901", "2d", FOLD, "-p", variant_plans_name(variant),
                   "--stage", stage, "--epochs", str(epochs), "--max-minutes", str(4 * (schedule.max_minutes or 10)),
                   "-device", "cpu", "--no-progress", "--val-cases", "1"]
        print(f"[{variant}] {stage}: {epochs} epochs x {schedule.iterations_per_epoch} iterations", flush=True)
        subprocess.run(command, env=env, check=True, cwd=REPO)


def run_variants(args: argparse.Namespace) -> None:
    import torch

    from benchmarks.quality_runs import Scores, Setting, run_setting

    torch.set_num_threads(args.threads)
    source, home = Path(args.source), Path(args.home)
    dataset, cases = test_set(source / "raw" / DATASET)
    chosen = Setting(steps=args.steps, start=args.start, t0=args.t0, samples=args.samples)
    scores, iterations = Scores(), {}
    for variant in args.variants:
        folder = home / "results" / DATASET / f"{variant_plans_name(variant)}__2d"
        if not (folder / f"fold_{FOLD}" / "ldm" / "checkpoint_final.pth").is_file():
            print(f"[{variant}] not trained; skipped (run the train step)", flush=True)
            continue
        predictor = load_model(folder)
        for setting in (chosen, Setting(one_pass=True)):
            if variant in ("control", "latent", "no_multiscale") and setting.one_pass:
                continue          # the one-pass decoder is the source model's own: those variants retrain only the LDM
            run_setting(predictor, cases, setting, scores, prefix=f"{VARIANT_TITLES[variant]}: ")
        if variant == "latent":
            run_setting(predictor, cases, Setting(steps=args.steps, start="noise", samples=1), scores,
                        prefix=f"{VARIANT_TITLES[variant]}: ")
        iterations[variant] = stage_iterations(folder)
        print(f"[{variant}] scored", flush=True)
    record = {"scores": scores.to_dict(), "setting": chosen.__dict__, "iterations": iterations,
              "machine": machine_line(),
              "source_iterations": stage_iterations(source / "results" / DATASET / f"{PLANS}__2d"),
              "date": today(),
              "command": "python -m benchmarks.bench_quality variants --source <demo home> --home <bench home> "
                         f"--samples {args.samples}"}
    if args.merge:
        record = merge_variant_records(load_results("quality_variants"), record)
    print("stored", save_results("quality_variants", record))


def merge_variant_records(earlier: dict, later: dict) -> dict:
    """Add a later run's variants to an earlier record scored at the same setting (later wins per method)."""
    if earlier["setting"] != later["setting"]:
        raise SystemExit(f"--merge: the stored variants were scored at {earlier['setting']}, not {later['setting']}")
    merged = dict(earlier)
    for key in ("metrics", "patterns", "seconds"):
        merged["scores"][key] = {**earlier["scores"][key], **later["scores"][key]}
    merged["iterations"] = {**earlier["iterations"], **later["iterations"]}
    return merged


# ----------------------------------------------------------------------------------------------- document
def run_write(args: argparse.Namespace) -> None:
    from benchmarks.quality_report import sampling_section, variants_section

    sampling = load_results("quality_sampling")
    body, choice = sampling_section(sampling)
    replace_section("quality-sampling", body)
    print(choice.reason, "->", "diffusion stays the default" if choice.diffusion_default else "one-pass default")
    try:
        variants = load_results("quality_variants")
    except SystemExit:
        variants = None
    if variants is not None:
        from benchmarks.quality_report import same_source

        if not same_source(sampling, variants):
            print("WARNING: the stored variants were retrained from another model than the sampling table's: re-run "
                  "them")
        replace_section("quality-variants", variants_section(sampling, variants))
    print("documentation/benchmarks.md updated")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sampling = commands.add_parser("sampling", help="sampling settings, one-pass, floors, ceiling")
    sampling.add_argument("--source", required=True, help="MSGLDM_HOME of a finished `make demo` run (read only)")
    sampling.add_argument("--steps", type=int, nargs="+", default=[50, 25, 10, 5])
    sampling.add_argument("--t0", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    sampling.add_argument("--sweep-steps", type=int, nargs="+", default=[10, 5],
                          help="step counts with the whole t0 sweep")
    sampling.add_argument("--samples", type=int, default=4, help="samples averaged at every step count")
    train = commands.add_parser("train", help="retrain the variants")
    train.add_argument("--source", required=True)
    train.add_argument("--home", default="/tmp/bench_quality")
    train.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    variants = commands.add_parser("variants", help="score the retrained variants")
    variants.add_argument("--source", required=True)
    variants.add_argument("--home", default="/tmp/bench_quality")
    variants.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    variants.add_argument("--steps", type=int, default=FULL_SETTING["steps"])
    variants.add_argument("--start", default=FULL_SETTING["start"], choices=["noise", "one_pass"])
    variants.add_argument("--t0", type=float, default=FULL_SETTING["t0"])
    variants.add_argument("--samples", type=int, default=4)
    variants.add_argument("--merge", action="store_true", help="add to the stored variants instead of replacing them")
    commands.add_parser("write", help="tables into documentation/benchmarks.md from benchmarks/results/")
    for sub in (sampling, train, variants):
        sub.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.command == "sampling":
        run_sampling(args)
    elif args.command == "train":
        for variant in args.variants:
            train_variant(Path(args.source), Path(args.home), variant, args.threads)
    elif args.command == "variants":
        run_variants(args)
    else:
        run_write(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
