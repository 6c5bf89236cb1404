"""The dataset fingerprint (`dataset_fingerprint.json`): one streaming pass over the training cases.

Each case is read, measured and dropped (memory bounded by one case; nnU-Net's fixed-size voxel sample with
replacement needs ~4 GB even on toy data). Per case: grid (shape, spacing, direction, so orientation), modalities
present, head-mask bounding box after reorientation to RAS, and per-modality percentiles (0.5, 50, 99.5) inside the
head mask. Dataset-level figures (median spacing and cropped shape in RAS, availability counts, median p99.5) are
derived from the cases, so a hand-made fingerprint needs only the case entries.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask

from msgldm_auto.atomic import write_text_atomic
from msgldm_auto.dataset.cases import Case, training_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json
from msgldm_auto.preprocessing.grids import harmonise_grids
from msgldm_auto.preprocessing.head_mask import compute_head_mask
from msgldm_auto.preprocessing.normalization import head_percentiles
from msgldm_auto.preprocessing.orientation import Reorientation
from msgldm_auto.preprocessing.parallel import failure_summary, parallel_map
from msgldm_auto.preprocessing.pipeline import read_raw_case

FINGERPRINT_VERSION = 1
FINGERPRINT_FILE = "dataset_fingerprint.json"


@dataclass
class CaseFingerprint:
    case_id: str
    shape: list[int]                      # numpy (k, j, i) order, as read
    spacing: list[float]                  # ITK (i, j, k) order
    direction: list[float]                # ITK, LPS, 9 numbers row-major
    present: list[int]                    # channel ids
    crop_box: list[list[int]]             # head-mask box in the RAS volume, [start, stop) per RAS axis
    percentiles: dict[str, list[float]]   # channel id -> (p0.5, p50, p99.5) inside the head mask
    skull_stripped: bool = False
    has_label: bool = False

    @property
    def reorientation(self) -> Reorientation:
        return Reorientation.from_direction(self.direction)

    @property
    def ras_spacing(self) -> list[float]:
        return self.reorientation.ras_spacing(self.spacing)

    @property
    def cropped_shape(self) -> list[int]:
        """Shape of the head box in RAS order."""
        return [stop - start for start, stop in self.crop_box]

    @property
    def orientation_codes(self) -> str:
        return self.reorientation.axis_codes()


@dataclass
class DatasetFingerprint:
    dataset_name: str
    modalities: list[str]                 # channel order
    cases: list[CaseFingerprint]
    version: int = FINGERPRINT_VERSION
    summary: dict[str, Any] = field(default_factory=dict)   # derived, written for people; recomputed on load

    def median_ras_spacing(self) -> list[float]:
        return [float(v) for v in np.median([c.ras_spacing for c in self.cases], axis=0)]

    def median_cropped_shape(self) -> list[float]:
        return [float(v) for v in np.median([c.cropped_shape for c in self.cases], axis=0)]

    def modality_counts(self) -> dict[str, int]:
        return {name: sum(channel in c.present for c in self.cases) for channel, name in enumerate(self.modalities)}

    def median_p995(self) -> dict[str, float]:
        """Dataset-median p99.5 per modality: the export scale of synthesized images (DESIGN.md §7)."""
        out = {}
        for channel, name in enumerate(self.modalities):
            values = [c.percentiles[str(channel)][2] for c in self.cases if str(channel) in c.percentiles]
            out[name] = float(np.median(values)) if values else 1.0
        return out

    def compute_summary(self) -> dict[str, Any]:
        orientations: dict[str, int] = {}
        for case in self.cases:
            orientations[case.orientation_codes] = orientations.get(case.orientation_codes, 0) + 1
        return {"num_cases": len(self.cases), "median_ras_spacing": self.median_ras_spacing(),
                "median_cropped_shape_ras": self.median_cropped_shape(), "modality_counts": self.modality_counts(),
                "median_p995": self.median_p995(), "orientations": orientations,
                "skull_stripped_cases": sum(c.skull_stripped for c in self.cases)}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.compute_summary()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetFingerprint":
        if data.get("version") != FINGERPRINT_VERSION:
            raise MSGLDMError(f"fingerprint version {data.get('version')!r} is not supported; re-run "
                              "msgldm_extract_fingerprint --clean")
        cases = [CaseFingerprint(**case) for case in data["cases"]]
        return cls(data["dataset_name"], list(data["modalities"]), cases)

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "DatasetFingerprint":
        path = Path(path)
        data = load_json(path, "run msgldm_extract_fingerprint --clean (or msgldm_plan_and_preprocess --clean)",
                         missing="fingerprint not found")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as err:
            raise MSGLDMError(f"{path}: not a valid fingerprint ({err}); re-run msgldm_extract_fingerprint "
                              "--clean") from None


def fingerprint_case(case: Case, resample_mismatched: bool = False) -> CaseFingerprint:
    """Measure one case; only this case's voxels are in memory."""
    images, seg = read_raw_case(case)
    images, _, _ = harmonise_grids(images, seg, resample_mismatched, case.case_id)
    reference = images[min(images)]
    reorientation = Reorientation.from_direction(reference.direction)
    ras = {channel: reorientation.to_ras(image.array) for channel, image in images.items()}
    head = compute_head_mask(list(ras.values()))
    if not head.mask.any():
        raise MSGLDMError(f"case {case.case_id}: no head voxels found (the images are empty or constant); check or "
                          "remove its files")
    box = get_bbox_from_mask(head.mask)
    crop = bounding_box_to_slice(box)
    percentiles = {str(channel): head_percentiles(volume[crop], head.mask[crop]) for channel, volume in ras.items()}
    return CaseFingerprint(case.case_id, list(reference.array.shape), [float(s) for s in reference.spacing],
                           [float(d) for d in reference.direction], sorted(images), box, percentiles,
                           head.skull_stripped, case.label is not None)


def extract_fingerprint(raw_folder: Path, num_processes: int = 1,
                        resample_mismatched: bool = False) -> DatasetFingerprint:
    """Fingerprint every training case of a raw dataset folder (all must succeed: plans rest on all of them)."""
    raw_folder = Path(raw_folder)
    dataset = DatasetJson.load(raw_folder / "dataset.json")
    cases = training_cases(raw_folder, dataset)
    if not cases:
        raise MSGLDMError(f"{raw_folder}: no training cases in imagesTr; add "
                          f"{{CASE}}_{{CHANNEL:04d}}{dataset.file_ending} files")
    jobs = [(case.case_id, (case, resample_mismatched)) for case in cases]
    results, failures = {}, []
    for outcome in parallel_map(fingerprint_case, jobs, num_processes, "fingerprint"):
        if outcome.error is None:
            results[outcome.name] = outcome.result
        else:
            failures.append(outcome)
    if failures:
        raise MSGLDMError(failure_summary(failures, "fingerprint extraction") + "; fix or remove those cases")
    return DatasetFingerprint(raw_folder.name, dataset.modalities, [results[c.case_id] for c in cases])
