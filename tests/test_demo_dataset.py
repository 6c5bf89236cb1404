"""The demo dataset: MR physics, anatomy, missing modalities, held-out test contrasts, determinism, atomic writing."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion import demo_dataset, mr_physics
from dataset_conversion.demo_anatomy import load_template, output_grid
from dataset_conversion.demo_dataset import (
    CHANNEL_NAMES,
    DemoSettings,
    case_rng,
    held_out_channels,
    make_demo_dataset,
    simulate_subject,
    training_channels,
)
from msgldm_auto.cli.demo_dataset import main as demo_main
from msgldm_auto.dataset.cases import discover_cases, training_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import read_image
from msgldm_auto.dataset.verify import verify_dataset
from msgldm_auto.errors import MSGLDMError

T1, T2, FLAIR, PD = 0, 1, 2, 3


# ---------------------------------------------------------------- signal equations (nominal tissue values)
def _nominal(sequence):
    return {t.name: sequence.tissue_signal(t) for t in mr_physics.TISSUES}


def test_signal_equations_give_the_textbook_contrasts():
    t1, t2, flair, pd = (_nominal(s) for s in mr_physics.DEMO_SEQUENCES)
    assert t1["wm"] > t1["gm"] > t1["csf"] and t1["lesion"] < t1["wm"]
    assert t2["csf"] > t2["gm"] > t2["wm"] and t2["lesion"] > t2["gm"]
    assert flair["csf"] < 0.01 * flair["gm"] and flair["lesion"] > 2 * max(flair["gm"], flair["wm"])
    assert pd["gm"] > pd["wm"]


def test_flair_inversion_time_nulls_csf_exactly():
    ti = mr_physics.FLAIR.ti_ms
    assert 1500 < ti < 2600                                # clinical FLAIR TIs at 1.5 T
    assert mr_physics.FLAIR.signal(mr_physics.CSF.t1_ms, mr_physics.CSF.t2_ms, 1.0) == pytest.approx(0.0, abs=1e-12)
    spin_echo = mr_physics.Sequence("x", tr_ms=1e9, te_ms=0.0)
    assert spin_echo.tissue_signal(mr_physics.GREY_MATTER) == pytest.approx(mr_physics.GREY_MATTER.pd)   # full recovery


def test_rician_noise_has_the_right_floor_and_bias_field_is_smooth():
    rng = np.random.default_rng(0)
    sigma = 2.0
    background = mr_physics.add_rician_noise(np.zeros(200_000, np.float32), sigma, rng)
    assert background.min() >= 0 and background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    bright = mr_physics.add_rician_noise(np.full(200_000, 100.0, np.float32), sigma, rng)
    assert bright.std() == pytest.approx(sigma, rel=0.05)
    field = mr_physics.bias_field((20, 24, 22), rng)
    assert field.mean() == pytest.approx(1.0) and 0.5 < field.min() and field.max() < 2.0
    assert np.abs(np.diff(field, axis=0)).max() < 0.05


# ---------------------------------------------------------------- simulated subjects (4 mm for speed)
@pytest.fixture(scope="module")
def template_4mm():
    template = load_template(4.0)
    return template, output_grid(template, 4.0)


@pytest.fixture
def reuse_template(template_4mm, monkeypatch):
    """Builds below reuse the module's template instead of loading nilearn's maps again (the source grid is the same
    2 mm one for every output resolution >= 2 mm); the session fixture `tiny_demo_dataset` covers the real loading."""
    monkeypatch.setattr(demo_dataset, "load_template", lambda resolution_mm: template_4mm[0])


def _tissue_medians(subject, channel):
    image, f = subject.images[channel].astype(float), subject.fractions
    pure = {name: image[f[name] > 0.9] for name in ("csf", "gm", "wm")}
    core = f["lesion"] > 0.8                                 # lesion cores (partial volume blurs small lesions at 4 mm)
    pure["lesion"] = image[core if core.any() else subject.lesion_mask > 0]
    return {name: float(np.median(values)) for name, values in pure.items()}


def test_simulated_subject_follows_the_physics(template_4mm):
    template, grid = template_4mm
    for index in range(2):
        subject = simulate_subject(template, grid, DemoSettings(resolution_mm=4.0), case_rng(7, index))
        assert subject.lesion_mask.sum() > 0
        t1, t2, flair, pd = (_tissue_medians(subject, c) for c in (T1, T2, FLAIR, PD))
        assert t1["wm"] > t1["gm"] > t1["csf"] and t1["lesion"] < t1["wm"]
        assert t2["csf"] > t2["gm"] > t2["wm"] and t2["lesion"] > t2["wm"]
        assert flair["csf"] < 0.25 * flair["wm"] and flair["lesion"] > 1.5 * max(flair["wm"], flair["gm"])
        assert pd["gm"] > pd["wm"]


def test_lesions_lie_in_white_matter_and_subjects_differ(template_4mm):
    template, grid = template_4mm
    a = simulate_subject(template, grid, DemoSettings(resolution_mm=4.0), case_rng(0, 0))
    b = simulate_subject(template, grid, DemoSettings(resolution_mm=4.0), case_rng(0, 1))
    lesion = a.lesion_mask > 0
    assert a.fractions["lesion"][lesion].min() >= 0.5
    assert np.median(a.fractions["gm"][lesion]) < 0.3                       # not in cortex
    assert not np.array_equal(a.fractions["wm"], b.fractions["wm"])          # each subject deformed differently
    overlap = np.corrcoef(a.fractions["wm"].ravel(), b.fractions["wm"].ravel())[0, 1]
    assert 0.6 < overlap < 0.999                                             # ... but still the same anatomy


def test_skull_stripped_by_default_and_head_shell_on_request(template_4mm):
    template, grid = template_4mm
    stripped = simulate_subject(template, grid, DemoSettings(resolution_mm=4.0), case_rng(0, 0))
    brain = sum(stripped.fractions[n] for n in ("csf", "gm", "wm", "lesion"))
    assert np.all(stripped.images[T1][brain < 0.05] == 0)
    head = simulate_subject(template, grid, DemoSettings(resolution_mm=4.0, add_skull=True), case_rng(0, 0))
    t1 = head.images[T1].astype(float)
    scalp, bone = head.fractions["fat"] > 0.9, head.fractions["bone"] > 0.9
    assert scalp.any() and bone.any()
    # fat bright on T1
    assert np.median(t1[scalp]) > np.median(t1[head.fractions["wm"] > 0.9]) > 3 * np.median(t1[bone])
    outside = (sum(head.fractions.values()) < 0.01)
    assert 0 < np.median(t1[outside]) < 0.1 * np.median(t1[scalp])     # Rician background, not zero


def test_missing_and_held_out_channel_rules():
    for index in range(12):
        channels = training_channels(index, case_rng(0, index))
        assert len(channels) == (3 if index % 4 == 3 else 4) and set(channels) <= set(CHANNEL_NAMES)
    for index in range(30):
        held = held_out_channels(case_rng(0, index))
        assert 1 <= len(held) <= 3 and held == sorted(set(held))


# ---------------------------------------------------------------- the written dataset (shared tiny fixture)
def test_tiny_dataset_layout_and_integrity(tiny_demo_dataset):
    folder = tiny_demo_dataset
    dataset = DatasetJson.load(folder / "dataset.json")
    assert folder.name == "Dataset901_Demo" and dataset.modalities == ["T1", "T2", "FLAIR", "PD"]
    assert dataset.labels == {"background": 0, "lesion": 1} and dataset.num_training == 6
    report = verify_dataset(folder)
    assert report.ok and report.problems == [], report.format()
    cases = training_cases(folder, dataset)
    assert [len(c.images) for c in cases] == [4, 4, 4, 3, 4, 4]
    assert all(c.label is not None and read_image(c.label).array.max() == 1 for c in cases)
    test_cases, _ = discover_cases(folder / "imagesTs", dataset, folder / "labelsTs")
    assert len(test_cases) == 2
    for case in test_cases:
        references = {c: folder / "referenceTs" / p.name for c, p in case.images.items()}
        held_out = sorted(int(p.name[-11:-7]) for p in (folder / "referenceTs").glob(f"{case.case_id}_*.nii.gz"))
        assert held_out == case.missing and 1 <= len(held_out) <= 3 and not any(p.exists() for p in references.values())
        assert case.label is not None
        grid = read_image(next(iter(case.images.values())))
        assert all(read_image(folder / "referenceTs" / f"{case.case_id}_{c:04d}.nii.gz").same_grid(grid)
                   for c in held_out)


def test_written_geometry_is_the_mni_grid(tiny_demo_dataset):
    path = tiny_demo_dataset / "imagesTr" / "demo_000_0000.nii.gz"
    nii = nib.load(path)
    assert nii.get_data_dtype() == np.int16 and nii.shape == (50, 58, 48)
    np.testing.assert_allclose(np.diag(nii.affine)[:3], 4.0)                 # RAS, 4 mm
    centre = nii.affine @ np.array([*(np.asarray(nii.shape) / 2), 1.0])
    assert np.all(np.abs(centre[:3] - np.array([0.0, -17.0, 18.0])) < 12.0)  # MNI brain centre


def test_generation_is_deterministic_by_seed(msgldm_roots, monkeypatch, tmp_path, reuse_template):
    def build(root, seed):
        monkeypatch.setenv("MSGLDM_RAW", str(root))
        return make_demo_dataset(dataset_id=5, cases=1, test_cases=1, seed=seed, resolution_mm=8.0)

    first, again, other = build(tmp_path / "a", 3), build(tmp_path / "b", 3), build(tmp_path / "c", 4)
    files = sorted(p.relative_to(first) for p in first.rglob("*.nii.gz"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.nii.gz")) and len(files) >= 4
    for name in files:
        assert np.array_equal(read_image(first / name).array, read_image(again / name).array), name
    t1 = "imagesTr/demo_000_0000.nii.gz"
    assert not np.array_equal(read_image(first / t1).array, read_image(other / t1).array)
    assert json.loads((first / "dataset.json").read_text())["demo"]["seed"] == 3


def test_existing_dataset_is_refused_then_replaced_with_overwrite(tiny_demo_dataset, reuse_template):
    with pytest.raises(MSGLDMError, match="Dataset901_Demo already exists: pass --overwrite"):
        make_demo_dataset(dataset_id=901, name="Other", cases=1, test_cases=0, resolution_mm=8.0)
    folder = make_demo_dataset(dataset_id=901, name="Other", cases=1, test_cases=0, resolution_mm=8.0, overwrite=True)
    assert [p.name for p in folder.parent.iterdir()] == ["Dataset901_Other"]      # old one gone, nothing half-written
    assert len(list((folder / "imagesTr").iterdir())) == 4


def test_failure_leaves_no_partial_dataset(msgldm_roots, monkeypatch, reuse_template):
    calls = []
    real = demo_dataset.simulate_subject

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_dataset, "simulate_subject", fail_on_second)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_demo_dataset(dataset_id=7, cases=2, test_cases=0, resolution_mm=8.0)
    assert list((msgldm_roots / "raw").iterdir()) == []


def test_cli_builds_and_reports_bad_arguments(msgldm_roots, capsys, reuse_template):
    assert demo_main(["-d", "902", "--cases", "1", "--test_cases", "1", "--resolution", "8", "--seed", "1",
                      "--skull"]) == 0
    out = capsys.readouterr().out
    folder = msgldm_roots / "raw" / "Dataset902_Demo"
    assert f"demo dataset written to {folder}" in out and "data roots:" in out
    assert json.loads((folder / "dataset.json").read_text())["demo"]["skull"] is True
    assert demo_main(["-d", "903", "--resolution", "0.1"]) == 2
    assert "--resolution 0.1: use a voxel size between 0.5 and 8 mm" in capsys.readouterr().err
    assert demo_main(["-d", "902", "--cases", "1", "--resolution", "8"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
