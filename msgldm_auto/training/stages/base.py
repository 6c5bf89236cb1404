"""What the generic trainer needs from a stage: its networks and optimisers, one training step, a validation metric
(higher is better), the weights prediction uses, and any extra state (EMA, scale factor) to checkpoint.

A stage that keeps an average of its main network's weights (`keep_average`) is validated and predicts with it; the
trainer updates it after every step."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import torch

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.training.checkpoint import strip_wrappers
from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.ddp import DistributedContext, wrap_module
from msgldm_auto.training.ema import make_ema


@dataclass
class StepContext:
    """Per-iteration services: mixed precision and the optimiser step with gradient scaling and clipping."""
    iteration: int
    progress: float                     # fraction of the stage done: iterations or time budget, whichever leads
    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    scalers: dict[str, torch.amp.GradScaler]
    autocast: Callable[[], ContextManager] = contextlib.nullcontext
    max_grad_norm: float = 1.0
    learning_rates: dict[str, float] = field(default_factory=dict)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()


class Stage:
    """Subclasses fill `networks`/`optimizers` in __init__ and implement `train_step` and `validation_metric`."""

    name = ""
    metric_name = ""
    main_network = ""

    def __init__(self) -> None:
        self.networks: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.train_modules: dict[str, torch.nn.Module] = {}
        self.ema: torch.optim.swa_utils.AveragedModel | None = None

    def keep_average(self, decay: float | None) -> None:
        """Predict with an exponential moving average of the main network's weights (None: with the last weights)."""
        if decay is not None and not 0.0 <= decay < 1.0:
            field = "diffusion.ema_decay" if self.name == "ldm" else "schedule.structure.ema_decay"
            raise MSGLDMError(f"plans {field} is {decay}; set it in [0, 1) (e.g. 0.999), or null for no averaging")
        # The average is never trained, so it stays in eval mode (the trainer switches only `networks`).
        self.ema = make_ema(self.networks[self.main_network], decay).eval() if decay else None

    def update_average(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.networks[self.main_network])

    def prediction_network(self) -> torch.nn.Module:
        """The main network as prediction will use it: its weights' average when the stage keeps one."""
        return self.ema.module if self.ema is not None else self.networks[self.main_network]

    def parallelize(self, context: DistributedContext, compile_networks: bool) -> None:
        """The modules used for training: compiled (CUDA, when asked) and DDP-wrapped across ranks."""
        for name, network in self.networks.items():
            module = torch.compile(network) if compile_networks else network
            self.train_modules[name] = wrap_module(module, context)

    def module(self, name: str) -> torch.nn.Module:
        return self.train_modules.get(name, self.networks[name])

    def train_step(self, batch: SliceBatch, step: StepContext) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def validation_metric(self, batches: list[SliceBatch], device: torch.device) -> float:
        raise NotImplementedError

    def inference_weights(self) -> dict[str, torch.Tensor]:
        return strip_wrappers(self.prediction_network().state_dict())

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])

    def finish(self, batches: Any, device: torch.device) -> None:
        """Called once when the stage completes, before the final checkpoint (the AE sets its scale factor here)."""
