"""MICCAI 2017 White Matter Hyperintensity challenge: `<site>/<id>/pre/{T1,FLAIR}.nii.gz` and `<site>/<id>/wmh.nii.gz`.

Sites are sub-folders (`Utrecht/`, `Singapore/`, `GE3T/`, or nested such as `Amsterdam/GE1T5/` in the test release);
the case ID is `<site>_<id>` with the innermost site folder. The `pre/` images are already on the FLAIR grid, so they
are used; `orig/` (original space) is listed as skipped. Labels: 1 = WMH, 2 = other pathology.
"""
from __future__ import annotations

from pathlib import Path

from dataset_conversion.common import (
    SkippedFile,
    SourceCase,
    SourceDataset,
    require_source_folder,
    safe_case_id,
    walk_files,
)
from msgldm_auto.errors import MSGLDMError

CHANNEL_FILES = {"T1": "T1.nii.gz", "FLAIR": "FLAIR.nii.gz"}
LABEL_FILE = "wmh.nii.gz"
LABELS = {"background": 0, "wmh": 1, "other_pathology": 2}


def read_wmh(source: Path) -> SourceDataset:
    root = require_source_folder(source)
    case_folders = sorted({p.parent.parent for name in CHANNEL_FILES.values() for p in root.rglob(f"pre/{name}")})
    if not case_folders:
        raise MSGLDMError(f"{root}: no WMH 2017 case folders (<site>/<id>/pre/FLAIR.nii.gz) found below it; "
                          "pass the folder that holds the site folders")
    dataset = SourceDataset(
        kind="wmh2017", channel_names=list(CHANNEL_FILES), cases=[], labels=dict(LABELS),
        label_mapping={v: v for v in LABELS.values()}, default_name="WMH2017",
        description="MICCAI 2017 WMH segmentation challenge (1 = WMH, 2 = other pathology)",
        patterns={ch: f"<site>/<id>/pre/{name}" for ch, name in CHANNEL_FILES.items()},
    )
    used: set[Path] = set()
    seen: dict[str, Path] = {}
    for folder in case_folders:
        case = _read_case(folder, root)
        if case.case_id in seen:
            raise MSGLDMError(f"case {case.case_id} appears twice ({seen[case.case_id]} and {folder}); remove one copy")
        seen[case.case_id] = folder
        dataset.cases.append(case)
        used.update(case.images.values())
        if case.label is not None:
            used.add(case.label)
    dataset.skipped.extend(_skipped(root, used, set(case_folders)))
    return dataset


def _read_case(folder: Path, root: Path) -> SourceCase:
    site = folder.parent.name if folder.parent != root else ""
    case_id = safe_case_id(f"{site}_{folder.name}" if site else folder.name)
    images = {ch: folder / "pre" / name for ch, name in CHANNEL_FILES.items() if (folder / "pre" / name).is_file()}
    label = folder / LABEL_FILE
    return SourceCase(case_id, images, label if label.is_file() else None)


def _skipped(root: Path, used: set[Path], case_folders: set[Path]) -> list[SkippedFile]:
    skipped = []
    for path in walk_files(root):
        if path in used:
            continue
        relative_parts = path.relative_to(root).parts
        if "orig" in relative_parts:
            reason = "original-space image; the registered pre/ version is used"
        elif path.parent.parent in case_folders and path.parent.name == "pre":
            reason = "not one of pre/T1.nii.gz, pre/FLAIR.nii.gz"
        else:
            reason = "not part of the WMH 2017 layout"
        skipped.append(SkippedFile(path, reason))
    return skipped
