"""Turn what benchmarks/run_gpu_quality.sh brought back from a GPU machine into the `gpu-quality` section of
documentation/benchmarks.md, next to the `cpu` plans' `make demo` result on the same test set, and keep the numbers in
benchmarks/results/gpu_quality.json.

    .venv/bin/python -m benchmarks.write_gpu_quality <files_at> --demo <MSGLDM_HOME of a finished make demo> [--print]
    .venv/bin/python -m benchmarks.write_gpu_quality --stored      # re-render from benchmarks/results/gpu_quality.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks._common import load_results, load_summary_means, provenance, replace_section, save_results, today

DEMO_METHODS = {"msgldm": "msgldm", "copy floor": "floor_copy", "regression floor": "floor_regression"}


def collect(folder: Path, demo_home: Path) -> dict:
    run = json.loads((folder / "run.json").read_text())
    plans = json.loads((folder / "plans.json").read_text())["configurations"]["2d"]
    predictions = demo_home / "results" / "Dataset901_Demo" / "demo_predictions"
    summaries = {"default preset, diffusion": load_summary_means(folder / "summary_msgldm.json"),
                 "default preset, one-pass decoder": load_summary_means(folder / "summary_one_pass.json")}
    demo_plans = json.loads((demo_home / "results" / "Dataset901_Demo" / "MSGLDMPlans_cpu__2d"
                             / "plans.json").read_text())
    demo_mode = "diffusion" if demo_plans["configurations"]["2d"]["ablations"]["diffusion"] else "one-pass"
    for label, name in DEMO_METHODS.items():
        label = f"cpu plans ({demo_mode}), make demo" if name == "msgldm" else label
        summaries[label] = load_summary_means(predictions / name / "summary.json")
    return {"run": run, "summaries": summaries, "date": today(),
            "plans": {"image_size": plans["image_size"], "latent_scale": plans["latent_scale"],
                      "batch_size": plans["batch_size"], "unet": plans["unet"]["channels"],
                      "steps": plans["diffusion"]["steps"], "start": plans["diffusion"]["sampling_start"],
                      "target": plans["diffusion"]["target"],
                      "schedule": {s: [v["epochs"], v["iterations_per_epoch"]] for s, v in plans["schedule"].items()}},
            "command": "bash benchmarks/run_gpu_quality.sh "
                       f"{' '.join(f'{m:g}' for m in run['budget_minutes'].values())} "
                       "(GPU machine), then python -m benchmarks.write_gpu_quality <its files> --demo <make demo home>"}


def section(record: dict) -> str:
    from msgldm_auto.evaluation.comparison import comparison_table

    run, plans = record["run"], record["plans"]
    budget = " + ".join(f"{run['budget_minutes'][s]:g}" for s in ("ae", "structure", "ldm"))
    iterations = " / ".join(str(run["iterations"][s]) for s in ("ae", "structure", "ldm"))
    summaries = record["summaries"]
    diffusion, one_pass = summaries["default preset, diffusion"], summaries["default preset, one-pass decoder"]
    gap = diffusion["mean"]["psnr"]["mean"] - one_pass["mean"]["psnr"]["mean"]
    return "\n".join([
        "## Quality of the default (GPU) preset, briefly trained",
        "",
        f"The demo dataset planned with the `default` preset (slices {plans['image_size'][0]} × "
        f"{plans['image_size'][1]}, f = {plans['latent_scale']}, batch {plans['batch_size']}, UNet widths "
        f"{plans['unet']}, {plans['target']} target, {plans['steps']} DDIM steps from a "
        f"{plans['start'].replace('_', '-')} start), fold 0 trained on one GPU for {budget} minutes (ae + structure + "
        f"ldm; {iterations} iterations), then `msgldm_predict` on the demo's 4 test cases with diffusion and with "
        "`--one-pass`, scored by `msgldm_evaluate` like the rest of this page. Beside them, from the `make demo` run "
        "above (same test set, CPU): the `cpu` plans and the two floors. Mean over the 8 synthesized volumes:",
        "",
        "```text",
        comparison_table(summaries),
        "```",
        "",
        f"Averaged over the 8 volumes, diffusion is {gap:+.2f} dB PSNR against the default preset's own one-pass "
        f"decoder. These minutes are a small fraction of the default preset's schedule ({_schedule_text(plans)}): "
        "early-training figures, not what a full training reaches.",
        "",
        provenance(record["command"], f"{run['device']}, torch {run['torch']}", record["date"]),
    ])


def _schedule_text(plans: dict) -> str:
    schedule = plans.get("schedule", {})
    return ", ".join(f"{stage} {epochs} × {iterations} iterations" for stage, (epochs, iterations) in schedule.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="the files run_gpu_quality.sh left in $OUT")
    parser.add_argument("--demo", type=Path, help="MSGLDM_HOME of a finished make demo (cpu plans and floors)")
    parser.add_argument("--stored", action="store_true", help="re-render from benchmarks/results/gpu_quality.json")
    parser.add_argument("--print", action="store_true", help="print the section instead of writing the document")
    args = parser.parse_args(argv)
    if args.stored:
        record = load_results("gpu_quality")
    elif args.folder and args.demo:
        record = collect(args.folder, args.demo)
    else:
        parser.error("give the run's folder and --demo, or --stored")
    text = section(record)
    if args.print:
        print(text)
        return 0
    if not args.stored and record["run"]["device"] != "cpu":
        save_results("gpu_quality", record)
    replace_section("gpu-quality", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
