"""How synthesized slices go back to the input grid, measured on the dataset's own training images.

Prediction brings each synthesized slice stack from the plans' in-plane grid back to the input grid by cubic
interpolation, in one of two ways. *Head-aware*: head voxels are interpolated from head pixels only, so the −1
background does not darken a head whose intensities stop sharply at its edge (skull-stripped data cut to zero at the
brain's border). *Plain*: the rim is blended with the background, as the images themselves are where they fade out
over a few voxels (a brain without its skull whose border is partial volume, as in the demo). Which one is right is a
property of the data, so the planner measures it instead of assuming it: a few training cases go through preprocessing
and back each way, and the way that lands closer to the original images inside the head mask (PSNR on the evaluation's
normalisation) is planned (`ConfigurationPlan.head_aware_restore`). On the demo the plain way restores the training
images 2.6 dB closer (27.2 against 24.5 dB) and the same trained weights scored 1.3 dB higher on its test cases; on the
measured-contrast set, a brain inside its skull, head-aware is 0.7 dB closer on the head and the test scores, taken
inside the brain, tie (documentation/benchmarks.md, levers).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msgldm_auto.dataset.cases import Case, training_cases
from msgldm_auto.dataset.image_io import read_image
from msgldm_auto.evaluation.metrics import psnr
from msgldm_auto.evaluation.normalization import normalize_brasyn
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.preprocessing.pipeline import head_mask_original, preprocess_case, restore_original

MAX_CASES = 4                  # a few cases decide it: the edge is the same kind of edge throughout a dataset
TIE_DB = 0.05                  # within this, keep the head-aware way (the one plans written before this field use)


@dataclass
class RoundTrip:
    """Mean PSNR (dB) of the training images after preprocessing and each way back, over `volumes` images."""
    head_aware_psnr: float
    plain_psnr: float
    volumes: int

    @property
    def head_aware_wins(self) -> bool:
        return not self.plain_psnr >= self.head_aware_psnr + TIE_DB       # nothing measured (NaN): head-aware


def measure_round_trip(raw_folder: Path, config: ConfigurationPlan, max_cases: int = MAX_CASES) -> RoundTrip:
    """Preprocess up to `max_cases` training cases (evenly spread over the sorted list) with `config`, restore every
    present modality both ways, and score each against the original inside the case's head mask."""
    cases = training_cases(Path(raw_folder))
    chosen = [cases[i] for i in sorted({int(i) for i in np.linspace(0, len(cases) - 1, min(max_cases, len(cases)))})]
    scores = [score for case in chosen for score in _case_round_trip(case, config)]
    if not scores:
        return RoundTrip(float("nan"), float("nan"), 0)
    head_aware, plain = np.mean(scores, axis=0)
    return RoundTrip(float(head_aware), float(plain), len(scores))


def _case_round_trip(case: Case, config: ConfigurationPlan) -> list[tuple[float, float]]:
    images = {channel: read_image(path) for channel, path in case.images.items()}
    with warnings.catch_warnings():     # a case's grid problems are preprocessing's to report (or refuse), not ours
        warnings.filterwarnings("ignore", message="case ", category=UserWarning)
        data, present, _, properties = preprocess_case(images, config, case_id=case.case_id, whole_head=True,
                                                       resample_mismatched=True)
    mask = head_mask_original(properties)
    scores = []
    for row, channel in enumerate(present):
        if channel in properties.resampled_channels:        # its original is not on the grid the restore lands on
            continue
        original = normalize_brasyn(images[channel].array, mask)
        ways = [restore_original(data[row], properties, order=3, fill=-1.0, head_aware=way) for way in (True, False)]
        # as export writes them: clipped to [-1, 1], shifted to 0 for the background, zero outside the head
        scores.append(tuple(psnr(original, normalize_brasyn(np.where(mask, np.clip(way, -1, 1) + 1, 0.0), mask), mask)
                            for way in ways))
    return scores


def plan_restoration(config: ConfigurationPlan, trip: RoundTrip) -> None:
    """Set the configuration's restore way from the measured round trip, with its rationale."""
    config.head_aware_restore = trip.head_aware_wins
    chosen = "head-aware (head pixels only)" if trip.head_aware_wins else "plain (the rim blended with the background)"
    config.rationale["head_aware_restore"] = (
        f"synthesized slices go back to the input grid {chosen}: {trip.volumes} training images through preprocessing "
        f"and back scored {trip.head_aware_psnr:.2f} dB head-aware, {trip.plain_psnr:.2f} dB plain (ties within "
        f"{TIE_DB:g} dB keep head-aware)")
