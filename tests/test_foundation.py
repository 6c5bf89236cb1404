"""The foundation: data roots, dataset.json parsing and its errors, case discovery, image I/O (incl. nibabel fallback,
atomic writes)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from msgldm_auto import paths
from msgldm_auto.dataset import image_io
from msgldm_auto.dataset.cases import discover_cases, image_file_name, split_image_name, training_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image, read_image_header, write_image
from msgldm_auto.errors import MSGLDMError

MINIMAL = {"channel_names": {"0": "T1", "1": "T2"}, "file_ending": ".nii.gz", "numTraining": 2}


# ---------------------------------------------------------------- data roots
def test_roots_default_under_msgldm_home(msgldm_roots):
    assert paths.raw_root() == msgldm_roots / "raw"
    assert paths.preprocessed_root() == msgldm_roots / "preprocessed"
    assert paths.results_root() == msgldm_roots / "results"
    assert str(msgldm_roots / "raw") in paths.roots().describe()


def test_home_defaults_to_msgldm_data_in_user_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MSGLDM_HOME", raising=False)
    monkeypatch.delenv("MSGLDM_RAW", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.raw_root() == tmp_path / "msgldm_data" / "raw"


def test_explicit_root_variables_win_and_are_read_at_call_time(msgldm_roots, monkeypatch, tmp_path):
    monkeypatch.setenv("MSGLDM_RESULTS", str(tmp_path / "elsewhere"))
    assert paths.results_root() == tmp_path / "elsewhere"
    assert paths.raw_root() == msgldm_roots / "raw"      # the others still follow MSGLDM_HOME


def test_resolve_dataset_by_id_and_name(msgldm_roots):
    (msgldm_roots / "preprocessed" / "Dataset007_Brains").mkdir(parents=True)
    assert paths.resolve_dataset_name(7) == "Dataset007_Brains"
    assert paths.resolve_dataset_name("007") == "Dataset007_Brains"
    assert paths.resolve_dataset_name("Dataset123_Other") == "Dataset123_Other"
    assert paths.raw_dataset_folder(7) == msgldm_roots / "raw" / "Dataset007_Brains"


def test_unknown_ambiguous_and_malformed_dataset_identifiers(msgldm_roots):
    with pytest.raises(MSGLDMError, match="no dataset with ID 5.*msgldm_make_demo_dataset"):
        paths.resolve_dataset_name(5)
    (msgldm_roots / "raw" / "Dataset005_A").mkdir(parents=True)
    (msgldm_roots / "results" / "Dataset005_B").mkdir(parents=True)
    with pytest.raises(MSGLDMError, match="ambiguous.*Dataset005_A, Dataset005_B"):
        paths.resolve_dataset_name(5)
    with pytest.raises(MSGLDMError, match="neither a dataset ID"):
        paths.resolve_dataset_name("Brats")


def test_one_scan_finds_datasets_by_id_for_lookups_and_clash_checks(msgldm_roots):
    """`datasets_with_id` is what ID lookup, the converters' clash check and the demo builders all use."""
    from dataset_conversion.writer import WriteOptions, target_folder

    raw = msgldm_roots / "raw"
    (raw / "Dataset005_A").mkdir(parents=True)
    (raw / ".Dataset005_B.incomplete-1234").mkdir()        # a staging folder is not a dataset
    (raw / "Dataset005_C.txt").write_text("a file, not a dataset")
    (raw / "Dataset050_Other").mkdir()
    assert paths.datasets_with_id(5, [raw, msgldm_roots / "results"]) == [raw / "Dataset005_A"]
    assert paths.resolve_dataset_name(5) == "Dataset005_A"
    with pytest.raises(MSGLDMError, match="dataset ID 5 is already used by .*Dataset005_A"):
        target_folder(WriteOptions(dataset_id=5, name="B"))
    assert target_folder(WriteOptions(dataset_id=5, name="A", overwrite=True)) == raw / "Dataset005_A"


