"""GPU figures for documentation/benchmarks.md, in one short run (< 4 minutes on an H100/H200): sampling seconds per
BraTS-sized volume at 5/10/50 DDIM steps with DEFAULT-preset networks (random weights), the peak GPU memory of that
prediction, and training iterations/s per stage with AMP at the default preset. Issue 8.

    python3 -m benchmarks.bench_gpu --out $OUT/gpu.json          # on the GPU machine (see run_gpu.sh)
    .venv/bin/python -m benchmarks.bench_gpu --dry-run --out /tmp/gpu.json   # CPU, tiny sizes: checks the script only
    .venv/bin/python -m benchmarks.write_gpu_table /path/to/gpu.json         # the GPU table into the document

Needs only torch, numpy, scipy, MONAI, batchgenerators, SimpleITK, nibabel and blosc2 (no data, no downloads). The
plans come from the real planner for a BraTS-like fingerprint (240 x 240 x 155, 1 mm, four contrasts); the case is a
synthetic head of that size with 3 contrasts present and 1 synthesized. Sampling is timed end to end through
`MSGLDMPredictor.predict_case` at every step count (preprocessing and restoring on the CPU included: the predictor is
the one prediction path), with preprocessing alone timed once beside it. A time guard skips what would not fit
`--budget-seconds` and says so in the JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device) -> dict:
    import torch

    if device.type != "cuda":
        return {}
    return {"peak_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
            "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / 1e9}


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def device_info(device) -> dict:
    import torch

    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=props.total_memory / 1e9, cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported())
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def time_sampling(plans, device, steps: list[int], case_shape, deadline: float) -> dict:
    """Seconds per volume of `predict_case` for the one-pass decoder and per step count (+ peak memory)."""
    from benchmarks.synthetic_model import brats_case, random_networks, trained_model_stub
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions
    from msgldm_auto.preprocessing.pipeline import preprocess_case

    images = brats_case(case_shape, present=(0, 1, 2))
    model, networks = trained_model_stub(plans, Path("/nonexistent")), [random_networks(plans, device)]
    started = time.perf_counter()
    # Preprocessing alone, timed once: the share of every row below that runs on the CPU before the networks.
    data, _, _, properties = preprocess_case(images, model.configuration, whole_head=True)
    slices = properties.foreground_slices
    result = {"timing": "predict_case", "preprocessing_seconds": time.perf_counter() - started, "slices": len(slices),
              "batch_size": model.configuration.batch_size, "steps": {}, "skipped": []}

    def run(options: PredictionOptions) -> dict:
        predictor = MSGLDMPredictor(model, networks, device, options)
        _reset_peak(device)
        _sync(device)
        began = time.perf_counter()
        predictor.predict_case(images)
        _sync(device)
        return {"seconds": time.perf_counter() - began, **_peak_gb(device)}

    run(PredictionOptions(steps=1))                           # warm-up: kernels, allocator, cuDNN choices
    result["one_pass"] = run(PredictionOptions(one_pass=True))
    for n in steps:
        if time.monotonic() > deadline:
            result["skipped"].append(f"DDIM {n}: over the time budget")
            continue
        result["steps"][str(n)] = run(PredictionOptions(steps=n))
        print(f"DDIM {n}: {result['steps'][str(n)]}", flush=True)
    return result


def time_training(plans, device, iterations: int, warmup: int, deadline: float) -> dict:
    from benchmarks.stage_timing import STAGE_NAMES, time_stage

    found, skipped = {}, []
    for stage in STAGE_NAMES:
        if time.monotonic() > deadline:
            skipped.append(f"{stage}: over the time budget")
            continue
        _reset_peak(device)
        speed = time_stage(stage, plans, device, amp=True, iterations=iterations, warmup=warmup)
        found[stage] = {**speed.__dict__, **_peak_gb(device)}
        print(f"{stage}: {speed.iterations_per_second:.2f} it/s", flush=True)
    return {"stages": found, "skipped": skipped}


def plans_summary(plans) -> dict:
    config = plans.configuration("2d")
    return {"preset": plans.preset, "image_size": config.image_size, "latent_scale": config.latent_scale,
            "batch_size": config.batch_size, "context_slices": config.context_slices,
            "autoencoder": config.autoencoder.channels, "structure": config.disentangler.structure_channels,
            "unet": config.unet.channels, "plans_steps": config.diffusion.steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--dry-run", "--cpu", dest="dry_run", action="store_true",
                        help="CPU, cpu-preset networks, a small case, 1-2 steps: checks that the script works")
    parser.add_argument("--budget-seconds", type=float, default=200.0, help="skip measurements past this wall time")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_seconds
    import torch

    from benchmarks.synthetic_model import BRATS_SHAPE, brats_plans

    if args.dry_run:
        device, steps, case_shape, iterations, warmup = torch.device("cpu"), [1, 2], (24, 96, 96), 1, 1
        plans = brats_plans("cpu", device="cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("benchmarks.bench_gpu: no CUDA device; use --dry-run to check the script on CPU")
        device, steps, case_shape, iterations, warmup = torch.device("cuda"), [5, 10, 50], BRATS_SHAPE, 20, 5
        plans = brats_plans("default", device="cuda")
    record = {"device": device_info(device), "dry_run": args.dry_run, "case_shape": list(case_shape),
              "plans": plans_summary(plans), "date": time.strftime("%Y-%m-%d"),
              "command": "python -m benchmarks.bench_gpu --dry-run" if args.dry_run else "bash benchmarks/run_gpu.sh"}
    with torch.no_grad():
        record["sampling"] = time_sampling(plans, device, steps, case_shape, deadline)
    record["training"] = time_training(plans, device, iterations, warmup, deadline)
    record["total_seconds"] = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out} in {record['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
