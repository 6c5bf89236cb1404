"""What the command lines promise beyond the happy path: validation-only training runs, prediction from the best or
latest checkpoint, and the fingerprint that msgldm_plan_and_preprocess reuses unless told --clean."""
from __future__ import annotations

import json
import shutil

import numpy as np
from conftest import TINY_TRAINING
from test_inference import outputs_of, write_case, write_fake_model

from msgldm_auto.cli import plan_and_preprocess, predict, train
from msgldm_auto.plans import Plans


def _files(folder):
    """Every file under `folder` with its bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ msgldm_train --val
def test_train_val_rewrites_the_fold_validation_without_training(tiny_trained_demo, capsys):
    fold = tiny_trained_demo / "fold_0"
    shutil.rmtree(fold / "validation")
    trained = _files(fold / "structure")
    assert train.main(["901", "2d", "0", *TINY_TRAINING, "--val"]) == 0
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["num_cases"] == 1 and summary["mean"]["psnr"]["n"] > 0
    assert _files(fold / "structure") == trained                       # no checkpoint or log line was written
    assert sorted(p.name for p in fold.iterdir()) == ["structure", "validation"]
    out = capsys.readouterr().out
    assert f"validation summary: {fold / 'validation' / 'summary.json'}" in out and "stage structure" not in out


def test_train_val_of_an_untrained_fold_is_a_one_line_error(tiny_trained_demo, capsys):
    assert train.main(["901", "2d", "1", *TINY_TRAINING, "--val"]) == 2
    error = capsys.readouterr().err.strip()
    assert "fold_1/structure/checkpoint_final.pth: stage 'structure' of fold 1 is not trained" in error
    assert len(error.splitlines()) == 1 and not (tiny_trained_demo / "fold_1").exists()


# ------------------------------------------------------------------------------------------ msgldm_predict -chk
def _model_with_best_and_latest(results):
    """Fold 0 whose best and latest checkpoints hold folds 1's and 2's weights (three distinct random networks)."""
    folder = write_fake_model(results, folds=("0", "1", "2"), diffusion=False, stages=("structure",))
    for checkpoint, source in (("best", "1"), ("latest", "2")):
        shutil.copyfile(folder / f"fold_{source}" / "structure" / "checkpoint_final.pth",
                        folder / "fold_0" / "structure" / f"checkpoint_{checkpoint}.pth")
    return folder


def _predict(inputs, output, *options) -> dict:
    assert predict.main(["-i", str(inputs), "-o", str(output), "-d", "42", "-device", "cpu", *options]) == 0
    return {name: image.array for name, image in outputs_of(output).items()}


def test_predict_chk_best_and_latest_load_those_checkpoints(msgldm_roots, tmp_path, capsys):
    _model_with_best_and_latest(msgldm_roots / "results")
    inputs = tmp_path / "in"
    write_case(inputs, "a", [0])
    final = _predict(inputs, tmp_path / "final", "-f", "0")
    best = _predict(inputs, tmp_path / "best", "-f", "0", "-chk", "best")
    latest = _predict(inputs, tmp_path / "latest", "-f", "0", "-chk", "latest")
    assert "checkpoint best" in capsys.readouterr().out
    assert list(final) == list(best) == list(latest) == ["a_0001.nii.gz", "a_0002.nii.gz"]
    fold_1, fold_2 = _predict(inputs, tmp_path / "f1", "-f", "1"), _predict(inputs, tmp_path / "f2", "-f", "2")
    for name in final:
        np.testing.assert_array_equal(best[name], fold_1[name])
        np.testing.assert_array_equal(latest[name], fold_2[name])
        assert not np.array_equal(best[name], final[name]) and not np.array_equal(latest[name], final[name])


def test_predict_chk_with_a_missing_checkpoint_names_the_file(msgldm_roots, tmp_path, capsys):
    folder = _model_with_best_and_latest(msgldm_roots / "results")
    (folder / "fold_0" / "structure" / "checkpoint_latest.pth").unlink()
    inputs = tmp_path / "in"
    write_case(inputs, "a", [0])
    args = ["-i", str(inputs), "-o", str(tmp_path / "out"), "-d", "42", "-device", "cpu", "-chk", "latest"]
    assert predict.main(args + ["-f", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{folder / 'fold_0' / 'structure' / 'checkpoint_latest.pth'}: checkpoint missing" in error
    assert predict.main(args) == 2                                     # no -f: no fold has that checkpoint
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no fold has checkpoint_latest.pth" in error
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ fingerprint reuse and --clean
PLAN_ONLY = ["-d", "901", "-pl", "cpu", "-np", "1", "--no_pp"]


def _fake_t1_scale(path, value: float) -> None:
    """Overwrite every case's T1 p99.5 in a stored fingerprint: a value only a reused fingerprint can carry."""
    data = json.loads(path.read_text())
    for case in data["cases"]:
        if "0" in case["percentiles"]:
            case["percentiles"]["0"][2] = value
    path.write_text(json.dumps(data))


def test_plan_and_preprocess_reuses_the_fingerprint_until_clean(tiny_demo_dataset, msgldm_roots):
    folder = msgldm_roots / "preprocessed" / "Dataset901_Demo"
    fingerprint, plans = folder / "dataset_fingerprint.json", folder / "MSGLDMPlans_cpu.json"
    assert plan_and_preprocess.main(PLAN_ONLY) == 0
    measured = Plans.load(plans).intensity_p995["T1"]
    _fake_t1_scale(fingerprint, 12345.0)
    stored = (fingerprint.read_bytes(), fingerprint.stat().st_mtime_ns)

    assert plan_and_preprocess.main(PLAN_ONLY) == 0
    assert (fingerprint.read_bytes(), fingerprint.stat().st_mtime_ns) == stored        # not rewritten ...
    assert Plans.load(plans).intensity_p995["T1"] == 12345.0                            # ... and planned from
    assert not (folder / "MSGLDMPlans_cpu_2d").exists()                                  # --no_pp: nothing preprocessed

    assert plan_and_preprocess.main(PLAN_ONLY + ["--clean"]) == 0
    assert fingerprint.read_bytes() != stored[0]
    assert Plans.load(plans).intensity_p995["T1"] == measured


def test_a_changed_case_set_invalidates_the_stored_fingerprint(tiny_demo_dataset, msgldm_roots):
    fingerprint = msgldm_roots / "preprocessed" / "Dataset901_Demo" / "dataset_fingerprint.json"
    assert plan_and_preprocess.main(PLAN_ONLY) == 0
    _fake_t1_scale(fingerprint, 12345.0)
    (tiny_demo_dataset / "imagesTr" / "demo_000_0001.nii.gz").unlink()            # demo_000 now misses T2
    assert plan_and_preprocess.main(PLAN_ONLY) == 0
    cases = {c["case_id"]: c for c in json.loads(fingerprint.read_text())["cases"]}
    assert cases["demo_000"]["present"] == [0, 2, 3]
    assert all(c["percentiles"]["0"][2] != 12345.0 for c in cases.values() if "0" in c["percentiles"])
