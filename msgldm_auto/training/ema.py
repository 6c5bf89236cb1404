"""Exponential moving average of a network's weights, kept by the latent diffusion stage (DESIGN.md §6 stage 3)."""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """EMA copy of `model` (torch's AveragedModel); call `.update_parameters(model)` after each optimiser step.

    Buffers are averaged too (`use_buffers=True`) so the EMA model is self-contained for inference.
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
