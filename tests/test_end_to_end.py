"""The tiny end-to-end runs of the default suite: plan -> train a few iterations -> predict -> evaluate.

Everything goes through the same entry points a user calls (in-process; the first run's planning and training run
once per session in the `tiny_trained_demo` fixture). Checks what a user relies on: outputs on the exact input grid
(also for an LPS-oriented copy of a case), present modalities never rewritten, the metrics summary, and that the fold's
validation summary exists. The first run uses the `cpu` plans as planned (one-pass decoder); the second switches
diffusion on and trains all three stages, so prediction goes through DDIM sampling (~15 s on 2 cores).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import SimpleITK as sitk

from msgldm_auto.cli import evaluate, plan_and_preprocess, predict, train
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

    # Choosing the mode by cross-validation reuses both validations and makes the choice prediction's default.
    from msgldm_auto.cli import find_best_configuration

    assert find_best_configuration.main(["901", "-p", "MSGLDMPlans_cpu", "--max-cases", "1", "-device", "cpu"]) == 0
    choice = json.loads((fold.parent / "best_configuration.json").read_text())
    assert {s["mode"]["name"] for s in choice["scores"]} == {"one_pass", "unet"} and choice["folds"] == ["0"]
    assert choice["percentile_matched"]                                  # chosen as msgldm_predict predicts
    assert sorted(p.name for p in fold.glob("validation*")) == ["validation", "validation_unet"]     # reused
    chosen = tmp_path / "chosen"
    assert predict.main(["-i", str(inputs), "-o", str(chosen), "-d", "901", "-p", "MSGLDMPlans_cpu", "-f", "0",
                         "-device", "cpu"]) == 0
    chosen_record = json.loads((chosen / "predictions.json").read_text())
    assert {e["mode"] for e in chosen_record["cases"].values()} == {choice["chosen"]["name"]}



def _switch_diffusion_on(plans_file) -> None:
    """The `cpu` preset plans the one-pass decoder only; `ablations.diffusion: true` is the documented switch back."""
    from msgldm_auto.plans import Plans

    plans = Plans.load(plans_file)
    plans.configuration("2d").ablations.diffusion = True
    plans.save(plans_file)


def test_plan_train_predict_evaluate_with_diffusion_sampling(tiny_demo_dataset, msgldm_roots, tmp_path):
    assert plan_and_preprocess.main(["-d", "901", "-pl", "cpu", "-np", "1"]) == 0
    _switch_diffusion_on(msgldm_roots / "preprocessed" / "Dataset901_Demo" / "MSGLDMPlans_cpu.json")
    assert train.main(["901", "2d", "0", "-p", "MSGLDMPlans_cpu", "-device", "cpu", "--epochs", "1",
                       "--iters-per-epoch", "2", "--val-cases", "1", "--no-progress"]) == 0
    fold = msgldm_roots / "results" / "Dataset901_Demo" / "MSGLDMPlans_cpu__2d" / "fold_0"
    for stage in ("ae", "structure", "ldm"):
        assert (fold / stage / "checkpoint_final.pth").is_file()
    assert json.loads((fold / "validation" / "summary.json").read_text())["mode"] == "diffusion"

    inputs = tiny_demo_dataset / "imagesTs"
    out = tmp_path / "out"
    assert predict.main(["-i", str(inputs), "-o", str(out), "-d", "901", "-p", "MSGLDMPlans_cpu", "-f", "0",
                         "-device", "cpu", "--steps", "2", "--seed", "3"]) == 0
    record = json.loads((out / "predictions.json").read_text())
    assert record["cases"] and not record.get("failed")
    for case_id, entry in record["cases"].items():
        assert (entry["mode"], entry["steps"], entry["seed"]) == ("diffusion", 2, 3)
        source = read_image(next(inputs.glob(f"{case_id}_*.nii.gz")))
        for file_name in entry["files"]:
            synthesized = read_image(out / file_name)
            assert synthesized.same_grid(source, atol=1e-6), f"{file_name} is not on the input grid"
            assert synthesized.array.shape == source.array.shape
            assert np.isfinite(synthesized.array).all() and synthesized.array.max() > 0

    summary_file = tmp_path / "summary.json"
    assert evaluate.main(["-ref", str(tiny_demo_dataset / "referenceTs"), "-pred", str(out), "-d", "901",
                          "-o", str(summary_file)]) == 0
    summary = json.loads(summary_file.read_text())
    assert summary["mean"]["psnr"]["n"] >= 1 and np.isfinite(summary["mean"]["psnr"]["mean"])

    # Every mode the trained folds can run is validated on the same case, the sampled mean with its std map.
    from msgldm_auto.cli import find_best_configuration

    assert find_best_configuration.main(["901", "-p", "MSGLDMPlans_cpu", "--max-cases", "1", "--samples", "2",
                                         "-device", "cpu"]) == 0
    scores = {s["mode"]["name"]: s for s in
              json.loads((fold.parent / "best_configuration.json").read_text())["scores"]}
    assert set(scores) == {"one_pass", "diffusion", "diffusion_mean2"}
    assert len({s["num_volumes"] for s in scores.values()}) == 1                 # the same volumes for every mode
    assert scores["diffusion_mean2"]["coverage_2std"] is not None and scores["one_pass"]["coverage_2std"] is None
    assert all(s["hf_ratio"] > 0 for s in scores.values())
