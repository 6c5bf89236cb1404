"""BraTS 2020, 2021 and 2023 (GLI) as downloaded.

Every release stores one folder per case with one file per contrast; only the names differ. All three map onto the
same channels (T1, T1ce, T2, FLAIR) and the same contiguous labels, so that a model trained on one release applies to
another. Files are recognised by their case folder, not by name alone: BraTS 2020's training case 355 ships its
segmentation as `W39_1998.09.19_Segm.nii`, which is matched because it sits in that case's folder, and reported.
Folders without a segmentation (the validation sets) go to imagesTs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dataset_conversion.common import (
    SkippedFile,
    SourceCase,
    SourceDataset,
    add_image,
    is_hidden,
    require_source_folder,
    strip_nifti_ending,
    walk_files,
)
from msgldm_auto.errors import MSGLDMError

CHANNELS = ["T1", "T1ce", "T2", "FLAIR"]
SEGMENTATION = "seg"
# Stored labels, identical for every release.
LABELS = {"background": 0, "necrotic_tumor_core": 1, "edema": 2, "enhancing_tumor": 3}


@dataclass(frozen=True)
class BratsRelease:
    kind: str
    case_folder: re.Pattern
    separator: str                     # between the case ID and the contrast suffix
    suffixes: dict[str, str]           # file suffix -> channel (or SEGMENTATION)
    label_mapping: dict[int, int]      # released label value -> stored value
    default_name: str
    description: str


RELEASES = {
    "brats2020": BratsRelease(
        "brats2020", re.compile(r"BraTS20_(Training|Validation|Testing)_\d{3}"), "_",
        {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR", "seg": SEGMENTATION},
        {0: 0, 1: 1, 2: 2, 4: 3}, "BraTS2020",
        "BraTS 2020 (labels 1 NCR/NET, 2 ED, 4 ET stored as 1, 2, 3)",
    ),
    "brats2021": BratsRelease(
        "brats2021", re.compile(r"BraTS2021_\d{5}"), "_",
        {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR", "seg": SEGMENTATION},
        {0: 0, 1: 1, 2: 2, 4: 3}, "BraTS2021",
        "BraTS 2021 (labels 1 NCR, 2 ED, 4 ET stored as 1, 2, 3)",
    ),
    "brats2023": BratsRelease(
        "brats2023", re.compile(r"BraTS-GLI-\d{5}-\d{3}"), "-",
        {"t1n": "T1", "t1c": "T1ce", "t2w": "T2", "t2f": "FLAIR", "seg": SEGMENTATION},
        {0: 0, 1: 1, 2: 2, 3: 3}, "BraTS2023GLI",
        "BraTS 2023 adult glioma (labels 1 NETC, 2 SNFH, 3 ET)",
    ),
}


def read_brats(source: Path, kind: str) -> SourceDataset:
    release = RELEASES[kind]
    root = require_source_folder(source)
    folders = _case_folders(root, release)
    if not folders:
        other = next((k for k, r in RELEASES.items() if k != kind and _case_folders(root, r)), None)
        hint = f"these look like {other}: use `msgldm_convert {other}`" if other else \
            "pass the folder that holds the extracted release"
        raise MSGLDMError(f"{root}: no {kind} case folders (e.g. {_example_folder(release)}) found below it; {hint}")
    dataset = SourceDataset(
        kind=kind, channel_names=list(CHANNELS), cases=[], labels=dict(LABELS),
        label_mapping=dict(release.label_mapping), default_name=release.default_name, description=release.description,
        patterns={ch: f"<case>{release.separator}{sfx}.nii[.gz]"
                  for sfx, ch in release.suffixes.items() if ch != SEGMENTATION},
    )
    for folder in folders:
        dataset.cases.append(_read_case_folder(folder, release, dataset))
    dataset.skipped.extend(_files_outside_cases(root, set(folders), kind))
    return dataset


def _files_outside_cases(root: Path, folders: set[Path], kind: str) -> list[SkippedFile]:
    """Release metadata (CSV files), stray downloads, sub-folders of case folders: listed, never silently dropped."""
    skipped = []
    for path in walk_files(root):
        if path.parent in folders:
            continue  # read by _read_case_folder
        owner = next((parent for parent in path.parents if parent in folders), None)
        reason = f"inside a sub-folder of case folder {owner.name}" if owner else f"not inside a {kind} case folder"
        skipped.append(SkippedFile(path, reason))
    return skipped


def _example_folder(release: BratsRelease) -> str:
    return {"brats2020": "BraTS20_Training_001", "brats2021": "BraTS2021_00000",
            "brats2023": "BraTS-GLI-00000-000"}[release.kind]


def _case_folders(root: Path, release: BratsRelease) -> list[Path]:
    candidates = [root, *(p for p in root.rglob("*") if p.is_dir())]
    folders = [p for p in candidates if release.case_folder.fullmatch(p.name) and not is_hidden(p)]
    seen: dict[str, Path] = {}
    for folder in folders:
        if folder.name in seen:
            raise MSGLDMError(f"case folder {folder.name} appears twice ({seen[folder.name]} and {folder}); remove one "
                              "copy")
        seen[folder.name] = folder
    return sorted(folders, key=lambda p: p.name)


def _read_case_folder(folder: Path, release: BratsRelease, dataset: SourceDataset) -> SourceCase:
    """Files named `<folder><sep><suffix>.nii[.gz]` first; then a leftover NIfTI named like a segmentation is the
    quirk."""
    case = SourceCase(folder.name, {})
    leftovers = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden(p)):
        stem = strip_nifti_ending(path.name)
        if stem is None:
            dataset.skipped.append(SkippedFile(path, "not a NIfTI image"))
            continue
        prefix, _, suffix = stem.rpartition(release.separator)
        role = release.suffixes.get(suffix.lower())
        if role is None:
            leftovers.append(path)
            continue
        if prefix != folder.name:
            dataset.notes.append(f"{folder.name}: {path.name} does not carry the folder's case ID; used as its "
                                 f"{role} because it sits in this case's folder")
        _assign(case, role, path)
    for path in leftovers:
        if case.label is None and "seg" in path.name.lower():
            dataset.notes.append(f"{folder.name}: segmentation file is named {path.name} instead of "
                                 f"{folder.name}{release.separator}seg; matched by its folder and used")
            case.label = path
        else:
            dataset.skipped.append(SkippedFile(path, f"unrecognised file in case folder {folder.name}"))
    return case


def _assign(case: SourceCase, role: str, path: Path) -> None:
    if role != SEGMENTATION:
        add_image(case, role, path)
    elif case.label is not None:
        raise MSGLDMError(f"case {case.case_id}: two segmentations ({case.label.name} and {path.name}); remove one")
    else:
        case.label = path
