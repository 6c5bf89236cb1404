"""The one tiny end-to-end run of the default suite: plan -> train a few iterations -> predict -> evaluate.

Everything goes through the same entry points a user calls (in-process; planning and training run once per session
in the `tiny_trained_demo` fixture). Checks what a user relies on: outputs on the exact input grid (also for an
LPS-oriented copy of a case), present modalities never rewritten, the metrics summary, and that the fold's validation
summary exists.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import SimpleITK as sitk

from msgldm_auto.cli import evaluate, predict, train
from msgldm_auto.dataset.image_io import read_image


def _reorient_copy(src, dst):
    """Write `src` in LPS orientation (a different array layout and direction, the same anatomy and world positions)."""
    image = sitk.ReadImage(str(src))
    sitk.WriteImage(sitk.DICOMOrient(image, "LPS"), str(dst))


def test_plan_train_predict_evaluate(tiny_trained_demo, msgldm_roots, tmp_path):
    # Planned, preprocessed and trained by msgldm_plan_and_preprocess and msgldm_train (session fixture, conftest).
    raw_dataset = msgldm_roots / "raw" / "Dataset901_Demo"
    fold = tiny_trained_demo / "fold_0"
    assert (fold / "structure" / "checkpoint_final.pth").is_file()
    assert not (fold / "ae").exists() and not (fold / "ldm").exists()   # cpu plans: the one-pass decoder only
    assert json.loads((fold / "validation" / "summary.json").read_text())["num_cases"] == 1

    inputs = tmp_path / "in"
    shutil.copytree(raw_dataset / "imagesTs", inputs)
    first = sorted(inputs.iterdir())[0]
    lps = inputs / first.name.replace("demo_", "lps_")
    _reorient_copy(first, lps)
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}

    out = tmp_path / "out"
    assert predict.main(["-i", str(inputs), "-o", str(out), "-d", "901", "-p", "MSGLDMPlans_cpu", "-f", "0",
                         "-device", "cpu", "--steps", "2"]) == 0
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before        # inputs untouched
    record = json.loads((out / "predictions.json").read_text())
    for case_id, entry in record["cases"].items():
        assert entry["mode"] == "one_pass"
        source = read_image(next(inputs.glob(f"{case_id}_*.nii.gz")))
        assert not set(entry["files"]) & set(before), "a present modality was written to the output"
        for file_name in entry["files"]:
            synthesized = read_image(out / file_name)
            assert synthesized.array.dtype == np.float32
            assert synthesized.same_grid(source, atol=1e-6), f"{file_name} is not on the input grid"
            assert np.isfinite(synthesized.array).all() and synthesized.array.max() > 0
    assert any(c.startswith("lps_") for c in record["cases"])

    reference = tmp_path / "ref"
    shutil.copytree(raw_dataset / "referenceTs", reference)
    for path in list(reference.glob("demo_*")):      # the LPS case's truth, in its own orientation
        lps_truth = reference / path.name.replace("demo_", "lps_")
        if path.name.startswith(first.name[:8]):
            _reorient_copy(path, lps_truth)
    summary_file = tmp_path / "summary.json"
    assert evaluate.main(["-ref", str(reference), "-pred", str(out), "-d", "901", "-o", str(summary_file)]) == 0
    summary = json.loads(summary_file.read_text())
    assert summary["mean"]["psnr"]["n"] >= 1 and summary["mean"]["psnr"]["mean"] > 0
    assert 0 < summary["mean"]["ssim"]["mean"] <= 1

    # The plain UNet control: same plans, same folds, its own stage and validation; predicts the same files.
    assert train.main(["901", "2d", "0", "-p", "MSGLDMPlans_cpu", "-device", "cpu", "--epochs", "1", "-m", "unet",
                       "--iters-per-epoch", "2", "--val-cases", "1", "--no-progress"]) == 0
    assert json.loads((fold / "validation_unet" / "summary.json").read_text())["mode"] == "unet"
    control = tmp_path / "control"
    assert predict.main(["-i", str(inputs), "-o", str(control), "-d", "901", "-p", "MSGLDMPlans_cpu", "-f", "0",
                         "-device", "cpu", "-m", "unet"]) == 0
    control_record = json.loads((control / "predictions.json").read_text())
    files = {c: e["files"] for c, e in record["cases"].items()}
    assert {c: e["files"] for c, e in control_record["cases"].items()} == files
    assert {e["mode"] for e in control_record["cases"].values()} == {"unet"}
