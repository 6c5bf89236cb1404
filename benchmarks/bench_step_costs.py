"""Step costs (section `step_costs`): what a plans variant does to a stage's training step, and what the image-space
SSIM loss costs against MONAI's SSIMLoss. The levers that change the step's cost are trained at equal compute from
these ratios (bench_levers), and the model's documentation quotes them. Issue 12.

    .venv/bin/python -m benchmarks.bench_step_costs variant --home H -d 902 --name NAME [--stage structure] [--amp]
        [--base-every-row] [EDITS]
    .venv/bin/python -m benchmarks.bench_step_costs ssim
    .venv/bin/python -m benchmarks.bench_step_costs write

`variant` times the stage of `MSGLDMPlans_cpu` (of the planned set under H), in float32, and the same with the dotted
EDITS (bench_levers' syntax) and/or under the trainer's mixed precision (`--amp`), in turns, on batches of the plans'
shape (`benchmarks.stage_timing.time_stage`), and keeps each one's best of `--repeats`: the ratio is what the variant
costs per iteration on this host. `--base-every-row` times the base as the disentangler ran before it skipped the rows
without a modality (every row encoded and scored), in the variant's precision. `ssim` times forward and backward of
`training.losses.ssim_loss` and of MONAI's SSIMLoss on the same images and checks they agree. One thread by default
(`--threads`), as the levers are trained.
Rows are appended to benchmarks/results/step_costs.json.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
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

SSIM_SHAPE = (10, 1, 56, 64)            # one structure batch's dropped targets at the cpu preset's slice size


def time_variant(args: argparse.Namespace) -> dict:
    import os

    import torch

    from benchmarks.bench_levers import BASE_PLANS  # the plans the levers vary
    from benchmarks.plans_edits import dotted_changes, plans_variant
    from benchmarks.stage_timing import time_stage
    from msgldm_auto.paths import resolve_dataset_name
    from msgldm_auto.plans import Plans, plans_file_name

    os.environ["MSGLDM_HOME"] = str(args.home)            # the dataset ID is resolved under this home
    name = resolve_dataset_name(args.dataset)
    base = Plans.load(args.home / "preprocessed" / name / plans_file_name(BASE_PLANS))
    variant = plans_variant(base, "2d", dotted_changes(args.edits))
    best = {"base": 0.0, "variant": 0.0}
    base_amp = args.amp if args.base_every_row else False
    for _ in range(args.repeats):                   # in turns, so a drift of the host's speed touches both
        for label, plans, amp in (("base", base, base_amp), ("variant", variant, args.amp)):
            with every_row_encoded(label == "base" and args.base_every_row):
                speed = time_stage(args.stage, plans, torch.device("cpu"), amp=amp, iterations=args.iterations)
            best[label] = max(best[label], speed.iterations_per_second)
    print(f"{args.stage}: {best['base']:.2f} it/s, variant {best['variant']:.2f} it/s", flush=True)
    return {"name": args.name, "dataset": name, "stage": args.stage, "edits": args.edits, "amp": args.amp,
            "base_iterations_per_second": best["base"], "variant_iterations_per_second": best["variant"],
            "step_time_ratio": best["base"] / best["variant"], "threads": args.threads,
            "base_every_row": args.base_every_row,
            "iterations": args.iterations, "repeats": args.repeats, "date": today()}


@contextlib.contextmanager
def every_row_encoded(active: bool):
    """While active, the disentangler encodes and scores every row of a batch, as it did before it skipped the rows
    without the modality (`networks.structure.rows_only`): the base of `variant --base-every-row`."""
    if not active:
        yield
        return
    import torch

    from msgldm_auto.networks import disentangler, structure

    saved = structure.rows_only

    def every_row(module, inputs, rows):
        return saved(module, inputs, torch.ones_like(rows))

    structure.rows_only = disentangler.rows_only = every_row
    try:
        yield
    finally:
        structure.rows_only = disentangler.rows_only = saved


def time_ssim(args: argparse.Namespace) -> dict:
    import torch
    from monai.losses import SSIMLoss

    from msgldm_auto.training.losses import SSIM_WINDOW, ssim_loss

    generator = torch.Generator().manual_seed(0)
    target = torch.rand(SSIM_SHAPE, generator=generator) * 2 - 1
    prediction = (target + 0.2 * torch.randn(SSIM_SHAPE, generator=generator)).requires_grad_(True)
    monai_loss = SSIMLoss(spatial_dims=2, data_range=2.0, win_size=SSIM_WINDOW)
    losses = {"separable (training.losses.ssim_loss)": lambda: ssim_loss(prediction, target, 2.0),
              "MONAI SSIMLoss (full 2-D window)": lambda: monai_loss(prediction, target)}
    values = {label: float(loss()) for label, loss in losses.items()}
    if max(values.values()) - min(values.values()) > 1e-4:
        raise SystemExit(f"the two SSIM losses disagree ({values}): the separable one is no longer MONAI's")
    milliseconds = {label: 1000 * _best_seconds(loss, prediction, args.repeats, args.iterations)
                    for label, loss in losses.items()}
    for label, value in milliseconds.items():
        print(f"{label}: {value:.1f} ms", flush=True)
    return {"shape": list(SSIM_SHAPE), "milliseconds": milliseconds, "values": values, "threads": args.threads,
            "date": today()}


def _best_seconds(loss, prediction, repeats: int, iterations: int) -> float:
    """Best of `repeats` of the mean time of one forward and backward."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(iterations):
            prediction.grad = None
            loss().backward()
        best = min(best, (time.perf_counter() - started) / iterations)
    return best


