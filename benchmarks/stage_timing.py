"""Training throughput of the stages (MSG-LDM's three and the plain UNet control's one) and of the data loader alone
(bench_speed on CPU, bench_gpu on CUDA).

A stage is timed on batches of exactly the plans' shape (random values: the cost of a step does not depend on them),
with the product's own stage classes and optimiser step (`StepContext.optimize`), and the gradient scalers and autocast
of a `StageTrainer` made for the stage (so AMP is exactly the trainer's). The trainer's own loop is not used: it needs
a data loader and writes checkpoints, and one stage's step is what is measured here. The LDM stage gets frozen random
autoencoder and disentangler networks of the plans' shapes. The AE stage is timed after its adversarial warm-up
(discriminator on), its costlier phase. Plans whose disentangler corrects the regression prior get one fitted on
random voxels: its cost does not depend on the coefficients.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from msgldm_auto.inference.baselines import FloorModels, fit_floors
from msgldm_auto.plans import CONTROL_STAGE, ConfigurationPlan, Plans
from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.ddp import DistributedContext
from msgldm_auto.training.precision import autocast_dtype
from msgldm_auto.training.stages.base import StepContext
from msgldm_auto.training.stages.common import load_regression_prior
from msgldm_auto.training.trainer import StageTrainer, TrainerSettings

STAGE_NAMES = ("ae", "structure", "ldm", CONTROL_STAGE)


@dataclass
class StageSpeed:
    stage: str
    iterations_per_second: float
    slices_per_second: float          # centre slices (each with its context and all modalities) per second
    batch_size: int
    amp: bool                         # trained under autocast (training/precision.py)


def random_batch(config: ConfigurationPlan, num_modalities: int, device: torch.device, seed: int = 0) -> SliceBatch:
    """A batch of the plans' shape; every modality present, a valid availability pattern per row."""
    generator = torch.Generator().manual_seed(seed)
    b, c = config.batch_size, config.context_slices
    images = torch.rand((b, num_modalities, c, *config.image_size), generator=generator) * 2 - 1
    kept = torch.rand((b, num_modalities), generator=generator) < 0.5
    kept[:, 0], kept[:, -1] = True, False            # at least one kept and one dropped modality per row
    present = torch.ones((b, num_modalities), dtype=torch.bool)
    return SliceBatch(images, present, kept, None, np.zeros((b, 2), dtype=np.int64)).to(device)


def random_prior(modalities: list[str], degree: int, seed: int = 0) -> FloorModels | None:
    """A regression prior fitted on random voxels (None for degree 0): for timing, where only its shape matters."""
    if degree < 1:
        return None
    rng = np.random.default_rng(seed)
    return fit_floors([{name: rng.uniform(-1, 1, 4096) for name in modalities}], modalities, degree, seed=seed)


def build_stage(stage: str, plans: Plans, config: ConfigurationPlan, device: torch.device, seed: int = 0):
    from msgldm_auto.networks.autoencoder import LatentAutoencoder
    from msgldm_auto.networks.disentangler import StructureStyleDisentangler
    from msgldm_auto.training.stages.ae import AutoencoderStage
    from msgldm_auto.training.stages.control import PlainUNetStage
    from msgldm_auto.training.stages.ldm import LatentDiffusionStage
    from msgldm_auto.training.stages.structure import StructureStage

    torch.manual_seed(seed)
    rate = config.stage_schedule(stage).learning_rate
    if stage == "ae":
        return AutoencoderStage(config, device, rate)
    if stage == CONTROL_STAGE:
        prior = random_prior(plans.modalities, config.control.regression_prior_degree, seed)
        return PlainUNetStage(config, plans.num_modalities, device, rate, prior)
    prior = random_prior(plans.modalities, config.disentangler.regression_prior_degree, seed)
    if stage == "structure":
        return StructureStage(config, plans.num_modalities, plans.num_label_classes, device, rate, prior)
    autoencoder = LatentAutoencoder(config).to(device).eval().requires_grad_(False)
    disentangler = StructureStyleDisentangler(config, plans.num_modalities, plans.num_label_classes)
    load_regression_prior(disentangler, prior)
    disentangler = disentangler.to(device).eval().requires_grad_(False)
    return LatentDiffusionStage(config, plans.num_modalities, autoencoder, disentangler, device, rate)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(stage_name: str, plans: Plans, device: torch.device, amp: bool, iterations: int = 5, warmup: int = 2,
               configuration: str = "2d") -> StageSpeed:
    config = plans.configuration(configuration)
    stage = build_stage(stage_name, plans, config, device)
    context = DistributedContext(0, 1, 0, device)
    total = 4 * (warmup + iterations)
    with tempfile.TemporaryDirectory(prefix="stage_timing_") as folder:   # the trainer writes nothing until it trains
        trainer = StageTrainer(stage, TrainerSettings(epochs=1, iterations_per_epoch=total, amp=amp), Path(folder),
                               context, identity={})
    stage.parallelize(context, False)
    for network in stage.networks.values():
        network.train()
    batch = random_batch(config, plans.num_modalities, device)

    def step(i: int) -> None:
        # Iterations in the last three quarters of the schedule: the AE's adversarial part is switched on.
        services = StepContext(total // 4 + i, (total // 4 + i) / total, device, stage.optimizers, trainer.scalers,
                               trainer.autocast)
        stage.train_step(batch, services)

    for i in range(warmup):
        step(i)
    _synchronise(device)
    started = time.perf_counter()
    for i in range(iterations):
        step(warmup + i)
    _synchronise(device)
    rate = iterations / (time.perf_counter() - started)
    return StageSpeed(stage_name, rate, rate * config.batch_size, config.batch_size,
                      autocast_dtype(device, amp) is not None)


def time_loader(data_folder, case_ids: list[str], plans: Plans, num_workers: int, batches: int = 20, warmup: int = 3,
                configuration: str = "2d") -> float:
    """Slices per second the training loader delivers (augmentation included), nothing consuming them."""
    from msgldm_auto.training.data_loader import StorageReader, build_slice_index, make_training_batches

    config = plans.configuration(configuration)
    reader = StorageReader(data_folder)
    index = build_slice_index(reader, case_ids, plans.num_modalities)
    loader = make_training_batches(reader, index, plans.num_modalities, config.context_slices, config.image_size,
                                   config.batch_size, seed=0, slice_axis=config.slice_axis, num_workers=num_workers)
    try:
        for _ in range(warmup):
            next(loader)
        started = time.perf_counter()
        for _ in range(batches):
            next(loader)
        return batches * config.batch_size / (time.perf_counter() - started)
    finally:
        loader.close()
