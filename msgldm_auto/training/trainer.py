"""The generic loop shared by the three stages: iterations grouped in epochs, poly learning-rate decay, mixed
precision (training/precision.py), torch.compile on CUDA only, DDP, a wall-clock budget, periodic/best/final
checkpoints and exact resume.

The learning rate decays over the planned iterations (poly). A stage that its minutes end early would stop near its
initial rate, at whatever point of a noisy trajectory the clock happens to hit; so the planner gives such stages a
linear cool-down to 0 over the last fraction of the budget (`cooldown_fraction`; documentation/benchmarks.md, levers),
which then replaces the poly decay: a constant rate, then the cool-down.
Warm-ups (the AE's adversarial loss) and the cool-down follow whichever runs out first, the iterations or the
minutes, so a time-boxed stage still reaches them.

Resume is exact with data-loader workers = 0: the batch order is a function of the iteration number (data_loader.py)
and every other source of randomness (torch, numpy, Python) is checkpointed with the weights.
"""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.training.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    strip_wrappers,
)
from msgldm_auto.training.data_loader import SliceBatch, TrainingBatches
from msgldm_auto.training.ddp import DistributedContext, barrier, shared_max
from msgldm_auto.training.precision import autocast_dtype
from msgldm_auto.training.progress import History, ProgressLog
from msgldm_auto.training.stages.base import Stage, StepContext

POLY_EXPONENT = 0.9


@dataclass
class TrainerSettings:
    epochs: int
    iterations_per_epoch: int
    max_minutes: float | None = None
    checkpoint_every: int = 5           # epochs between "latest" checkpoints (and validations)
    latest_every_minutes: float = 2.0   # ...and at least this often, so a kill loses at most a few minutes of work
    cooldown_fraction: float = 0.0      # the learning rate falls linearly to 0 over this last fraction of the stage
    resume: bool = False
    amp: bool = True                    # autocast: bf16 (or fp16) on CUDA, bf16 on CPUs that compute it natively
    compile: bool = False               # takes effect on CUDA only
    show_progress: bool = True

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch


@dataclass
class StageResult:
    checkpoint: Path                    # the final checkpoint
    iterations_done: int
    completed: bool                     # all planned iterations ran
    stopped_by_time: bool


@dataclass
class _RunState:
    iteration: int = 0
    best_metric: float = -math.inf
    history: History | None = None
    seconds_before: float = 0.0         # training time of earlier runs of this stage (restored by --c)


def poly_factor(progress: float) -> float:
    """The poly schedule's learning-rate multiplier at `progress` ∈ [0, 1] of the run."""
    return max(0.0, 1.0 - progress) ** POLY_EXPONENT


def cooldown_factor(progress: float, fraction: float) -> float:
    """The cool-down's learning-rate multiplier: 1 until the last `fraction` of the run, then linearly down to 0."""
    if fraction <= 0.0 or progress <= 1.0 - fraction:
        return 1.0
    return max(0.0, (1.0 - progress) / fraction)


def learning_rate_factor(iteration_fraction: float, progress: float, cooldown_fraction: float) -> float:
    """The learning-rate multiplier: with a cool-down, constant until its last `cooldown_fraction` of `progress` and
    then linearly to 0, whether the iterations or the minutes end the stage (so an iteration-budgeted run has the
    shape of a time-boxed one); without one, poly over the planned iterations."""
    if cooldown_fraction > 0.0:
        return cooldown_factor(progress, cooldown_fraction)
    return poly_factor(iteration_fraction)


def schedule_progress(iteration: int, total_iterations: int, seconds: float, budget_seconds: float | None) -> float:
    """How far the run is: the larger of the iterations' and the wall-clock budget's fractions."""
    progress = iteration / max(total_iterations, 1)
    if budget_seconds:
        progress = max(progress, seconds / budget_seconds)
    return min(progress, 1.0)


def _autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


