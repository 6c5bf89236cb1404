"""Materialize a `SourceDataset` as `MSGLDM_RAW/DatasetXXX_Name/`, all or nothing.

Everything is written into a hidden temporary folder next to the target and renamed into place only at the very end,
so an interrupted or failed conversion leaves no half-written dataset. The source is only ever read (or linked to).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from dataset_conversion.common import SourceCase, SourceDataset
from dataset_conversion.registration import RigidRegistrationSettings, register_and_resample
from dataset_conversion.summary import LOG_NAME
from msgldm_auto.atomic import staged_folder
from msgldm_auto.dataset.cases import image_file_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import read_image, read_image_header, write_image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.paths import datasets_with_id, make_dataset_name, raw_root

COPY, LINK = "copy", "link"
MIN_TRAINING_MODALITIES = 2  # DESIGN.md §3: a training case needs at least two modalities


@dataclass
class WriteOptions:
    dataset_id: int
    name: str
    mode: str = COPY
    overwrite: bool = False
    registration: RigidRegistrationSettings = field(default_factory=RigidRegistrationSettings)


@dataclass
class ConversionResult:
    dataset_folder: Path
    training_cases: list[str] = field(default_factory=list)
    test_cases: list[str] = field(default_factory=list)
    files_by_channel: dict[str, int] = field(default_factory=dict)
    labels_written: int = 0
    # what the writer decided per case (moved to imagesTs, registered...)
    notes: list[str] = field(default_factory=list)


def target_folder(options: WriteOptions, source_root: Path | None = None) -> Path:
    """The dataset folder to create, after refusing what would clash with existing data or destroy the source."""
    name = make_dataset_name(options.dataset_id, options.name)
    target = raw_root() / name
    for other in datasets_with_id(options.dataset_id, [raw_root()]):
        if other.name != name:
            raise MSGLDMError(f"dataset ID {options.dataset_id} is already used by {other}; "
                              "choose another -d or remove that folder")
    if source_root is not None and _is_within(Path(source_root), target):
        raise MSGLDMError(f"{source_root}: the source lies inside the target {target}; convert into another -d/--name")
    if target.exists() and not options.overwrite:
        raise MSGLDMError(f"{target} already exists; pass --overwrite to replace it, or choose another -d/--name")
    return target


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def write_dataset(source: SourceDataset, options: WriteOptions, source_root: Path | None = None,
                  log: Callable[[ConversionResult], str] | None = None) -> ConversionResult:
    """Write the dataset; `log(result)` gives the text kept as `conversion_log.txt` inside it."""
    target = target_folder(options, source_root)
    with staged_folder(target) as staging:
        result = _write_into(staging, source, options)
        result.dataset_folder = target
        if log is not None:
            (staging / LOG_NAME).write_text(log(result) + "\n")
    return result


def _write_into(folder: Path, source: SourceDataset, options: WriteOptions) -> ConversionResult:
    result = ConversionResult(dataset_folder=folder, files_by_channel={c: 0 for c in source.channel_names})
    channel_index = {name: i for i, name in enumerate(source.channel_names)}
    (folder / "imagesTr").mkdir()  # part of the layout even when every case goes to imagesTs
    # The progress bar shows only on a terminal (disable=None); IXI's registrations take a while.
    for case in tqdm(source.cases, desc="converting", unit="case", disable=None):
        images = _prepare_images(case, source, options, result)
        if not images:
            result.notes.append(f"{case.case_id}: no usable image left, case skipped")
            continue
        split = _choose_split(case, images, source, result)
        (result.training_cases if split == "Tr" else result.test_cases).append(case.case_id)
        for channel, write in images.items():
            write(folder / f"images{split}" / image_file_name(case.case_id, channel_index[channel], source.file_ending))
            result.files_by_channel[channel] += 1
        if case.label is not None:
            _write_label(case.label, folder / f"labels{split}" / f"{case.case_id}{source.file_ending}", source, options)
            result.labels_written += 1
    _dataset_json(source, options, len(result.training_cases)).save(folder / "dataset.json")
    return result


def _choose_split(case: SourceCase, images: dict, source: SourceDataset, result: ConversionResult) -> str:
    """imagesTr needs >= 2 modalities and, when the dataset has labels, a label; anything else can still be
    predicted."""
    if case.split == "Ts":
        return "Ts"
    if len(images) < MIN_TRAINING_MODALITIES:
        result.notes.append(f"{case.case_id}: only {', '.join(images)} present -> imagesTs (training needs two "
                            "modalities)")
        return "Ts"
    if source.labels is not None and case.label is None:
        return "Ts"  # e.g. a challenge's validation set; the summary counts these
    return "Tr"


def _prepare_images(case: SourceCase, source: SourceDataset, options: WriteOptions, result: ConversionResult) -> dict:
    """channel -> function(destination) that writes that channel; registration happens here when a grid differs."""
    writers = {}
    reference = case.images.get(case.register_onto) if case.register_onto else None
    for channel in source.channel_names:
        path = case.images.get(channel)
        if path is None:
            continue
        if reference is not None and path != reference and not _same_grid(path, reference):
            try:
                image = register_and_resample(read_image(path), read_image(reference), options.registration)
            except RuntimeError as err:  # SimpleITK's registration failures; the other contrasts are still useful
                result.notes.append(f"{case.case_id}: {channel} could not be registered to {case.register_onto} "
                                    f"({str(err).strip().splitlines()[-1][:120]}); {channel} left out")
                continue
            result.notes.append(f"{case.case_id}: {channel} rigidly registered onto the {case.register_onto} grid")
            writers[channel] = lambda dest, image=image: write_image(image, dest)
        else:
            writers[channel] = lambda dest, path=path: _transfer(path, dest, source.file_ending, options.mode)
    return writers


def _transfer(path: Path, destination: Path, file_ending: str, mode: str) -> None:
    """Link or copy a file that is already in the output format; convert anything else (e.g. `.nii` -> `.nii.gz`)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if not path.name.endswith(file_ending):
        write_image(read_image(path), destination)
    elif mode == LINK:
        destination.symlink_to(Path(path).resolve())
    else:
        shutil.copyfile(path, destination)


