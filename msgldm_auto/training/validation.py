"""End-of-training validation of one fold on its held-out cases (DESIGN §8), in the original image space.

Every held-out case is synthesized under the availability patterns that matter: each single missing modality (all
others present) and each "only one present" pattern, then scored by `msgldm_auto.evaluation.evaluate_volumes`
against the case's own images. The disentangler's one-pass synthesis is scored beside diffusion on the same inputs
(it costs one forward pass), because diffusion must never be worse than the one-pass synthesis it is guided by.
Writes `fold_N/validation/summary.json` (the schema of `msgldm_evaluate`'s summary: every scored volume, mean, per
modality, per pattern) and preview PNGs (inputs | synthesis | truth | error, three planes) of the first cases. When
the prediction averages several samples, their std map is scored too (uncertainty metrics).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from msgldm_auto.atomic import write_json_atomic
from msgldm_auto.dataset.cases import Case
from msgldm_auto.dataset.image_io import Image, read_image
from msgldm_auto.evaluation.metrics import evaluate_volumes
from msgldm_auto.evaluation.previews import save_preview
from msgldm_auto.evaluation.table import ScoredVolume, aggregate, json_safe, summarise
from msgldm_auto.inference.model_loading import weights_identity
from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions
from msgldm_auto.plans import DiffusionPlan
from msgldm_auto.preprocessing.orientation import numpy_slice_axis

SUMMARY_FILE = "summary.json"
PREVIEW_FOLDER = "previews"


@dataclass(frozen=True)
class Pattern:
    inputs: tuple[int, ...]
    targets: tuple[int, ...]

    def name(self, modalities: list[str]) -> str:
        return "+".join(modalities[c] for c in self.inputs)


def validation_patterns(present: list[int]) -> list[Pattern]:
    """Each single missing modality, then each single present one (deduplicated; nothing for < 2 modalities)."""
    present = sorted(present)
    if len(present) < 2:
        return []
    patterns = [Pattern(tuple(c for c in present if c != m), (m,)) for m in present]
    patterns += [Pattern((m,), tuple(c for c in present if c != m)) for m in present]
    return list(dict.fromkeys(patterns))


@dataclass(frozen=True)
class ValidationHeader:
    """What produced a validation summary: a summary on disk is reused only when all of it matches."""
    fold: str
    checkpoint: str
    mode: str                           # MSGLDMPredictor.mode: diffusion | one_pass | unet
    steps: int
    samples: int
    seed: int
    noise: str
    weights: str                        # inference.model_loading.weights_identity of the checkpoints used
    sampling: str                       # the plans' sampling start, t0 and target ("" without diffusion)
    mirrored: bool                      # the deterministic pass averaged over the left-right mirror
    percentile_matched: bool            # the syntheses' p99.5 put at the export scale (export.match_head_percentile)

    @classmethod
    def of(cls, predictor: MSGLDMPredictor, fold: str, model_folder: Path) -> "ValidationHeader":
        options = predictor.options
        return cls(fold, predictor.checkpoint, predictor.mode, predictor.steps, predictor.samples, options.seed,
                   options.noise, weights_identity(model_folder, fold, predictor.stages, predictor.checkpoint),
                   sampling_identity(predictor.model.configuration.diffusion if predictor.uses_diffusion else None),
                   predictor.mirrors, options.match_percentile)

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> "ValidationHeader | None":
        """The header of a written summary; None for one written before the header had every field."""
        try:
            return cls(**{f.name: summary[f.name] for f in fields(cls)})
        except KeyError:
            return None


def validate_fold(model_folder: Path | str, fold: str | int, cases: list[Case], *, checkpoint: str = "final",
                  device: str = "cpu", options: PredictionOptions | None = None,
                  output_folder: Path | str | None = None,
                  max_cases: int | None = None, num_previews: int = 2, compare_one_pass: bool = True) -> dict[str, Any]:
    """Synthesize, score and summarise the held-out `cases` (raw `Case`s) of `fold`; returns the written summary."""
    model_folder = Path(model_folder)
    output = Path(output_folder) if output_folder is not None else model_folder / f"fold_{fold}" / "validation"
    predictor = MSGLDMPredictor.from_trained_folder(model_folder, [fold], checkpoint, device, options)
    return validate_predictor(predictor, model_folder, str(fold), cases, output, max_cases=max_cases,
                              num_previews=num_previews, compare_one_pass=compare_one_pass)


def validate_predictor(predictor: MSGLDMPredictor, model_folder: Path, fold: str, cases: list[Case], output: Path,
                       *, max_cases: int | None = None, num_previews: int = 2,
                       compare_one_pass: bool = True) -> dict[str, Any]:
    """`validate_fold` with a predictor built by the caller (the benchmarks vary its plans' sampling settings)."""
    one_pass = None
    # The one-pass decoder is the yardstick diffusion must beat (DESIGN.md §6); msgldm_find_best_configuration
    # validates it as a mode of its own, so it leaves the comparison out.
    if compare_one_pass and predictor.uses_diffusion:
        one_pass = MSGLDMPredictor(predictor.model, predictor.networks, predictor.device,
                                   replace(predictor.options, one_pass=True), predictor.checkpoint)
    records: list[ScoredVolume] = []
    one_pass_records: list[ScoredVolume] = []
    chosen = [c for c in cases if len(c.images) >= 2][:max_cases]     # one modality: nothing to hold out
    for index, case in enumerate(chosen):
        images = {channel: read_image(path) for channel, path in sorted(case.images.items())}
        label = read_image(case.label).array if case.label is not None else None
        preview_folder = output / PREVIEW_FOLDER if index < num_previews else None
        records += _validate_case(predictor, case.case_id, images, label, preview_folder)
        if one_pass is not None:
            one_pass_records += _validate_case(one_pass, case.case_id, images, label, None)
    summary = summarise(records, asdict(ValidationHeader.of(predictor, fold, model_folder)))
    if one_pass is not None:
        summary["one_pass"] = json_safe(aggregate(one_pass_records))
    write_json_atomic(summary, output / SUMMARY_FILE)
    return summary


def sampling_identity(plan: DiffusionPlan | None) -> str:
    """What of the plans decides a diffusion sample besides steps and seed (None: the mode samples nothing), so that
    a validation made before t0 was edited in plans.json is not reused."""
    return "" if plan is None else f"{plan.sampling_start} t0={plan.t0:g} {plan.target}"


def mode_comparison(summary: dict[str, Any]) -> str | None:
    """One line comparing diffusion with the one-pass decoder on the held-out cases (mean PSNR), with what to do when
    the one-pass decoder wins; None when validation ran one mode only."""
    diffusion = (summary.get("mean", {}).get("psnr") or {}).get("mean")
    one_pass = ((summary.get("one_pass") or {}).get("mean", {}).get("psnr") or {}).get("mean")
    if summary.get("mode") != "diffusion" or diffusion is None or one_pass is None:
        return None
    line = f"validation PSNR: diffusion {diffusion:.2f} dB, one-pass decoder {one_pass:.2f} dB"
    if one_pass > diffusion:
        line += ("; the one-pass decoder is better for this model: msgldm_find_best_configuration makes the "
                 "better mode prediction's default")
    return line


def _validate_case(predictor: MSGLDMPredictor, case_id: str, images: dict[int, Image], label,
                   preview_folder: Path | None) -> list[ScoredVolume]:
    names = predictor.modalities
    with_std = predictor.samples * len(predictor.folds) > 1          # one deterministic prediction has no spread
    records = []
    for pattern in validation_patterns(sorted(images)):
        inputs = {c: images[c] for c in pattern.inputs}
        result = predictor.predict_case_full(inputs, list(pattern.targets), case_id=case_id, with_std=with_std)
        synthesized = result.synthesized
        for channel, prediction in sorted(synthesized.items()):
            reference = images[channel]
            axis = numpy_slice_axis(reference.spacing, reference.direction)
            std = result.std[channel].array if channel in result.std else None
            metrics = evaluate_volumes(reference.array, prediction.array, label=label, slice_axis=axis, std=std)
            records.append(ScoredVolume(case_id, names[channel], channel, pattern.name(names), axis, metrics))
        if preview_folder is not None and len(pattern.inputs) == 1:
            save_preview(preview_folder / f"{case_id}__{pattern.name(names)}.png",
                         {names[c]: images[c].array for c in pattern.inputs},
                         {names[c]: img.array for c, img in sorted(synthesized.items())},
                         {names[c]: images[c].array for c in sorted(synthesized)},
                         spacing=images[pattern.inputs[0]].spacing, title=f"{case_id}: from {pattern.name(names)}")
    return records


