"""Training examples and the loss of the guided latent diffusion stage (DESIGN.md §6 stage 3).

The diffused variable is the latent (`target="latent"`, the paper) or its residual from the one-pass latent
(`target="residual"`). The regression target is ε or v per the scheduler's prediction type. The loss counts only the
modalities that exist in the data but were dropped from the input: kept ones are given to the denoiser, and absent
ones have no truth. Absent modalities' latents are arbitrary (possibly NaN), so they are replaced by the one-pass
latent before noising — their noisy channels then look like those of a modality being synthesised — and the loss
selects with `torch.where` so they cannot leak into it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from msgldm_auto.diffusion.scheduler import TrailingDDIMScheduler, velocity

TARGETS = ("latent", "residual")   # the diffused variable: the latent itself, or its residual from the one-pass latent


@dataclass
class DiffusionExample:
    """One noised batch: all tensors (B, M, L, h, w) except `timesteps` (B,)."""
    timesteps: torch.Tensor
    noise: torch.Tensor
    noisy: torch.Tensor      # the denoiser's `noisy` input
    target: torch.Tensor     # what the denoiser should output (ε or v)


def make_training_example(
    scheduler: TrailingDDIMScheduler,
    latents: torch.Tensor,
    one_pass: torch.Tensor,
    present: torch.Tensor,
    target: str = "latent",
    generator: torch.Generator | None = None,
) -> DiffusionExample:
    """Draw t ~ U{0..T−1} and ε ~ N(0, I) per sample and build the noisy input and the regression target.

    `latents` are the true latents (B, M, L, h, w), `one_pass` the one-pass latents, `present` (B, M) which modalities
    exist in the data.
    """
    if target not in TARGETS:
        raise ValueError(f"diffusion target {target!r}; expected 'latent' or 'residual'")
    present = present.bool()[:, :, None, None, None]
    truth = torch.where(present, latents, one_pass)
    x0 = truth - one_pass if target == "residual" else truth
    device = generator.device if generator is not None else latents.device
    timesteps = torch.randint(0, scheduler.num_train_timesteps, (latents.shape[0],), generator=generator, device=device)
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype, device=device)
    timesteps, noise = timesteps.to(latents.device), noise.to(latents.device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    regression = noise if scheduler.prediction_type == "epsilon" else velocity(scheduler, x0, noise, timesteps)
    return DiffusionExample(timesteps, noise, noisy, regression)


def diffusion_loss_mask(present: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(B, M) bool: the modalities the loss counts — present in the data, dropped from the input."""
    return present.bool() & ~kept.bool()


def masked_diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the latent elements of the modalities with loss_mask (B, M) True; 0 when none is."""
    select = loss_mask.bool()[:, :, None, None, None].expand_as(prediction)
    # Select before squaring: a NaN in an unselected target would otherwise turn the gradient into NaN (0 · NaN).
    difference = torch.where(select, prediction - target, prediction.new_zeros(()))
    # The sum keeps the graph connected even when nothing is counted, so DDP and optimisers see a normal loss.
    return (difference**2).sum() / select.sum().clamp(min=1)
