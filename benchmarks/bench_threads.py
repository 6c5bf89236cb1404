"""Training speed by torch thread count, on an idle machine and on one shared with a busy process (section `threads`).

    python -m benchmarks.bench_threads run --home /tmp/bench_demo -d 901 [--minutes 1]
    python -m benchmarks.bench_threads write

Needs a planned and preprocessed dataset under HOME (`msgldm_plan_and_preprocess -pl cpu`). For each setting it runs
`msgldm_train D 2d all -p MSGLDMPlans_cpu --max-minutes M` in its own process (the product's default thread choice
unless OMP_NUM_THREADS is given) and reads the iterations it reached; `busy` runs one pure-Python spinning process
beside it, like a second job on the same machine. Results: benchmarks/results/threads.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
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
    trained_iterations,
)

PLANS = "MSGLDMPlans_cpu"
SETTINGS = {  # label -> environment of the training process
    "default (no variables set: probed)": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "2 threads, spinning waits": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "2 threads, passive waits": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}


def _train(home: Path, dataset: str, minutes: float, extra_env: dict[str, str], method: str) -> dict:
    from msgldm_auto.paths import resolve_dataset_name

    os.environ["MSGLDM_HOME"] = str(home)
    model = home / "results" / resolve_dataset_name(dataset) / f"{PLANS}__2d"
    shutil.rmtree(model / "fold_all", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(MSGLDM_HOME=str(home), **extra_env)
    tool = str(Path(sys.executable).parent / "msgldm_train")
    subprocess.run([tool, dataset, "2d", "all", "-p", PLANS, "-m", method, "-device", "cpu", "--no-progress",
                    "--max-minutes", str(minutes)], env=env, check=True, stdout=subprocess.DEVNULL)
    stage = "unet" if method == "unet" else "structure"
    iterations = trained_iterations(model, "all", (stage,))[stage]
    return {"iterations": iterations, "per_second": iterations / (60.0 * minutes)}


def run(args: argparse.Namespace) -> dict:
    """Measure the chosen settings (default: all) and merge them into the stored rows."""
    chosen = {label: SETTINGS[label] for label in (args.only or SETTINGS)}
    stored = load_results("threads")["rows"] if (RESULTS / "threads.json").is_file() else []
    rows = []
    for load in ("idle", "busy"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
        try:
            for label, env in chosen.items():
                result = _train(args.home, args.dataset, args.minutes, env, args.method)
                rows.append({"load": load, "setting": label, **result})
                print(rows[-1], flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
    fresh = {(r["load"], r["setting"]) for r in rows}
    rows = [r for r in stored if (r["load"], r["setting"]) not in fresh] + rows
    rows.sort(key=lambda r: (r["load"] != "idle", list(SETTINGS).index(r["setting"])))
    return {"rows": rows, "minutes": args.minutes, "method": args.method, "date": today(),
            "machine": machine_line(device=f"{os.cpu_count()} cores"),
            "command": f"python -m benchmarks.bench_threads run --home H -d {args.dataset} --minutes {args.minutes:g}"}


def section(record: dict) -> str:
    table = markdown_table(["machine", "threads", "iterations", "iterations/s"],
                           [[r["load"], r["setting"], r["iterations"], f"{r['per_second']:.2f}"]
                            for r in record["rows"]])
    return "\n".join([
        "## Training speed by thread count, idle and shared", "",
        f"The structure stage of the `cpu` plans for {record['minutes']:g} min; `busy`: one other process spinning "
        "on a core. `default` is what `msgldm_train` chooses when neither OMP_NUM_THREADS nor OMP_WAIT_POLICY is "
        "set.", "",
        table, "", provenance(record["command"], record["machine"], record["date"]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--home", type=Path, required=True)
    runner.add_argument("-d", "--dataset", required=True)
    runner.add_argument("--minutes", type=float, default=1.0)
    runner.add_argument("--method", default="msgldm", choices=["msgldm", "unet"])
    runner.add_argument("--only", nargs="+", choices=list(SETTINGS), help="measure only these settings")
    sub.add_parser("write")
    args = parser.parse_args(argv)
    record = run(args) if args.command == "run" else load_results("threads")
    if args.command == "run":
        save_results("threads", record)
    replace_section("threads", section(record))
    print(section(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
