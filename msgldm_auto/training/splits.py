"""Five-fold cross-validation splits (`splits_final.json` in the preprocessed dataset folder), nnU-Net style.

Created on first use with a fixed seed (12345) so every machine gets the same folds; a user-supplied file is used as is
(after checking that it names only known cases). Fold `all` trains on every case.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msgldm_auto.atomic import write_json_atomic
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json

SPLITS_FILE = "splits_final.json"
SPLIT_SEED = 12345
NUM_FOLDS = 5
FOLD_CHOICES = tuple(str(i) for i in range(NUM_FOLDS)) + ("all",)


@dataclass(frozen=True)
class FoldCases:
    fold: str                 # "0".."4" or "all"
    train: list[str]
    val: list[str]            # empty for fold "all"


def parse_fold(text: str | int) -> str:
    fold = str(text).strip()
    if fold not in FOLD_CHOICES:
        raise MSGLDMError(f"fold '{text}' is out of range: use 0..{NUM_FOLDS - 1} or 'all'")
    return fold


def make_splits(case_ids: list[str]) -> list[dict[str, list[str]]]:
    """Shuffle the sorted case IDs with a seeded generator and cut them into NUM_FOLDS near-equal validation sets."""
    ordered = sorted(case_ids)
    permutation = np.random.RandomState(SPLIT_SEED).permutation(len(ordered))
    chunks = np.array_split(permutation, NUM_FOLDS)
    splits = []
    for chunk in chunks:
        val = sorted(ordered[i] for i in chunk)
        held_out = set(val)
        splits.append({"train": [c for c in ordered if c not in held_out], "val": val})
    return splits


def _check_user_splits(splits: object, path: Path, known: set[str]) -> list[dict[str, list[str]]]:
    if not isinstance(splits, list) or not splits or not all(isinstance(s, dict) and "train" in s and "val" in s
                                                             for s in splits):
        raise MSGLDMError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}} objects; fix it or delete "
                          "it to regenerate")
    for index, split in enumerate(splits):
        unknown = sorted((set(split["train"]) | set(split["val"])) - known)
        if unknown:
            raise MSGLDMError(f"{path}: fold {index} names case(s) {unknown[:3]} that are not preprocessed; fix the "
                              "file or re-run preprocessing")
    return splits


def load_splits(preprocessed_folder: Path, case_ids: list[str]) -> tuple[list[dict[str, list[str]]], bool]:
    """The splits to use and whether they still need writing (True when they were generated here)."""
    path = Path(preprocessed_folder) / SPLITS_FILE
    if not path.is_file():
        return make_splits(case_ids), True
    splits = load_json(path, "fix it or delete it to regenerate")
    return _check_user_splits(splits, path, set(case_ids)), False


def write_splits(preprocessed_folder: Path, splits: list[dict[str, list[str]]]) -> Path:
    path = Path(preprocessed_folder) / SPLITS_FILE
    write_json_atomic(splits, path)
    return path


def fold_cases(splits: list[dict[str, list[str]]], fold: str, case_ids: list[str], splits_path: Path) -> FoldCases:
    if fold == "all":
        return FoldCases("all", sorted(case_ids), [])
    index = int(fold)
    if index >= len(splits):
        raise MSGLDMError(f"{splits_path}: has {len(splits)} folds, so fold {fold} does not exist; use "
                          f"0..{len(splits) - 1} or 'all'")
    train, val = sorted(splits[index]["train"]), sorted(splits[index]["val"])
    if not train:
        raise MSGLDMError(f"{splits_path}: fold {fold} has no training cases; add cases or use fold 'all'")
    if set(train) & set(val):
        raise MSGLDMError(f"{splits_path}: fold {fold} lists {sorted(set(train) & set(val))[:3]} in both train and "
                          "val; fix the file")
    return FoldCases(fold, train, val)
