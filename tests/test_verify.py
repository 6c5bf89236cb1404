"""Integrity checks: every bad input gets its own message, all problems are reported, grids and resampling."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msgldm_auto.cli.verify_dataset import main as verify_main
from msgldm_auto.dataset import verify as verify_module
from msgldm_auto.dataset.image_io import Image, read_image, write_image
from msgldm_auto.dataset.verify import (
    ERROR,
    WARNING,
    Problem,
    check_case_grids,
    check_label_grid,
    resample_to_reference,
    verify_dataset,
)
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.preprocessing.grids import harmonise_grids

SHAPE = (6, 7, 8)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _image(seed: int = 0, shape=SHAPE, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), dtype=np.float32) -> Image:
    array = np.random.default_rng(seed).uniform(0, 100, shape).astype(dtype)
    return Image(array, spacing, origin, IDENTITY)


def _label(shape=SHAPE, spacing=(1.0, 1.0, 2.0), values=(0, 1)) -> Image:
    array = np.zeros(shape, dtype=np.uint8)
    array.flat[: len(values)] = values
    return Image(array, spacing, (0.0, 0.0, 0.0), IDENTITY)


def _dataset(root: Path, cases: int = 2, with_labels: bool = True) -> Path:
    """A small valid dataset: cases c0..c{n-1} with T1 + T2 (+ a lesion label), one test case with FLAIR only."""
    folder = root / "Dataset042_Small"
    data = {"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"}, "file_ending": ".nii.gz", "numTraining": cases,
            "labels": {"background": 0, "lesion": 1}}
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(data))
    for i in range(cases):
        for channel in (0, 1):
            write_image(_image(seed=10 * i + channel), folder / "imagesTr" / f"c{i}_{channel:04d}.nii.gz")
        if with_labels:
            write_image(_label(), folder / "labelsTr" / f"c{i}.nii.gz")
    write_image(_image(seed=99), folder / "imagesTs" / "t0_0002.nii.gz")
    return folder


def _messages(report) -> list[str]:
    return [p.format() for p in report.problems]


def _only_problem(report) -> Problem:
    assert len(report.problems) == 1, _messages(report)
    return report.problems[0]


def test_valid_dataset_passes_and_reads_each_file_once(tmp_path, monkeypatch):
    folder = _dataset(tmp_path)
    calls: list[Path] = []

    original = verify_module.read_image_keeping_nonfinite

    def counting_read(path):
        calls.append(Path(path))
        return original(path)

    monkeypatch.setattr(verify_module, "read_image_keeping_nonfinite", counting_read)
    report = verify_dataset(folder)
    assert report.ok and report.problems == [] and report.cases_checked == 3
    assert len(calls) == len(set(calls)) == 2 * 2 + 2 + 1      # 4 images + 2 labels + 1 test image
    assert "OK, 3 cases checked" in report.summary()


def test_missing_dataset_json(tmp_path):
    folder = _dataset(tmp_path)
    (folder / "dataset.json").unlink()
    problem = _only_problem(verify_dataset(folder))
    assert problem.file == "dataset.json" and "dataset.json is missing" in problem.message


def test_malformed_dataset_json(tmp_path):
    folder = _dataset(tmp_path)
    (folder / "dataset.json").write_text('{"channel_names": {"0": "T1"}, "file_ending": ".nii.gz"}')
    problem = _only_problem(verify_dataset(folder))
    assert "key 'numTraining' must be a non-negative integer" in problem.message
    assert str(folder) not in problem.message          # the file is named once, in its own column


def test_file_ending_mismatch(tmp_path):
    folder = _dataset(tmp_path)
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)), folder / "imagesTr" / "c9_0000.nii")
    problem = _only_problem(verify_dataset(folder))
    assert problem.file == "imagesTr/c9_0000.nii"
    assert "file ending does not match dataset.json's file_ending '.nii.gz'" in problem.message
    assert "correct 'file_ending'" in problem.fix


def test_channel_suffix_not_in_channel_names(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_image(), folder / "imagesTr" / "c0_0005.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert problem.case == "c0" and problem.file == "imagesTr/c0_0005.nii.gz"
    assert "channel suffix 0005 is not in channel_names (valid: 0000, 0001, 0002)" in problem.message


def test_badly_named_file(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_image(), folder / "imagesTr" / "c0_t1.nii.gz")
    assert "name does not follow {CASE}_{CHANNEL:04d}.nii.gz" in _only_problem(verify_dataset(folder)).message


def test_training_case_with_one_modality(tmp_path):
    folder = _dataset(tmp_path)
    (folder / "imagesTr" / "c1_0001.nii.gz").unlink()
    problem = _only_problem(verify_dataset(folder))
    assert problem.case == "c1"
    assert "only 1 modality file(s) (T1); training cases need at least 2 modalities" in problem.message


def test_test_cases_need_only_one_modality_but_are_checked(tmp_path):
    folder = _dataset(tmp_path)
    image = _image(seed=5)
    image.array[0, 0, 0] = np.inf
    write_image(image, folder / "imagesTs" / "t1_0000.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert problem.file == "imagesTs/t1_0000.nii.gz" and "1 voxel(s) are NaN or Inf" in problem.message


def test_grids_differ_error_and_warning_with_resample(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_image(seed=1, spacing=(1.0, 1.0, 3.0)), folder / "imagesTr" / "c0_0001.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert problem.severity == ERROR and problem.file == "imagesTr/c0_0001.nii.gz"
    assert "grid differs from T1 (spacing (1, 1, 3) vs (1, 1, 2))" in problem.message
    assert "--resample-mismatched" in problem.fix
    relaxed = verify_dataset(folder, resample_mismatched=True)
    assert relaxed.ok and _only_problem(relaxed).severity == WARNING
    assert "will be resampled (linear) onto the T1 grid" in relaxed.problems[0].message


def test_float_noise_in_geometry_is_tolerated(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_image(seed=1, origin=(1e-6, -2e-6, 0.0), spacing=(1.0 + 1e-7, 1.0, 2.0)),
                folder / "imagesTr" / "c0_0001.nii.gz")
    assert verify_dataset(folder).problems == []


def test_nan_voxels(tmp_path):
    folder = _dataset(tmp_path)
    image = _image(seed=3)
    image.array[1, 2, :3] = np.nan
    write_image(image, folder / "imagesTr" / "c1_0000.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert "3 voxel(s) are NaN or Inf" in problem.message and "replace non-finite voxels" in problem.fix


def test_nonfinite_voxels_survive_reading_with_itk_geometry(tmp_path):
    """ITK's NIfTI reader turns NaN/Inf into 0; the verifier's reader keeps them and still reports ITK's geometry."""
    image = Image(np.ones(SHAPE, np.float32), (0.9, 1.1, 2.5), (3.0, -4.0, 5.5),
                  (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    image.array[0, 1, 2], image.array[3, 2, 1] = np.nan, -np.inf
    write_image(image, tmp_path / "x.nii.gz")
    assert np.isfinite(read_image(tmp_path / "x.nii.gz").array).all()          # the quirk this guards against
    kept = verify_module.read_image_keeping_nonfinite(tmp_path / "x.nii.gz")
    assert np.isnan(kept.array[0, 1, 2]) and np.isneginf(kept.array[3, 2, 1])
    assert kept.same_grid(read_image(tmp_path / "x.nii.gz"))


def test_constant_image(tmp_path):
    folder = _dataset(tmp_path)
    write_image(Image(np.full(SHAPE, 7, np.int16), (1.0, 1.0, 2.0), (0.0,) * 3, IDENTITY),
                folder / "imagesTr" / "c0_0000.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert "every voxel has the same value (7)" in problem.message and "missing modality" in problem.fix


def test_four_dimensional_image(tmp_path):
    folder = _dataset(tmp_path)
    data = np.random.default_rng(0).uniform(size=(8, 7, 6, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), folder / "imagesTr" / "c0_0001.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert problem.file == "imagesTr/c0_0001.nii.gz" and "image is 4D" in problem.message
    assert "where a 3D volume is expected" in problem.message


def test_corrupt_file(tmp_path):
    folder = _dataset(tmp_path)
    (folder / "imagesTr" / "c1_0001.nii.gz").write_bytes(b"\x1f\x8b garbage")
    problem = _only_problem(verify_dataset(folder))
    assert problem.file == "imagesTr/c1_0001.nii.gz" and "unreadable or corrupt file" in problem.message


def test_undeclared_label_values(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_label(values=(0, 1, 3)), folder / "labelsTr" / "c0.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert problem.file == "labelsTr/c0.nii.gz"
    assert "label values [3] are not declared in dataset.json 'labels' (declared: [0, 1])" in problem.message


def test_label_without_labels_key(tmp_path):
    folder = _dataset(tmp_path)
    data = json.loads((folder / "dataset.json").read_text())
    del data["labels"]
    (folder / "dataset.json").write_text(json.dumps(data))
    report = verify_dataset(folder)
    assert len(report.errors) == 2 and all("declares no 'labels'" in p.message for p in report.errors)


def test_empty_label_map_is_fine(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_label(values=()), folder / "labelsTr" / "c0.nii.gz")
    assert verify_dataset(folder).problems == []


def test_label_grid_differs_from_images(tmp_path):
    folder = _dataset(tmp_path)
    write_image(_label(shape=(6, 7, 9)), folder / "labelsTr" / "c1.nii.gz")
    problem = _only_problem(verify_dataset(folder))
    assert "label grid differs from its images (shape (6, 7, 9) vs (6, 7, 8))" in problem.message
    assert "--resample-mismatched" in problem.fix
    assert _only_problem(verify_dataset(folder, resample_mismatched=True)).severity == WARNING


def test_verify_and_preprocessing_apply_one_grid_rule():
    """harmonise_grids (planning, prediction) refuses and resamples exactly what verify reports, in verify's words."""
    reference, shifted = _image(seed=0), _image(seed=1, origin=(0.0, 0.0, 5.0))
    label = _label(shape=(6, 7, 9))
    expected = [p.describe() for p in check_case_grids({0: reference, 1: shifted}, "caseA")]
    expected += [p.describe() for p in check_label_grid(label, {0: reference}, "caseA")]
    with pytest.raises(MSGLDMError) as error:
        harmonise_grids({0: reference, 1: shifted}, label, resample_mismatched=False, case_id="caseA")
    assert str(error.value) == "; ".join(f"case {line}" for line in expected)
    with pytest.warns(UserWarning, match="resampled"):
        images, seg, resampled = harmonise_grids({0: reference, 1: shifted}, label, True, "caseA")
    assert resampled == [1] and images[1].same_grid(reference) and seg.same_grid(reference)
    assert check_case_grids(images, "caseA") == [] and check_label_grid(seg, images, "caseA") == []


def test_num_training_mismatch_and_no_training_cases(tmp_path):
    folder = _dataset(tmp_path, cases=3)
    data = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps(dict(data, numTraining=5)))
    assert "numTraining is 5 but imagesTr holds 3 cases" in _only_problem(verify_dataset(folder)).message
    for path in (folder / "imagesTr").iterdir():
        path.unlink()
    assert any("no training cases found" in m for m in _messages(verify_dataset(folder)))


def test_every_problem_is_reported_one_line_each(tmp_path):
    folder = _dataset(tmp_path, cases=3)
    (folder / "imagesTr" / "c0_0001.nii.gz").unlink()                                      # too few modalities
    (folder / "imagesTr" / "c1_0001.nii.gz").write_bytes(b"corrupt")                       # unreadable
    write_image(_image(seed=4, shape=(6, 7, 7)), folder / "imagesTr" / "c2_0001.nii.gz")   # grid mismatch
    write_image(_label(values=(0, 2)), folder / "labelsTr" / "c2.nii.gz")                  # undeclared label
    write_image(_image(), folder / "imagesTr" / "c2_0009.nii.gz")                          # unknown channel
    report = verify_dataset(folder)
    lines = report.format().splitlines()
    assert len(report.errors) == len(lines) == 5, lines
    for line in lines:
        assert line.startswith("ERROR: ") and "; fix: " in line
    for text in ("only 1 modality", "unreadable or corrupt", "grid differs from T1", "label values [2]",
                 "channel suffix 0009"):
        assert sum(text in line for line in lines) == 1, text


def test_check_case_grids_helper_uses_first_available_modality():
    reference = _image(seed=0)
    other = _image(seed=1, origin=(0.0, 0.0, 5.0))
    problems = check_case_grids({1: reference, 2: other}, "caseA", files={2: "imagesTr/caseA_0002.nii.gz"},
                                channel_names={1: "T2", 2: "FLAIR"})
    assert [(p.case, p.file, p.severity) for p in problems] == [("caseA", "imagesTr/caseA_0002.nii.gz", ERROR)]
    assert "grid differs from T2 (origin (0, 0, 5) vs (0, 0, 0))" in problems[0].message
    assert check_case_grids({1: reference}, "caseA") == []
    assert check_case_grids({1: reference, 2: other}, "caseA", resample_mismatched=True)[0].severity == WARNING


def test_resample_to_reference_is_linear_on_the_reference_grid():
    # a ramp along i (the last numpy axis) at 2 mm spacing, resampled onto a 1 mm grid shifted by 0.5 mm
    coarse = Image(np.broadcast_to(np.arange(8, dtype=np.int16) * 10, (3, 4, 8)).copy(), (2.0, 1.0, 1.0), (0.0,) * 3,
                   IDENTITY)
    reference = Image(np.zeros((3, 4, 12), np.float32), (1.0, 1.0, 1.0), (0.5, 0.0, 0.0), IDENTITY)
    out = resample_to_reference(coarse, reference)
    assert out.same_grid(reference) and out.array.dtype == np.float32
    np.testing.assert_allclose(out.array[1, 2], 5.0 * (0.5 + np.arange(12)), atol=1e-4)   # value = 10 * x / 2
    labels = Image((np.arange(8) % 3).astype(np.uint8)[None, None].repeat(3, 0).repeat(4, 1), (2.0, 1.0, 1.0),
                   (0.0,) * 3, IDENTITY)
    nearest = resample_to_reference(labels, reference, interpolation="nearest")
    assert nearest.array.dtype == np.uint8 and set(np.unique(nearest.array)) <= {0, 1, 2}


def test_cli_exit_codes_and_output(msgldm_roots, capsys):
    folder = _dataset(msgldm_roots / "raw")
    assert verify_main(["-d", "42"]) == 0
    assert "OK, 3 cases checked" in capsys.readouterr().out
    write_image(_image(seed=1, spacing=(1.0, 1.0, 3.0)), folder / "imagesTr" / "c0_0001.nii.gz")
    assert verify_main(["-d", "Dataset042_Small"]) == 1
    out = capsys.readouterr().out
    assert "ERROR: c0 imagesTr/c0_0001.nii.gz: grid differs from T1" in out and "FAILED" in out
    assert verify_main(["-d", "42", "--resample_mismatched"]) == 0
    assert "WARNING: c0 imagesTr/c0_0001.nii.gz" in capsys.readouterr().out
    assert verify_main(["-d", "43"]) == 2
    assert "ERROR: no dataset with ID 43" in capsys.readouterr().err
