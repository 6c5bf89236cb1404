"""Speed and memory of planning + preprocessing on the demo dataset (issue 4), optionally against nnU-Net v2.

    .venv/bin/python -m benchmarks.bench_preprocessing [--resolutions 2 1] [--cases 24] [-np 2]
        [--nnunet-python /path/to/nnunet-venv/bin/python] [--write]
    .venv/bin/python -m benchmarks.bench_preprocessing --write-only      # re-render from results/preprocessing.json

A venv for nnU-Net next to ours, on the same CPU torch:
    python3 -m venv /tmp/nnunet_venv && /tmp/nnunet_venv/bin/pip install torch==2.13.0 && \
        /tmp/nnunet_venv/bin/pip install nnunetv2 torch==2.13.0

For each resolution: builds the demo dataset (complete cases only, with lesion labels, so nnU-Net can read the very
same files), runs `msgldm_plan_and_preprocess -d ID -np N --clean` in a fresh process and records wall time, the
peak resident memory of the largest process and the size of the preprocessed folder. With --nnunet-python (a
separate virtual environment with nnunetv2 installed against the same CPU torch), it runs
`nnUNetv2_plan_and_preprocess -d ID -c 2d -npfp N -np N` on a copy of the same raw dataset. --write puts the table
into documentation/benchmarks.md between the `preprocessing-benchmark` markers (replacing an earlier table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import REPO, load_results, machine_line, provenance, replace_section, save_results, today


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB of the largest process in the tree) of one command in a fresh process.

    Each measurement runs in its own helper process so that RUSAGE_CHILDREN reflects this command only."""
    probe = ("import resource, subprocess, sys, time, json; t = time.time(); "
             f"rc = subprocess.call({command!r}); "
             "print(json.dumps([rc, time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    rc, seconds, max_rss_kb = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {rc}:\n{out.stderr[-2000:]}")
    return seconds, max_rss_kb / 1e6


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def make_dataset(home: Path, resolution: float, cases: int, dataset_id: int) -> Path:
    """Demo dataset with complete training cases only (nnU-Net refuses missing modalities)."""
    env = dict(os.environ, MSGLDM_HOME=str(home))
    code = ("from dataset_conversion.demo_dataset import make_demo_dataset; "
            f"print(make_demo_dataset(dataset_id={dataset_id}, name='Bench', cases={cases}, test_cases=1, "
            f"resolution_mm={resolution}, overwrite=True))")
    folder = Path(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                                 cwd=REPO).stdout.strip().splitlines()[-1])
    dataset = json.loads((folder / "dataset.json").read_text())
    channels = len(dataset["channel_names"])
    complete = 0
    for label in sorted((folder / "labelsTr").glob("*.nii.gz")):
        case = label.name[: -len(".nii.gz")]
        files = [folder / "imagesTr" / f"{case}_{c:04d}.nii.gz" for c in range(channels)]
        if all(f.exists() for f in files):
            complete += 1
            continue
        label.unlink()
        for f in files:
            f.unlink(missing_ok=True)
    dataset["numTraining"] = complete
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def bench_ours(home: Path, dataset_id: int, processes: int) -> dict:
    env = dict(os.environ, MSGLDM_HOME=str(home), OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", "from msgldm_auto.cli.plan_and_preprocess import main; "
               f"raise SystemExit(main(['-d', '{dataset_id}', '-np', '{processes}', '--clean']))"]
    seconds, peak = run_measured(command, env)
    return {"seconds": seconds, "peak_gb": peak, "size_mb": folder_size_mb(home / "preprocessed")}


def bench_nnunet(python: Path, raw_dataset: Path, dataset_id: int, processes: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="nnunet_bench_"))
    try:
        raw = work / "raw"
        shutil.copytree(raw_dataset, raw / raw_dataset.name)
        env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(work / "pp"),
                   nnUNet_results=str(work / "res"),
                   OMP_NUM_THREADS="1")
        tool = Path(python).parent / "nnUNetv2_plan_and_preprocess"
        seconds, peak = run_measured([str(tool), "-d", str(dataset_id), "-c", "2d", "-npfp", str(processes),
                                      "-np", str(processes)], env)
        return {"seconds": seconds, "peak_gb": peak, "size_mb": folder_size_mb(work / "pp")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict]) -> str:
    lines = ["| data | tool | cases | wall time (s) | peak memory (GB) | output (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| demo {r['resolution']:g} mm | {r['tool']} | {r['cases']} | {r['seconds']:.1f} | "
                     f"{r['peak_gb']:.2f} | {r['size_mb']:.1f} |")
    return "\n".join(lines)


def section(record: dict) -> str:
    return "\n".join([
        "## Planning and preprocessing speed",
        "",
        "Demo datasets built for the purpose (complete training cases only, with lesion labels, so nnU-Net reads the "
        "very same files); each tool in a fresh process from its raw dataset to its preprocessed 2D data: "
        "fingerprint, plans and preprocessing (nnU-Net plans all its configurations and preprocesses `2d` only). "
        "Peak memory is the largest process's resident set.",
        "",
        table(record["rows"]),
        "",
        provenance(record["command"], record["machine"], record["date"], f"-np {record['processes']}"
                   + (f"; nnunetv2 {record['nnunet_version']}." if record.get("nnunet_version") else ".")),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("-np", dest="processes", type=int, default=2)
    parser.add_argument("--nnunet-python", type=Path, default=None)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--write-only", action="store_true",
                        help="re-render from benchmarks/results/preprocessing.json")
    args = parser.parse_args()
    if args.write_only:
        replace_section("preprocessing-benchmark", section(load_results("preprocessing")))
        return
    rows = []
    for index, resolution in enumerate(args.resolutions):
        home = Path(tempfile.mkdtemp(prefix="msgldm_bench_"))
        try:
            dataset_id = 950 + index
            folder = make_dataset(home, resolution, args.cases, dataset_id)
            cases = json.loads((folder / "dataset.json").read_text())["numTraining"]
            rows.append({"resolution": resolution, "tool": "msgldm_plan_and_preprocess", "cases": cases,
                         **bench_ours(home, dataset_id, args.processes)})
            if args.nnunet_python:
                rows.append({"resolution": resolution, "tool": "nnUNetv2_plan_and_preprocess -c 2d", "cases": cases,
                             **bench_nnunet(args.nnunet_python, folder, dataset_id, args.processes)})
            print(table(rows[-2:] if args.nnunet_python else rows[-1:]), flush=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    print(table(rows))
    command = (f"python -m benchmarks.bench_preprocessing --resolutions {' '.join(f'{r:g}' for r in args.resolutions)}"
               + (" --nnunet-python <nnU-Net venv>/bin/python" if args.nnunet_python else ""))
    record = {"rows": rows, "processes": args.processes, "machine": machine_line(1), "date": today(),
              "command": command}
    if args.nnunet_python:
        record["nnunet_version"] = subprocess.run([str(args.nnunet_python), "-c", "import importlib.metadata as m; "
                                                   "print(m.version('nnunetv2'))"],
                                                  capture_output=True, text=True).stdout.strip()
    print("stored", save_results("preprocessing", record))
    if args.write:
        replace_section("preprocessing-benchmark", section(record))


if __name__ == "__main__":
    main()
