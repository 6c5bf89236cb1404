"""Exponential moving average of a network's weights: the weights prediction uses for the stages that keep one (the
latent denoiser; the disentangler and the control when their schedule asks for it)."""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel

# The decay ramps up as (1 + n) / (WARMUP_OFFSET + n) after n updates until it reaches the planned decay.
WARMUP_OFFSET = 10.0


def warmup_decay(decay: float, updates: float) -> float:
    """The decay of the next update after `updates` earlier ones.

    A fixed decay keeps decay**n of the random initialisation after n updates: with 0.999 a stage that ends after
    600 iterations (a CPU budget) would predict with more than half of its initial weights. The ramp averages the
    recent weights instead and reaches the planned decay once the stage is long enough for it."""
    return min(decay, (1.0 + updates) / (WARMUP_OFFSET + updates))


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """EMA copy of `model` (torch's AveragedModel) with the warm-up of `warmup_decay`; call `.update_parameters(model)`
    after each optimiser step.

    Buffers are averaged too (`use_buffers=True`) so the EMA model is self-contained for inference.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay {decay} is outside [0, 1]")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        weight = 1.0 - warmup_decay(decay, float(updates))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, weight)
        else:                                   # integer buffers (e.g. counters): foreach lerp takes floats only
            for kept, new in zip(averaged, current):
                kept.copy_((kept * (1.0 - weight) + new * weight).to(kept.dtype))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
