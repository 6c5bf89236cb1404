"""Image-similarity metrics on BraSyn-normalised volumes (DESIGN.md §8). Plain numpy/scipy, no models.

All metrics are computed inside the brain mask. `evaluate_volumes` is the one function the folder evaluator, training
validation and the demo call; the others are exposed for tests and for callers that already hold normalised volumes.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter
from scipy.stats import spearmanr

from msgldm_auto.evaluation.normalization import normalize_brasyn, robust_range
from msgldm_auto.preprocessing.orientation import numpy_slice_axis

# An identical prediction has zero error and an infinite PSNR; we report this finite cap instead so that means over
# cases stay finite and JSON stays standard. 100 dB is far above anything a real synthesis reaches (~20-35 dB).
PSNR_CAP_DB = 100.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5          # Gaussian window radius = ceil(3.5 * 1.5) = 6 voxels, as in Wang et al. / scikit-image
SSIM_K1, SSIM_K2 = 0.01, 0.03
# The in-plane high-pass is the image minus its Gaussian blur of this width (voxels): it keeps the texture and edges
# that a posterior mean smooths away and a good sample restores.
HIGH_PASS_SIGMA = 1.0
HIGH_PASS_MARGIN = 3         # voxels (3σ) kept off the mask's in-plane edge, where the normalisation's cut to 0 is
COVERAGE_STDS = 2.0


def psnr(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the voxels of `mask`, capped at `PSNR_CAP_DB`."""
    diff = (np.asarray(prediction, np.float64) - np.asarray(reference, np.float64))[mask]
    mse = float(np.mean(diff ** 2)) if diff.size else 0.0
    if mse <= data_range ** 2 * 10.0 ** (-PSNR_CAP_DB / 10.0):
        return PSNR_CAP_DB
    return float(10.0 * np.log10(data_range ** 2 / mse))


