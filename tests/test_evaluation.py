"""Evaluation: metrics against independent computations, folder matching, errors, summary/table, previews, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from skimage.metrics import structural_similarity

from msgldm_auto.cli.evaluate import main as evaluate_main
from msgldm_auto.dataset.image_io import Image, write_image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation import PSNR_CAP_DB, evaluate_folder, evaluate_volumes, save_preview
from msgldm_auto.evaluation.metrics import (
    gradient_energy_ratio,
    high_frequency_ratio,
    mae,
    psnr,
    slice_axis_from_spacing,
    ssim_map,
    std_coverage,
    std_error_spearman,
)
from msgldm_auto.evaluation.normalization import normalize_brasyn

SHAPE = (12, 16, 16)


def head(shape=SHAPE) -> np.ndarray:
    """A solid ellipsoid: the brain mask of the toy volumes."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (z ** 2 + y ** 2 + x ** 2) < 0.8


def brain(seed=0, shape=SHAPE, masked=True) -> np.ndarray:
    """Smooth-ish positive intensities inside the head, 0 outside (like a synthesized output)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    volume = 100 + 40 * np.sin(3 * x) * np.cos(2 * y) + 20 * z + rng.normal(0, 3, shape)
    return np.where(head(shape), volume, 0.0) if masked else volume


# --- normalisation and single metrics --------------------------------------------------------------------------------

def test_normalisation_clips_to_own_percentiles_inside_mask():
    volume, mask = brain(), head()
    out = normalize_brasyn(volume, mask)
    low, high = np.percentile(volume[mask], [0.5, 99.5])
    expected = np.clip((volume[mask] - low) / (high - low), 0, 1)
    np.testing.assert_allclose(out[mask], expected)
    assert np.all(out[~mask] == 0)
    assert out.min() == 0.0 and out.max() == 1.0


def test_normalisation_lower_bound_never_negative():
    mask = np.ones((4, 4, 4), bool)
    volume = np.linspace(-50, 100, 64).reshape(4, 4, 4)      # 0.5th percentile is negative
    out = normalize_brasyn(volume, mask)
    high = np.percentile(volume, 99.5)
    np.testing.assert_allclose(out, np.clip(volume / high, 0, 1))


def test_identical_volumes_give_ssim_one_capped_psnr_zero_mae_unit_ratio():
    volume = brain()
    result = evaluate_volumes(volume, volume.copy())
    assert result["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert result["psnr"] == PSNR_CAP_DB
    assert result["mae"] == 0.0
    assert result["gradient_ratio"] == pytest.approx(1.0)
    assert result["hf_ratio"] == pytest.approx(1.0)
    assert set(result) == {"psnr", "ssim", "mae", "gradient_ratio", "hf_ratio"}


def test_constant_offset_gives_known_mae_and_psnr():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 0.8, SHAPE)
    mask = head()
    assert mae(reference, reference + 0.1, mask) == pytest.approx(0.1)
    assert psnr(reference, reference + 0.1, mask) == pytest.approx(20.0)       # 10·log10(1 / 0.1²)
    # Offsets outside the mask do not count.
    shifted_outside = np.where(mask, reference, reference + 0.5)
    assert mae(reference, shifted_outside, mask) == 0.0


def test_evaluate_volumes_gives_known_mae_and_psnr_for_flipped_voxels_on_any_scale():
    # A two-level volume (half 0, half 100) normalises to exactly {0, 1} whatever its scale, so a prediction with 10 of
    # 1000 bright voxels dark has MAE 10/1000 and MSE 10/1000: PSNR 10 log10(1000 / 10) = 20 dB.
    reference = np.zeros(1000)
    reference[:500] = 100.0
    prediction = reference.copy()
    prediction[:10] = 0.0
    shape, mask = (10, 10, 10), np.ones((10, 10, 10), bool)
    for scale in (1.0, 7.5):
        result = evaluate_volumes(reference.reshape(shape), scale * prediction.reshape(shape), mask)
        assert result["mae"] == pytest.approx(0.01)
        assert result["psnr"] == pytest.approx(20.0)


def test_metrics_ignore_global_intensity_scale():
    volume = brain()
    scaled = evaluate_volumes(volume, 3.0 * volume)
    assert scaled["psnr"] == PSNR_CAP_DB and scaled["ssim"] == pytest.approx(1.0)


def test_ssim_map_matches_scikit_image_gaussian_ssim():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, SHAPE)
    y = np.clip(x + rng.normal(0, 0.1, SHAPE), 0, 1)
    _, reference_map = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ssim_map(x, y), reference_map, atol=1e-10)


def test_ssim_below_one_and_decreasing_with_noise():
    clean, rng = brain(), np.random.default_rng(3)
    noise = rng.normal(0, 1, SHAPE)
    scores = [evaluate_volumes(clean, np.where(head(), clean + level * noise, 0))["ssim"] for level in (2, 8, 30)]
    assert scores[0] < 1.0
    assert scores[0] > scores[1] > scores[2]


def test_tumour_and_non_tumour_ssim():
    reference, mask = brain(), head()
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 3:8, 3:8] = 1
    label &= mask
    damaged = reference.copy()
    far_from_tumour = np.zeros(SHAPE, bool)
    far_from_tumour[8:, 8:, 8:] = True
    damaged[far_from_tumour & mask] += np.random.default_rng(4).normal(0, 30, (far_from_tumour & mask).sum())
    result = evaluate_volumes(reference, damaged, mask, label=label)
    assert result["ssim_tumour"] == pytest.approx(1.0, abs=0.05)
    assert result["ssim_non_tumour"] < result["ssim_tumour"]
    assert result["ssim_non_tumour"] < 1.0


def test_gradient_ratio_detects_striping_and_smoothing():
    reference, mask = brain(), head()
    stripes = np.where(np.arange(SHAPE[0]) % 2 == 0, 15.0, -15.0)[:, None, None]
    striped = np.where(mask, reference + stripes, 0)
    smoothed = np.where(mask, gaussian_filter1d(brain(masked=False), 1.0, axis=0), 0)
    assert evaluate_volumes(reference, striped, mask, slice_axis=0)["gradient_ratio"] > 1.5
    assert evaluate_volumes(reference, smoothed, mask, slice_axis=0)["gradient_ratio"] < 1.0
    # Independent computation on plain arrays: differences along axis 0 doubled -> energy ×4.
    ramp = np.arange(5.0)[:, None, None] * np.ones((5, 3, 3))
    assert gradient_energy_ratio(ramp, 2 * ramp, np.ones((5, 3, 3), bool), slice_axis=0) == pytest.approx(4.0)
    assert gradient_energy_ratio(ramp, 2 * ramp, np.ones((5, 3, 3), bool), slice_axis=1) == pytest.approx(1.0)


def test_high_frequency_ratio_is_one_for_a_copy_and_below_one_for_blur():
    reference, mask = brain(), head()
    blurred = np.where(mask, gaussian_filter1d(gaussian_filter1d(brain(masked=False), 1.0, axis=1), 1.0, axis=2), 0)
    assert evaluate_volumes(reference, reference.copy(), mask)["hf_ratio"] == pytest.approx(1.0)
    assert evaluate_volumes(reference, blurred, mask)["hf_ratio"] < 0.5
    noisy = np.where(mask, reference + np.random.default_rng(1).normal(0, 10, SHAPE), 0)
    assert evaluate_volumes(reference, noisy, mask)["hf_ratio"] > 1.5


def test_high_frequency_ratio_is_in_plane_only_and_quadratic_in_amplitude():
    # Independent of the filter's details: a checkerboard's high-pass scales with its amplitude (energy x amplitude^2);
    # a linear in-plane ramp has no high frequencies away from the borders; stripes across slices are not in-plane.
    z, y, x = np.meshgrid(np.arange(12), np.arange(20), np.arange(20), indexing="ij")
    checkerboard = np.where((y + x) % 2 == 0, 1.0, -1.0)
    interior = np.zeros(checkerboard.shape, bool)
    interior[:, 5:15, 5:15] = True
    assert high_frequency_ratio(checkerboard, 0.5 * checkerboard, interior) == pytest.approx(0.25)
    ramp = 0.3 * y + 0.2 * x
    assert high_frequency_ratio(checkerboard, checkerboard + ramp, interior) == pytest.approx(1.0)
    stripes = np.where(z % 2 == 0, 5.0, -5.0)
    assert high_frequency_ratio(checkerboard, checkerboard + stripes, interior, slice_axis=0) == pytest.approx(1.0)
    everywhere = np.ones(checkerboard.shape, bool)
    assert high_frequency_ratio(checkerboard, checkerboard + stripes, everywhere, slice_axis=2) > 10


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def test_std_error_spearman_against_constructed_cases_and_a_rank_pearson():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 10, 10))
    error = rng.normal(size=reference.shape)
    prediction, mask = reference + error, np.ones(reference.shape, bool)
    assert std_error_spearman(reference, prediction, np.sqrt(np.abs(error)), mask) == pytest.approx(1.0)  # monotone
    assert abs(std_error_spearman(reference, prediction, rng.uniform(size=reference.shape), mask)) < 0.15
    spread = np.abs(error) + rng.uniform(0, 1, size=reference.shape)
    expected = np.corrcoef(_ranks(spread.ravel()), _ranks(np.abs(error).ravel()))[0, 1]
    assert std_error_spearman(reference, prediction, spread, mask) == pytest.approx(expected)
    assert np.isnan(std_error_spearman(reference, prediction, np.ones(reference.shape), mask))   # no spread at all


def test_two_std_coverage_of_calibrated_overconfident_and_cautious_maps():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 2.0, size=(20, 50, 50))
    reference = np.zeros(sigma.shape)
    prediction, mask = reference + rng.normal(size=sigma.shape) * sigma, np.ones(sigma.shape, bool)
    assert std_coverage(reference, prediction, sigma, mask) == pytest.approx(0.9545, abs=0.005)
    assert std_coverage(reference, prediction, 0.25 * sigma, mask) < 0.5
    assert std_coverage(reference, prediction, 100 * sigma, mask) == 1.0


def test_evaluate_volumes_scores_a_std_map_on_the_predictions_scale():
    reference, mask = brain(), head()
    noise = np.random.default_rng(2).normal(0, 3, SHAPE)
    prediction = np.where(mask, reference + noise, 0)
    std = np.where(mask, np.abs(noise), 0)
    plain = evaluate_volumes(reference, prediction, mask)
    assert "std_error_spearman" not in plain and "coverage_2std" not in plain
    assert "coverage_2std" not in evaluate_volumes(reference, prediction, mask, std=np.zeros(SHAPE))  # one draw
    scored = evaluate_volumes(reference, prediction, mask, std=std)
    rescaled = evaluate_volumes(reference, 10 * prediction, mask, std=10 * std)   # intensity scale is arbitrary
    assert scored["std_error_spearman"] > 0.5 and scored["coverage_2std"] > 0.8     # not exact: own normalisations
    assert rescaled["coverage_2std"] == pytest.approx(scored["coverage_2std"])
    assert rescaled["std_error_spearman"] == pytest.approx(scored["std_error_spearman"])


def test_slice_axis_from_spacing():
    assert slice_axis_from_spacing((1.0, 1.0, 3.0)) == 0          # ITK k coarsest -> numpy axis 0
    assert slice_axis_from_spacing((4.0, 1.0, 1.0)) == 2
    assert slice_axis_from_spacing((1.0, 5.0, 1.0)) == 1
    assert slice_axis_from_spacing((1.0, 1.0, 1.0)) == 0          # isotropic -> default
    assert slice_axis_from_spacing((1.05, 1.0, 1.0)) == 0         # within the planner's 10 % tolerance: isotropic


# --- folders ---------------------------------------------------------------------------------------------------------

SPACING = (1.0, 1.0, 2.0)


def write(path, array, spacing=SPACING, origin=(0.0, 0.0, 0.0)):
    write_image(Image(np.asarray(array, np.float32), spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1)), path)


@pytest.fixture
def folders(tmp_path):
    """Two cases; case A misses T2 (channel 1), case B misses FLAIR (channel 2) and was given T1+T2."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write(ref / "A_0001.nii.gz", brain(1))
    write(pred / "A_0001.nii.gz", brain(1))                        # perfect
    write(ref / "B_0002.nii.gz", brain(2))
    write(pred / "B_0002.nii.gz", np.where(head(), brain(2) + np.random.default_rng(0).normal(0, 10, SHAPE), 0))
    write(ref / "B_0000.nii.gz", brain(3))                         # present modality copied by --complete
    write(pred / "B_0000.nii.gz", brain(3))
    (pred / "predictions.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"},
        "cases": {"A": {"present": ["FLAIR", "T1"], "synthesized": ["T2"]},
                  "B": {"present": ["T1", "T2"], "synthesized": ["FLAIR"]}}}))
    return ref, pred


