"""All modalities (and the label) of a case must share one grid (DESIGN.md §3), on the way into preprocessing.

The rule itself lives in `msgldm_auto.dataset.verify` (`check_case_grids`, `check_label_grid`), so that verify, planning
and prediction accept and refuse exactly the same cases with the same words. Here a mismatch becomes an error naming
the case and the flag, unless `resample_mismatched`: then the image is resampled (linear; labels nearest neighbour)
onto the case's first available modality, with a warning.
"""
from __future__ import annotations

import warnings

from msgldm_auto.dataset.image_io import Image
from msgldm_auto.dataset.verify import ERROR, Problem, check_case_grids, check_label_grid, resample_to_reference
from msgldm_auto.errors import MSGLDMError


def harmonise_grids(images: dict[int, Image], seg: Image | None, resample_mismatched: bool,
                    case_id: str = "") -> tuple[dict[int, Image], Image | None, list[int]]:
    """Return images and seg on the first modality's grid, plus the channels that had to be resampled."""
    if not images:
        raise MSGLDMError(f"case {case_id or '?'}: no modality present; remove the case or add its images")
    for channel, image in sorted(images.items()):
        if image.array.ndim != 3:
            raise MSGLDMError(f"case {case_id}: channel {channel:04d} is {image.array.ndim}D; "
                              "every image must be a 3D volume")
    problems = check_case_grids(images, case_id, resample_mismatched)
    if seg is not None:
        problems += check_label_grid(seg, images, case_id, "label", resample_mismatched)
    _raise_or_warn(problems)
    reference = images[min(images)]
    resampled = [c for c, image in sorted(images.items()) if not image.same_grid(reference)]
    out = {c: resample_to_reference(image, reference, "linear") if c in resampled else image
           for c, image in sorted(images.items())}
    if seg is not None and not seg.same_grid(reference):
        seg = resample_to_reference(seg, reference, "nearest")
    return out, seg, resampled


def _raise_or_warn(problems: list[Problem]) -> None:
    errors = [p for p in problems if p.severity == ERROR]
    if errors:
        raise MSGLDMError("; ".join(f"case {p.describe()}" for p in errors))
    for problem in problems:
        warnings.warn(f"case {problem.describe()}", stacklevel=3)