def mae(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over the voxels of `mask`."""
    diff = (np.asarray(prediction, np.float64) - np.asarray(reference, np.float64))[mask]
    return float(np.mean(np.abs(diff))) if diff.size else float("nan")


def ssim_map(reference: np.ndarray, prediction: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Voxelwise SSIM with a Gaussian window (σ = 1.5 voxels along every axis of the volume, reflect padding).

    Local statistics use population (not sample) moments, as in Wang et al. 2004.
    """
    x = np.asarray(reference, np.float64)
    y = np.asarray(prediction, np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_x, mu_y = smooth(x), smooth(y)
    var_x = smooth(x * x) - mu_x ** 2
    var_y = smooth(y * y) - mu_y ** 2
    cov = smooth(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if np.any(mask) else float("nan")


def gradient_energy_ratio(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray,
                          slice_axis: int = 0) -> float:
    """Energy of the finite difference along `slice_axis` of the prediction ÷ that of the reference.

    Only voxel pairs with both voxels inside the mask count. 1 means the same through-plane texture; > 1 means
    striping between slices; < 1 means over-smoothing across slices. 1.0 when both are flat, inf when only the
    reference is.
    """
    pair_mask = _pair_mask(mask, slice_axis)
    energy_pred = float(np.sum(np.diff(np.asarray(prediction, np.float64), axis=slice_axis)[pair_mask] ** 2))
    energy_ref = float(np.sum(np.diff(np.asarray(reference, np.float64), axis=slice_axis)[pair_mask] ** 2))
    if energy_ref == 0.0:
        return 1.0 if energy_pred == 0.0 else float("inf")
    return energy_pred / energy_ref


def high_frequency_ratio(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, slice_axis: int = 0) -> float:
    """In-plane high-frequency energy of the prediction ÷ that of the reference, over the voxels of `mask`.

    High frequency = the volume minus its Gaussian blur (σ = `HIGH_PASS_SIGMA` voxels within each slice, none across
    slices), summed over the mask less its in-plane rim of `HIGH_PASS_MARGIN` voxels (the normalised volumes are cut
    to 0 outside the mask, an edge that is not the image's). 1 means the reference's sharpness and texture; < 1 means
    blur (a posterior mean); > 1 means added noise or ringing. 1.0 when both are flat, inf when only the reference is,
    NaN when the mask has no interior.
    """
    mask = _in_plane_interior(np.asarray(mask, dtype=bool), slice_axis)
    if not mask.any():
        return float("nan")
    energy_pred = float(np.sum(_in_plane_high_pass(prediction, slice_axis)[mask] ** 2))
    energy_ref = float(np.sum(_in_plane_high_pass(reference, slice_axis)[mask] ** 2))
    if energy_ref == 0.0:
        return 1.0 if energy_pred == 0.0 else float("inf")
    return energy_pred / energy_ref


def _in_plane_interior(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    structure = np.take(structure, [1], axis=slice_axis)         # no erosion across slices
    return binary_erosion(mask, structure=structure, iterations=HIGH_PASS_MARGIN, border_value=0)


def _in_plane_high_pass(volume: np.ndarray, slice_axis: int) -> np.ndarray:
    volume = np.asarray(volume, np.float64)
    sigma = [HIGH_PASS_SIGMA] * volume.ndim
    sigma[slice_axis] = 0.0
    return volume - gaussian_filter(volume, sigma=sigma, mode="reflect")


def std_error_spearman(reference: np.ndarray, prediction: np.ndarray, std: np.ndarray, mask: np.ndarray) -> float:
    """Spearman rank correlation between the per-voxel std and the absolute error over `mask` (NaN when either is
    constant): does the uncertainty map point at the errors?"""
    mask = np.asarray(mask, dtype=bool)
    error = np.abs(np.asarray(prediction, np.float64) - np.asarray(reference, np.float64))[mask]
    spread = np.asarray(std, np.float64)[mask]
    if error.size < 2 or np.ptp(error) == 0 or np.ptp(spread) == 0:
        return float("nan")
    return float(spearmanr(spread, error).statistic)


def std_coverage(reference: np.ndarray, prediction: np.ndarray, std: np.ndarray, mask: np.ndarray,
                 num_stds: float = COVERAGE_STDS) -> float:
    """Fraction of the voxels of `mask` whose reference lies within prediction ± `num_stds` × std (0.95 for a
    calibrated Gaussian at 2 std; lower means overconfident)."""
    mask = np.asarray(mask, dtype=bool)
    error = np.abs(np.asarray(prediction, np.float64) - np.asarray(reference, np.float64))[mask]
    if error.size == 0:
        return float("nan")
    return float(np.mean(error <= num_stds * np.asarray(std, np.float64)[mask]))


def _pair_mask(mask: np.ndarray, axis: int) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[axis]
    return np.take(mask, range(0, n - 1), axis=axis) & np.take(mask, range(1, n), axis=axis)


def slice_axis_from_spacing(spacing_itk: tuple[float, ...]) -> int:
    """The numpy axis the planner's slice-axis rule picks for an image with this spacing and an identity direction
    (for callers that hold only the spacing; with the direction use `orientation.numpy_slice_axis`)."""
    return numpy_slice_axis(spacing_itk)


def evaluate_volumes(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None,
                     label: np.ndarray | None = None, slice_axis: int = 0, std: np.ndarray | None = None) -> dict[str,
                                                                                                                  float]:
    """All metrics of one synthesized volume against its reference (both on any intensity scale).

    `mask` is the brain mask (default: reference > 0); `label` > 0 marks tumour and adds `ssim_tumour` and
    `ssim_non_tumour` (NaN where a region is empty); `std`, the prediction's per-voxel std map on the prediction's
    intensity scale, adds `std_error_spearman` and `coverage_2std`. Always returns psnr, ssim, mae, gradient_ratio
    (through-plane) and hf_ratio (in-plane high frequencies).
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    mask = (reference > 0) if mask is None else np.asarray(mask, dtype=bool)
    ref01, pred01 = normalize_brasyn(reference, mask), normalize_brasyn(prediction, mask)
    similarity = ssim_map(ref01, pred01)
    result = {
        "psnr": psnr(ref01, pred01, mask),
        "ssim": masked_mean(similarity, mask),
        "mae": mae(ref01, pred01, mask),
        "gradient_ratio": gradient_energy_ratio(ref01, pred01, mask, slice_axis),
        "hf_ratio": high_frequency_ratio(ref01, pred01, mask, slice_axis),
    }
    if std is not None and np.any(np.asarray(std)[mask] > 0):   # one deterministic prediction's std is all 0
        low, high = robust_range(prediction, mask)      # the std on the prediction's normalised scale
        std01 = np.asarray(std, np.float64) / (high - low) if high > low else np.zeros(np.shape(std))
        result["std_error_spearman"] = std_error_spearman(ref01, pred01, std01, mask)
        result["coverage_2std"] = std_coverage(ref01, pred01, std01, mask)
    if label is not None:
        tumour = np.asarray(label) > 0
        result["ssim_tumour"] = masked_mean(similarity, mask & tumour)
        result["ssim_non_tumour"] = masked_mean(similarity, mask & ~tumour)
    return result