def test_make_dataset_name_validates():
    assert paths.make_dataset_name(1, "BraTS2020") == "Dataset001_BraTS2020"
    with pytest.raises(MSGLDMError, match="out of range"):
        paths.make_dataset_name(1000, "X")
    with pytest.raises(MSGLDMError, match="may only contain"):
        paths.make_dataset_name(1, "has space")


# ---------------------------------------------------------------- dataset.json
def _write_json(folder: Path, content) -> Path:
    path = folder / "dataset.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_dataset_json_round_trip_keeps_unknown_keys(tmp_path):
    data = dict(MINIMAL, labels={"background": 0, "tumour": [1, 2]}, name="X", licence="CC-BY")
    loaded = DatasetJson.load(_write_json(tmp_path, data))
    assert loaded.channel_names == {0: "T1", 1: "T2"} and loaded.modalities == ["T1", "T2"]
    assert loaded.labels == {"background": 0, "tumour": [1, 2]}
    assert DatasetJson.from_dict(loaded.to_dict()).to_dict() == loaded.to_dict()
    assert loaded.to_dict()["licence"] == "CC-BY"


def test_dataset_json_accepts_nnunet_v1_modality_key():
    data = {"modality": {"0": "FLAIR"}, "file_ending": ".nii.gz", "numTraining": 0}
    assert DatasetJson.from_dict(data).channel_names == {0: "FLAIR"}


@pytest.mark.parametrize("change, message", [
    ({"channel_names": None}, "key 'channel_names' must map channel numbers"),
    ({"channel_names": {"0": "T1", "2": "T2"}}, "numbered 0..1 without gaps"),
    ({"channel_names": {"0": "T1", "1": "T1"}}, "duplicate names"),
    ({"channel_names": {"a": "T1"}}, "entry 'a'"),
    ({"file_ending": "nii.gz"}, "key 'file_ending' must be a string such as"),
    ({"numTraining": -1}, "key 'numTraining' must be a non-negative integer"),
    ({"numTraining": "3"}, "key 'numTraining'"),
    ({"labels": {"background": "zero"}}, "key 'labels' must map names to integer values"),
])
def test_dataset_json_errors_name_the_key(tmp_path, change, message):
    data = {k: v for k, v in dict(MINIMAL, **change).items() if v is not None}
    path = _write_json(tmp_path, data)
    with pytest.raises(MSGLDMError, match=message) as info:
        DatasetJson.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_dataset_json_missing_or_not_json(tmp_path):
    with pytest.raises(MSGLDMError, match="dataset.json is missing"):
        DatasetJson.load(tmp_path / "dataset.json")
    with pytest.raises(MSGLDMError, match="not valid JSON .* line 2"):
        DatasetJson.load(_write_json(tmp_path, '{\n "channel_names": ,\n}'))
    with pytest.raises(MSGLDMError, match="expected a JSON object"):
        DatasetJson.load(_write_json(tmp_path, "[1, 2]"))


# ---------------------------------------------------------------- case discovery
def test_split_and_build_image_names():
    assert split_image_name("BraTS_001_0002.nii.gz", ".nii.gz") == ("BraTS_001", 2)
    assert split_image_name("case_0002.nii", ".nii.gz") is None
    assert split_image_name("case_02.nii.gz", ".nii.gz") is None
    assert image_file_name("a_b", 3, ".nii.gz") == "a_b_0003.nii.gz"


def test_discovery_finds_missing_modalities_labels_and_strays(tmp_path):
    dataset = DatasetJson.from_dict(dict(MINIMAL, channel_names={"0": "T1", "1": "T2", "2": "FLAIR"}))
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    images.mkdir()
    labels.mkdir()
    for name in ["a_0000.nii.gz", "a_0001.nii.gz", "a_0002.nii.gz", "b_0000.nii.gz", "b_0002.nii.gz",
                 "c_0007.nii.gz", "notes.txt", ".hidden"]:
        (images / name).touch()
    (labels / "b.nii.gz").touch()
    cases, strays = discover_cases(images, dataset, labels)
    assert [c.case_id for c in cases] == ["a", "b"]
    assert cases[0].missing == [] and cases[0].label is None
    assert cases[1].present == [0, 2] and cases[1].missing == [1] and cases[1].label == labels / "b.nii.gz"
    reasons = {s.path.name: s.reason for s in strays}
    assert set(reasons) == {"c_0007.nii.gz", "notes.txt"}
    assert "channel 7 is not in channel_names" in reasons["c_0007.nii.gz"]