def _variant_label(row: dict) -> str:
    """The row's edits, and whether the variant ran under autocast (rows before the flag did not)."""
    return " ".join(row["edits"] + (["(autocast)"] if row.get("amp") else [])
                    + (["(base: every row encoded)"] if row.get("base_every_row") else [])) or "–"


def section(record: dict) -> str:
    variants = [[r["name"], r["dataset"], r["stage"], _variant_label(r),
                 f"{r['base_iterations_per_second']:.2f}",
                 f"{r['variant_iterations_per_second']:.2f}", f"{r['step_time_ratio']:.3f}", r["date"]]
                for r in record.get("variants", [])]
    parts = ["## Step costs of levers (CPU)", "",
             "What a plans variant costs per training iteration against the `cpu` plans of the same set (one stage, "
             "batches of the plans' shape, each the best of its repeats, timed in turns, one thread unless the name "
             "says otherwise; '(autocast)': the variant under msgldm_train's mixed precision, the base in float32 "
             "unless the row says '(base: every row encoded)': then the base is the disentangler before it skipped "
             "the rows without a modality, in the variant's precision):",
             "",
             markdown_table(["variant", "set", "stage", "edits", "base it/s", "variant it/s", "step time ×", "date"],
                            variants)]
    ssim = record.get("ssim")
    if ssim:
        rows = [[label, f"{ms:.1f}", f"{ssim['values'][label]:.6f}"] for label, ms in ssim["milliseconds"].items()]
        parts += ["", f"Image-space SSIM loss, forward and backward on {' × '.join(map(str, ssim['shape']))} "
                      f"(date {ssim['date']}):", "", markdown_table(["loss", "ms", "value"], rows)]
    command = ("python -m benchmarks.bench_step_costs (variant --home H -d D --name NAME [--amp] [--base-every-row] "
               "[EDITS] | ssim)")
    parts += ["", provenance(command, record["machine"], record["date"])]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    variant = sub.add_parser("variant", help="a plans variant's step time against the cpu plans'")
    variant.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME with the planned set")
    variant.add_argument("-d", "--dataset", required=True)
    variant.add_argument("--name", required=True)
    variant.add_argument("--stage", default="structure", choices=["ae", "structure", "ldm", "unet"])
    variant.add_argument("--iterations", type=int, default=10, help="timed iterations per repeat")
    variant.add_argument("--amp", action="store_true",
                         help="time the variant under the trainer's mixed precision (bf16 on CPUs with native bf16)")
    variant.add_argument("--base-every-row", action="store_true",
                         help="time the base as the disentangler was before it skipped the rows without a modality "
                              "(every row encoded), in the variant's precision")
    variant.add_argument("edits", nargs="*", help="dotted plans edits, e.g. disentangler.refine_sees_inputs=false")
    ssim = sub.add_parser("ssim", help="the separable SSIM loss against MONAI's SSIMLoss")
    ssim.add_argument("--iterations", type=int, default=20)
    for timed in (variant, ssim):
        timed.add_argument("--repeats", type=int, default=3)
        timed.add_argument("--threads", type=int, default=1)
    sub.add_parser("write")
    args = parser.parse_args(argv)
    if args.command == "variant" and not (args.edits or args.amp or args.base_every_row):
        parser.error("variant needs plans EDITS, --amp or --base-every-row")
    if args.command != "write":
        import torch

        torch.set_num_threads(args.threads)
        record = load_results("step_costs") if (RESULTS / "step_costs.json").is_file() else {"variants": []}
        if args.command == "variant":
            record["variants"].append(time_variant(args))
        else:
            record["ssim"] = time_ssim(args)
        record.update(date=today(), machine=machine_line(args.threads))
        save_results("step_costs", record)
    replace_section("step_costs", section(load_results("step_costs")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
