"""Image-similarity metrics on BraSyn-normalised volumes (DESIGN.md §8). Plain numpy/scipy, no models.

All metrics are computed inside the brain mask. `evaluate_volumes` is the one function the folder evaluator, training
validation and the demo call; the others are exposed for tests and for callers that already hold normalised volumes.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from msgldm_auto.evaluation.normalization import normalize_brasyn
from msgldm_auto.preprocessing.orientation import numpy_slice_axis

# An identical prediction has zero error and an infinite PSNR; we report this finite cap instead so that means over
# cases stay finite and JSON stays standard. 100 dB is far above anything a real synthesis reaches (~20-35 dB).
PSNR_CAP_DB = 100.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5          # Gaussian window radius = ceil(3.5 * 1.5) = 6 voxels, as in Wang et al. / scikit-image
SSIM_K1, SSIM_K2 = 0.01, 0.03


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


def gradient_energy_ratio(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, slice_axis: int = 0) -> float:
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


def _pair_mask(mask: np.ndarray, axis: int) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[axis]
    return np.take(mask, range(0, n - 1), axis=axis) & np.take(mask, range(1, n), axis=axis)


def slice_axis_from_spacing(spacing_itk: tuple[float, ...]) -> int:
    """The numpy axis the planner's slice-axis rule picks for an image with this spacing and an identity direction
    (for callers that hold only the spacing; with the direction use `orientation.numpy_slice_axis`)."""
    return numpy_slice_axis(spacing_itk)


def evaluate_volumes(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None,
                     label: np.ndarray | None = None, slice_axis: int = 0) -> dict[str, float]:
    """All metrics of one synthesized volume against its reference (both on any intensity scale).

    `mask` is the brain mask (default: reference > 0); `label` > 0 marks tumour and adds `ssim_tumour` and
    `ssim_non_tumour` (NaN where a region is empty). Returns psnr, ssim, mae, gradient_ratio (+ the two above).
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
    }
    if label is not None:
        tumour = np.asarray(label) > 0
        result["ssim_tumour"] = masked_mean(similarity, mask & tumour)
        result["ssim_non_tumour"] = masked_mean(similarity, mask & ~tumour)
    return result
