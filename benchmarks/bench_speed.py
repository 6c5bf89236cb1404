"""Speed on this CPU: sampling seconds per volume and per slice per step count (trained demo model), the fewest steps
within 0.5 dB of 50 (from bench_quality's stored scores), training slices/s per stage (cpu preset) and the data
loader's throughput alone (it must deliver at least 3x what the fastest-consuming stage takes). Issue 8.

    .venv/bin/python -m benchmarks.bench_speed --source /tmp/demo_full [--threads 2] [--write]    # repository root
    .venv/bin/python -m benchmarks.bench_speed --source /tmp/demo_cpu --training-only --write

`--source` is the MSGLDM_HOME of a finished `make demo` run (only read). Sampling is timed on the test case with
three contrasts present (one synthesized), through `MSGLDMPredictor.predict_case` (preprocessing, every network,
restoring to the input grid). Raw numbers go to benchmarks/results/speed.json; --write puts the tables into
documentation/benchmarks.md (section `speed`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
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

DATASET, PLANS, FOLD = "Dataset901_Demo", "MSGLDMPlans_cpu", "0"
STEP_COUNTS = (50, 25, 10, 5)
LOADER_MARGIN = 3.0


def time_sampling(source: Path, case_id: str, steps: tuple[int, ...], repeats: int) -> dict:
    from benchmarks.quality_runs import load_fold
    from msgldm_auto.dataset.cases import discover_cases
    from msgldm_auto.dataset.dataset_json import DatasetJson
    from msgldm_auto.dataset.image_io import read_image
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions
    from msgldm_auto.preprocessing.pipeline import preprocess_case

    raw = source / "raw" / DATASET
    dataset = DatasetJson.load(raw / "dataset.json")
    case = next(c for c in discover_cases(raw / "imagesTs", dataset)[0] if c.case_id == case_id)
    images = {ch: read_image(p) for ch, p in case.images.items()}
    model = source / "results" / DATASET / f"{PLANS}__2d"
    fold = load_fold(model, FOLD)
    config = fold.model.configuration
    # Only to describe the workload (slices and their size); the timed runs preprocess inside predict_case.
    data, _, _, properties = preprocess_case(images, config, whole_head=True)
    slices = len(properties.foreground_slices)
    fold.predict_case(images)                                   # warm-up: first calls allocate
    rows = {}
    for label, options in [("one-pass decoder", PredictionOptions(one_pass=True))] + \
            [(f"DDIM {n}", PredictionOptions(steps=n)) for n in steps]:
        predictor = MSGLDMPredictor(fold.model, fold.networks, fold.device, options)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            predictor.predict_case(images)
            times.append(time.perf_counter() - started)
        rows[label] = {"seconds_per_volume": min(times), "seconds_per_slice": min(times) / slices,
                       "targets": len(case.missing), "slices": slices}
        print(label, f"{min(times):.2f} s", flush=True)
    return {"case": case_id, "pattern": [dataset.channel_names[c] for c in case.present], "rows": rows,
            "grid": list(data.shape[2:]), "t0": config.diffusion.t0}


def time_training(source: Path, threads: int) -> dict:
    import torch

    from benchmarks.stage_timing import STAGE_NAMES, time_loader, time_stage
    from msgldm_auto.plans import Plans

    preprocessed = source / "preprocessed" / DATASET
    plans = Plans.load(preprocessed / f"{PLANS}.json")
    train_ids = json.loads((preprocessed / "splits_final.json").read_text())[int(FOLD)]["train"]
    data_folder = preprocessed / plans.configuration("2d").data_identifier
    stages = {}
    for stage in STAGE_NAMES:
        # amp as msgldm_train trains by default: bf16 autocast on a CPU with native bf16, float32 otherwise; four
        # warm-up steps, since oneDNN creates its bf16 primitives over the first few (two undercount bf16 by ~25 %)
        speed = time_stage(stage, plans, torch.device("cpu"), amp=True, iterations=10, warmup=4)
        stages[stage] = speed.__dict__
        print(stage, f"{speed.slices_per_second:.1f} slices/s", flush=True)
    loader = {}
    for workers in (0, 1):
        loader[workers] = time_loader(data_folder, train_ids, plans, workers, batches=30)
        print(f"loader, {workers} worker(s): {loader[workers]:.0f} slices/s", flush=True)
    return {"stages": stages, "loader": loader, "batch_size": plans.configuration("2d").batch_size, "threads": threads}


def fewest_steps() -> str:
    """From bench_quality's stored scores: the fewest steps within 0.5 dB of 50 (per start)."""
    try:
        record = load_results("quality_sampling")
    except SystemExit:
        return "Run `python -m benchmarks.bench_quality sampling` for the step count within 0.5 dB of 50 steps."
    from benchmarks.quality_report import minimum_steps_within

    metrics = record["scores"]["metrics"]
    parts = []
    t0 = record.get("model", {}).get("diffusion", {}).get("t0", 0.5)
    for start in ("start noise", f"t0={t0:g}"):
        steps, by_steps = minimum_steps_within(metrics, start)
        if steps is not None:
            psnr = ", ".join(f"{n}: {v:.2f}" for n, v in sorted(by_steps.items(), reverse=True))
            parts.append(f"{start}: **{steps}** steps (mean PSNR by steps {psnr} dB)")
    return "Fewest DDIM steps within 0.5 dB PSNR of 50 steps (bench_quality, demo test set): " + "; ".join(parts) + "."


