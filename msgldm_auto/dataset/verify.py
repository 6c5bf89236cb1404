"""Integrity checks of a raw dataset: every problem, one line each (case and file, problem, fix), never just the first.

`verify_dataset` streams case by case and reads each image once. `check_image`, `check_case_grids`, `check_label_grid`
and `resample_to_reference` are the shared rules that planning and prediction apply to single cases (DESIGN.md §3):
modalities of a case must share one grid up to float noise; with `resample_mismatched` a mismatch becomes a warning
and the modality is resampled (linear) onto the case's first available modality.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from msgldm_auto.dataset.cases import Case, discover_cases, discover_explicit_cases, split_image_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image, to_sitk
from msgldm_auto.errors import MSGLDMError

ERROR = "error"
WARNING = "warning"
IMAGE_FOLDERS = (("imagesTr", "labelsTr", 2), ("imagesTs", "labelsTs", 1))   # folder, its labels, min. modalities


@dataclass(frozen=True)
class Problem:
    case: str            # case ID, or "-" for the dataset as a whole
    file: str            # path relative to the dataset folder ("" when no single file is at fault)
    message: str
    fix: str
    severity: str = ERROR

    def describe(self) -> str:
        """One line without the severity: where, problem, fix."""
        where = f"{self.case} {self.file}".strip() if self.file else self.case
        return f"{where}: {self.message}; fix: {self.fix}"

    def format(self) -> str:
        return f"{self.severity.upper()}: {self.describe()}"


@dataclass
class VerifyReport:
    dataset_folder: Path
    problems: list[Problem] = field(default_factory=list)
    cases_checked: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing blocks using the dataset (warnings allowed)."""
        return not self.errors

    def format(self) -> str:
        return "\n".join(p.format() for p in self.problems)

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"{self.dataset_folder}: {verdict}, {self.cases_checked} cases checked, "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")


def verify_dataset(dataset_folder: Path | str, resample_mismatched: bool = False) -> VerifyReport:
    """Check dataset.json, file names, every image and label of imagesTr / imagesTs; return all problems found."""
    folder = Path(dataset_folder)
    report = VerifyReport(folder)
    try:
        dataset = DatasetJson.load(folder / "dataset.json")
    except MSGLDMError as err:
        report.problems.append(Problem("-", "dataset.json", str(err).removeprefix(f"{folder / 'dataset.json'}: "),
                                       "write a valid nnU-Net v2 dataset.json (see documentation/dataset_format.md)"))
        return report
    for images_dir, labels_dir, min_modalities in IMAGE_FOLDERS:
        if images_dir == "imagesTr" or (folder / images_dir).is_dir():
            _verify_folder(folder, dataset, images_dir, labels_dir, min_modalities, resample_mismatched, report)
    return report


def _verify_folder(folder: Path, dataset: DatasetJson, images_dir: str, labels_dir: str, min_modalities: int,
                   resample_mismatched: bool, report: VerifyReport) -> None:
    if dataset.explicit_files and images_dir == "imagesTr":
        cases = discover_explicit_cases(folder, dataset)
    else:
        if images_dir == "imagesTr" and not (folder / images_dir).is_dir():
            report.problems.append(Problem("-", images_dir, "the training image folder is missing",
                                           f"put the training images in {folder / images_dir}"))
            return
        cases, strays = discover_cases(folder / images_dir, dataset, folder / labels_dir)
        report.problems.extend(_name_problem(folder, path, dataset) for path in (s.path for s in strays))
        report.problems.extend(_label_name_problems(folder / labels_dir, folder, dataset, {c.case_id for c in cases}))
    if images_dir == "imagesTr":
        report.problems.extend(_count_problems(dataset, cases))
    for case in cases:
        report.problems.extend(verify_case(case, dataset, folder, min_modalities, resample_mismatched))
        report.cases_checked += 1


def verify_case(case: Case, dataset: DatasetJson, folder: Path, min_modalities: int = 2,
                resample_mismatched: bool = False) -> list[Problem]:
    """All problems of one case: modality count, each image, grids, label values and grid. Reads each file once."""
    problems = []
    if len(case.images) < min_modalities:
        have = ", ".join(dataset.channel_names[c] for c in case.present) or "none"
        need = ("training cases need at least 2 modalities" if min_modalities >= 2
                else "a case needs at least 1 modality")
        problems.append(Problem(case.case_id, "", f"only {len(case.images)} modality file(s) ({have}); {need}",
                                "add the missing modality files or remove the case"))
    images: dict[int, Image] = {}
    for channel, path in case.images.items():
        image, image_problems = _read_and_check(path, folder, case.case_id)
        problems.extend(image_problems)
        if image is not None and not image_problems:
            images[channel] = image
    problems.extend(check_case_grids(images, case.case_id, resample_mismatched,
                                     {c: _relative(p, folder) for c, p in case.images.items()}, dataset.channel_names))
    if case.label is not None:
        problems.extend(_check_label(case, dataset, folder, images, resample_mismatched))
    return problems


