"""Atomic file writes: a temporary file beside the target, then a rename, so a reader or a crash never sees half a file."""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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
