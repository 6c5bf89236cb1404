"""The ICBM152 measured-contrast benchmark builder, on a tiny fake spm-runtime wheel (no 82 MB download)."""
from __future__ import annotations

import io
import json
import zipfile

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion import icbm_benchmark
from dataset_conversion.icbm_benchmark import IcbmSettings, make_icbm_dataset
from msgldm_auto.dataset.image_io import read_image
from msgldm_auto.dataset.verify import verify_dataset
from msgldm_auto.errors import MSGLDMError

SHAPE = (20, 24, 20)
# Stored left-to-right flipped like SPM's avg152 files (x spacing -2 mm).
AFFINE = np.array([[-2.0, 0, 0, 19.0], [0, 2.0, 0, -23.0], [0, 0, 2.0, -19.0], [0, 0, 0, 1]])
SETTINGS = IcbmSettings(missing_training=1)
T1, T2, PD = 0, 1, 2


def _phantom() -> dict[str, np.ndarray]:
    """Concentric spheres: WM core, GM shell, CSF shell, scalp; contrasts with T1 / T2 / PD-like ordering."""
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij")
    radius = np.sqrt(sum(g * g for g in grid))
    wm, gm = (radius < 4.5).astype(np.float32), ((radius >= 4.5) & (radius < 7)).astype(np.float32)
    csf, scalp = ((radius >= 7) & (radius < 8)).astype(np.float32), ((radius >= 8.5) & (radius < 9.5))
    members = {"toolbox/OldSeg/white.nii": wm, "toolbox/OldSeg/grey.nii": gm, "toolbox/OldSeg/csf.nii": csf}
    for member, (w, g, c, s) in {"canonical/avg152T1.nii": (0.75, 0.55, 0.25, 0.7),
                                 "canonical/avg152T2.nii": (0.3, 0.42, 0.85, 0.5),
                                 "canonical/avg152PD.nii": (0.6, 0.72, 0.8, 0.7)}.items():
        members[member] = (w * wm + g * gm + c * csf + s * scalp + 0.03).astype(np.float32)
    return members


