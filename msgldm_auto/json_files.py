"""Reading the project's JSON files (dataset.json, plans, fingerprint, splits, properties, predictions.json).

A missing or corrupt file is a user error: one line naming the file, what is wrong and the fix, never a traceback.
Writing goes through `msgldm_auto.atomic.write_json_atomic`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msgldm_auto.errors import MSGLDMError


def load_json(path: Path | str, fix: str, missing: str = "file not found") -> Any:
    """The parsed content of `path`; a missing file raises `{path}: {missing}; {fix}`, a corrupt one
    `{path}: not valid JSON (where); {fix}`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MSGLDMError(f"{path}: {missing}; {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MSGLDMError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); {fix}") from None
    except UnicodeDecodeError:
        raise MSGLDMError(f"{path}: not valid JSON (not UTF-8 text); {fix}") from None
