"""Rigid registration of one contrast onto another's grid (SimpleITK), used where a release stores contrasts on
different grids (IXI's T1 versus its T2/PD).

Mattes mutual information copes with the contrast difference (T1 versus T2 intensities are not linearly related), a
multi-resolution pyramid keeps the optimizer out of local minima, and a Euler3D transform (rotation + translation)
initialised at the image centres is all a same-subject, same-session pair needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from msgldm_auto.dataset.image_io import Image, to_sitk


@dataclass(frozen=True)
class RigidRegistrationSettings:
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_voxels: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    histogram_bins: int = 50
    samples: int = 100_000         # random voxels per metric evaluation; plenty for a rigid fit, all voxels when fewer
    min_level_size: int = 16       # skip pyramid levels whose smallest side would be shorter than this
    learning_rate: float = 1.0
    seed: int = 12345              # fixed so that the same data always gives the same result


def register_rigid(fixed: Image, moving: Image, settings: RigidRegistrationSettings | None = None) -> sitk.Transform:
    """The Euler3D transform that maps points of `fixed`'s space to `moving`'s (SimpleITK's convention)."""
    settings = settings or RigidRegistrationSettings()
    fixed_itk = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    moving_itk = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed_itk, moving_itk, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    method = _registration_method(fixed.array.shape, settings)
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed_itk, moving_itk)


def _registration_method(fixed_shape: tuple[int, ...],
                         settings: RigidRegistrationSettings) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    voxels = int(np.prod(fixed_shape))
    if voxels > settings.samples:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(settings.samples / voxels, settings.seed)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate, minStep=1e-4, numberOfIterations=settings.iterations,
        gradientMagnitudeTolerance=1e-8,
    )
    # Scales from physical shift: one radian and one millimetre then move points by comparable amounts.
    method.SetOptimizerScalesFromPhysicalShift()
    factors, sigmas = _pyramid(fixed_shape, settings)
    method.SetShrinkFactorsPerLevel(factors)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def _pyramid(shape: tuple[int, ...], settings: RigidRegistrationSettings) -> tuple[list[int], list[float]]:
    """Keep only the levels on which the image is still at least `min_level_size` voxels across (always the last)."""
    smallest = min(shape)
    levels = [
        (f, s) for f, s in zip(settings.shrink_factors, settings.smoothing_sigmas_voxels)
        if f == 1 or smallest // f >= settings.min_level_size
    ]
    if not levels or levels[-1][0] != 1:
        levels.append((1, 0.0))
    return [f for f, _ in levels], [s for _, s in levels]


def resample_onto(moving: Image, reference: Image, transform: sitk.Transform | None = None) -> Image:
    """`moving` resampled (linear, float32) onto `reference`'s grid through `transform`; voxels outside `moving` become
    0."""
    result = sitk.Resample(
        to_sitk(moving), to_sitk(reference), transform or sitk.Transform(), sitk.sitkLinear, 0.0,
        sitk.sitkFloat32,
    )
    # float32 whatever the input type: interpolated values are not integers, and rounding would add noise.
    return reference.with_array(sitk.GetArrayFromImage(result))


def register_and_resample(moving: Image, reference: Image,
                          settings: RigidRegistrationSettings | None = None) -> Image:
    """Rigidly register `moving` to `reference` and return it on `reference`'s grid."""
    return resample_onto(moving, reference, register_rigid(reference, moving, settings))
