"""One lever at a time: a variant of the `cpu` plans trained for a short budget and scored on a set's test cases
(section `levers`).

    python -m benchmarks.bench_levers run --home /tmp/icbm -d 902 --name lr8e-4 --minutes 3 \
        schedule.structure.learning_rate=8e-4
    python -m benchmarks.bench_levers run --home /tmp/icbm -d 902 --name control --minutes 3 --method unet
    python -m benchmarks.bench_levers run --home /tmp/icbm -d 902 --name lr8e-4_s1 --minutes 10 --seed 1 \
        schedule.structure.learning_rate=8e-4
    python -m benchmarks.bench_levers write

A variant is `MSGLDMPlans_cpu` (or `--base-plans`) with dotted edits of its `2d` configuration (JSON values), saved
as `MSGLDMPlans_cpu_<name>` beside it (same preprocessed data). It is trained on fold `all` for `--minutes`, predicts
imagesTs and is scored against referenceTs (inside masksTs where present), all through the user's commands. Short
budgets rank levers by how fast the model learns, which is what the `cpu` budget is about; the whole-budget figures
are bench_sets'. Training is seeded, so a run with the same seed repeats one trajectory and differs only where the
clock stops it: judge a lever on several `--seed`s (other trajectories), not on reruns. The host's speed moves how
many iterations 10 minutes buy by 25–40 %, so `--iterations N` trains a fixed number instead (the minutes never cut it;
a planned cool-down then follows the iterations): levers that leave the step's cost alone are compared that way.
Results are appended to benchmarks/results/levers.json.

`--last-weights` scores the same training a second time with the last weights instead of the averaged ones (for a
variant with `schedule.<stage>.ema_decay`): a paired comparison, free of run-to-run noise. `score` does the same for
a prediction-time lever on a model trained earlier:

    python -m benchmarks.bench_levers score --home /tmp/icbm -d 902 --name TTA --predict=--disable_tta
    python -m benchmarks.bench_levers score --home /tmp/demo -d 901 --plans MSGLDMPlans_cpu_X --name plain \
        --edits head_aware_restore=false
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks._common import (
    RESULTS,
    load_results,
    machine_line,
    markdown_table,
    provenance,
    replace_section,
    results_lock,
    save_results,
    today,
)

BASE_PLANS = "MSGLDMPlans_cpu"
ITERATIONS_PER_EPOCH = 50


def write_variant(preprocessed: Path, name: str, edits: list[str], base: str = BASE_PLANS) -> str:
    """Save the edited plans as <base>_<name>.json and return that plans name."""
    from benchmarks.plans_edits import dotted_changes, plans_variant
    from msgldm_auto.plans import Plans, plans_file_name

    plans_name = f"{base}_{name}"
    plans = Plans.load(preprocessed / plans_file_name(base))
    plans_variant(plans, "2d", dotted_changes(edits), plans_name).save(preprocessed / plans_file_name(plans_name))
    return plans_name


def run(args: argparse.Namespace) -> list[dict]:
    from msgldm_auto.paths import resolve_dataset_name

    os.environ["MSGLDM_HOME"] = str(args.home)
    env = dict(os.environ)
    name = resolve_dataset_name(args.dataset)
    preprocessed = args.home / "preprocessed" / name
    plans = write_variant(preprocessed, args.name, args.edits, args.base_plans)
    subprocess.run([_tool("msgldm_train"), args.dataset, "2d", "all", "-p", plans, "-m", args.method,
                    "-device", "cpu", "--no-progress", *_budget(args), "--seed", str(args.seed),
                    *([] if args.amp else ["--no-amp"])],
                   env=env, check=True)
    rows = [_score(args, name, plans, args.name, env)]
    if args.last_weights:
        last = write_variant(preprocessed, f"{args.name}_last", args.edits, args.base_plans)
        _copy_with_last_weights(args.home / "results" / name, plans, last)
        rows.append(_score(args, name, last, f"{args.name} (last weights)", env))
    return [{**row, "seed": args.seed, "iteration_budget": args.iterations} for row in rows]


def _budget(args: argparse.Namespace) -> list[str]:
    """msgldm_train's budget flags: minutes, or a fixed number of iterations that the clock never cuts (the same
    schedule shape, free of the host's speed)."""
    if args.iterations is None:
        return ["--max-minutes", str(args.minutes)]
    return ["--epochs", str(args.iterations // ITERATIONS_PER_EPOCH), "--iters-per-epoch", str(ITERATIONS_PER_EPOCH),
            "--max-minutes", "100000"]


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def score(args: argparse.Namespace) -> list[dict]:
    """Prediction-time levers on an already trained fold `all` (no training): the plain prediction and the one with
    `--predict` flags added and/or prediction-time plans `--edits` (on a copy of the model folder), each scored (a
    paired comparison on one set of weights)."""
    from msgldm_auto.paths import resolve_dataset_name

    os.environ["MSGLDM_HOME"] = str(args.home)
    env, name = dict(os.environ), resolve_dataset_name(args.dataset)
    lever_plans = args.plans
    if args.edits:
        # one underscore at most between words: "__" separates <plans>__<configuration> in a model folder's name
        lever_plans = f"{args.plans}_{re.sub(r'[^0-9A-Za-z]+', '_', args.name).strip('_')}"
        _copy_model(args.home / "results" / name, args.plans, lever_plans, args.edits)
    lever = " ".join([*args.edits, *args.predict])
    default = {**_score(args, name, args.plans, f"{args.name}: default prediction", env), "edits": []}
    return [default, _score(args, name, lever_plans, f"{args.name}: {lever}", env, extra=args.predict)]


def _copy_model(results: Path, plans: str, copy_plans: str, edits: list[str] | None = None) -> Path:
    """The trained model folder copied under `copy_plans`, its plans.json renamed and with the dotted `edits` (fields
    that only prediction reads, such as `head_aware_restore`: the weights must still fit). Returns the copy."""
    import shutil

    from benchmarks.plans_edits import dotted_changes, plans_variant
    from msgldm_auto.plans import Plans

    source, target = results / f"{plans}__2d", results / f"{copy_plans}__2d"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    edited = plans_variant(Plans.load(source / "plans.json"), "2d", dotted_changes(edits or []), copy_plans)
    edited.save(target / "plans.json")
    return target


def _score(args: argparse.Namespace, name: str, plans: str, row_name: str, env: dict[str, str],
           extra: list[str] | None = None) -> dict:
    raw = args.home / "raw" / name
    out = args.home / "levers" / f"{plans}_{args.method}" / "".join(c if c.isalnum() else "_" for c in row_name)
    subprocess.run([_tool("msgldm_predict"), "-i", str(raw / "imagesTs"), "-o", str(out), "-d", args.dataset,
                    "-p", plans, "-f", "all", "-device", "cpu", "-m", args.method, *(extra or [])], env=env,
                   check=True)
    mask = ["--mask", str(raw / "masksTs")] if (raw / "masksTs").is_dir() else []
    subprocess.run([_tool("msgldm_evaluate"), "-ref", str(raw / "referenceTs"), "-pred", str(out),
                    "-d", args.dataset, *mask], env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    minutes = None if getattr(args, "iterations", None) else args.minutes
    return {"dataset": name, "name": row_name, "method": args.method, "minutes": minutes, "edits": args.edits,
            "psnr": summary["mean"]["psnr"]["mean"], "ssim": summary["mean"]["ssim"]["mean"],
            "per_target_psnr": {t: v["psnr"]["mean"] for t, v in summary["per_modality"].items()}, "date": today()}


def _copy_with_last_weights(results: Path, plans: str, copy_plans: str) -> None:
    """The trained model folder under `copy_plans`, each final checkpoint predicting with its stage's last weights
    (`network_weights` of its main network) instead of their average."""
    from msgldm_auto.training.checkpoint import load_checkpoint, save_checkpoint
    from msgldm_auto.training.stages.control import PlainUNetStage
    from msgldm_auto.training.stages.ldm import LatentDiffusionStage
    from msgldm_auto.training.stages.structure import StructureStage

    target = _copy_model(results, plans, copy_plans)
    mains = {stage.name: stage.main_network for stage in (StructureStage, PlainUNetStage, LatentDiffusionStage)}
    for path in target.glob("fold_all/*/checkpoint_final.pth"):
        checkpoint = load_checkpoint(path)
        main = mains.get(checkpoint["stage"])
        if main is not None:
            checkpoint["inference_weights"] = checkpoint["network_weights"][main]
            save_checkpoint(checkpoint, path)


def section(record: dict) -> str:
    rows = [[r["name"], r["method"], _budget_cell(r), f"{r['psnr']:.2f}",
             f"{r['ssim']:.3f}",
             ", ".join(f"{t} {v:.1f}" for t, v in r["per_target_psnr"].items()), r.get("note", "")]
            for r in record["rows"]]
    return "\n".join([
        "## Levers, one at a time (short budgets on the measured-contrast set; rows marked demo: on the demo set)", "",
        record.get("preamble", ""), "",
        markdown_table(["variant", "method", "min", "PSNR", "SSIM", "PSNR per target", "what changed"], rows), "",
        provenance(record["command"], record["machine"], record["date"]),
    ])


def _budget_cell(row: dict) -> str:
    if row.get("iteration_budget"):                 # ("iterations" in older rows: what a time-boxed run trained)
        return f"{row['iteration_budget']} it"
    return "–" if row["minutes"] is None else f"{row['minutes']:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME with the planned, preprocessed set")
    runner.add_argument("-d", "--dataset", required=True)
    runner.add_argument("--name", required=True, help="variant name (plans MSGLDMPlans_cpu_<name>)")
    runner.add_argument("--minutes", type=float, default=3.0)
    runner.add_argument("--iterations", type=int, default=None,
                        help="train this many iterations instead of --minutes (rounded up to whole epochs of "
                             f"{ITERATIONS_PER_EPOCH}): lever against lever free of the host's speed")
    runner.add_argument("--method", default="msgldm", choices=["msgldm", "unet"])
    runner.add_argument("--seed", type=int, default=0, help="msgldm_train's seed: another seed, another trajectory")
    runner.add_argument("--base-plans", default=BASE_PLANS,
                        help="plans the edits apply to (default %(default)s); another one, e.g. planned with "
                             "--overwrite_target_spacing and its own -p name, for a lever that needs other "
                             "preprocessed data")
    runner.add_argument("--no-amp", dest="amp", action="store_false",
                        help="train in float32 (msgldm_train --no-amp), e.g. as the baseline of a precision lever")
    runner.add_argument("--last-weights", action="store_true",
                        help="score the same training again with the last weights instead of their average")
    runner.add_argument("edits", nargs="*", help="dotted plans edits, e.g. schedule.structure.learning_rate=8e-4")
    scorer = sub.add_parser("score", help="a prediction-time lever on a trained fold all, against the plain run")
    scorer.add_argument("--home", type=Path, required=True)
    scorer.add_argument("-d", "--dataset", required=True)
    scorer.add_argument("--plans", default=BASE_PLANS)
    scorer.add_argument("--name", required=True)
    scorer.add_argument("--method", default="msgldm", choices=["msgldm", "unet"])
    scorer.add_argument("--predict", nargs="+", default=[], help="msgldm_predict flags of the lever")
    scorer.add_argument("--edits", nargs="+", default=[],
                        help="prediction-time plans edits of the lever, e.g. head_aware_restore=false")
    scorer.set_defaults(minutes=None)                           # nothing trained: the rows record no budget
    sub.add_parser("write")
    args = parser.parse_args(argv)
    if args.command == "score" and not (args.predict or args.edits):
        parser.error("score needs --predict flags, --edits or both")
    if getattr(args, "iterations", None):                     # whole epochs, so the row records what was trained
        args.iterations = -(-args.iterations // ITERATIONS_PER_EPOCH) * ITERATIONS_PER_EPOCH
    if args.command in ("run", "score"):
        rows = run(args) if args.command == "run" else score(args)
        for row in rows:
            row["command"] = " ".join(["python -m benchmarks.bench_levers", *(argv or sys.argv[1:])])
        with results_lock("levers"):        # read after the run, under the lock: a run beside this one also saves
            record = load_results("levers") if (RESULTS / "levers.json").is_file() else {"rows": []}
            record["rows"] += rows
            record.setdefault("command", "python -m benchmarks.bench_levers run --home H -d D --name NAME "
                                         "(--minutes M | --iterations N) [--seed S] [--method unet] [EDITS]")
            record.update(date=today(), machine=machine_line())
            save_results("levers", record)
        print("\n".join(map(str, rows)))
        return 0
    replace_section("levers", section(load_results("levers")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
