"""Preprocessed cases on disk: `CASE.b2nd` (blosc2, float32, (P, Z, H, W), one slice per chunk), `CASE_seg.b2nd`
(uint8, (Z, H, W)) and `CASE.json` (the case's `CaseProperties`, msgldm_auto/preprocessing/properties.py).

The JSON is written last, each file under a temporary name first and then renamed, so a case whose JSON exists is
complete: an interrupted run never leaves a half-written case that a later run would skip. Loading is lazy: `data` and
`seg` are blosc2 arrays whose slicing decompresses only the chunks (slices) asked for.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from msgldm_auto.atomic import atomic_path, write_text_atomic
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json
from msgldm_auto.preprocessing.properties import CaseProperties

DATA_SUFFIX = ".b2nd"
SEG_SUFFIX = "_seg.b2nd"
PROPERTIES_SUFFIX = ".json"


@dataclass
class PreprocessedCase:
    case_id: str
    data: Any                      # (P, Z, H, W) float32; blosc2.NDArray (lazy) or np.ndarray
    present: list[int]             # channel id of each row of `data`
    seg: Any | None                # (Z, H, W) uint8 or None
    properties: CaseProperties

    @property
    def foreground_slices(self) -> list[int]:
        """Slices with head voxels: the ones training reads."""
        return self.properties.foreground_slices


def save_case(folder: Path, case_id: str, data: np.ndarray, present: list[int], seg: np.ndarray | None,
              properties: CaseProperties) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim != 4 or data.shape[0] != len(present):
        raise ValueError(f"{case_id}: data of shape {data.shape} does not hold {len(present)} present modalities as "
                         "(P, Z, H, W)")
    properties = dataclasses.replace(properties, present=[int(c) for c in present])
    (folder / f"{case_id}{PROPERTIES_SUFFIX}").unlink(missing_ok=True)  # the case is incomplete until the JSON is back
    _write_array(folder / f"{case_id}{DATA_SUFFIX}", data)
    seg_path = folder / f"{case_id}{SEG_SUFFIX}"
    if seg is not None:
        _write_array(seg_path, np.ascontiguousarray(seg, dtype=np.uint8))
    else:
        seg_path.unlink(missing_ok=True)
    write_text_atomic(folder / f"{case_id}{PROPERTIES_SUFFIX}", json.dumps(properties.to_dict(), indent=1))


def load_case(folder: Path, case_id: str) -> PreprocessedCase:
    """The case's arrays open lazily (blosc2): a loader decompresses only the slices it indexes."""
    folder = Path(folder)
    properties_path = folder / f"{case_id}{PROPERTIES_SUFFIX}"
    properties = read_properties(properties_path)
    data = _read_array(folder / f"{case_id}{DATA_SUFFIX}")
    seg_path = folder / f"{case_id}{SEG_SUFFIX}"
    seg = _read_array(seg_path) if seg_path.is_file() else None
    return PreprocessedCase(case_id, data, list(properties.present), seg, properties)


def read_properties(path: Path) -> CaseProperties:
    """A `CASE.json`; one that this version cannot read (another version wrote it, or it is damaged) is an error that
    names the file and the command that rewrites it."""
    path = Path(path)
    if not path.is_file():
        raise MSGLDMError(f"{path}: preprocessed case not found; run msgldm_plan_and_preprocess (or msgldm_preprocess) "
                          "first")
    rewrite = f"re-run msgldm_plan_and_preprocess -d {_dataset_of(path)} --clean"
    data = load_json(path, f"it was damaged: {rewrite}")
    try:
        return CaseProperties.from_dict(data)
    except MSGLDMError as err:
        raise MSGLDMError(f"{path}: {err}; it was written by another version of msgldm_auto or damaged: "
                          f"{rewrite}") from None


def _dataset_of(properties_path: Path) -> str:
    """The dataset to name in the fix: preprocessed cases live in MSGLDM_PREPROCESSED/DatasetXXX_Name/CONFIG/."""
    name = properties_path.parent.parent.name
    return name if name.startswith("Dataset") else "DATASET"


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
        raise MSGLDMError(f"{path}: missing; the preprocessed case is incomplete, re-run msgldm_preprocess with "
                          "--clean")
    return blosc2.open(str(path), mode="r")

