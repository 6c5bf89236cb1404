"""Case discovery. A missing file means a missing modality (DESIGN.md §3)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from msgldm_auto.dataset.dataset_json import DatasetJson


@dataclass
class Case:
    case_id: str
    images: dict[int, Path]          # channel id -> file, present modalities only
    missing: list[int]               # channel ids without a file
    label: Path | None = None

    @property
    def present(self) -> list[int]:
        return sorted(self.images)


@dataclass
class Stray:
    """A file in an image folder that does not fit `{CASE}_{CHANNEL:04d}{file_ending}`."""
    path: Path
    reason: str


def split_image_name(filename: str, file_ending: str) -> tuple[str, int] | None:
    """`BraTS_001_0002.nii.gz` -> ("BraTS_001", 2); None when the name does not follow the convention."""
    if not filename.endswith(file_ending):
        return None
    match = re.fullmatch(r"(.+)_(\d{4})", filename[: -len(file_ending)])
    return (match.group(1), int(match.group(2))) if match else None


def image_file_name(case_id: str, channel: int, file_ending: str) -> str:
    return f"{case_id}_{channel:04d}{file_ending}"


# Std maps live in a subfolder of the predictions, so that nnU-Net never reads them as channels.
UNCERTAINTY_FOLDER = "uncertainty"


def std_map_path(case_id: str, channel: int, file_ending: str) -> str:
    """Where `msgldm_predict --save-std` writes a synthesized channel's std map, relative to the output folder."""
    return f"{UNCERTAINTY_FOLDER}/{case_id}_{channel:04d}_std{file_ending}"


def discover_cases(images_dir: Path, dataset: DatasetJson,
                   labels_dir: Path | None = None) -> tuple[list[Case], list[Stray]]:
    """All cases in `images_dir` (sorted by ID) plus the files that could not be read as a case's channel."""
    images_dir = Path(images_dir)
    grouped: dict[str, dict[int, Path]] = {}
    strays: list[Stray] = []
    if images_dir.is_dir():
        for path in sorted(images_dir.iterdir()):
            if path.name.startswith("."):
                continue
            parsed = split_image_name(path.name, dataset.file_ending)
            if parsed is None:
                strays.append(Stray(path, f"name does not match {{CASE}}_{{CHANNEL:04d}}{dataset.file_ending}"))
            elif parsed[1] not in dataset.channel_names:
                strays.append(Stray(path,
                                    f"channel {parsed[1]} is not in channel_names {sorted(dataset.channel_names)}"))
            else:
                grouped.setdefault(parsed[0], {})[parsed[1]] = path
    cases = [_make_case(case_id, files, dataset, labels_dir) for case_id, files in sorted(grouped.items())]
    return cases, strays


def discover_explicit_cases(root: Path, dataset: DatasetJson) -> list[Case]:
    """nnU-Net v2's optional `dataset` dict: {case: {"images": [paths in channel order], "label": path}}."""
    cases = []
    for case_id, entry in sorted((dataset.explicit_files or {}).items()):
        files = {ch: root / p for ch, p in zip(dataset.channel_ids, entry.get("images", []))
                 if p and (root / p).exists()}
        label = root / entry["label"] if entry.get("label") else None
        cases.append(Case(case_id, files, [c for c in dataset.channel_ids if c not in files], label))
    return cases


def _make_case(case_id: str, files: dict[int, Path], dataset: DatasetJson, labels_dir: Path | None) -> Case:
    label = None
    if labels_dir is not None:
        candidate = Path(labels_dir) / f"{case_id}{dataset.file_ending}"
        label = candidate if candidate.exists() else None
    return Case(case_id, dict(sorted(files.items())), [c for c in dataset.channel_ids if c not in files], label)


def training_cases(dataset_folder: Path, dataset: DatasetJson | None = None) -> list[Case]:
    """Cases of `imagesTr` (or of the explicit `dataset` dict), with labels from `labelsTr` when present."""
    dataset_folder = Path(dataset_folder)
    dataset = dataset or DatasetJson.load(dataset_folder / "dataset.json")
    if dataset.explicit_files:
        return discover_explicit_cases(dataset_folder, dataset)
    cases, _ = discover_cases(dataset_folder / "imagesTr", dataset, dataset_folder / "labelsTr")
    return cases