def test_folder_summary_structure_and_values(folders, tmp_path):
    ref, pred = folders
    out = tmp_path / "summary.json"
    summary = evaluate_folder(ref, pred, output_file=out)
    assert json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == summary
    volumes = {(v["case"], v["modality"]): v for v in summary["per_volume"]}
    assert set(volumes) == {("A", "T2"), ("B", "FLAIR")}            # the --complete copy of B's T1 is not scored
    a = volumes[("A", "T2")]
    assert a["pattern"] == "T1+FLAIR" and a["metrics"]["psnr"] == PSNR_CAP_DB and a["slice_axis"] == 0
    assert a["channel"] == 1 and a["reference"] == str(ref / "A_0001.nii.gz")
    assert summary["num_cases"] == 2
    b_psnr = volumes[("B", "FLAIR")]["metrics"]["psnr"]
    assert b_psnr < 40
    assert summary["per_pattern"]["T1+T2"]["FLAIR"]["psnr"] == {"mean": b_psnr, "std": 0.0, "n": 1}
    assert summary["per_modality"]["T2"]["ssim"]["mean"] == pytest.approx(1.0)
    overall = summary["mean"]["psnr"]
    assert overall["n"] == 2
    assert overall["mean"] == pytest.approx((PSNR_CAP_DB + b_psnr) / 2)
    assert overall["std"] == pytest.approx(np.std([PSNR_CAP_DB, b_psnr], ddof=1))


