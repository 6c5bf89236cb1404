"""What prediction reads: input cases (a folder in the raw naming, or one case given as files) and their images.

The grid check (and `--resample-mismatched`) is preprocessing's own, so prediction and training agree on it; a case
that fails it fails alone (DESIGN §3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msgldm_auto.dataset.cases import discover_cases, split_image_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image
from msgldm_auto.errors import MSGLDMError


@dataclass
class InputCase:
    case_id: str
    images: dict[int, Path]                      # known channels only
    problem: str | None = None                   # set when the case cannot be predicted (reported, others go on)
    unknown_files: list[Path] = field(default_factory=list)


def discover_input(inputs: list[Path] | Path, dataset: DatasetJson) -> list[InputCase]:
    """Cases of an input folder, or the one case named by a list of files `{CASE}_{CHANNEL:04d}{ending}`."""
    paths = [Path(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if len(paths) == 1 and paths[0].is_dir():
        return _cases_of_folder(paths[0], dataset)
    return [_case_of_files(paths, dataset)]


def _cases_of_folder(folder: Path, dataset: DatasetJson) -> list[InputCase]:
    cases, strays = discover_cases(folder, dataset)
    found = {case.case_id: InputCase(case.case_id, dict(case.images)) for case in cases}
    for stray in strays:
        parsed = split_image_name(stray.path.name, dataset.file_ending)
        if parsed is None:
            continue   # unrelated files (predictions.json, notes) are not cases
        entry = found.setdefault(parsed[0], InputCase(parsed[0], {}))
        entry.unknown_files.append(stray.path)
    for entry in found.values():
        if not entry.images:
            names = ", ".join(p.name for p in entry.unknown_files)
            entry.problem = f"no modality the model knows ({names}); the model's channels are {dataset.channel_names}"
    if not found:
        raise MSGLDMError(f"{folder}: no images named {{CASE}}_{{CHANNEL:04d}}{dataset.file_ending}; point -i at a "
                          "folder of such files")
    return [found[k] for k in sorted(found)]


def _case_of_files(paths: list[Path], dataset: DatasetJson) -> InputCase:
    images: dict[int, Path] = {}
    case_ids = set()
    for path in paths:
        if not path.is_file():
            raise MSGLDMError(f"-i {path}: no such file or folder")
        parsed = split_image_name(path.name, dataset.file_ending)
        if parsed is None:
            raise MSGLDMError(f"-i {path}: name must be {{CASE}}_{{CHANNEL:04d}}{dataset.file_ending} so the channel "
                              "is known")
        if parsed[1] not in dataset.channel_names:
            raise MSGLDMError(f"-i {path}: channel {parsed[1]} is not one of the model's channels "
                              f"{dataset.channel_names}")
        case_ids.add(parsed[0])
        images[parsed[1]] = path
    if len(case_ids) != 1:
        raise MSGLDMError(f"-i: files of several cases ({', '.join(sorted(case_ids))}); give one case's files or a "
                          "folder")
    return InputCase(case_ids.pop(), dict(sorted(images.items())))


def load_images(images: dict[int, Path | Image], case_id: str) -> dict[int, Image]:
    """Read the images of one case (Images pass through). The grid check is preprocessing's (`preprocess_case`)."""
    if not images:
        raise MSGLDMError(f"case {case_id}: no input image; a case needs at least one modality")
    return {ch: image if isinstance(image, Image) else read_image(image) for ch, image in sorted(images.items())}
