"""Train the stages of one fold: check everything first (nothing is written for bad input), then run
ae -> structure -> ldm, each after what it needs (`STAGE_NEEDS`), and the fold validation after the last stage.
Plans with diffusion switched off (`ablations.diffusion: false`, the `cpu` default) predict with the disentangler's
one-pass decoder, so only the structure stage is trained. `method="unet"` trains the plain UNet control instead, in
one stage with MSG-LDM's whole budget (`ConfigurationPlan.stage_schedule`).

Results go to `MSGLDM_RESULTS/DatasetXXX_Name/<plans>__<config>/fold_N/<stage>/` (documentation/internals.md).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.baselines import FloorModels
from msgldm_auto.paths import preprocessed_root, raw_root, resolve_dataset_name, results_root
from msgldm_auto.plans import (
    CONTROL_STAGE,
    DEFAULT_PLANS_NAME,
    STAGE_NEEDS,
    STAGES,
    TIME_BUDGET_COOLDOWN,
    ConfigurationPlan,
    Plans,
    plans_file_name,
)
from msgldm_auto.training.checkpoint import checkpoint_path
from msgldm_auto.training.data_loader import (
    StorageReader,
    build_slice_index,
    default_num_workers,
    make_training_batches,
    validation_batches,
)
from msgldm_auto.training.ddp import DistributedContext, init_distributed, shutdown
from msgldm_auto.training.precision import precision_line
from msgldm_auto.training.splits import FoldCases, fold_cases, load_splits, parse_fold, write_splits
from msgldm_auto.training.trainer import StageResult, StageTrainer, TrainerSettings

VALIDATION_SLICES = 16
CHECKPOINT_EVERY = 5


@dataclass
class TrainingRequest:
    dataset: str
    configuration: str
    fold: str
    stage: str = "all"                         # ae | structure | ldm | all
    method: str = "msgldm"                     # msgldm | unet (the plain UNet control: one stage, no `stage`)
    plans_name: str = DEFAULT_PLANS_NAME
    epochs: int | None = None                  # overrides the plans' schedule for every stage run
    iterations_per_epoch: int | None = None
    max_minutes: float | None = None
    resume: bool = False
    validation_only: bool = False
    device: str = "cuda"
    seed: int = 0
    num_workers: int | None = None             # None: MSGLDM_NUM_WORKERS or min(4, cores - 1)
    amp: bool = True
    compile: bool = False
    show_progress: bool = True
    validation_cases: int | None = None        # at most this many held-out cases in the case-level validation


@dataclass
class FoldSetup:
    """Everything resolved and checked before anything is written."""
    dataset_name: str
    plans: Plans
    plans_path: Path
    config: ConfigurationPlan
    data_folder: Path
    preprocessed_folder: Path
    splits: list[dict[str, list[str]]]
    splits_are_new: bool
    cases: FoldCases
    output_folder: Path                        # <plans>__<config>
    stages: list[str] = field(default_factory=list)

    def stage_folder(self, stage: str) -> Path:
        return self.output_folder / f"fold_{self.cases.fold}" / stage


def _stages(request: TrainingRequest, config: ConfigurationPlan) -> list[str]:
    """`all` means the stages the plans use: with `ablations.diffusion` off only the structure stage (`--stage ae` and
    `--stage ldm` still train the others, e.g. to compare the two)."""
    if request.stage == "all":
        return list(config.method_stages(request.method))
    if request.method != "msgldm":
        raise MSGLDMError(f"--stage {request.stage} applies to MSG-LDM; --method {request.method} trains one stage: "
                          "drop --stage")
    if request.stage not in STAGES:
        raise MSGLDMError(f"--stage {request.stage}: choose one of {', '.join(STAGES)} or all")
    return [request.stage]


def prepare(request: TrainingRequest) -> FoldSetup:
    dataset_name = resolve_dataset_name(request.dataset)
    preprocessed_folder = preprocessed_root() / dataset_name
    plans_path = preprocessed_folder / plans_file_name(request.plans_name)
    if not plans_path.is_file():
        raise MSGLDMError(f"{plans_path}: plans not found; run msgldm_plan_and_preprocess -d {request.dataset} (or "
                          "pick -p)")
    plans = Plans.load(plans_path)
    config = plans.configuration(request.configuration)
    fold = parse_fold(request.fold)
    data_folder = preprocessed_folder / (config.data_identifier or f"{request.plans_name}_{request.configuration}")
    from msgldm_auto.preprocessing.storage import list_cases

    case_ids = list_cases(data_folder)
    if not case_ids:
        raise MSGLDMError(f"{data_folder}: no preprocessed cases; run msgldm_preprocess -d {request.dataset} -c "
                          f"{request.configuration}")
    splits, new = load_splits(preprocessed_folder, case_ids)
    cases = fold_cases(splits, fold, case_ids, preprocessed_folder / "splits_final.json")
    output = results_root() / dataset_name / f"{request.plans_name}__{request.configuration}"
    setup = FoldSetup(dataset_name, plans, plans_path, config, data_folder, preprocessed_folder, splits, new, cases,
                      output, _stages(request, config))
    _check_predecessor(setup, request)
    return setup


def _check_predecessor(setup: FoldSetup, request: TrainingRequest) -> None:
    if request.validation_only:
        needed = list(setup.config.method_stages(request.method))
    else:
        needed = [n for stage in setup.stages for n in STAGE_NEEDS[stage] if n not in setup.stages]
    for stage in dict.fromkeys(needed):
        path = checkpoint_path(setup.stage_folder(stage), "final")
        if not path.is_file():
            raise MSGLDMError(f"{path}: stage '{stage}' of fold {setup.cases.fold} is not trained; run msgldm_train "
                              f"{request.dataset} {request.configuration} {setup.cases.fold} --stage {stage} first")


def _write_model_files(setup: FoldSetup) -> None:
    setup.output_folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(setup.plans_path, setup.output_folder / "plans.json")
    for name in ("dataset.json", "dataset_fingerprint.json"):
        if (setup.preprocessed_folder / name).is_file():
            shutil.copyfile(setup.preprocessed_folder / name, setup.output_folder / name)
    if setup.splits_are_new:
        write_splits(setup.preprocessed_folder, setup.splits)


def trainer_settings(config: ConfigurationPlan, stage: str, request: TrainingRequest) -> TrainerSettings:
    """A stage's trainer settings: the plans' schedule with the request's overrides."""
    schedule = config.stage_schedule(stage)
    # --epochs and --max-minutes are per MSG-LDM stage; the control, one stage, gets them times MSG-LDM's stage count.
    stages = len(config.trained_stages) if stage == CONTROL_STAGE else 1
    epochs = request.epochs * stages if request.epochs else schedule.epochs
    minutes = request.max_minutes * stages if request.max_minutes is not None else schedule.max_minutes
    cooldown = schedule.cooldown_fraction
    if request.max_minutes is not None and schedule.max_minutes is None and not cooldown:
        cooldown = TIME_BUDGET_COOLDOWN     # a budget the plans did not plan cools down as the planner's own do
    return TrainerSettings(
        epochs=epochs,
        iterations_per_epoch=request.iterations_per_epoch or schedule.iterations_per_epoch,
        max_minutes=minutes,
        checkpoint_every=max(1, min(CHECKPOINT_EVERY, epochs)), cooldown_fraction=cooldown,
        resume=request.resume, amp=request.amp, compile=request.compile, show_progress=request.show_progress,
    )