def test_folder_scores_std_maps_written_by_save_std(folders):
    ref, pred = folders
    write(pred / "uncertainty" / "B_0002_std.nii.gz", np.where(head(), 2.0, 0.0))
    metrics = {v["case"]: v["metrics"] for v in evaluate_folder(ref, pred)["per_volume"]}
    assert 0.0 <= metrics["B"]["coverage_2std"] <= 1.0 and "std_error_spearman" in metrics["B"]
    assert "coverage_2std" not in metrics["A"] and metrics["A"]["hf_ratio"] == pytest.approx(1.0)


def test_folder_without_predictions_json_uses_channel_numbers(folders):
    ref, pred = folders
    (pred / "predictions.json").unlink()
    summary = evaluate_folder(ref, pred)
    assert set(summary["per_modality"]) == {"0000", "0001", "0002"}
    assert set(summary["per_pattern"]) == {"unknown"}


def test_missing_prediction_is_listed_not_scored(folders):
    ref, pred = folders
    write(ref / "C_0001.nii.gz", brain(5))
    summary = evaluate_folder(ref, pred)
    assert summary["missing_predictions"] == ["C_0001.nii.gz"]
    assert "C" not in {v["case"] for v in summary["per_volume"]}


@pytest.mark.parametrize("kind", ["shape", "origin"])
def test_grid_mismatch_is_one_line_error_naming_both_files(folders, kind):
    ref, pred = folders
    if kind == "shape":
        write(pred / "A_0001.nii.gz", np.zeros((12, 16, 15)))
    else:
        write(pred / "A_0001.nii.gz", brain(1), origin=(0.0, 5.0, 0.0))
    with pytest.raises(MSGLDMError) as err:
        evaluate_folder(ref, pred)
    message = str(err.value)
    assert "\n" not in message
    assert str(pred / "A_0001.nii.gz") in message and str(ref / "A_0001.nii.gz") in message


