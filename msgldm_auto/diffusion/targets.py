"""Training examples and the loss of the guided latent diffusion stage (DESIGN.md §6 stage 3).

The diffused variable is the latent (`target="latent"`, the paper) or its residual from the one-pass latent
(`target="residual"`). The regression target is ε or v per the scheduler's prediction type. The loss counts only the
modalities that exist in the data but were dropped from the input: kept ones are given to the denoiser, and absent
ones have no truth. Absent modalities' latents are arbitrary (possibly NaN), so they are replaced by the one-pass
latent before noising — their noisy channels then look like those of a modality being synthesised — and the loss
selects with `torch.where` so they cannot leak into it.

`decode_sample` turns sampled latents into images. For the residual target the sample is a change to the one-pass
synthesis, and it is decoded as one: one-pass image + decode(sample) − decode(one-pass latent). The autoencoder's own
error on the one-pass image (its blur) then cancels instead of being added to every sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from msgldm_auto.diffusion.scheduler import TrailingDDIMScheduler, timestep_for_fraction, velocity
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import DiffusionPlan

TARGETS = ("latent", "residual")   # the diffused variable: the latent itself, or its residual from the one-pass latent
TRAIN_TIMESTEPS = ("all", "sampled")


@dataclass
class DiffusionExample:
    """One noised batch: all tensors (B, M, L, h, w) except `timesteps` (B,)."""
    timesteps: torch.Tensor
    noise: torch.Tensor
    noisy: torch.Tensor      # the denoiser's `noisy` input
    target: torch.Tensor     # what the denoiser should output (ε or v)


def training_timestep_limit(scheduler: TrailingDDIMScheduler, plan: DiffusionPlan) -> int:
    """The noisiest timestep the denoiser is trained on: T − 1, or with `train_timesteps: "sampled"` and the one-pass
    start, t0's timestep (sampling never visits a noisier one, so no training step is spent there)."""
    if plan.train_timesteps not in TRAIN_TIMESTEPS:
        raise MSGLDMError(f"plans diffusion.train_timesteps is {plan.train_timesteps!r}; "
                          f"set it to one of {', '.join(TRAIN_TIMESTEPS)}")
    if plan.train_timesteps == "sampled" and plan.sampling_start == "one_pass":
        return timestep_for_fraction(scheduler, plan.t0)
    return scheduler.num_train_timesteps - 1


def make_training_example(
    scheduler: TrailingDDIMScheduler,
    latents: torch.Tensor,
    one_pass: torch.Tensor,
    present: torch.Tensor,
    target: str = "latent",
    generator: torch.Generator | None = None,
    max_timestep: int | None = None,
) -> DiffusionExample:
    """Draw t ~ U{0..max_timestep} (default T−1) and ε ~ N(0, I) per sample and build the noisy input and the
    regression target.

    `latents` are the true latents (B, M, L, h, w), `one_pass` the one-pass latents, `present` (B, M) which modalities
    exist in the data.
    """
    if target not in TARGETS:
        raise ValueError(f"diffusion target {target!r}; expected 'latent' or 'residual'")
    present = present.bool()[:, :, None, None, None]
    truth = torch.where(present, latents, one_pass)
    x0 = truth - one_pass if target == "residual" else truth
    device = generator.device if generator is not None else latents.device
    highest = scheduler.num_train_timesteps - 1 if max_timestep is None else max_timestep
    timesteps = torch.randint(0, highest + 1, (latents.shape[0],), generator=generator, device=device)
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


def decode_sample(autoencoder: torch.nn.Module, latents: torch.Tensor, one_pass_latents: torch.Tensor,
                  one_pass_images: torch.Tensor, target: str) -> torch.Tensor:
    """(B, T, H, W) images of the sampled latents (B, T, L, h, w) of T modalities, whose one-pass latents and images
    are (B, T, L, h, w) and (B, T, H, W); see the module docstring for the residual target's rule."""
    decoded = _decode(autoencoder, latents)
    if target != "residual":
        return decoded
    return one_pass_images + decoded - _decode(autoencoder, one_pass_latents)


def _decode(autoencoder: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    batch, count = latents.shape[:2]
    images = autoencoder.decode(latents.reshape(batch * count, *latents.shape[2:]))
    return images.reshape(batch, count, *images.shape[-2:])
