"""The pieces `make demo` adds on top of the commands: the floors over a folder and the method comparison."""
from __future__ import annotations

import json

import numpy as np

from msgldm_auto.dataset.cases import discover_cases, training_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import read_image
from msgldm_auto.evaluation.comparison import beats, comparison_table, mean_over_targets, quality_gate
from msgldm_auto.evaluation.folder import evaluate_folder
from msgldm_auto.inference.baseline_prediction import predict_floor_folders


def _summary(per_target: dict[str, float]) -> dict:
    return {"per_modality": {t: {"psnr": {"mean": v, "std": 0.0, "n": 1}} for t, v in per_target.items()}}


def test_beats_compares_per_target_and_treats_missing_as_a_loss():
    model = _summary({"T2": 25.0, "FLAIR": 20.0})
    floor = _summary({"T2": 24.0, "FLAIR": 21.0, "PD": 18.0})
    assert beats(model, floor) == {"T2": True, "FLAIR": False, "PD": False}
    table = comparison_table({"model": model, "floor": floor}, metrics=("psnr",))
    assert "25.00" in table and "21.00" in table and table.splitlines()[0].split()[:2] == ["target", "metric"]


def test_the_demo_gate_needs_every_target_over_copy_and_the_mean_over_regression():
    copy = _summary({"T1": 15.0, "T2": 8.0})
    regression = _summary({"T1": 20.0, "T2": 10.0})                 # mean over targets 15.0
    assert mean_over_targets(regression) == 15.0
    assert quality_gate(_summary({"T1": 19.0, "T2": 11.5}), copy, regression) == []     # T1 below, the mean above
    assert quality_gate(_summary({"T1": 19.0, "T2": 10.0}), copy, regression) == [
        "the regression floor on the mean over targets"]
    assert quality_gate(_summary({"T1": 14.0, "T2": 17.0}), copy, regression) == ["the copy floor on T1"]


def test_floors_fill_every_missing_contrast_on_the_input_grid(tiny_demo_dataset, tmp_path):
    dataset = DatasetJson.load(tiny_demo_dataset / "dataset.json")
    outputs = {"copy": tmp_path / "copy", "regression": tmp_path / "regression"}
    predict_floor_folders(training_cases(tiny_demo_dataset, dataset), tiny_demo_dataset / "imagesTs", dataset, outputs)
    test_cases, _ = discover_cases(tiny_demo_dataset / "imagesTs", dataset)
    for folder in outputs.values():
        record = json.loads((folder / "predictions.json").read_text())
        for case in test_cases:
            source = read_image(next(iter(case.images.values())))
            assert record["cases"][case.case_id]["synthesized"] == [dataset.channel_names[c] for c in case.missing]
            for channel in case.missing:
                image = read_image(folder / f"{case.case_id}_{channel:04d}.nii.gz")
                assert image.same_grid(source) and np.isfinite(image.array).all()
                assert image.array.min() >= 0 and image.array.max() > 0
    summaries = {name: evaluate_folder(tiny_demo_dataset / "referenceTs", folder, dataset=dataset)
                 for name, folder in outputs.items()}
    # On contrasts that are voxelwise functions of tissue the regression floor must be at least as good as copying.
    assert summaries["regression"]["mean"]["psnr"]["mean"] >= summaries["copy"]["mean"]["psnr"]["mean"] - 0.5