STAGE_LABELS = {"ae": "ae", "structure": "structure", "ldm": "ldm", "unet": "unet (the control)"}


def section(record: dict) -> str:
    sampling, training = record["sampling"], record["training"]
    sampled = record.get("sampling_provenance", record)      # a --training-only run keeps the sampling's own
    def order(label: str) -> int:           # one-pass first, then many steps to few (JSON does not keep the order)
        return 0 if not label.startswith("DDIM") else 10_000 - int(label.split()[1])

    rows = [(label, f"{r['seconds_per_volume']:.2f}", f"{1000 * r['seconds_per_slice']:.1f}")
            for label, r in sorted(sampling["rows"].items(), key=lambda kv: order(kv[0]))]
    stages = [(name, training["stages"][name]) for name in STAGE_LABELS if name in training["stages"]]
    stage_rows = [(STAGE_LABELS[name], f"{s['iterations_per_second']:.2f}", f"{s['slices_per_second']:.1f}",
                   s["batch_size"], "bf16 autocast" if s["amp"] else "float32") for name, s in stages]
    # The loader must keep up with whichever stage is training: the fastest consumer is the one that binds.
    hungriest, need = max(((STAGE_LABELS[name], s["slices_per_second"]) for name, s in stages),
                          key=lambda item: item[1])
    loader_rows = [(f"{w} worker process(es)" if int(w) else "in the main process", f"{v:.0f}", f"{v / need:.1f}×")
                   for w, v in sorted(training["loader"].items())]
    best_loader = max(training["loader"].values())
    verdict = ("at least" if best_loader >= LOADER_MARGIN * need else "LESS than") + \
        f" {LOADER_MARGIN:g}× what the fastest-consuming stage ({hungriest}) takes"
    command = "python -m benchmarks.bench_speed --source <demo home> --write"
    return "\n".join([
        "## Speed on CPU: sampling, training, data loading",
        "",
        f"Sampling one demo volume (case {sampling['case']}, {'+'.join(sampling['pattern'])} present, "
        f"{next(iter(sampling['rows'].values()))['targets']} contrast synthesized, "
        f"{next(iter(sampling['rows'].values()))['slices']} slices of "
        f"{' × '.join(map(str, sampling.get('grid', ['?', '?'])))} "
        "pixels, `cpu` plans), trained fold 0 model, "
        "best of the repeats, everything `predict_case` does (preprocessing, networks, restoring to the input grid):",
        "",
        markdown_table(["method", "s / volume", "ms / slice"], rows),
        "",
        fewest_steps(),
        "",
        provenance(command, sampled["machine"], sampled["date"]),
        "",
        "Training throughput per stage (`cpu` plans of the demo, batches of the plans' shape; the AE timed with its "
        "discriminator on; in the precision `msgldm_train` trains in on this CPU):",
        "",
        markdown_table(["stage", "iterations / s", "slices / s", "batch", "precision"], stage_rows),
        "",
        "Data loader alone (fold 0's preprocessed training cases, augmentation included, nothing consuming):",
        "",
        markdown_table(["loader", "slices / s", f"÷ {hungriest} consumption"], loader_rows),
        "",
        f"The loader delivers {verdict}.",
        "",
        provenance(command + (" --training-only" if "sampling_provenance" in record else ""), record["machine"],
                   record["date"]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None, help="MSGLDM_HOME of a finished `make demo` run")
    parser.add_argument("--case", default="demo_027", help="test case to time (default: the one with three contrasts)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEP_COUNTS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update documentation/benchmarks.md")
    parser.add_argument("--write-only", action="store_true",
                        help="re-render the section from benchmarks/results/speed.json")
    parser.add_argument("--training-only", action="store_true",
                        help="re-time training and the loader only, keeping the stored sampling figures (for a model "
                             "change that leaves sampling alone, or a source without the diffusion stages)")
    args = parser.parse_args(argv)
    if args.write_only:
        replace_section("speed", section(load_results("speed")))
        return 0
    if args.source is None:
        parser.error("--source is required (unless --write-only)")
    import torch

    torch.set_num_threads(args.threads)
    record = {"training": time_training(args.source, args.threads), "machine": machine_line(args.threads),
              "date": today()}
    if args.training_only:                          # the stored sampling figures keep their own machine and date
        previous = load_results("speed")
        record["sampling"] = previous["sampling"]
        record["sampling_provenance"] = previous.get("sampling_provenance",
                                                     {"machine": previous["machine"], "date": previous["date"]})
    else:
        record["sampling"] = time_sampling(args.source, args.case, tuple(args.steps), args.repeats)
    print("stored", save_results("speed", record))
    if args.write:
        replace_section("speed", section(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