class StageTrainer:
    def __init__(self, stage: Stage, settings: TrainerSettings, folder: Path, context: DistributedContext,
                 identity: dict[str, str]):
        self.stage, self.settings, self.folder, self.context, self.identity = (stage, settings, Path(folder), context,
                                                                               identity)
        device = context.device
        dtype = autocast_dtype(device, settings.amp)
        self.scalers = {n: torch.amp.GradScaler(device.type, enabled=dtype == torch.float16) for n in stage.optimizers}
        for optimizer in stage.optimizers.values():
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])   # saved with the optimizer state, so resume keeps it
        self.autocast = _autocast_factory(device, dtype)
        self.log = ProgressLog(self.folder, stage.name, stage.metric_name, enabled=context.is_main)
        self.state = _RunState(history=self.log.history)
        self._run_started = time.monotonic()

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        stage = self.stage
        return {
            "stage": stage.name,
            "epoch": self.state.iteration // self.settings.iterations_per_epoch,
            "iteration": self.state.iteration,
            "inference_weights": stage.inference_weights(),
            "network_weights": {n: strip_wrappers(m.state_dict()) for n, m in stage.networks.items()},
            "optimizer_state": {n: o.state_dict() for n, o in stage.optimizers.items()},
            "grad_scaler_state": {n: s.state_dict() for n, s in self.scalers.items()},
            "extra_state": stage.extra_state(),
            "rng_state": capture_rng_state(),
            "best_metric": self.state.best_metric,
            "train_seconds": self._local_seconds(),
            "metric_name": stage.metric_name,
            "history": self.log.history.to_dict(),
            **self.identity,
        }

    def save(self, which: str) -> Path:
        path = checkpoint_path(self.folder, which)
        if self.context.is_main:
            save_checkpoint(self._payload(), path)
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint (or the final one); False when there is nothing to resume from."""
        for which in ("latest", "final"):
            path = checkpoint_path(self.folder, which)
            if path.is_file():
                break
        else:
            return False
        checkpoint = load_checkpoint(path, map_location=self.context.device)
        for name, network in self.stage.networks.items():
            try:
                network.load_state_dict(checkpoint["network_weights"][name])
            except (KeyError, RuntimeError) as err:
                raise MSGLDMError(f"{path}: does not fit the current '{name}' network "
                                  f"({str(err).splitlines()[0][:100]});"
                                  " other plans or an older msgldm_auto made it: delete "
                                  f"{self.folder} to train this stage afresh") from None
        for group, objects in (("optimizer_state", self.stage.optimizers), ("grad_scaler_state", self.scalers)):
            for name, obj in objects.items():
                obj.load_state_dict(checkpoint[group][name])
        self.stage.load_extra_state(checkpoint["extra_state"])
        restore_rng_state(checkpoint["rng_state"])
        self.state.iteration, self.state.best_metric = int(checkpoint["iteration"]), float(checkpoint["best_metric"])
        self.state.seconds_before = float(checkpoint.get("train_seconds", 0.0))   # older checkpoints lack it
        self.log.history = History.from_dict(checkpoint["history"])
        self.log.line(f"[{self.stage.name}] resumed from {path.name} at iteration {self.state.iteration}")
        return True

    # -- the loop ----------------------------------------------------------------------------------------------------
    def _step_context(self, progress: float) -> StepContext:
        return StepContext(self.state.iteration, progress, self.context.device, self.stage.optimizers,
                           self.scalers, self.autocast,
                           learning_rates={n: o.param_groups[0]["lr"] for n, o in self.stage.optimizers.items()})

    def _validate(self, validation: list[SliceBatch]) -> float | None:
        if not validation or not self.context.is_main:
            return None
        for network in self.stage.networks.values():
            network.eval()
        try:
            return float(self.stage.validation_metric(validation, self.context.device))
        finally:
            for network in self.stage.networks.values():
                network.train()

    def _budget_spent(self) -> bool:
        return bool(self.settings.max_minutes) and self.state.seconds_before >= 60.0 * self.settings.max_minutes

    def _local_seconds(self) -> float:
        return self.state.seconds_before + time.monotonic() - self._run_started

    def _seconds_trained(self) -> float:
        """Wall-clock seconds this stage has trained, earlier runs included; the same on every rank, so that all ranks
        see one progress and stop at the same iteration. Without a time budget nothing reads them across ranks, so no
        collective (and no GPU sync) is spent on them."""
        if not self.settings.max_minutes:
            return self._local_seconds()
        return shared_max(self._local_seconds(), self.context)

    def _progress(self, seconds: float) -> float:
        settings = self.settings
        budget = 60.0 * settings.max_minutes if settings.max_minutes else None
        return schedule_progress(self.state.iteration, settings.total_iterations, seconds, budget)

    def _set_learning_rates(self, progress: float) -> None:
        iterations = min(self.state.iteration / max(self.settings.total_iterations, 1), 1.0)
        factor = learning_rate_factor(iterations, progress, self.settings.cooldown_fraction)
        for optimizer in self.stage.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _run_epoch(self, batches: TrainingBatches, epoch: int, deadline: float | None) -> tuple[list[float], bool]:
        per_epoch = self.settings.iterations_per_epoch
        first = self.state.iteration - epoch * per_epoch
        losses: list[float] = []
        bar = tqdm(range(first, per_epoch), desc=f"{self.stage.name} epoch {epoch}", file=sys.stderr, leave=False,
                   # None: shown on a terminal only, so logs and CI output stay readable
                   disable=None if self.settings.show_progress and self.context.is_main else True)
        seconds = self._seconds_trained()
        for _ in bar:
            # Warm-ups (the AE's adversarial loss) follow the iterations or the minutes, whichever lead: a stage
            # that its minutes end early still reaches them.
            progress = self._progress(seconds)
            self._set_learning_rates(progress)
            batch = next(batches).to(self.context.device)
            results = self.stage.train_step(batch, self._step_context(progress))
            self.stage.update_average()
            self.state.iteration += 1
            losses.append(float(results["loss"]))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            seconds = self._seconds_trained()
            if deadline is not None and seconds >= deadline:
                return losses, True
        return losses, False

    def fit(self, make_batches: Callable[[int], TrainingBatches], validation: list[SliceBatch]) -> StageResult:
        settings = self.settings
        if settings.resume and not self.resume():
            self.log.line(f"[{self.stage.name}] --c: no checkpoint to continue from in {self.folder}; "
                          "training starts from scratch")
        if self.state.iteration >= settings.total_iterations and checkpoint_path(self.folder, "final").is_file():
            self.log.line(f"[{self.stage.name}] already trained ({self.state.iteration} iterations); nothing to do")
            return StageResult(checkpoint_path(self.folder, "final"), self.state.iteration, True, False)
        if self._budget_spent() and checkpoint_path(self.folder, "final").is_file():
            self.log.line(f"[{self.stage.name}] its time budget of {settings.max_minutes} min is spent; "
                          "raise --max-minutes to train it longer")
            return StageResult(checkpoint_path(self.folder, "final"), self.state.iteration, False, True)
        for network in self.stage.networks.values():
            network.train()
        self.stage.parallelize(self.context, settings.compile and self.context.device.type == "cuda")
        # The budget counts the stage's training time over all its runs: --c after a kill continues the same minutes.
        deadline = None if not settings.max_minutes else 60.0 * settings.max_minutes
        self._run_started = time.monotonic()
        batches = make_batches(self.state.iteration)
        try:
            return self._loop(batches, validation, deadline)
        finally:
            batches.close()

    def _loop(self, batches: TrainingBatches, validation: list[SliceBatch], deadline: float | None) -> StageResult:
        settings, per_epoch = self.settings, self.settings.iterations_per_epoch
        out_of_time, last_save = False, time.monotonic()
        while self.state.iteration < settings.total_iterations and not out_of_time:
            epoch, started = self.state.iteration // per_epoch, time.monotonic()
            losses, out_of_time = self._run_epoch(batches, epoch, deadline)
            speed = len(losses) / max(time.monotonic() - started, 1e-9)
            finished_all = self.state.iteration >= settings.total_iterations
            periodic = (epoch + 1) % settings.checkpoint_every == 0
            metric = self._validate(validation) if (periodic or finished_all or out_of_time) else None
            learning_rate = next(iter(self.stage.optimizers.values())).param_groups[0]["lr"]
            mean_loss = sum(losses) / max(len(losses), 1)
            self.log.end_epoch(epoch, mean_loss, learning_rate, metric, time.monotonic() - started, speed)
            if metric is not None and metric > self.state.best_metric:
                self.state.best_metric = metric
                self.save("best")
            overdue = time.monotonic() - last_save >= 60.0 * settings.latest_every_minutes
            if periodic or finished_all or out_of_time or overdue:
                self.save("latest")
                self.log.plot()
                last_save = time.monotonic()
            barrier(self.context)
        if out_of_time:
            self.log.line(f"[{self.stage.name}] time budget of {settings.max_minutes} min spent at iteration "
                          f"{self.state.iteration}")
        self.stage.finish(batches, self.context.device)
        final = self.save("final")
        self.save("latest")   # resuming after finish() must see the finished state (e.g. the AE scale factor)
        barrier(self.context)
        self.log.line(f"[{self.stage.name}] finished: {final}")
        return StageResult(final, self.state.iteration, self.state.iteration >= settings.total_iterations, out_of_time)
