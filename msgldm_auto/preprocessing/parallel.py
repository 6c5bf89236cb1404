"""Run one function over many cases in worker processes, with a progress bar; a failing case is reported, not fatal.

Workers are spawned (not forked): the parent may hold threads (tqdm, torch) that fork would copy in a broken state.
With one process everything runs inline, which is what tests and debuggers want.
"""
from __future__ import annotations

import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Iterator

from tqdm import tqdm

from msgldm_auto.errors import MSGLDMError


@dataclass
class Outcome:
    name: str                 # the case ID
    result: Any = None
    error: str | None = None  # one line for the user; None on success
    bug: bool = False         # True when the error was not a MSGLDMError (the message then carries a traceback)


def _guarded(func: Callable[..., Any], name: str, args: tuple) -> Outcome:
    try:
        return Outcome(name, func(*args))
    except MSGLDMError as err:
        return Outcome(name, error=str(err))
    except Exception as err:  # a bug or a corrupt file: report it with the case and keep going with the others
        return Outcome(name, error=f"{type(err).__name__}: {err}\n{traceback.format_exc()}", bug=True)


def parallel_map(func: Callable[..., Any], jobs: list[tuple[str, tuple]], num_processes: int,
                 description: str) -> Iterator[Outcome]:
    """Yield an `Outcome` per (name, args) job as it finishes."""
    progress = tqdm(total=len(jobs), desc=description, unit="case", disable=None)
    try:
        if num_processes <= 1 or len(jobs) <= 1:
            for name, args in jobs:
                yield _guarded(func, name, args)
                progress.update()
            return
        with ProcessPoolExecutor(max_workers=min(num_processes, len(jobs)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_guarded, func, name, args) for name, args in jobs]
            for future in as_completed(futures):
                yield future.result()
                progress.update()
    finally:
        progress.close()


def failure_summary(failures: list[Outcome], what: str) -> str:
    """One line naming every failed case and the first reason."""
    names = ", ".join(sorted(f.name for f in failures))
    first = failures[0].error.splitlines()[0] if failures[0].error else ""
    return f"{what} failed for {len(failures)} case(s): {names} (first: {first})"
