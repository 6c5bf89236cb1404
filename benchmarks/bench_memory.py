"""Peak resident memory of `msgldm_predict` on CPU for a BraTS-sized case (240 x 240 x 155, 1 mm, 3 contrasts
present, 1 synthesized), with networks sized by the DEFAULT (GPU) preset as the planner plans them for such a
dataset. Target: under 4 GB. Issue 8.

    .venv/bin/python -m benchmarks.bench_memory [--steps 1 2] [--threads 2] [--write]

The weights are random (memory and time do not depend on their values) and the case is a synthetic head of BraTS
size; both are made in a temporary MSGLDM_HOME. Each prediction runs in a fresh process and its peak RSS is read
from the kernel (getrusage of the child), so imports, networks, the case and every intermediate count. Sampling steps
run one after the other on the same tensors, so the peak of a 1-step run is that of a 50-step run (the table shows
two step counts to confirm it); wall times give the per-step cost of the default networks on this CPU.
Raw numbers go to benchmarks/results/memory.json; --write puts the table into documentation/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks._common import (
    load_results,
    machine_line,
    markdown_table,
    provenance,
    replace_section,
    save_results,
    today,
)

TARGET_GB = 4.0


def predict_command(home: Path, extra: list[str]) -> list[str]:
    args = ["-i", str(home / "input"), "-o", str(home / "output" / "_".join(extra or ["default"])), "-d", "990",
            "-p", "MSGLDMPlans", "-f", "0", "-device", "cpu"] + extra
    return [sys.executable, "-c", f"from msgldm_auto.cli.predict import main; raise SystemExit(main({args!r}))"]


def prepare_home(home: Path) -> dict:
    from benchmarks.synthetic_model import brats_case, brats_plans, write_case, write_random_model

    plans = brats_plans("default", device="cuda")
    write_random_model(home / "results" / "Dataset990_BraTSLike", plans)
    write_case(home / "input", "brats_000", brats_case())
    config = plans.configuration("2d")
    return {"image_size": config.image_size, "latent_scale": config.latent_scale, "batch_size": config.batch_size,
            "unet": config.unet.channels, "autoencoder": config.autoencoder.channels,
            "structure": config.disentangler.structure_channels, "plans_steps": config.diffusion.steps}


def measure(steps: list[int], threads: int) -> dict:
    from benchmarks.bench_preprocessing import run_measured

    home = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        plan = prepare_home(home)
        env = dict(os.environ, MSGLDM_HOME=str(home), OMP_NUM_THREADS=str(threads))
        rows = {}
        for label, extra in [("one-pass decoder", ["--one-pass"])] + [(f"DDIM {n}", ["--steps", str(n)])
                                                                      for n in steps]:
            seconds, peak_gb = run_measured(predict_command(home, extra), env)
            rows[label] = {"seconds": seconds, "peak_gb": peak_gb}
            print(f"{label}: {seconds:.1f} s, peak {peak_gb:.2f} GB", flush=True)
        return {"plan": plan, "rows": rows}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def section(record: dict) -> str:
    plan, rows = record["plan"], record["rows"]
    table = markdown_table(["prediction", "wall time (s)", "peak RSS (GB)", f"< {TARGET_GB:g} GB"],
                           [(label, f"{r['seconds']:.1f}", f"{r['peak_gb']:.2f}",
                             "yes" if r["peak_gb"] < TARGET_GB else "**no**")
                            for label, r in rows.items()])
    ddim = {int(k.split()[1]): v["seconds"] for k, v in rows.items() if k.startswith("DDIM")}
    per_step = ""
    if len(ddim) >= 2:
        (a, ta), (b, tb) = sorted(ddim.items())[:2]
        step_seconds = (tb - ta) / (b - a)
        per_step = (f" One DDIM step of the default networks costs about {step_seconds:.0f} s per volume on this CPU, "
                    f"so the default preset's {plan['plans_steps']} steps would take about "
                    f"{(ta + (plan['plans_steps'] - a) * step_seconds) / 60:.0f} min per volume: use a GPU, or the "
                    "`--one-pass` mode, or few steps on CPU.")
    return "\n".join([
        "## Memory: prediction of a BraTS-sized case on CPU",
        "",
        "`msgldm_predict` on one synthetic 240 × 240 × 155, 1 mm case (3 contrasts present, 1 synthesized), networks "
        f"of the default preset as planned for a BraTS-like dataset (slices {plan['image_size'][0]} × "
        f"{plan['image_size'][1]}, f = {plan['latent_scale']}, batch {plan['batch_size']}, AE widths "
        f"{plan['autoencoder']}, structure widths {plan['structure']}, UNet widths {plan['unet']}), **random "
        "weights**. Peak RSS of the whole process.",
        "",
        table,
        "",
        "DDIM steps run one after another on the same tensors, so the peak of a 1-step run is that of a 50-step run."
        + per_step + (f" {record['note']}" if record.get("note") else ""),
        "",
        provenance("python -m benchmarks.bench_memory --write", record["machine"], record["date"]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--write-only", action="store_true", help="re-render from benchmarks/results/memory.json")
    parser.add_argument("--note", default="", help="a sentence stored with the numbers (e.g. about machine load)")
    args = parser.parse_args(argv)
    if args.write_only:
        replace_section("memory", section(load_results("memory")))
        return 0
    record = {**measure(args.steps, args.threads), "machine": machine_line(args.threads), "date": today(),
              "note": args.note}
    print("stored", save_results("memory", record))
    if args.write:
        replace_section("memory", section(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