def _fitted_prior(stage: str, setup: FoldSetup, reader: StorageReader) -> FloorModels | None:
    """The regression prior's polynomials on the fold's training cases, for the stages whose networks correct it."""
    from msgldm_auto.training.regression_prior import fit_regression_prior

    network_plans = {"structure": setup.config.disentangler, CONTROL_STAGE: setup.config.control}
    degree = network_plans[stage].regression_prior_degree if stage in network_plans else 0
    if degree <= 0:
        return None
    return fit_regression_prior(reader, setup.cases.train, setup.plans.modalities, degree)


def _prior_voxels(prior: FloorModels) -> int:
    """Voxels behind the prior's fits: the largest fit's (every pattern's fit uses a subset of the same voxels)."""
    return max((f.num_voxels for fits in prior.polynomial.values() for f in fits.values()), default=0)


def _build_stage(stage: str, setup: FoldSetup, device: torch.device, learning_rate: float,
                 prior: FloorModels | None = None):
    # Imported here so that planning-only tools never pay for the networks.
    from msgldm_auto.networks.autoencoder import LatentAutoencoder
    from msgldm_auto.networks.disentangler import StructureStyleDisentangler
    from msgldm_auto.training.stages.ae import AutoencoderStage
    from msgldm_auto.training.stages.common import load_frozen
    from msgldm_auto.training.stages.control import PlainUNetStage
    from msgldm_auto.training.stages.ldm import LatentDiffusionStage
    from msgldm_auto.training.stages.structure import StructureStage

    plans, config = setup.plans, setup.config
    if stage == "ae":
        return AutoencoderStage(config, device, learning_rate)
    if stage == CONTROL_STAGE:
        return PlainUNetStage(config, plans.num_modalities, device, learning_rate, prior)
    if stage == "structure":
        return StructureStage(config, plans.num_modalities, plans.num_label_classes, device, learning_rate, prior)
    autoencoder = load_frozen(LatentAutoencoder(config), checkpoint_path(setup.stage_folder("ae"), "final"), device)
    disentangler = load_frozen(StructureStyleDisentangler(config, plans.num_modalities, plans.num_label_classes),
                               checkpoint_path(setup.stage_folder("structure"), "final"), device)
    return LatentDiffusionStage(config, plans.num_modalities, autoencoder, disentangler, device, learning_rate)


def _seed_everything(seed: int, rank: int) -> None:
    # Same model initialisation on every rank (DDP also broadcasts rank 0's); per-rank augmentation streams.
    torch.manual_seed(seed)
    np.random.seed((seed + 1009 * rank) % 2**32)
    import random

    random.seed(seed + rank)