def _fake_wheel(path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as ctf:
        for member, data in _phantom().items():
            ctf.writestr(icbm_benchmark.SPM_ROOT + member, nib.Nifti1Image(data, AFFINE).to_bytes())
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("spm_runtime/__init__.py", "")
        wheel.writestr(icbm_benchmark.CTF_MEMBER, inner.getvalue())
    return path


@pytest.fixture
def wheel(tmp_path):
    return _fake_wheel(tmp_path / icbm_benchmark.WHEEL_FILE)


def _build(monkeypatch, raw, wheel, seed=0, **kwargs):
    monkeypatch.setenv("MSGLDM_RAW", str(raw))
    return make_icbm_dataset(wheel=wheel, cases=4, test_cases=3, seed=seed, settings=SETTINGS, **kwargs)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_builder_writes_the_layout_with_missing_and_held_out_contrasts(tmp_path, monkeypatch, wheel):
    folder = _build(monkeypatch, tmp_path / "raw", wheel)
    assert folder.name == "Dataset902_ICBM152"
    data = json.loads((folder / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "T1", "1": "T2", "2": "PD"} and data["numTraining"] == 4
    assert data["icbm152"]["training_missing"] == {"icbm152_002": "T1"}
    train = _names(folder / "imagesTr")
    assert len(train) == 4 * 3 - 1 and "icbm152_002_0000.nii.gz" not in train
    assert _names(folder / "labelsTr") == [f"icbm152_{i:03d}.nii.gz" for i in range(4)]
    # Test case n lacks contrast n % 3; its truth, and only it, is in referenceTs.
    expected_ts = [f"icbm152_{4 + n:03d}_{c:04d}.nii.gz" for n in range(3) for c in (T1, T2, PD) if c != n]
    assert _names(folder / "imagesTs") == sorted(expected_ts)
    assert _names(folder / "referenceTs") == [f"icbm152_{4 + n:03d}_{n:04d}.nii.gz" for n in range(3)]
    assert _names(folder / "labelsTs") == [f"icbm152_{4 + n:03d}.nii.gz" for n in range(3)]
    assert verify_dataset(folder).ok


def test_output_keeps_the_template_grid_and_scanner_units(tmp_path, monkeypatch, wheel):
    folder = _build(monkeypatch, tmp_path / "raw", wheel)
    image = nib.load(folder / "imagesTr" / "icbm152_000_0000.nii.gz")
    assert image.shape == SHAPE and image.get_data_dtype() == np.int16
    corners = np.array([[i, j, k, 1] for i in (0, SHAPE[0] - 1) for j in (0, SHAPE[1] - 1) for k in (0, SHAPE[2] - 1)])

    def world(affine):
        return sorted(map(tuple, np.round((corners @ affine.T)[:, :3], 3)))

    assert world(image.affine) == world(AFFINE)        # the same voxels in space (x stored the other way round)
    reference = read_image(folder / "imagesTr" / "icbm152_000_0000.nii.gz")
    labels = [read_image(p) for p in sorted((folder / "labelsTr").iterdir())]
    assert all(label.same_grid(reference) and set(np.unique(label.array)) <= {0, 1} for label in labels)
    assert sum(int(label.array.sum()) for label in labels) > 0
    assert 300 < reference.array.max() < 2000           # gain 0.8-1.25 x 1000 units, bias and noise on top


def test_lesions_change_each_contrast_the_measured_way(wheel):
    source = icbm_benchmark.load_source(wheel)
    quiet = dict(noise_level=0.0, bias_strength=0.0, gain_range=(1.0, 1.0))
    subject = icbm_benchmark.simulate_subject(source, IcbmSettings(lesion_count=(3, 3), **quiet),
                                              np.random.default_rng(3))
    # The same generator draws the same warp first; without lesions and noise only the lesion imprint differs.
    healthy = icbm_benchmark.simulate_subject(source, IcbmSettings(lesion_count=(0, 0), **quiet),
                                              np.random.default_rng(3))
    lesion = subject.lesion_mask.astype(bool)
    assert lesion.any() and not healthy.lesion_mask.any()
    ratio = {c: subject.images[c][lesion].sum() / healthy.images[c][lesion].sum() for c in (T1, T2, PD)}
    assert ratio[T1] < 0.9 and ratio[T2] > 1.3 and ratio[PD] > 1.1


def test_the_clean_contrast_is_the_image_before_acquisition(wheel):
    source = icbm_benchmark.load_source(wheel)
    quiet = IcbmSettings(noise_level=0.0, bias_strength=0.0, gain_range=(1.0, 1.0))
    subject = icbm_benchmark.simulate_subject(source, quiet, np.random.default_rng(5))
    for channel, image in subject.images.items():     # no bias, unit gain, no noise: the stored integers round it
        expected = np.clip(np.round(subject.clean[channel] * icbm_benchmark.SCANNER_UNITS), 0, None)
        assert np.array_equal(image, expected.astype(np.int16)), channel
    acquired = icbm_benchmark.simulate_subject(source, IcbmSettings(), np.random.default_rng(5))
    assert np.array_equal(acquired.clean[T2], subject.clean[T2])     # the same warp and lesions: the same contrast
    brain = acquired.brain_mask.astype(bool)
    ratio = acquired.images[T2][brain] / np.maximum(acquired.clean[T2][brain] * icbm_benchmark.SCANNER_UNITS, 1e-3)
    assert 0.01 < np.std(np.log(ratio[ratio > 0])) < 1.0      # the bias field and noise are what set them apart


def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path, monkeypatch, wheel):
    first = _build(monkeypatch, tmp_path / "a", wheel)
    again = _build(monkeypatch, tmp_path / "b", wheel)
    other = _build(monkeypatch, tmp_path / "c", wheel, seed=1)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "referenceTs"):
        for name in _names(first / sub):
            assert np.array_equal(read_image(first / sub / name).array, read_image(again / sub / name).array), name
    name = "imagesTr/icbm152_000_0001.nii.gz"
    assert not np.array_equal(read_image(first / name).array, read_image(other / name).array)


def test_refuses_to_overwrite_and_rejects_a_foreign_wheel(tmp_path, monkeypatch, wheel):
    _build(monkeypatch, tmp_path / "raw", wheel)
    with pytest.raises(MSGLDMError, match="--overwrite"):
        _build(monkeypatch, tmp_path / "raw", wheel)
    assert _build(monkeypatch, tmp_path / "raw", wheel, overwrite=True).is_dir()
    foreign = tmp_path / "other.whl"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("other/__init__.py", "")
    with pytest.raises(MSGLDMError, match="spm-runtime"):
        _build(monkeypatch, tmp_path / "raw2", foreign)