def test_training_cases_use_the_explicit_dataset_dict(tmp_path):
    (tmp_path / "somewhere").mkdir()
    for name in ["x_t1.nii.gz", "x_t2.nii.gz", "x_seg.nii.gz"]:
        (tmp_path / "somewhere" / name).touch()
    data = dict(MINIMAL, numTraining=1, dataset={"x": {"images": ["somewhere/x_t1.nii.gz", "somewhere/absent.nii.gz"],
                                                       "label": "somewhere/x_seg.nii.gz"}})
    _write_json(tmp_path, data)
    [case] = training_cases(tmp_path)
    assert case.images == {0: tmp_path / "somewhere" / "x_t1.nii.gz"}
    assert case.missing == [1] and case.label == tmp_path / "somewhere" / "x_seg.nii.gz"


# ---------------------------------------------------------------- image I/O
def _oblique_image(dtype=np.float32) -> Image:
    rotation = sitk.VersorTransform((0.3, 0.2, 0.9), 0.4).GetMatrix()
    array = np.arange(4 * 5 * 6, dtype=dtype).reshape(4, 5, 6)
    return Image(array, (0.8, 1.1, 3.3), (12.25, -40.5, 7.125), tuple(rotation))


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_write_read_round_trip_is_exact(tmp_path, dtype):
    image = _oblique_image(dtype)
    write_image(image, tmp_path / "x.nii.gz")
    back = read_image(tmp_path / "x.nii.gz")
    assert back.array.dtype == dtype and np.array_equal(back.array, image.array)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)
    assert back.same_grid(image)