def check_image(image: Image, case_id: str, file: str, allow_constant: bool = False) -> list[Problem]:
    """Per-image content rules: 3D, finite, not constant (a label map without foreground may be constant)."""
    array = image.array
    if array.ndim != 3:
        return [Problem(case_id, file, f"image is {array.ndim}D with shape {array.shape} where a 3D volume is expected",
                        "save one 3D file per modality (split 4D series into {CASE}_{CHANNEL:04d} files)")]
    problems = []
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            problems.append(Problem(case_id, file, f"{bad} voxel(s) are NaN or Inf",
                                    "replace non-finite voxels (e.g. with 0) or re-export the image"))
            return problems
    if not allow_constant and array.size and array.min() == array.max():
        problems.append(Problem(case_id, file,
                                f"every voxel has the same value ({array.flat[0]}): the image holds no data",
                                "delete the file (a missing file means a missing modality) or replace it"))
    return problems


def check_case_grids(images: dict[int, Image], case_id: str, resample_mismatched: bool = False,
                     files: dict[int, str] | None = None, channel_names: dict[int, str] | None = None) -> list[Problem]:
    """Every modality must share the grid of the case's first available one (float noise tolerated, Image.same_grid).

    With `resample_mismatched` a mismatch is a warning (the caller resamples with `resample_to_reference`).
    """
    if len(images) < 2:
        return []
    files = files or {}
    names = channel_names or {}
    reference_channel = min(images)
    reference = images[reference_channel]
    problems = []
    for channel in sorted(images):
        if channel == reference_channel or images[channel].same_grid(reference):
            continue
        detail = describe_grid_difference(images[channel], reference)
        ref_name = names.get(reference_channel, f"channel {reference_channel}")
        if resample_mismatched:
            problems.append(Problem(case_id, files.get(channel, f"channel {channel}"),
                                    f"grid differs from {ref_name} ({detail}); it will be resampled (linear) onto the "
                                    f"{ref_name} grid",
                                    "co-register the modalities to silence this warning", WARNING))
        else:
            problems.append(Problem(case_id, files.get(channel, f"channel {channel}"),
                                    f"grid differs from {ref_name} ({detail})",
                                    f"resample it onto the {ref_name} grid, or pass --resample-mismatched to do so "
                                    "automatically"))
    return problems


def check_label_grid(label: Image, images: dict[int, Image], case_id: str, file: str = "label",
                     resample_mismatched: bool = False) -> list[Problem]:
    """The label map must share the grid of the case's first available modality, under the same rule as the images.

    With `resample_mismatched` a mismatch is a warning (the caller resamples it, nearest neighbour).
    """
    if not images:
        return []
    reference = images[min(images)]
    if label.same_grid(reference):
        return []
    detail = f"label grid differs from its images ({describe_grid_difference(label, reference)})"
    if resample_mismatched:
        return [Problem(case_id, file, f"{detail}; it will be resampled (nearest neighbour) onto the image grid",
                        "co-register the label to silence this warning", WARNING)]
    return [Problem(case_id, file, detail, "resample the label onto the image grid (nearest neighbour), re-export it, "
                                           "or pass --resample-mismatched to do so automatically")]


def describe_grid_difference(image: Image, reference: Image) -> str:
    parts = []
    if image.array.shape != reference.array.shape:
        parts.append(f"shape {image.array.shape} vs {reference.array.shape}")
    for name in ("spacing", "origin", "direction"):
        mine, theirs = np.asarray(getattr(image, name)), np.asarray(getattr(reference, name))
        if mine.shape != theirs.shape or not np.allclose(mine, theirs, atol=1e-4):
            parts.append(f"{name} {_round(mine)} vs {_round(theirs)}")
    return "; ".join(parts) or "geometry differs beyond float noise"


def resample_to_reference(image: Image, reference: Image, interpolation: str = "linear") -> Image:
    """`image` resampled onto `reference`'s grid with SimpleITK (linear for images, "nearest" for labels); 0 outside."""
    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {sorted(interpolators)}, got {interpolation!r}")
    moving = to_sitk(image)
    if interpolation == "linear":
        moving = sitk.Cast(moving, sitk.sitkFloat32)
    target = to_sitk(Image(np.zeros(reference.array.shape, dtype=np.uint8), reference.spacing, reference.origin,
                           reference.direction))
    resampled = sitk.Resample(moving, target, sitk.Transform(), interpolators[interpolation], 0.0, moving.GetPixelID())
    return Image(sitk.GetArrayFromImage(resampled), reference.spacing, reference.origin, reference.direction)


def declared_label_values(labels: dict) -> set[int]:
    values: set[int] = set()
    for value in labels.values():
        values.update(value if isinstance(value, list) else [value])
    return values


