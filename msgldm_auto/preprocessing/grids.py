"""All modalities (and the label) of a case must share one grid (DESIGN.md §3).

Float noise in origin/direction is tolerated (`Image.same_grid`). A real mismatch is an error naming the case and the
flag, unless `resample_mismatched`: then the image is resampled onto the case's first available modality, with a
warning. The resampler is the dataset package's `resample_to_reference` when it exists, else SimpleITK here.
"""
from __future__ import annotations

import warnings

import SimpleITK as sitk

from msgldm_auto.dataset.image_io import Image, to_sitk
from msgldm_auto.errors import MSGLDMError


def harmonise_grids(images: dict[int, Image], seg: Image | None, resample_mismatched: bool,
                    case_id: str = "") -> tuple[dict[int, Image], Image | None, list[int]]:
    """Return images and seg on the first modality's grid, plus the channels that had to be resampled."""
    if not images:
        raise MSGLDMError(f"case {case_id or '?'}: no modality present; remove the case or add its images")
    reference = images[min(images)]
    out, resampled = {}, []
    for channel, image in sorted(images.items()):
        if image.array.ndim != 3:
            raise MSGLDMError(f"case {case_id}: channel {channel:04d} is {image.array.ndim}D; every image must be a 3D volume")
        if image.same_grid(reference):
            out[channel] = image
            continue
        _refuse_unless(resample_mismatched, case_id, f"channel {channel:04d}", image, reference)
        out[channel] = resample_to_reference(image, reference, order=3)
        resampled.append(channel)
    if seg is not None and not seg.same_grid(reference):
        _refuse_unless(resample_mismatched, case_id, "label", seg, reference)
        seg = resample_to_reference(seg, reference, order=0)
    return out, seg, resampled


def _refuse_unless(resample_mismatched: bool, case_id: str, what: str, image: Image, reference: Image) -> None:
    detail = f"{what} has grid {image.array.shape[::-1]} @ {tuple(round(s, 3) for s in image.spacing)} mm, " \
             f"the first modality {reference.array.shape[::-1]} @ {tuple(round(s, 3) for s in reference.spacing)} mm"
    if not resample_mismatched:
        raise MSGLDMError(f"case {case_id}: {detail}; co-register the images or pass --resample-mismatched")
    warnings.warn(f"case {case_id}: {detail}; resampling onto the first modality (--resample-mismatched)", stacklevel=3)


def resample_to_reference(image: Image, reference: Image, order: int = 3) -> Image:
    """`image` on `reference`'s grid: linear for images (order > 0), nearest neighbour for labels (order 0)."""
    try:  # the dataset package's resampler keeps verify, planning and prediction identical
        from msgldm_auto.dataset.verify import resample_to_reference as dataset_resample
    except ImportError:
        dataset_resample = None
    if dataset_resample is not None:
        return dataset_resample(image, reference, "nearest" if order == 0 else "linear")
    interpolator = sitk.sitkNearestNeighbor if order == 0 else sitk.sitkLinear
    resampled = sitk.Resample(to_sitk(image), to_sitk(reference), sitk.Transform(), interpolator, 0.0)
    return reference.with_array(sitk.GetArrayFromImage(resampled))
