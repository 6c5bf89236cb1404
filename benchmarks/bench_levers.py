"""One lever at a time: a variant of the `cpu` plans trained for a short budget and scored on a set's test cases
(section `levers`).

    python -m benchmarks.bench_levers run --home /tmp/icbm -d 902 --name lr8e-4 --minutes 3 \
        schedule.structure.learning_rate=8e-4
    python -m benchmarks.bench_levers run --home /tmp/icbm -d 902 --name control --minutes 3 --method unet
    python -m benchmarks.bench_levers write

A variant is `MSGLDMPlans_cpu` with dotted edits of its `2d` configuration (JSON values), saved as
`MSGLDMPlans_cpu_<name>` beside it (same preprocessed data). It is trained on fold `all` for `--minutes`, predicts
imagesTs and is scored against referenceTs (inside masksTs where present), all through the user's commands. Short
budgets rank levers by how fast the model learns, which is what the `cpu` budget is about; the whole-budget figures
are bench_sets'. Results are appended to benchmarks/results/levers.json.
"""
from __future__ import annotations

import argparse
import json
import os
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
    save_results,
    today,
)

BASE_PLANS = "MSGLDMPlans_cpu"


def write_variant(preprocessed: Path, name: str, edits: list[str]) -> str:
    """Save the edited plans as MSGLDMPlans_cpu_<name>.json and return that plans name."""
    from benchmarks.plans_edits import dotted_changes, plans_variant
    from msgldm_auto.plans import Plans, plans_file_name

    plans_name = f"{BASE_PLANS}_{name}"
    plans = Plans.load(preprocessed / plans_file_name(BASE_PLANS))
    plans_variant(plans, "2d", dotted_changes(edits), plans_name).save(preprocessed / plans_file_name(plans_name))
    return plans_name


def run(args: argparse.Namespace) -> dict:
    from msgldm_auto.paths import resolve_dataset_name

    os.environ["MSGLDM_HOME"] = str(args.home)
    env = dict(os.environ)
    name = resolve_dataset_name(args.dataset)
    raw, preprocessed = args.home / "raw" / name, args.home / "preprocessed" / name
    plans = write_variant(preprocessed, args.name, args.edits)
    tools = Path(sys.executable).parent
    out = args.home / "levers" / f"{args.name}_{args.method}"
    subprocess.run([str(tools / "msgldm_train"), args.dataset, "2d", "all", "-p", plans, "-m", args.method,
                    "-device", "cpu", "--no-progress", "--max-minutes", str(args.minutes)], env=env, check=True)
    subprocess.run([str(tools / "msgldm_predict"), "-i", str(raw / "imagesTs"), "-o", str(out), "-d", args.dataset,
                    "-p", plans, "-f", "all", "-device", "cpu", "-m", args.method], env=env, check=True)
    mask = ["--mask", str(raw / "masksTs")] if (raw / "masksTs").is_dir() else []
    subprocess.run([str(tools / "msgldm_evaluate"), "-ref", str(raw / "referenceTs"), "-pred", str(out),
                    "-d", args.dataset, *mask], env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {"dataset": name, "name": args.name, "method": args.method, "minutes": args.minutes, "edits": args.edits,
            "psnr": summary["mean"]["psnr"]["mean"], "ssim": summary["mean"]["ssim"]["mean"],
            "per_target_psnr": {t: v["psnr"]["mean"] for t, v in summary["per_modality"].items()}, "date": today()}


def section(record: dict) -> str:
    rows = [[r["name"], r["method"], f"{r['minutes']:g}", f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
             ", ".join(f"{t} {v:.1f}" for t, v in r["per_target_psnr"].items()), r.get("note", "")]
            for r in record["rows"]]
    return "\n".join([
        "## Levers, one at a time (short budgets on the measured-contrast set)", "",
        record.get("preamble", ""), "",
        markdown_table(["variant", "method", "min", "PSNR", "SSIM", "PSNR per target", "what changed"], rows), "",
        provenance(record["command"], record["machine"], record["date"]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME with the planned, preprocessed set")
    runner.add_argument("-d", "--dataset", required=True)
    runner.add_argument("--name", required=True, help="variant name (plans MSGLDMPlans_cpu_<name>)")
    runner.add_argument("--minutes", type=float, default=3.0)
    runner.add_argument("--method", default="msgldm", choices=["msgldm", "unet"])
    runner.add_argument("edits", nargs="*", help="dotted plans edits, e.g. schedule.structure.learning_rate=8e-4")
    sub.add_parser("write")
    args = parser.parse_args(argv)
    if args.command == "run":
        record = load_results("levers") if (RESULTS / "levers.json").is_file() else {"rows": []}
        record["rows"].append(run(args))
        record["rows"][-1]["command"] = " ".join(["python -m benchmarks.bench_levers", *(argv or sys.argv[1:])])
        record.setdefault("command", "python -m benchmarks.bench_levers run --home H -d D --name NAME [EDITS]")
        record.update(date=today(), machine=machine_line())
        save_results("levers", record)
        print(record["rows"][-1])
        return 0
    replace_section("levers", section(load_results("levers")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