def test_array_order_is_kji_and_geometry_lps(tmp_path):
    """A NIfTI written by nibabel with a RAS affine reads as (k, j, i) with the LPS origin and flipped x/y
    directions."""
    data = np.zeros((3, 4, 5), dtype=np.float32)
    data[2, 0, 0] = 1.0                               # i = 2
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (10.0, 20.0, 30.0)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ras.nii.gz")
    image = read_image(tmp_path / "ras.nii.gz")
    assert image.array.shape == (5, 4, 3) and image.array[0, 0, 2] == 1.0
    np.testing.assert_allclose(image.origin, (-10.0, -20.0, 30.0))
    np.testing.assert_allclose(image.direction, (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    np.testing.assert_allclose(image.spacing, (2.0, 3.0, 4.0))


def test_nibabel_fallback_matches_simpleitk(tmp_path, monkeypatch):
    image = _oblique_image()
    write_image(image, tmp_path / "x.nii.gz")
    expected = read_image(tmp_path / "x.nii.gz")

    def reject(*args, **kwargs):
        raise RuntimeError("pretend ITK cannot read this")

    monkeypatch.setattr(image_io.sitk, "ReadImage", reject)
    fallback = read_image(tmp_path / "x.nii.gz")
    assert np.array_equal(fallback.array, expected.array)
    np.testing.assert_allclose(fallback.spacing, expected.spacing, atol=1e-5)
    np.testing.assert_allclose(fallback.origin, expected.origin, atol=1e-4)
    np.testing.assert_allclose(fallback.direction, expected.direction, atol=1e-5)


def test_nibabel_reads_what_simpleitk_rejects(tmp_path):
    """ITK refuses sheared affines; nibabel reads them, spacing = column norms."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 1] = 0.5
    data = np.broadcast_to(np.arange(6, dtype=np.float32), (4, 5, 6)).copy()
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "shear.nii.gz")
    image = read_image(tmp_path / "shear.nii.gz")
    assert image.array.shape == (6, 5, 4) and np.array_equal(image.array[:, 0, 0], np.arange(6))
    np.testing.assert_allclose(image.spacing, (2.0, np.hypot(0.5, 2.0), 2.0))


def test_corrupt_and_missing_files_raise_one_line_errors(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"this is not an image")
    with pytest.raises(MSGLDMError, match="unreadable image.*re-export or replace"):
        read_image(tmp_path / "bad.nii.gz")
    with pytest.raises(MSGLDMError, match="does not exist"):
        read_image(tmp_path / "absent.nii.gz")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "x.nii.gz"
    write_image(_oblique_image(), target)
    before = target.read_bytes()

    def crash_midway(img, name, useCompression=True):
        Path(name).write_bytes(b"half an image")
        raise RuntimeError("disk full")

    monkeypatch.setattr(image_io.sitk, "WriteImage", crash_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(Image(np.ones((2, 2, 2), np.float32), (1.0,) * 3, (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1)), target)
    assert target.read_bytes() == before                 # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]   # and no temporary file is left behind


def test_same_grid_tolerates_float_noise_only():
    image = _oblique_image()
    noisy = Image(image.array, tuple(s + 1e-7 for s in image.spacing), tuple(o + 1e-6 for o in image.origin),
                  tuple(d + 1e-7 for d in image.direction))
    assert image.same_grid(noisy)
    shifted = Image(image.array, image.spacing, (image.origin[0] + 0.5,) + image.origin[1:], image.direction)
    assert not image.same_grid(shifted)
    assert not image.same_grid(Image(image.array[:-1], image.spacing, image.origin, image.direction))
    with pytest.raises(ValueError, match="does not match the grid"):
        image.with_array(image.array[:-1])


def test_read_image_header_gives_the_grid_without_voxels(tmp_path):
    image = Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0),
                  (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    write_image(image, tmp_path / "x.nii.gz")
    header = read_image_header(tmp_path / "x.nii.gz")
    assert header.array.shape == image.array.shape and header.same_grid(image) and image.same_grid(header)


def test_staged_folder_swaps_in_whole_or_not_at_all(tmp_path, monkeypatch):
    """The one stage-then-swap helper behind the converters, the demo/ICBM152 builders and model-zip installs."""
    from msgldm_auto import atomic

    target, other = tmp_path / "Dataset001_A", tmp_path / "Dataset001_B"
    for folder in (target, other):
        folder.mkdir()
        (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.staged_folder(target, replaces=[other]) as staging:
            (staging / "new.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_A", "Dataset001_B"]

    real_replace = atomic.os.replace

    def refuse_the_new_folder(source, destination):
        if ".incomplete-" in str(source):
            raise OSError("rename failed")
        real_replace(source, destination)

    with monkeypatch.context() as patch, pytest.raises(OSError, match="rename failed"):
        patch.setattr(atomic.os, "replace", refuse_the_new_folder)
        with atomic.staged_folder(target, replaces=[other]) as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_A", "Dataset001_B"]    # old ones put back
    with atomic.staged_folder(target, replaces=[other]) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_A"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_every_json_file_reports_missing_and_corrupt_in_one_line(tmp_path):
    """dataset.json, plans, fingerprint, splits and preprocessed properties all load through `load_json`."""
    from msgldm_auto.json_files import load_json
    from msgldm_auto.plans import Plans
    from msgldm_auto.preprocessing.storage import load_case
    from msgldm_auto.training.splits import load_splits
    from planning.fingerprint import DatasetFingerprint

    with pytest.raises(MSGLDMError, match=r"missing.json: file not found; run it"):
        load_json(tmp_path / "missing.json", "run it")
    loaders = {"any.json": lambda p: load_json(p, "rewrite it"), "dataset.json": DatasetJson.load,
               "plans.json": Plans.load, "fingerprint.json": DatasetFingerprint.load,
               "splits_final.json": lambda p: load_splits(p.parent, ["a"]),
               "case_x.json": lambda p: load_case(p.parent, "case_x")}           # preprocessed properties
    for name, loader in loaders.items():
        path = tmp_path / name
        path.write_text('{"a": 1,\n oops}')
        with pytest.raises(MSGLDMError) as error:
            loader(path)
        message = str(error.value)
        assert message.startswith(f"{path}: not valid JSON (") and "line 2); " in message and "\n" not in message