def test_mask_and_label_folders(folders, tmp_path):
    ref, pred = folders
    masks, labels = tmp_path / "masks", tmp_path / "labels"
    for case in ("A", "B"):
        write(masks / f"{case}.nii.gz", head().astype(np.uint8))
    label = np.zeros(SHAPE, np.uint8)
    label[5:8, 6:10, 6:10] = 1
    write(labels / "B.nii.gz", label)
    summary = evaluate_folder(ref, pred, mask_dir=masks, labels_dir=labels)
    metrics = {v["case"]: v["metrics"] for v in summary["per_volume"]}
    assert "ssim_tumour" in metrics["B"] and "ssim_tumour" not in metrics["A"]
    (masks / "A.nii.gz").unlink()
    with pytest.raises(MSGLDMError, match="A.nii.gz does not exist"):
        evaluate_folder(ref, pred, mask_dir=masks)


def test_cli_prints_table_and_writes_summary(folders, tmp_path, capsys):
    ref, pred = folders
    assert evaluate_main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "PSNR dB" in out and "T1+T2" in out and "FLAIR" in out
    assert f"{PSNR_CAP_DB:.2f} ± 0.00" in out
    assert (tmp_path / "s.json").is_file()
    assert evaluate_main(["-ref", str(ref), "-pred", str(pred)]) == 0
    assert (pred / "summary.json").is_file()


