"""msgldm_convert on tiny fake trees that reproduce each release's exact folder and file names (quirks included)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.registration import RigidRegistrationSettings, register_rigid
from dataset_conversion.writer import remap_labels
from msgldm_auto.cli.convert import main
from msgldm_auto.dataset.image_io import Image, read_image, write_image
from msgldm_auto.errors import MSGLDMError

SHAPE = (12, 14, 16)  # (k, j, i)
SPACING = (1.0, 1.2, 1.5)
ORIGIN = (-5.0, 3.0, 10.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------- helpers
def volume(path: Path, seed: int, offset: float = 0.0, shape=SHAPE, spacing=SPACING, origin=ORIGIN) -> np.ndarray:
    array = (np.random.default_rng(seed).random(shape) * 100 + offset).astype(np.float32)
    write_image(Image(array, spacing, origin, IDENTITY), path)
    return array


def segmentation(path: Path, values: list[int], seed: int, dtype=np.uint8) -> np.ndarray:
    array = np.random.default_rng(seed).choice(values, size=SHAPE).astype(dtype)
    array.flat[: len(values)] = values  # every value present at least once
    write_image(Image(array, SPACING, ORIGIN, IDENTITY), path)
    return array


def tree_fingerprint(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def raw(home: Path) -> Path:
    return home / "raw"


def dataset_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def assert_same_grid(image: Image) -> None:
    assert image.array.shape == SHAPE
    np.testing.assert_allclose(image.spacing, SPACING)
    np.testing.assert_allclose(image.origin, ORIGIN)
    np.testing.assert_allclose(image.direction, IDENTITY)


# ------------------------------------------------------------------------------------------------------------- BraTS
def make_brats2020(root: Path) -> dict:
    """Training (.nii as in the release, case 355 with its odd segmentation name), validation, and the CSV files."""
    training = root / "MICCAI_BraTS2020_TrainingData"
    arrays = {}
    for n, case in enumerate(["BraTS20_Training_001", "BraTS20_Training_355"]):
        for m, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
            arrays[case, suffix] = volume(training / case / f"{case}_{suffix}.nii", seed=10 * n + m, offset=1000 * m)
    arrays["seg001"] = segmentation(training / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii", [0, 1, 2, 4], 1)
    arrays["seg355"] = segmentation(training / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii", [0, 1, 2, 4], 2)
    (training / "BraTS20_Training_001" / "._BraTS20_Training_001_t1.nii").write_bytes(b"macOS resource fork")
    (training / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\nHGG,BraTS20_Training_001\n")
    (training / "survival_info.csv").write_text("Brats20ID,Age\nBraTS20_Training_001,60\n")
    validation = root / "MICCAI_BraTS2020_ValidationData" / "BraTS20_Validation_001"
    for m, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
        volume(validation / f"BraTS20_Validation_001_{suffix}.nii.gz", seed=50 + m)
    return arrays


def test_brats2020_converts_with_quirks_validation_and_remapped_labels(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "BraTS2020"
    arrays = make_brats2020(source)
    before = tree_fingerprint(source)

    assert main(["brats2020", str(source), "-d", "1"]) == 0
    out = capsys.readouterr().out
    folder = raw(msgldm_roots) / "Dataset001_BraTS2020"
    meta = dataset_json(folder)
    assert meta["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert meta["labels"] == {"background": 0, "necrotic_tumor_core": 1, "edema": 2, "enhancing_tumor": 3}
    assert meta["conversion"]["label_remapping"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"BraTS20_Training_{c}_{m:04d}.nii.gz" for c in ("001", "355") for m in range(4)]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"BraTS20_Validation_001_{m:04d}.nii.gz"
                                                                       for m in range(4)]
    # Channel order, voxels and geometry survive the .nii -> .nii.gz conversion.
    flair = read_image(folder / "imagesTr" / "BraTS20_Training_355_0003.nii.gz")
    np.testing.assert_array_equal(flair.array, arrays["BraTS20_Training_355", "flair"])
    assert_same_grid(flair)
    # 4 -> 3, everything else unchanged, for the regular and for the quirky segmentation.
    for case, key in (("001", "seg001"), ("355", "seg355")):
        label = read_image(folder / "labelsTr" / f"BraTS20_Training_{case}.nii.gz")
        np.testing.assert_array_equal(label.array, np.where(arrays[key] == 4, 3, arrays[key]))
        assert_same_grid(label)
    assert "W39_1998.09.19_Segm.nii" in out and "BraTS20_Training_355" in out  # the quirk is reported
    assert "name_mapping.csv" in out and "survival_info.csv" in out            # unknown files are listed
    assert "hidden file" in out and "._BraTS20_Training_001_t1.nii" in out
    assert "imagesTr 2, imagesTs 1" in out
    assert tree_fingerprint(source) == before                                  # the source is untouched
    assert not [p for p in raw(msgldm_roots).iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert (folder / "conversion_log.txt").read_text().count("survival_info.csv") == 1


def test_brats2021_link_mode_symlinks_images_and_writes_labels(tmp_path, msgldm_roots):
    source = tmp_path / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
    case = "BraTS2021_00000"
    for m, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
        volume(source / case / f"{case}_{suffix}.nii.gz", seed=m)
    seg = segmentation(source / case / f"{case}_seg.nii.gz", [0, 1, 2, 4], 3)
    # A second case missing its T1ce: kept, with that modality missing.
    for m, suffix in enumerate(["t1", "t2", "flair"]):
        volume(source / "BraTS2021_00002" / f"BraTS2021_00002_{suffix}.nii.gz", seed=20 + m)
    segmentation(source / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz", [0, 2], 4)

    assert main(["brats2021", str(source), "-d", "2", "--link"]) == 0
    folder = raw(msgldm_roots) / "Dataset002_BraTS2021"
    t2 = folder / "imagesTr" / f"{case}_0002.nii.gz"
    assert t2.is_symlink() and t2.resolve() == (source / case / f"{case}_t2.nii.gz").resolve()
    assert not (folder / "imagesTr" / "BraTS2021_00002_0001.nii.gz").exists()
    assert (folder / "imagesTr" / "BraTS2021_00002_0002.nii.gz").exists()
    label_path = folder / "labelsTr" / f"{case}.nii.gz"
    assert not label_path.is_symlink()  # remapped, so written
    np.testing.assert_array_equal(read_image(label_path).array, np.where(seg == 4, 3, seg))


def test_brats2023_channels_map_onto_the_same_order(tmp_path, msgldm_roots):
    source = tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    case = "BraTS-GLI-00000-000"
    arrays = {s: volume(source / case / f"{case}-{s}.nii.gz", seed=m, offset=1000 * m)
              for m, s in enumerate(["t1n", "t1c", "t2w", "t2f"])}
    seg = segmentation(source / case / f"{case}-seg.nii.gz", [0, 1, 2, 3], 5)
    val = "BraTS-GLI-00001-001"
    for s in ["t1n", "t1c", "t2w", "t2f"]:
        volume(source.parent / "ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData" / val / f"{val}-{s}.nii.gz", seed=7)

    assert main(["brats2023", str(source.parent), "-d", "3", "--name", "Glioma"]) == 0
    folder = raw(msgldm_roots) / "Dataset003_Glioma"
    assert [p.name for p in (folder / "imagesTs").iterdir()] != [] and dataset_json(folder)["numTraining"] == 1
    assert dataset_json(folder)["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    for index, suffix in enumerate(["t1n", "t1c", "t2w", "t2f"]):
        np.testing.assert_array_equal(read_image(folder / "imagesTr" / f"{case}_{index:04d}.nii.gz").array,
                                      arrays[suffix])
    np.testing.assert_array_equal(read_image(folder / "labelsTr" / f"{case}.nii.gz").array, seg)


def test_brats_unknown_label_value_fails_and_leaves_nothing(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "src"
    case = "BraTS2021_00001"
    for m, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
        volume(source / case / f"{case}_{suffix}.nii.gz", seed=m)
    segmentation(source / case / f"{case}_seg.nii.gz", [0, 1, 3], 1)  # 3 does not exist in BraTS 2021

    assert main(["brats2021", str(source), "-d", "4"]) == 2
    err = capsys.readouterr().err
    assert "label values [3]" in err and f"{case}_seg.nii.gz" in err
    assert list(raw(msgldm_roots).iterdir()) == []  # neither the dataset nor its temporary folder


def test_existing_target_refused_unless_overwrite(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "src"
    case = "BraTS2021_00001"
    for m, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
        volume(source / case / f"{case}_{suffix}.nii.gz", seed=m)
    segmentation(source / case / f"{case}_seg.nii.gz", [0, 1, 2, 4], 1)
    assert main(["brats2021", str(source), "-d", "5"]) == 0
    folder = raw(msgldm_roots) / "Dataset005_BraTS2021"
    (folder / "marker.txt").write_text("old")

    assert main(["brats2021", str(source), "-d", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (folder / "marker.txt").exists()
    assert main(["brats2021", str(source), "-d", "5", "--name", "Other"]) == 2
    assert "already used by" in capsys.readouterr().err
    assert main(["brats2020", str(source), "-d", "6"]) == 2
    assert "use `msgldm_convert brats2021`" in capsys.readouterr().err
    assert main(["brats2021", str(source), "-d", "5", "--overwrite"]) == 0
    assert not (folder / "marker.txt").exists() and (folder / "imagesTr" / f"{case}_0000.nii.gz").exists()
    assert sorted(p.name for p in raw(msgldm_roots).iterdir()) == ["Dataset005_BraTS2021"]


def test_remap_labels_values_and_errors():
    mapping = {0: 0, 1: 1, 2: 2, 4: 3}
    out = remap_labels(np.array([[0, 4], [2, 1]], dtype=np.float64), mapping)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 3], [2, 1]]
    with pytest.raises(MSGLDMError, match=r"values \[5\]"):
        remap_labels(np.array([0, 5]), mapping, "x.nii.gz")
    with pytest.raises(MSGLDMError, match="non-integer"):
        remap_labels(np.array([0.0, 0.5]), mapping)


# --------------------------------------------------------------------------------------------------------------- WMH
def test_wmh2017_sites_as_subfolders(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "wmh" / "training"
    cases = {"Utrecht/0": 0, "Singapore/50": 1, "GE3T/100": 2}
    labels = {}
    for case, seed in cases.items():
        volume(source / case / "pre" / "T1.nii.gz", seed=seed)
        volume(source / case / "pre" / "FLAIR.nii.gz", seed=seed + 10)
        volume(source / case / "orig" / "FLAIR.nii.gz", seed=seed + 20)
        labels[case] = segmentation(source / case / "wmh.nii.gz", [0, 1, 2], seed, dtype=np.float32)
    test_case = tmp_path / "wmh" / "test" / "Amsterdam" / "GE1T5" / "137"
    volume(test_case / "pre" / "T1.nii.gz", seed=5)
    volume(test_case / "pre" / "FLAIR.nii.gz", seed=6)

    assert main(["wmh2017", str(tmp_path / "wmh"), "-d", "10"]) == 0
    out = capsys.readouterr().out
    folder = raw(msgldm_roots) / "Dataset010_WMH2017"
    meta = dataset_json(folder)
    assert meta["channel_names"] == {"0": "T1", "1": "FLAIR"}
    assert meta["labels"] == {"background": 0, "wmh": 1, "other_pathology": 2}
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["GE3T_100.nii.gz", "Singapore_50.nii.gz",
                                                                       "Utrecht_0.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["GE1T5_137_0000.nii.gz", "GE1T5_137_0001.nii.gz"]
    stored = read_image(folder / "labelsTr" / "Singapore_50.nii.gz")
    assert stored.array.dtype == np.uint8
    np.testing.assert_array_equal(stored.array, labels["Singapore/50"])
    assert "original-space image" in out and "orig/FLAIR.nii.gz" in out


# --------------------------------------------------------------------------------------------------------------- IXI
def smooth_head(points: np.ndarray) -> np.ndarray:
    """An asymmetric sum of Gaussians: smooth enough to register, asymmetric enough to pin down a rotation."""
    centres = np.array([[0, 0, 0], [6, -4, 3], [-5, 5, -2], [2, 7, 6], [-7, -6, 5]], float)
    widths = np.array([10, 4, 5, 3, 4], float)
    amplitudes = np.array([1.0, 0.8, -0.5, 0.6, 0.7])
    out = np.zeros(len(points))
    for centre, width, amplitude in zip(centres, widths, amplitudes):
        out += amplitude * np.exp(-((points - centre) ** 2).sum(1) / (2 * width ** 2))
    return out


def grid_points(shape, spacing, origin) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    index = np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float)
    return np.asarray(origin) + index * np.asarray(spacing)


def head_image(shape, spacing, origin, transform=None, invert=False) -> Image:
    """Sample the head at the grid's points (mapped through `transform` first); `invert` mimics a T1-vs-T2 contrast."""
    points = grid_points(shape, spacing, origin)
    if transform is not None:
        points = np.array([transform.TransformPoint(p) for p in points])
    values = smooth_head(points)
    values = 1.5 - values if invert else values
    return Image((100 * values).reshape(shape).astype(np.float32), tuple(spacing), tuple(origin), IDENTITY)