def _check_label(case: Case, dataset: DatasetJson, folder: Path, images: dict[int, Image],
                 resample_mismatched: bool) -> list[Problem]:
    file = _relative(case.label, folder)
    label, problems = _read_and_check(case.label, folder, case.case_id, allow_constant=True)
    if label is None or problems:
        return problems
    if dataset.labels is None:
        return [Problem(case.case_id, file, "a label file exists but dataset.json declares no 'labels'",
                        "add \"labels\": {\"background\": 0, ...} to dataset.json or remove the label folder")]
    values = np.unique(label.array)
    declared = declared_label_values(dataset.labels)
    undeclared = [v.item() for v in values if v not in declared]
    if undeclared:
        problems.append(Problem(case.case_id, file,
                                f"label values {undeclared} are not declared in dataset.json 'labels' "
                                                    f"(declared: {sorted(declared)})",
                                "declare them under 'labels' in dataset.json or fix the label map"))
    problems.extend(check_label_grid(label, images, case.case_id, file, resample_mismatched))
    return problems


def read_image_keeping_nonfinite(path: Path) -> Image:
    """`read_image`, except that float NIfTI voxels come from nibabel: ITK's NIfTI reader silently turns NaN and Inf
    into 0, which would hide exactly what this check looks for. The geometry still comes from ITK's header reader, so
    grids compare the same way as everywhere else; pixels are still read only once."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")) or not path.is_file():
        return read_image(path)
    try:
        nii = nib.load(str(path))
        if not np.issubdtype(nii.get_data_dtype(), np.floating):
            return read_image(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except Exception:                         # unusual or corrupt header: read_image reports or handles it
        return read_image(path)
    if reader.GetNumberOfComponents() != 1:
        return read_image(path)
    data = np.asanyarray(nii.dataobj)
    array = np.ascontiguousarray(np.transpose(data, tuple(reversed(range(data.ndim)))))
    if array.shape != tuple(reversed(reader.GetSize())):
        return read_image(path)
    return Image(array, tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection()))


def _read_and_check(path: Path, folder: Path, case_id: str,
                    allow_constant: bool = False) -> tuple[Image | None, list[Problem]]:
    file = _relative(path, folder)
    try:
        image = read_image_keeping_nonfinite(path)
    except MSGLDMError as err:
        return None, [Problem(case_id, file, f"unreadable or corrupt file ({_strip_path(str(err), path)})",
                              "re-export or replace the file")]
    except Exception as err:      # a corrupt file may raise anything; verification must go on
        return None, [Problem(case_id, file, f"unreadable or corrupt file ({type(err).__name__}: {err})",
                              "re-export or replace the file")]
    return image, check_image(image, case_id, file, allow_constant)


def _name_problem(folder: Path, path: Path, dataset: DatasetJson) -> Problem:
    file = _relative(path, folder)
    ending = dataset.file_ending
    if path.is_dir():
        return Problem("-", file, "unexpected folder inside an image folder", "move it out of the dataset folder")
    if not path.name.endswith(ending):
        return Problem("-", file, f"file ending does not match dataset.json's file_ending '{ending}'",
                       f"convert the file to {ending} or correct 'file_ending' in dataset.json")
    parsed = split_image_name(path.name, ending)
    if parsed is None:
        return Problem("-", file, f"name does not follow {{CASE}}_{{CHANNEL:04d}}{ending}",
                       f"rename it, e.g. CASE_0000{ending} for channel 0")
    valid = ", ".join(f"{k:04d}" for k in dataset.channel_ids)
    return Problem(parsed[0], file, f"channel suffix {parsed[1]:04d} is not in channel_names (valid: {valid})",
                   "rename the file to a declared channel or add the channel to 'channel_names' in dataset.json")


def _label_name_problems(labels_dir: Path, folder: Path, dataset: DatasetJson, case_ids: set[str]) -> list[Problem]:
    if not labels_dir.is_dir():
        return []
    problems = []
    for path in sorted(labels_dir.iterdir()):
        if path.name.startswith("."):
            continue
        file = _relative(path, folder)
        if not path.name.endswith(dataset.file_ending):
            problems.append(Problem("-", file,
                                    f"file ending does not match dataset.json's file_ending '{dataset.file_ending}'",
                                    f"convert the label to {dataset.file_ending} or correct 'file_ending' in "
                                    "dataset.json"))
        elif path.name[: -len(dataset.file_ending)] not in case_ids:
            problems.append(Problem(path.name[: -len(dataset.file_ending)], file,
                                    "label file without any image of that case",
                                    "add the case's images or remove the label", WARNING))
    return problems


def _count_problems(dataset: DatasetJson, cases: list[Case]) -> list[Problem]:
    if not cases:
        return [Problem("-", "imagesTr", "no training cases found",
                        f"add images named {{CASE}}_{{CHANNEL:04d}}{dataset.file_ending} to imagesTr")]
    if dataset.num_training != len(cases):
        return [Problem("-", "dataset.json",
                        f"numTraining is {dataset.num_training} but imagesTr holds {len(cases)} cases",
                        f"set \"numTraining\": {len(cases)} in dataset.json")]
    return []


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return str(path)


def _strip_path(message: str, path: Path) -> str:
    return message.removeprefix(f"{path}: ")


def _round(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + ")"
