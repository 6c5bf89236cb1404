"""Turn the gpu.json that benchmarks/run_gpu.sh wrote on a GPU machine into the GPU section of
documentation/benchmarks.md (section `gpu`), and keep a copy in benchmarks/results/gpu.json.

    .venv/bin/python -m benchmarks.write_gpu_table path/to/gpu.json [--print]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks._common import markdown_table, provenance, replace_section, save_results


def section(record: dict) -> str:
    device, plans, sampling, training = record["device"], record["plans"], record["sampling"], record["training"]
    machine = f"{device.get('name', device['device'])}" + (f" ({device['memory_gb']:.0f} GB)" if "memory_gb" in device
                                                           else "")
    machine += f"; torch {device['torch']}" + (f", CUDA {device['cuda']}" if device.get("cuda") else "")
    slices = sampling["slices"]

    def memory(entry: dict) -> str:
        return f"{entry['peak_allocated_gb']:.2f}" if "peak_allocated_gb" in entry else "–"

    rows = [("one-pass decoder", f"{sampling['one_pass']['seconds']:.2f}",
             f"{1000 * sampling['one_pass']['seconds'] / slices:.1f}", memory(sampling["one_pass"]))]
    rows += [(f"DDIM {n}", f"{e['seconds']:.2f}", f"{1000 * e['seconds'] / slices:.1f}", memory(e))
             for n, e in sorted(sampling["steps"].items(), key=lambda kv: int(kv[0]))]
    end_to_end = sampling.get("end_to_end_10_steps")
    # Records before the benchmark went through `predict_case` for every row timed the networks alone.
    whole = sampling.get("timing") == "predict_case"
    how = (f"End to end through `predict_case` (preprocessing, {sampling['preprocessing_seconds']:.1f} s of it on the "
           "CPU, networks and restoring to the input grid):" if whole else
           f"Networks only (the volume preprocessed once, {sampling['preprocessing_seconds']:.1f} s on the CPU):")
    stage_rows = [(name, f"{s['iterations_per_second']:.2f}", f"{s['slices_per_second']:.0f}", s["batch_size"],
                   memory(s))
                  for name, s in training["stages"].items()]
    skipped = sampling.get("skipped", []) + training.get("skipped", [])
    note = "**Dry run on CPU: not GPU figures.** " if record.get("dry_run") else ""
    return "\n".join([
        "## GPU: sampling, memory and training",
        "",
        f"{note}{plans['preset'].capitalize()}-preset networks as planned for a BraTS-like dataset (slices "
        f"{plans['image_size'][0]} × {plans['image_size'][1]}, f = {plans['latent_scale']}, batch "
        f"{plans['batch_size']}, UNet widths {plans['unet']}), **random weights**; one synthetic "
        f"{' × '.join(str(s) for s in reversed(record['case_shape']))} case, 3 contrasts present, 1 synthesized, "
        f"{slices} slices. {how}",
        "",
        markdown_table(["sampling", "s / volume", "ms / slice", "peak GPU memory (GB, allocated)"], rows),
        "",
        *_end_to_end_line(end_to_end, whole, memory),
        "Training with AMP (bf16 where supported), batches of the plans' shape:",
        "",
        markdown_table(["stage", "iterations / s", "slices / s", "batch", "peak GPU memory (GB)"], stage_rows),
        "",
        ("Skipped: " + "; ".join(skipped) + "." if skipped else ""),
        provenance(record["command"], machine, record["date"], f"Whole run {record['total_seconds']:.0f} s."),
    ])


def _end_to_end_line(end_to_end: dict | None, whole: bool, memory) -> list[str]:
    """The separate 10-step `predict_case` run of records that timed the networks alone (the rows say it otherwise)."""
    if whole:
        return []
    if not end_to_end:
        return ["End-to-end run skipped.", ""]
    return [f"End to end (`predict_case`, 10 steps, preprocessing and restoring included): {end_to_end['seconds']:.1f} "
            f"s, peak {memory(end_to_end)} GB.", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gpu_json", type=Path)
    parser.add_argument("--print", action="store_true", help="print the section instead of writing the document")
    args = parser.parse_args(argv)
    record = json.loads(args.gpu_json.read_text())
    text = section(record)
    if args.print:
        print(text)
        return 0
    if not record.get("dry_run"):
        save_results("gpu", record)
    replace_section("gpu", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