def test_rigid_registration_recovers_a_known_transform_within_one_voxel():
    fixed = head_image((32, 32, 32), (1.0, 1.0, 1.0), (-15.5, -15.5, -15.5))
    known = sitk.Euler3DTransform((0, 0, 0), 0.12, -0.08, 0.15, (2.5, -1.5, 3.0))  # ~7-9 degrees, ~4 mm
    moving = head_image((28, 30, 26), (1.2, 1.1, 1.25), (-16.0, -17.0, -15.0), transform=known, invert=True)

    found = register_rigid(fixed, moving, RigidRegistrationSettings(iterations=100))
    # moving(p) shows the anatomy at known(p); so known(found(x)) must come back to x for every fixed point x.
    points = grid_points((32, 32, 32), (1.0, 1.0, 1.0), fixed.origin)[::11]
    errors = [np.linalg.norm(np.array(known.TransformPoint(found.TransformPoint(p))) - p) for p in points]
    assert max(errors) < 1.0
    # Without registration the error would be several voxels: the test can fail.
    assert max(np.linalg.norm(np.array(known.TransformPoint(p)) - p) for p in points) > 3.0


def test_ixi_registers_t1_onto_t2_grid_and_keeps_partial_subjects(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "IXI"
    t2_grid = dict(shape=(20, 20, 20), spacing=(1.0, 1.0, 1.2), origin=(-9.5, -9.5, -11.4))
    t1_grid = dict(shape=(22, 18, 20), spacing=(1.1, 1.2, 1.0), origin=(-11.0, -10.0, -9.5))
    shift = sitk.Euler3DTransform((0, 0, 0), 0.0, 0.0, 0.15, (2.5, 0.0, 0.0))
    write_image(head_image(**t2_grid), source / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz")
    write_image(head_image(**t2_grid), source / "IXI-PD" / "IXI002-Guys-0828-PD.nii.gz")
    write_image(head_image(**t1_grid, transform=shift, invert=True), source / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz")
    write_image(head_image(**t2_grid), source / "IXI-T2" / "IXI012-HH-1211-T2.nii.gz")
    write_image(head_image(**t2_grid), source / "IXI-PD" / "IXI012-HH-1211-PD.nii.gz")
    write_image(head_image(**t1_grid), source / "IXI-T1" / "IXI013-HH-1212-T1.nii.gz")  # T1 only
    write_image(head_image(**t2_grid), source / "IXI-MRA" / "IXI002-Guys-0828-MRA.nii.gz")

    assert main(["ixi", str(source), "-d", "20"]) == 0
    out = capsys.readouterr().out
    folder = raw(msgldm_roots) / "Dataset020_IXI"
    assert dataset_json(folder)["channel_names"] == {"0": "T1", "1": "T2", "2": "PD"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "IXI002-Guys-0828_0000.nii.gz", "IXI002-Guys-0828_0001.nii.gz", "IXI002-Guys-0828_0002.nii.gz",
        "IXI012-HH-1211_0001.nii.gz", "IXI012-HH-1211_0002.nii.gz"]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["IXI013-HH-1212_0000.nii.gz"]
    t1 = read_image(folder / "imagesTr" / "IXI002-Guys-0828_0000.nii.gz")
    t2 = read_image(folder / "imagesTr" / "IXI002-Guys-0828_0001.nii.gz")
    assert t1.same_grid(t2)
    # Registered T1 is the inverted-contrast T2: anti-correlated voxel by voxel inside the overlap (about -0.88 if the
    # T1 were only resampled without registration).
    inside = t1.array != 0
    assert np.corrcoef(t1.array[inside], t2.array[inside])[0, 1] < -0.99
    assert "IXI002-Guys-0828: T1 rigidly registered" in out and "MRA" in out


# ------------------------------------------------------------------------------------------------------------ nnU-Net
def test_nnunet_import_keeps_channel_names_and_splits(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "nnUNet_raw" / "Dataset005_Prostate"
    for case in ("prostate_00", "prostate_01"):
        volume(source / "imagesTr" / f"{case}_0000.nii.gz", seed=1)
        volume(source / "imagesTr" / f"{case}_0001.nii.gz", seed=2)
        segmentation(source / "labelsTr" / f"{case}.nii.gz", [0, 1, 2], 3)
    volume(source / "imagesTs" / "prostate_03_0000.nii.gz", seed=4)
    volume(source / "imagesTs" / "prostate_03_0001.nii.gz", seed=4)
    (source / "imagesTr" / "notes.txt").write_text("stray")
    (source / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
        "numTraining": 2, "file_ending": ".nii.gz", "licence": "CC-BY-SA 4.0"}))

    assert main(["nnunet", str(source), "-d", "6", "--link"]) == 0
    out = capsys.readouterr().out
    folder = raw(msgldm_roots) / "Dataset006_Prostate"
    meta = dataset_json(folder)
    assert meta["channel_names"] == {"0": "T2", "1": "ADC"} and meta["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    assert meta["numTraining"] == 2 and meta["licence"] == "CC-BY-SA 4.0"
    assert (folder / "labelsTr" / "prostate_01.nii.gz").is_symlink()
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["prostate_03_0000.nii.gz",
                                                                       "prostate_03_0001.nii.gz"]
    assert "notes.txt" in out


def test_nnunet_import_refuses_to_overwrite_its_own_source(msgldm_roots, capsys):
    source = raw(msgldm_roots) / "Dataset007_Self"
    volume(source / "imagesTr" / "a_0000.nii.gz", seed=1)
    volume(source / "imagesTr" / "a_0001.nii.gz", seed=2)
    (source / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "numTraining": 1,
                                                     "file_ending": ".nii.gz"}))
    before = tree_fingerprint(source)
    assert main(["nnunet", str(source), "-d", "7", "--overwrite"]) == 2
    assert "source lies inside the target" in capsys.readouterr().err
    assert tree_fingerprint(source) == before


# ------------------------------------------------------------------------------------------------------------ folder
def make_bids_like(root: Path) -> None:
    for n, subject in enumerate(["sub-01", "sub-02", "sub-03"]):
        anat = root / subject / "anat"
        volume(anat / f"{subject}_t1w.nii.gz", seed=n)
        if subject != "sub-03":
            volume(anat / f"{subject}_flair.nii.gz", seed=n + 10)
            segmentation(anat / f"{subject}_seg.nii.gz", [0, 1, 5], n)
    (root / "README").write_text("my study")


def test_folder_default_case_ids_labels_and_single_modality_cases(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "study"
    make_bids_like(source)
    assert main(["folder", str(source), "-d", "30", "--modality", "T1=*_t1w.nii.gz",
                 "--modality", "FLAIR='*_flair.nii.gz'", "--label", "*_seg.nii.gz"]) == 0
    out = capsys.readouterr().out
    folder = raw(msgldm_roots) / "Dataset030_study"
    meta = dataset_json(folder)
    assert meta["channel_names"] == {"0": "T1", "1": "FLAIR"}
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_5": 2}  # made contiguous
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "sub-01_0000.nii.gz", "sub-01_0001.nii.gz", "sub-02_0000.nii.gz", "sub-02_0001.nii.gz"]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["sub-03_0000.nii.gz"]
    assert set(np.unique(read_image(folder / "labelsTr" / "sub-01.nii.gz").array)) == {0, 1, 2}
    assert "README" in out and "matches no --modality" in out


@pytest.mark.parametrize("rule, expected", [("parent", "anat"), (r"(sub-\d+)/", "sub-01")])
def test_folder_case_id_rules(tmp_path, msgldm_roots, rule, expected):
    source = tmp_path / "study"
    for subject in ("sub-01", "sub-02"):
        volume(source / subject / "anat" / "t1.nii.gz", seed=1)
        volume(source / subject / "anat" / "t2.nii.gz", seed=2)
    argv = ["folder", str(source), "-d", "31", "--modality", "T1=t1.nii.gz", "--modality", "T2=t2.nii.gz",
            "--case_id", rule]
    if rule == "parent":  # both subjects' folders are called `anat`: two T1 files for one case is an error
        assert main(argv) == 2
        return
    assert main(argv) == 0
    assert (raw(msgldm_roots) / "Dataset031_study" / "imagesTr" / f"{expected}_0001.nii.gz").exists()


def test_folder_option_errors_name_the_flag(tmp_path, msgldm_roots, capsys):
    source = tmp_path / "study"
    make_bids_like(source)
    assert main(["folder", str(source), "-d", "32"]) == 2
    assert "--modality" in capsys.readouterr().err
    assert main(["folder", str(source), "-d", "32", "--modality", "T1"]) == 2
    assert "NAME=GLOB" in capsys.readouterr().err
    assert main(["folder", str(source), "-d", "32", "--modality", "T1=*_t1w.nii.gz", "--case-id", "sub-\\d+"]) == 2
    assert "exactly one group" in capsys.readouterr().err
    assert main(["folder", str(source), "-d", "32", "--modality", "T1=*.nii.gz", "--modality", "F=*_flair.nii.gz"]) == 2
    assert "several patterns" in capsys.readouterr().err
    assert not raw(msgldm_roots).exists() or list(raw(msgldm_roots).iterdir()) == []


def test_nnunet_import_of_explicit_file_lists_uses_the_standard_layout(tmp_path, msgldm_roots):
    source = tmp_path / "Dataset008_Listed"
    t1 = volume(source / "scans" / "a_t1.nii.gz", seed=1)
    volume(source / "scans" / "a_t2.nii.gz", seed=2)
    (source / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "numTraining": 1, "file_ending": ".nii.gz",
        "dataset": {"a": {"images": ["scans/a_t1.nii.gz", "scans/a_t2.nii.gz"]}}}))

    assert main(["nnunet", str(source), "-d", "8"]) == 0
    folder = raw(msgldm_roots) / "Dataset008_Listed"
    np.testing.assert_array_equal(read_image(folder / "imagesTr" / "a_0000.nii.gz").array, t1)
    assert "dataset" not in dataset_json(folder) and dataset_json(folder)["numTraining"] == 1


def test_integrity_report_is_printed_and_problems_give_status_1(tmp_path, msgldm_roots, monkeypatch, capsys):
    """A stand-in for msgldm_auto.dataset.verify, so this test does not depend on that module's rules."""
    from dataset_conversion import convert

    checked = []

    class Report:
        ok = False

        def format(self):
            return "STAND-IN REPORT: 1 problem"

    monkeypatch.setattr(convert, "verify_dataset", lambda folder: checked.append(Path(folder)) or Report())
    source = tmp_path / "src"
    for m, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
        volume(source / "BraTS2021_00001" / f"BraTS2021_00001_{suffix}.nii.gz", seed=m)

    assert main(["brats2021", str(source), "-d", "9"]) == 1
    out = capsys.readouterr().out
    assert checked == [raw(msgldm_roots) / "Dataset009_BraTS2021"]
    assert "STAND-IN REPORT" in out and "was kept" in out and checked[0].is_dir()
