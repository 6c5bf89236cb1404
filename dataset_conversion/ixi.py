"""IXI: `IXI-T1/`, `IXI-T2/`, `IXI-PD/` with files such as `IXI002-Guys-0828-T2.nii.gz`.

T2 and PD come from one dual-echo acquisition and share a grid; T1 is a separate (sagittal) acquisition on another
grid, so it is rigidly registered to T2 (mutual information, multi-resolution; see registration.py) and resampled onto
the T2 grid by the writer. PD is the reference when T2 is absent. Subjects with only some contrasts are kept.
"""
from __future__ import annotations

import re
from pathlib import Path

from dataset_conversion.common import (
    SkippedFile,
    SourceCase,
    SourceDataset,
    add_image,
    require_source_folder,
    walk_files,
)
from msgldm_auto.errors import MSGLDMError

CHANNELS = ["T1", "T2", "PD"]
REFERENCE_ORDER = ["T2", "PD"]  # the shared dual-echo grid
FILE_NAME = re.compile(r"(IXI\d{3}-[A-Za-z]+-\d+)-([A-Za-z0-9]+)(-\d+)?\.nii(\.gz)?")


def read_ixi(source: Path) -> SourceDataset:
    root = require_source_folder(source)
    dataset = SourceDataset(
        kind="ixi", channel_names=list(CHANNELS), cases=[], default_name="IXI",
        description="IXI (T1 rigidly registered to and resampled onto the T2/PD grid)",
        patterns={ch: f"IXI-{ch}/<subject>-{ch}.nii.gz" for ch in CHANNELS},
    )
    cases: dict[str, SourceCase] = {}
    for path in walk_files(root):
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            dataset.skipped.append(SkippedFile(path,
                                               "name does not look like IXI<nnn>-<site>-<nnnn>-<contrast>.nii.gz"))
        elif match.group(2) not in CHANNELS or match.group(3):
            dataset.skipped.append(SkippedFile(path,
                                               f"IXI contrast {match.group(2)} is not converted (T1, T2, PD only)"))
        else:
            case = cases.setdefault(match.group(1), SourceCase(match.group(1), {}))
            add_image(case, match.group(2), path)
    if not cases:
        raise MSGLDMError(f"{root}: no IXI images (e.g. IXI-T2/IXI002-Guys-0828-T2.nii.gz) found below it; "
                          "pass the folder that holds IXI-T1/, IXI-T2/ and IXI-PD/")
    for case_id in sorted(cases):
        case = cases[case_id]
        case.register_onto = next((ch for ch in REFERENCE_ORDER if ch in case.images), None)
        dataset.cases.append(case)
    return dataset
