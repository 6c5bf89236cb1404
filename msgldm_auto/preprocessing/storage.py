"""Preprocessed cases on disk: `CASE.b2nd` (blosc2, float32, (P, Z, H, W), one slice per chunk), `CASE_seg.b2nd`
(uint8, (Z, H, W)) and `CASE.json` (properties).

The JSON is written last, each file under a temporary name first and then renamed, so a case whose JSON exists is
complete: an interrupted run never leaves a half-written case that a later run would skip. Loading is lazy: `data` and
`seg` are blosc2 arrays whose slicing decompresses only the chunks (slices) asked for.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from msgldm_auto.atomic import atomic_path, write_text_atomic
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json

DATA_SUFFIX = ".b2nd"
SEG_SUFFIX = "_seg.b2nd"
PROPERTIES_SUFFIX = ".json"


@dataclass
class PreprocessedCase:
    case_id: str
    data: Any                      # (P, Z, H, W) float32; blosc2.NDArray (lazy) or np.ndarray
    present: list[int]             # channel id of each row of `data`
    seg: Any | None                # (Z, H, W) uint8 or None
    properties: dict[str, Any]


def save_case(folder: Path, case_id: str, data: np.ndarray, present: list[int], seg: np.ndarray | None,
              properties: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim != 4 or data.shape[0] != len(present):
        raise ValueError(f"{case_id}: data of shape {data.shape} does not hold {len(present)} present modalities as (P, Z, H, W)")
    properties = {**properties, "present": [int(c) for c in present]}
    (folder / f"{case_id}{PROPERTIES_SUFFIX}").unlink(missing_ok=True)  # the case is incomplete until the JSON is back
    _write_array(folder / f"{case_id}{DATA_SUFFIX}", data)
    seg_path = folder / f"{case_id}{SEG_SUFFIX}"
    if seg is not None:
        _write_array(seg_path, np.ascontiguousarray(seg, dtype=np.uint8))
    else:
        seg_path.unlink(missing_ok=True)
    write_text_atomic(folder / f"{case_id}{PROPERTIES_SUFFIX}", json.dumps(properties, indent=1))


def load_case(folder: Path, case_id: str) -> PreprocessedCase:
    """The case's arrays open lazily (blosc2): a loader decompresses only the slices it indexes."""
    folder = Path(folder)
    properties_path = folder / f"{case_id}{PROPERTIES_SUFFIX}"
    properties = load_json(properties_path, "run msgldm_plan_and_preprocess (or msgldm_preprocess) first",
                           missing="preprocessed case not found")
    data = _read_array(folder / f"{case_id}{DATA_SUFFIX}")
    seg_path = folder / f"{case_id}{SEG_SUFFIX}"
    seg = _read_array(seg_path) if seg_path.is_file() else None
    return PreprocessedCase(case_id, data, [int(c) for c in properties["present"]], seg, properties)


def list_cases(folder: Path) -> list[str]:
    """IDs of the complete cases in a preprocessed folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(PROPERTIES_SUFFIX)] for p in folder.glob(f"*{PROPERTIES_SUFFIX}")
                  if (folder / (p.name[: -len(PROPERTIES_SUFFIX)] + DATA_SUFFIX)).is_file())


def _write_array(path: Path, array: np.ndarray) -> None:
    # One slice per chunk: a loader that wants slice z (and its 2.5D neighbours) decompresses only those.
    chunks = (*array.shape[:-3], 1, *array.shape[-2:]) if array.ndim >= 3 else array.shape
    with atomic_path(path, suffix=DATA_SUFFIX) as tmp:  # blosc2 needs the .b2nd ending
        blosc2.asarray(array, urlpath=str(tmp), mode="w", chunks=chunks, blocks=chunks,
                       cparams={"codec": blosc2.Codec.ZSTD, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE]})


def _read_array(path: Path) -> Any:
    if not path.is_file():
        raise MSGLDMError(f"{path}: missing; the preprocessed case is incomplete, re-run msgldm_preprocess with --clean")
    return blosc2.open(str(path), mode="r")