def train_stage(stage: str, setup: FoldSetup, request: TrainingRequest, context: DistributedContext) -> StageResult:
    config, plans = setup.config, setup.plans
    _seed_everything(request.seed, context.rank)
    reader = StorageReader(setup.data_folder)
    train_index = build_slice_index(reader, setup.cases.train, plans.num_modalities)
    val_cases = setup.cases.val or setup.cases.train          # fold "all" watches its training cases
    val_index = build_slice_index(reader, val_cases, plans.num_modalities)
    validation = validation_batches(reader, val_index, plans.num_modalities, config.context_slices, config.batch_size,
                                    VALIDATION_SLICES, request.seed)
    workers = request.num_workers if request.num_workers is not None else default_num_workers()

    def make_batches(start_batch: int):
        return make_training_batches(reader, train_index, plans.num_modalities, config.context_slices,
                                     config.image_size,
                                     config.batch_size, request.seed, rank=context.rank, world_size=context.world_size,
                                     start_batch=start_batch, slice_axis=config.slice_axis, num_workers=workers)

    settings = trainer_settings(setup.config, stage, request)
    prior = _fitted_prior(stage, setup, reader)
    network_stage = _build_stage(stage, setup, context.device, config.stage_schedule(stage).learning_rate, prior)
    identity = {"plans_name": setup.plans.plans_name, "configuration": request.configuration, "fold": setup.cases.fold}
    trainer = StageTrainer(network_stage, settings, setup.stage_folder(stage), context, identity)
    budget = f", at most {settings.max_minutes:g} min" if settings.max_minutes is not None else ""
    trainer.log.line(f"[{stage}] {len(train_index)} training slices from {len(train_index.case_ids)} cases; "
                     f"validation metric: {network_stage.metric_name}; world size {context.world_size}; "
                     f"{settings.epochs} epochs x {settings.iterations_per_epoch} iterations{budget}")
    trainer.log.line(f"[{stage}] {precision_line(context.device, settings.amp)}")
    if prior is not None:
        trainer.log.line(f"[{stage}] correcting the per-voxel regression prior (degree {prior.degree}, fitted on "
                         f"{_prior_voxels(prior)} voxels of this fold's training cases)")
    return trainer.fit(make_batches, validation)


def run_fold_validation(setup: FoldSetup, request: TrainingRequest, device: torch.device) -> Path | None:
    """Case-level validation after the last stage the plans train (training/validation.py) on the fold's held-out
    raw cases.

    Returns the summary path, or None when there is nothing to validate (fold `all`, or the raw images are gone).
    """
    from msgldm_auto.dataset.cases import training_cases
    from msgldm_auto.inference.predictor import PredictionOptions
    from msgldm_auto.training.validation import SUMMARY_FILE, mode_comparison, validate_fold

    raw_folder = raw_root() / setup.dataset_name
    if not setup.cases.val or not (raw_folder / "dataset.json").is_file():
        print(f"fold {setup.cases.fold}: no held-out raw cases under {raw_folder}; case-level validation skipped",
              file=sys.stderr)
        return None
    held_out = set(setup.cases.val)
    cases = [case for case in training_cases(raw_folder) if case.case_id in held_out]
    output = setup.output_folder / f"fold_{setup.cases.fold}" / _validation_folder(request.method)
    summary = validate_fold(setup.output_folder, setup.cases.fold, cases, device=device.type,
                            max_cases=request.validation_cases, options=PredictionOptions(method=request.method),
                            output_folder=output)
    comparison = mode_comparison(summary)
    if comparison:
        print(f"fold {setup.cases.fold} {comparison}")
    return output / SUMMARY_FILE


def _validation_folder(method: str) -> str:
    """`fold_N/validation/` for MSG-LDM, `fold_N/validation_unet/` for the control."""
    return "validation" if method == "msgldm" else f"validation_{method}"


def train_fold(request: TrainingRequest) -> list[StageResult]:
    setup = prepare(request)                       # raises MSGLDMError before anything is written
    context = init_distributed(request.device)
    try:
        if context.is_main:
            _write_model_files(setup)
        results = []
        if (context.is_main and request.method == "msgldm" and request.stage == "all" and "ldm" not in setup.stages
                and not request.validation_only):
            print("stages ae and ldm skipped: these plans train no diffusion (ablations.diffusion: false), so "
                  "prediction uses the one-pass decoder; --stage ae, then --stage ldm, trains them anyway, and "
                  "prediction then samples with them")
        if not request.validation_only:
            for stage in setup.stages:
                result = train_stage(stage, setup, request, context)
                results.append(result)
                if context.is_main:
                    state = "done" if result.completed else "ended by its time budget"
                    print(f"stage {stage} of fold {setup.cases.fold} {state}: {result.checkpoint}")
        last_stage = setup.config.method_stages(request.method)[-1]
        model_final = checkpoint_path(setup.stage_folder(last_stage), "final")
        wants_validation = request.validation_only or setup.stages[-1] == last_stage
        if context.is_main and wants_validation and model_final.is_file():
            summary = run_fold_validation(setup, request, context.device)
            if summary is not None:
                print(f"fold {setup.cases.fold} validation summary: {summary}")
        return results
    finally:
        shutdown(context)
