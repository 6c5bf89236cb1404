"""Shared helpers of the benchmark scripts: the machine line, summary statistics, markdown tables, stored results and
the marked sections of documentation/benchmarks.md that each script owns.

Run every script from the repository root as a module of this package (`python -m benchmarks.<name>`).
A script stores its raw numbers in `benchmarks/results/<name>.json` (so a table can be re-rendered and reviewed
without rerunning hours of CPU work) and writes its tables between `<!-- <section>:start -->` and
`<!-- <section>:end -->` in the document, replacing only that block.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
DOCUMENT = REPO / "documentation" / "benchmarks.md"
RESULTS = REPO / "benchmarks" / "results"


def today() -> str:
    return time.strftime("%Y-%m-%d")


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads: int | None = None, device: str | None = None) -> str:
    """One line naming the hardware and software a table was measured with."""
    import torch

    threads = threads if threads is not None else torch.get_num_threads()
    where = device or f"{cpu_name()}, {os.cpu_count()} cores, torch using {threads} thread(s)"
    # The 1-minute load when the record was made (the benchmark's own threads included): above them, others shared it.
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") and not device else ""
    return f"{where}{load}; torch {torch.__version__}, Python {platform.python_version()}"


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values (NaN when none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, 0
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return mean, 0.0, 1
    variance = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance), len(finite)


def fmt_mean_std(values: Iterable[float], digits: int = 2, signed: bool = False) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return "–"
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_summary_means(path: Path) -> dict:
    """What the comparison tables need of an `msgldm_evaluate` summary.json: the per-modality and overall means."""
    summary = json.loads(Path(path).read_text())
    return {"per_modality": summary["per_modality"], "mean": summary["mean"]}


def trained_iterations(model_folder: Path, fold: str, stages: Sequence[str] | None = None) -> dict[str, int]:
    """Iterations each stage of a trained fold reached, as its final checkpoint records them (every stage found, or
    those of `stages` that exist)."""
    import torch

    found = {}
    for path in sorted(Path(model_folder, f"fold_{fold}").glob("*/checkpoint_final.pth")):
        stage = path.parent.name
        if stages is None or stage in stages:
            found[stage] = int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])
    return found


def provenance(command: str, machine: str, date: str | None = None, extra: str = "") -> str:
    """The line under every table: machine, command and date (issue 8 asks for all three beside each table)."""
    text = f"*Machine:* {machine}. *Command:* `{command}`. *Date:* {date or today()}."
    return text + (f" {extra}" if extra else "")


def validation_provenance(record: dict) -> str:
    """The provenance line of a table validated on held-out cases of a trained fold (bench_modes, bench_refine)."""
    iterations = ", ".join(f"{stage} {count}" for stage, count in record["iterations"].items())
    return provenance(record["command"], record["machine"], record["date"],
                      f"Iterations trained: {iterations}; {record['max_cases']} held-out case(s).")


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_results(name: str, data: Any, folder: Path = RESULTS) -> Path:
    path = Path(folder) / f"{name}.json"
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=_plain))
    return path


@contextlib.contextmanager
def results_lock(name: str):
    """Hold an exclusive lock on `name`'s results while reading, extending and saving them: two benchmark runs side by
    side (the levers, two at a time) that finish together would otherwise each save what they read, losing a row."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / f"msgldm_benchmarks_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_results(name: str, folder: Path = RESULTS) -> Any:
    path = Path(folder) / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no stored results; run the benchmark that produces them first")
    return json.loads(path.read_text())


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths; NaN stays NaN (json writes it), callers filter it."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def replace_section(section: str, body: str, document: Path = DOCUMENT) -> None:
    """Put `body` between the section's markers, replacing what was there (appended at the end the first time)."""
    start, end = markers(section)
    content = document.read_text() if document.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in content and end in content and content.index(start) < content.index(end):
        content = content[: content.index(start)] + block + content[content.index(end) + len(end):]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    write_atomic(document, content)


def home_environment(home: Path, threads: int | None = None) -> dict[str, str]:
    """The environment of a user's command with every root under `home` (and `OMP_NUM_THREADS` when given); this
    process is pointed at `home` too, so the product's path functions resolve the same roots."""
    env = dict(os.environ, MSGLDM_HOME=str(home))
    for name in ("MSGLDM_RAW", "MSGLDM_PREPROCESSED", "MSGLDM_RESULTS"):
        env.pop(name, None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    os.environ.update(MSGLDM_HOME=str(home))
    return env


def run_command(argv: list[str], env: dict[str, str]) -> float:
    """Run one of the user's commands in its own process (echoed, failing loudly); its wall-clock seconds."""
    started = time.monotonic()
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, env=env, check=True)
    return time.monotonic() - started


def tool(name: str) -> str:
    """The installed console script `name` of this environment."""
    return str(Path(sys.executable).parent / name)
