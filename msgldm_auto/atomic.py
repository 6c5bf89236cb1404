"""Atomic writes: a temporary file (or folder) beside the target, then a rename, so a reader or a crash never sees half
a file or half a folder under the final name."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a hidden temporary path in the target's folder; on success it replaces `path`, on error it is removed.

    `suffix` keeps writers that choose a format by the file ending (SimpleITK, blosc2) working on the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(data: Any, path: Path | str) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))


@contextmanager
def staged_folder(target: Path | str, replaces: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a new hidden folder beside `target` to fill; on success it takes `target`'s place (an existing `target`
    and the `replaces` folders are removed), on error it is deleted and nothing else has changed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.incomplete-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        swap_folder_into_place(staging, target, replaces)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def swap_folder_into_place(staging: Path, target: Path, replaces: Sequence[Path] = ()) -> None:
    """Rename `staging` to `target`. The old folders (`target` if it exists, and `replaces`) are renamed aside first
    and deleted only once the new folder is in; if the swap fails they are put back."""
    old = [p for p in dict.fromkeys([*map(Path, replaces), target]) if p.exists()]
    moved: list[tuple[Path, Path]] = []
    try:
        for folder in old:
            aside = folder.parent / f".{folder.name}.replaced-{uuid.uuid4().hex[:8]}"
            os.replace(folder, aside)
            moved.append((folder, aside))
        os.replace(staging, target)
    except BaseException:
        for folder, aside in reversed(moved):
            os.replace(aside, folder)
        raise
    for _, aside in moved:
        shutil.rmtree(aside, ignore_errors=True)
