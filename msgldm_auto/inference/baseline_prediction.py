"""Run the two quality floors (copy, polynomial regression) over a folder, like `msgldm_predict` does for MSG-LDM.

The floors are fitted on the TRAINING cases given (never on references), on intensities normalised per volume by the
case's own p99.5 inside its head mask (the same rule as preprocessing), and their outputs are scaled back with the
training median p99.5 of the target, zero outside the head mask, on the input grid. Each output folder gets a
`predictions.json` in the format `msgldm_evaluate` reads, so the floors are scored on exactly the same cases and
availability patterns as the model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from msgldm_auto import __version__
from msgldm_auto.dataset.cases import Case, discover_cases, image_file_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import read_image, write_image
from msgldm_auto.inference.baselines import FloorModels, fit_floors, predict_copy, predict_regression, voxel_sample
from msgldm_auto.preprocessing.head_mask import compute_head_mask
from msgldm_auto.preprocessing.normalization import head_percentiles

FLOORS = {"copy": predict_copy, "regression": predict_regression}


def _normalised_case(case: Case, names: dict[int, str]) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """Volumes of a case divided by their own p99.5 inside the head mask, the mask, and those p99.5 values."""
    raw = {names[ch]: read_image(path).array.astype(np.float32) for ch, path in case.images.items()}
    mask = compute_head_mask(list(raw.values())).mask
    scales = {name: max(head_percentiles(v, mask)[2], 1e-6) for name, v in raw.items()}
    return {name: np.clip(v / scales[name], 0, 1) for name, v in raw.items()}, mask, scales


def fit_floors_on_cases(cases: list[Case], dataset: DatasetJson,
                        degree: int = 2) -> tuple[FloorModels, dict[str, float]]:
    """Fit both floors on training cases; also return the median p99.5 per modality (the export scale)."""
    names = dataset.channel_names
    samples, scales = [], {}
    for case in cases:
        volumes, mask, case_scales = _normalised_case(case, names)
        samples.append(voxel_sample(volumes, mask))
        for name, value in case_scales.items():
            scales.setdefault(name, []).append(value)
    return fit_floors(samples, dataset.modalities, degree=degree), {n: float(np.median(v)) for n, v in scales.items()}


def predict_floor_folders(train_cases: list[Case], input_dir: Path, dataset: DatasetJson,
                          output_dirs: dict[str, Path], degree: int = 2) -> None:
    """Fill in every missing modality of every case in `input_dir` with each floor named in `output_dirs`."""
    models, export_scale = fit_floors_on_cases(train_cases, dataset, degree)
    names = dataset.channel_names
    cases, _ = discover_cases(Path(input_dir), dataset)
    records: dict[str, dict] = {floor: {} for floor in output_dirs}
    for case in cases:
        volumes, mask, _ = _normalised_case(case, names)
        reference = read_image(next(iter(case.images.values())))
        for floor, out_dir in output_dirs.items():
            for channel in case.missing:
                target = names[channel]
                values = FLOORS[floor](models, volumes, target) * export_scale.get(target, 1.0)
                values[~mask] = 0.0
                write_image(reference.with_array(values.astype(np.float32)),
                            Path(out_dir) / image_file_name(case.case_id, channel, dataset.file_ending))
            records[floor][case.case_id] = {"present": [names[c] for c in case.present],
                                            "synthesized": [names[c] for c in case.missing], "mode": f"floor_{floor}"}
    for floor, out_dir in output_dirs.items():
        record = {"version": __version__, "channel_names": {str(k): v for k, v in names.items()},
                  "cases": records[floor]}
        (Path(out_dir) / "predictions.json").write_text(json.dumps(record, indent=2))