def test_cli_mismatch_exits_2_with_both_names(folders, capsys):
    ref, pred = folders
    write(pred / "A_0001.nii.gz", np.zeros((12, 16, 15)))
    assert evaluate_main(["-ref", str(ref), "-pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "A_0001.nii.gz" in err and str(ref) in err
    assert not (pred / "summary.json").exists()


def test_cli_no_common_files_is_error(tmp_path, capsys):
    (tmp_path / "r").mkdir(), (tmp_path / "p").mkdir()
    assert evaluate_main(["-ref", str(tmp_path / "r"), "-pred", str(tmp_path / "p")]) == 2
    assert "share no" in capsys.readouterr().err


def test_cli_dataset_json_names(folders, msgldm_roots, capsys):
    ref, pred = folders
    (pred / "predictions.json").unlink()
    dataset = msgldm_roots / "raw" / "Dataset005_Toy"
    dataset.mkdir(parents=True)
    (dataset / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "T1w", "1": "T2w", "2": "FLAIRw"}, "file_ending": ".nii.gz", "numTraining": 0}))
    assert evaluate_main(["-ref", str(ref), "-pred", str(pred), "-d", "5"]) == 0
    summary = json.loads((pred / "summary.json").read_text())
    assert set(summary["per_modality"]) == {"T1w", "T2w", "FLAIRw"}


# --- previews --------------------------------------------------------------------------------------------------------

def test_preview_png_has_one_row_per_volume(tmp_path):
    from matplotlib.image import imread

    inputs = {"T1": brain(1), "T2": brain(2)}
    with_truth = save_preview(tmp_path / "a.png", inputs, {"FLAIR": brain(3)}, {"FLAIR": brain(4)}, spacing=SPACING)
    without = save_preview(tmp_path / "b.png", inputs, {"FLAIR": brain(3)})
    rows_with, rows_without = imread(with_truth).shape[0], imread(without).shape[0]
    assert rows_with / rows_without == pytest.approx(5 / 3, rel=0.02)   # inputs×2, synthesis, truth, error vs 3 rows
    assert imread(with_truth).shape[1] == imread(without).shape[1]
    assert not list(tmp_path.glob(".*"))                                # no temporary files left behind
    with pytest.raises(ValueError, match="one shape"):
        save_preview(tmp_path / "c.png", inputs, {"FLAIR": np.zeros((3, 3, 3))})
