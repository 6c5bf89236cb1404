"""`find_best_configuration`: validate every prediction mode a trained model can run on its folds' held-out cases,
then choose one by the rule of `msgldm_auto.evaluation.model_choice` and write the choice into the model folder.

Each (fold, mode) is validated once into `fold_N/validation_<mode>/summary.json` and reused while what produced it
(`ValidationHeader`: mode, steps, samples, seed, sampling, mirroring, the checkpoint files) and the number of cases
are unchanged; the fold validation that training already wrote (`fold_N/validation/`, `fold_N/validation_unet/`)
counts the same way. Every mode is compared on the same folds, so on the same cases.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgldm_auto.dataset.cases import Case, training_cases
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation.model_choice import DEFAULT_SAMPLES, ModelChoice, ModeScore, PredictionMode, choose_mode
from msgldm_auto.evaluation.table import ScoredVolume
from msgldm_auto.inference.model_loading import (
    TrainedModel,
    available_folds,
    load_trained_model,
    normalise_fold,
)
from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions
from msgldm_auto.paths import preprocessed_root, raw_root
from msgldm_auto.training.splits import SPLITS_FILE, fold_cases, load_splits
from msgldm_auto.training.validation import SUMMARY_FILE, ValidationHeader, validate_predictor


@dataclass(frozen=True)
class BestConfigurationRequest:
    model_folder: Path
    folds: list[str] | None = None      # None: every numbered fold that every mode can run
    checkpoint: str = "final"
    samples: int = DEFAULT_SAMPLES      # K of the "mean of K diffusion samples" mode
    device: str = "cpu"
    max_cases: int | None = None        # at most this many held-out cases per fold
    revalidate: bool = False            # ignore validations written earlier


def candidate_modes(model_folder: Path, checkpoint: str, samples: int) -> dict[PredictionMode, list[str]]:
    """Every mode the model folder's trained networks can run, with the numbered folds that can run it."""
    modes = [PredictionMode.decoder(), PredictionMode.control(),
             *(PredictionMode.diffusion(k) for k in dict.fromkeys((1, samples)))]
    runnable = {mode: [f for f in available_folds(model_folder, checkpoint, mode.stages) if f.isdigit()]
                for mode in modes}
    return {mode: folds for mode, folds in runnable.items() if folds}


def find_best_configuration(request: BestConfigurationRequest) -> ModelChoice:
    model = load_trained_model(Path(request.model_folder).expanduser())
    candidates = candidate_modes(model.folder, request.checkpoint, request.samples)
    folds = _common_folds(model.folder, candidates, request.folds)
    volumes: dict[PredictionMode, list[ScoredVolume]] = {mode: [] for mode in candidates}
    for fold in folds:
        cases = held_out_cases(model, fold)
        for mode in candidates:
            summary = _fold_summary(model, fold, mode, cases, request)
            volumes[mode] += [ScoredVolume.from_dict(v) for v in summary["per_volume"]]
    scores = [ModeScore.from_volumes(mode, volumes[mode]) for mode in candidates]
    chosen, reason = choose_mode(scores)
    choice = ModelChoice(chosen, reason, request.checkpoint, folds, scores, PredictionOptions().match_percentile)
    choice.write(model.folder)
    return choice


def _common_folds(model_folder: Path, candidates: dict[PredictionMode, list[str]],
                  requested: list[str] | None) -> list[str]:
    if not candidates:
        raise MSGLDMError(f"{model_folder}: no numbered fold is trained; cross-validation needs folds 0..4 "
                          "(msgldm_train DATASET CONFIG FOLD), fold 'all' has no held-out cases")
    common = sorted(set.intersection(*(set(f) for f in candidates.values())), key=int)
    if requested:
        wanted = [normalise_fold(f) for f in requested]
        missing = [f for f in wanted if f not in common]
        if missing:
            raise MSGLDMError(f"-f {' '.join(missing)}: not trained for every mode ({_coverage(candidates)}); "
                              "train those folds or leave them out")
        return wanted
    if not common:
        raise MSGLDMError(f"{model_folder}: no fold is trained for every mode ({_coverage(candidates)}); "
                          "finish training or choose -f")
    if any(set(folds) - set(common) for folds in candidates.values()):
        print(f"comparing on folds {' '.join(common)}, the ones every mode can run ({_coverage(candidates)})")
    return common


def _coverage(candidates: dict[PredictionMode, list[str]]) -> str:
    return "; ".join(f"{mode.name}: folds {' '.join(folds)}" for mode, folds in candidates.items())


def held_out_cases(model: TrainedModel, fold: str) -> list[Case]:
    """The raw cases that `fold` held out of training, from the dataset's splits_final.json."""
    dataset_name = model.folder.parent.name
    raw_folder = raw_root() / dataset_name
    splits_path = preprocessed_root() / dataset_name / SPLITS_FILE
    if not (raw_folder / "dataset.json").is_file() or not splits_path.is_file():
        raise MSGLDMError(f"fold {fold}: the held-out cases need {raw_folder} and {splits_path} (the raw data and "
                          "the splits training used); restore them or set MSGLDM_RAW/MSGLDM_PREPROCESSED")
    cases = training_cases(raw_folder)
    case_ids = [case.case_id for case in cases]
    splits, _ = load_splits(splits_path.parent, case_ids)
    held_out = set(fold_cases(splits, fold, case_ids, splits_path).val)
    return [case for case in cases if case.case_id in held_out]


def _fold_summary(model: TrainedModel, fold: str, mode: PredictionMode, cases: list[Case],
                  request: BestConfigurationRequest) -> dict[str, Any]:
    fold_folder = model.folder / f"fold_{fold}"
    predictor = MSGLDMPredictor.from_trained_folder(model.folder, [fold], request.checkpoint, request.device,
                                                    PredictionOptions().with_mode(mode))
    expected = ValidationHeader.of(predictor, fold, model.folder)     # as a validation of this mode writes it
    num_cases = len([c for c in cases if len(c.images) >= 2][:request.max_cases])
    if not request.revalidate:
        for folder in (f"validation_{mode.name}", "validation"):
            summary = _read_summary(fold_folder / folder / SUMMARY_FILE)
            if summary and ValidationHeader.from_summary(summary) == expected and summary["num_cases"] == num_cases:
                print(f"fold {fold} {mode.name}: reusing {fold_folder / folder / SUMMARY_FILE}")
                return summary
    print(f"fold {fold} {mode.name}: validating {num_cases} held-out case(s)")
    return validate_predictor(predictor, model.folder, fold, cases, fold_folder / f"validation_{mode.name}",
                              max_cases=request.max_cases, compare_one_pass=False)


def _read_summary(path: Path) -> dict[str, Any] | None:
    """A validation summary in the current schema, or None (absent, unreadable, or written before `per_volume`)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) and "per_volume" in summary else None
