"""Import an nnU-Net v2 raw dataset folder (`DatasetXXX_Name/` with dataset.json, imagesTr, labelsTr, imagesTs).

`channel_names`, `labels`, `file_ending` and any further dataset.json keys are kept; files are linked or copied under
the new ID. A dataset that lists its files explicitly (nnU-Net's `dataset` key) is brought into the standard layout.
imagesTs stays imagesTs.
"""
from __future__ import annotations

from pathlib import Path

from dataset_conversion.common import SkippedFile, SourceCase, SourceDataset, require_source_folder, walk_files
from msgldm_auto.dataset.cases import Case, discover_cases, discover_explicit_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.paths import DATASET_NAME_PATTERN


def read_nnunet(source: Path) -> SourceDataset:
    root = require_source_folder(source)
    if not (root / "dataset.json").is_file():
        raise MSGLDMError(f"{root}: no dataset.json; pass an nnU-Net v2 raw dataset folder such as .../Dataset001_Name")
    meta = DatasetJson.load(root / "dataset.json")
    match = DATASET_NAME_PATTERN.match(root.name)
    dataset = SourceDataset(
        kind="nnunet", channel_names=meta.modalities, cases=[], labels=meta.labels, label_mapping=None,
        file_ending=meta.file_ending, description=meta.description or f"imported from nnU-Net dataset {root.name}",
        default_name=match.group(2) if match else "Imported", extra_json=dict(meta.extra),
        patterns={name: f"images*/<case>_{ch:04d}{meta.file_ending}"
                  for ch, name in sorted(meta.channel_names.items())},
    )
    if meta.explicit_files:
        training, test = discover_explicit_cases(root, meta), []
    else:
        training, strays = discover_cases(root / "imagesTr", meta, root / "labelsTr")
        test, test_strays = discover_cases(root / "imagesTs", meta, root / "labelsTs")
        dataset.skipped.extend(SkippedFile(s.path, s.reason) for s in [*strays, *test_strays])
    dataset.cases = [_source_case(c, meta, None) for c in training] + [_source_case(c, meta, "Ts") for c in test]
    if not dataset.cases:
        raise MSGLDMError(f"{root}: no cases in imagesTr or imagesTs named <case>_<channel:04d>{meta.file_ending}")
    dataset.skipped.extend(_unused_files(root, dataset))
    return dataset


def _source_case(case: Case, meta: DatasetJson, split: str | None) -> SourceCase:
    images = {meta.channel_names[ch]: path for ch, path in case.images.items()}
    return SourceCase(case.case_id, images, case.label, split=split)


def _unused_files(root: Path, dataset: SourceDataset) -> list[SkippedFile]:
    used = {root / "dataset.json"}
    used.update(p for c in dataset.cases for p in c.images.values())
    used.update(c.label for c in dataset.cases if c.label is not None)
    used.update(s.path for s in dataset.skipped)
    return [SkippedFile(p, "not part of the nnU-Net raw layout (labels without images, extra files)")
            for p in walk_files(root) if p not in used]
