"""The `make demo` section of documentation/benchmarks.md (section `demo-clean`) from a finished `make demo` run.

    git clone <repo> /tmp/demo_clone && cd /tmp/demo_clone && /usr/bin/time -f %e make demo     # on an idle machine
    .venv/bin/python -m benchmarks.write_demo_table /tmp/demo_clone/demo_data --seconds <the time printed> [--print]

Reads the evaluation summaries `make demo` wrote (MSG-LDM in the plans' mode and the two floors), the iterations each
stage trained (its final checkpoint) and the plans; keeps the numbers in benchmarks/results/demo.json.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks._common import (
    cpu_name,
    load_results,
    load_summary_means,
    machine_line,
    provenance,
    replace_section,
    save_results,
    today,
    trained_iterations,
)

DATASET, PLANS, FOLD = "Dataset901_Demo", "MSGLDMPlans_cpu", "0"
METHODS = {"MSG-LDM (cpu plans)": "msgldm", "one-pass": "one_pass", "plain UNet control": "unet",
           "copy floor": "floor_copy", "regression floor": "floor_regression"}  # one-pass only with diffusion


def collect(home: Path, seconds: float | None) -> dict:
    from msgldm_auto.evaluation.model_choice import read_model_choice
    from msgldm_auto.plans import Plans

    model = home / "results" / DATASET / f"{PLANS}__2d"
    predictions = home / "results" / DATASET / "demo_predictions"
    iterations = trained_iterations(model, FOLD, ("ae", "structure", "ldm", "unet"))
    config = Plans.load(model / "plans.json").configuration("2d")
    summaries = {}
    for label, folder in METHODS.items():
        path = predictions / folder / "summary.json"
        if folder == "one_pass" and not config.ablations.diffusion:
            continue        # make demo no longer writes it; a folder left by an older run is not this run's
        if path.is_file():
            summaries[label] = load_summary_means(path)
    # The load now says nothing about the run being described: name the machine, and run make demo alone.
    machine = machine_line(device=f"{cpu_name()}, {os.cpu_count()} cores, make demo running alone")
    choice = read_model_choice(model)
    return {"summaries": summaries, "iterations": iterations, "seconds": seconds, "machine": machine,
            "chosen_mode": choice.chosen.name if choice else None,
            "date": today(), "budget_minutes": {s: config.stage_schedule(s).max_minutes for s in iterations},
            "diffusion": config.ablations.diffusion,
            "command": "git clone … && make demo, then python -m benchmarks.write_demo_table <clone>/demo_data"}


def section(record: dict) -> str:
    from msgldm_auto.evaluation.comparison import beats, comparison_table, mean_over_targets

    summaries = record["summaries"]
    ours = summaries["MSG-LDM (cpu plans)"]
    copy_wins = beats(ours, summaries["copy floor"])
    regression_wins = beats(ours, summaries["regression floor"])
    means = {label: mean_over_targets(s) for label, s in summaries.items()}
    gaps = (f"Mean over targets: MSG-LDM {means['MSG-LDM (cpu plans)']:.2f} dB, regression floor "
            f"{means['regression floor']:.2f} dB"
            + (f", plain UNet control {means['plain UNet control']:.2f} dB" if "plain UNet control" in means else "")
            + ".")
    budget = ", ".join(f"{s} {m:g} min → {record['iterations'][s]} iterations"
                       for s, m in record["budget_minutes"].items())
    mode = "with diffusion" if record["diffusion"] else "in its one-pass mode (the plans train no LDM)"
    if record.get("chosen_mode"):
        mode += f"; `msgldm_find_best_configuration` chose `{record['chosen_mode']}` on fold 0's validation"
    whole = (f"Whole run, environment install included: {record['seconds'] / 60:.1f} min. " if record.get("seconds")
             else "")
    return "\n".join([
        "## `make demo` on an idle machine (the current `cpu` budget)",
        "",
        f"Fold 0 trained by the `cpu` plans' wall-clock budget ({budget}; `unet` is the plain UNet control with the "
        f"same budget); MSG-LDM predicted {mode}. The table is the one `make demo` prints: the mean over the demo's "
        "8 synthesized test volumes, BraSyn-style.",
        "",
        "```text",
        comparison_table(summaries),
        "```",
        "",
        f"Beats the copy floor on {_targets(copy_wins)} (PSNR) and the regression floor on "
        f"{_targets(regression_wins)}. "
        + gaps,
        "",
        provenance(record["command"], record["machine"], record["date"], whole.strip()),
    ])


def _targets(wins: dict[str, bool]) -> str:
    won = [t for t, ok in wins.items() if ok]
    lost = [t for t, ok in wins.items() if not ok]
    if not lost:
        return "every target"
    return (", ".join(won) if won else "no target") + f" (not {', '.join(lost)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", type=Path, nargs="?", help="the demo's MSGLDM_HOME (demo_data of the clone)")
    parser.add_argument("--seconds", type=float, default=None, help="wall time of the whole make demo")
    parser.add_argument("--stored", action="store_true", help="re-render from benchmarks/results/demo.json")
    parser.add_argument("--print", action="store_true", help="print the section instead of writing the document")
    args = parser.parse_args(argv)
    if not args.stored and args.home is None:
        parser.error("give the demo's MSGLDM_HOME, or --stored")
    record = load_results("demo") if args.stored else collect(args.home, args.seconds)
    text = section(record)
    if args.print:
        print(text)
        return 0
    if not args.stored:
        save_results("demo", record)
    replace_section("demo-clean", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
