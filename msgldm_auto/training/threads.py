"""How many CPU threads torch trains with: measured at start, because a shared machine changes the answer.

On 2 idle cores, 2 threads train the `cpu` plans 1.46x faster than 1; beside one other busy process, 2 threads train
2.4x slower than 1, because every parallel region waits for the thread the other process has descheduled (passive
OpenMP waits do not help, and slow the idle case down). So when the user has not set OMP_NUM_THREADS, a short probe
times a training-sized convolution with each candidate thread count and keeps the fastest
(documentation/benchmarks.md, threads).
"""
from __future__ import annotations

import os
import time

import torch

PROBE_REPEATS = 20          # ~0.1 s per candidate on 2 cores: several scheduler slices, so a busy neighbour shows


def candidate_threads(cores: int, world_size: int) -> list[int]:
    """All the cores this rank may use (at most 8), half of them, and one: the counts worth probing."""
    most = max(1, min(8, cores // max(world_size, 1)))
    return sorted({most, max(1, most // 2), 1}, reverse=True)


def probe_seconds(threads: int) -> float:
    """Seconds per forward+backward of a small convolution layer with `threads` threads (after one warm-up)."""
    torch.set_num_threads(threads)
    layer = torch.nn.Conv2d(32, 32, 3, padding=1)
    batch = torch.randn(8, 32, 56, 64)
    layer(batch).sum().backward()
    started = time.perf_counter()
    for _ in range(PROBE_REPEATS):
        layer(batch).sum().backward()
    return (time.perf_counter() - started) / PROBE_REPEATS


def choose_torch_threads(world_size: int = 1, device: str = "cpu") -> str:
    """Set torch's thread count unless OMP_NUM_THREADS is set; return one line saying what was chosen and why."""
    if "OMP_NUM_THREADS" in os.environ:
        return f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS)"
    candidates = candidate_threads(os.cpu_count() or 1, world_size)
    if device != "cpu" or len(candidates) == 1:
        torch.set_num_threads(candidates[0])     # on a GPU the CPU threads only feed it; no probe needed
        return f"torch threads: {candidates[0]}"
    timings = {threads: probe_seconds(threads) for threads in candidates}
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    measured = ", ".join(f"{t}: {1000 * s:.0f} ms" for t, s in timings.items())
    return f"torch threads: {best}, the fastest of a probe ({measured}); set OMP_NUM_THREADS to choose"
