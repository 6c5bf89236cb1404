"""Data roots, resolved lazily from the environment on every call (no module-level state).

MSGLDM_RAW, MSGLDM_PREPROCESSED and MSGLDM_RESULTS each default to $MSGLDM_HOME/{raw,preprocessed,results};
MSGLDM_HOME defaults to ~/msgldm_data. We never fail with "variable not set": a missing folder is created when written.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from msgldm_auto.errors import MSGLDMError

_ROOT_VARIABLES = {"raw": "MSGLDM_RAW", "preprocessed": "MSGLDM_PREPROCESSED", "results": "MSGLDM_RESULTS"}
DATASET_NAME_PATTERN = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")


def msgldm_home() -> Path:
    return Path(os.environ.get("MSGLDM_HOME", Path.home() / "msgldm_data")).expanduser()


def _root(kind: str) -> Path:
    value = os.environ.get(_ROOT_VARIABLES[kind])
    return Path(value).expanduser() if value else msgldm_home() / kind


def raw_root() -> Path:
    return _root("raw")


def preprocessed_root() -> Path:
    return _root("preprocessed")


def results_root() -> Path:
    return _root("results")


@dataclass(frozen=True)
class Roots:
    raw: Path
    preprocessed: Path
    results: Path

    def describe(self) -> str:
        return f"data roots: raw={self.raw}  preprocessed={self.preprocessed}  results={self.results}"


def roots() -> Roots:
    return Roots(raw_root(), preprocessed_root(), results_root())


def datasets_with_id(dataset_id: int, search_roots: list[Path]) -> list[Path]:
    """Every `DatasetXXX_*` folder with this ID in `search_roots`: the one scan behind ID lookups and clash checks."""
    prefix = f"Dataset{int(dataset_id):03d}_"
    return [p for root in search_roots if root.is_dir() for p in sorted(root.glob(prefix + "*")) if p.is_dir()]


def dataset_name_from_id(dataset_id: int) -> str:
    """Find `DatasetXXX_*` for an integer ID in any of the three roots (raw first)."""
    prefix = f"Dataset{int(dataset_id):03d}_"
    candidates = {p.name for p in datasets_with_id(dataset_id, [raw_root(), preprocessed_root(), results_root()])}
    if not candidates:
        raise MSGLDMError(
            f"no dataset with ID {int(dataset_id)} ({prefix}*) in {raw_root()}, {preprocessed_root()} or "
            f"{results_root()}: set MSGLDM_RAW/MSGLDM_HOME to where your datasets are, or create one with "
            "msgldm_convert / msgldm_make_demo_dataset"
        )
    if len(candidates) > 1:
        raise MSGLDMError(f"dataset ID {int(dataset_id)} is ambiguous ({', '.join(sorted(candidates))}): rename one of "
                          "them")
    return candidates.pop()


def resolve_dataset_name(identifier: str | int) -> str:
    """Accept `1`, `"001"` or `"Dataset001_Name"` and return the full dataset name."""
    text = str(identifier).strip()
    if text.isdigit():
        return dataset_name_from_id(int(text))
    if DATASET_NAME_PATTERN.match(text):
        return text
    raise MSGLDMError(f"'{text}' is neither a dataset ID (e.g. 1) nor a dataset name (e.g. Dataset001_BraTS2020)")


def make_dataset_name(dataset_id: int, name: str) -> str:
    if not 0 <= int(dataset_id) <= 999:
        raise MSGLDMError(f"dataset ID {dataset_id} is out of range: use 0..999")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise MSGLDMError(f"dataset name '{name}' may only contain letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def raw_dataset_folder(identifier: str | int) -> Path:
    return raw_root() / resolve_dataset_name(identifier)


def preprocessed_dataset_folder(identifier: str | int) -> Path:
    return preprocessed_root() / resolve_dataset_name(identifier)


def results_dataset_folder(identifier: str | int) -> Path:
    return results_root() / resolve_dataset_name(identifier)