def _write_label(path: Path, destination: Path, source: SourceDataset, options: WriteOptions) -> None:
    if source.label_mapping is None:
        _transfer(path, destination, source.file_ending, options.mode)
        return
    image = read_image(path)
    write_image(image.with_array(remap_labels(image.array, source.label_mapping, path)), destination)


def remap_labels(array: np.ndarray, mapping: dict[int, int], path: Path | str = "label") -> np.ndarray:
    """Map source label values to stored ones (uint8); any value the release does not define is an error."""
    values = np.unique(array)
    if not np.all(np.isclose(values, np.rint(values))):
        raise MSGLDMError(f"{path}: label file holds non-integer values; a segmentation must contain integers only")
    unknown = sorted(int(v) for v in np.rint(values) if int(v) not in mapping)
    if unknown:
        raise MSGLDMError(f"{path}: label values {unknown} are not defined for this release (expected "
                          f"{sorted(mapping)}); fix or remove this segmentation")
    lookup = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for old, new in mapping.items():
        lookup[old] = new
    return lookup[np.rint(array).astype(np.int64)]


def _same_grid(path: Path, reference: Path) -> bool:
    """Image.same_grid on the two files' headers (no voxel data is read)."""
    return read_image_header(path).same_grid(read_image_header(reference))


def _dataset_json(source: SourceDataset, options: WriteOptions, num_training: int) -> DatasetJson:
    provenance: dict = {"kind": source.kind}
    if source.label_mapping is not None:
        provenance["label_remapping"] = {str(k): v for k, v in sorted(source.label_mapping.items())}
    extra = dict(source.extra_json)
    extra["conversion"] = provenance
    return DatasetJson(
        channel_names=dict(enumerate(source.channel_names)),
        file_ending=source.file_ending,
        num_training=num_training,
        labels=dict(source.labels) if source.labels is not None else None,
        name=options.name,
        description=source.description,
        extra=extra,
    )
