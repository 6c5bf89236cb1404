"""Synthesize the missing modalities of one preprocessed volume with the networks of one fold.

Slices go through the networks in batches, each with its 2.5D context (neighbours clamped at the volume's ends).
The present modalities of every slice are encoded once and reused as the neighbours of the next slices. The noise of
a sample is drawn on the CPU from a seeded generator, so a seed gives the same result on every device and for every
batch size; `shared` noise uses one draw for all slices of the volume (consistent texture through-plane),
`independent` one draw per slice. DESIGN §7 chooses between them by the through-plane gradient-energy ratio.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from msgldm_auto.diffusion.targets import decode_sample
from msgldm_auto.inference.choices import NOISE_STRATEGIES
from msgldm_auto.inference.model_loading import FoldNetworks
from msgldm_auto.plans import ConfigurationPlan

BACKGROUND = -1.0   # normalised background; a missing modality's entries are arbitrary, this keeps them tidy


@dataclass
class SynthesisSettings:
    use_diffusion: bool
    steps: int
    noise: str = "shared"
    batch_size: int = 8
    mirror_axis: int | None = None      # in-plane axis (0: H, 1: W) of the deterministic passes' test-time mirroring


@dataclass
class VolumeInput:
    """A preprocessed case on the model's slice grid: every modality, missing ones filled with the background."""
    volume: torch.Tensor          # (M, Z, H, W) in [-1, 1]
    present: torch.Tensor         # (M,) bool
    slices: list[int]             # slice indices to synthesize (the others stay background)


def make_volume_input(data: np.ndarray, present_channels: list[int], num_modalities: int,
                      foreground_slices: list[int] | None) -> VolumeInput:
    """Spread preprocessing's (P, Z, H, W) array of present modalities onto all M modality slots."""
    _, z, h, w = data.shape
    volume = torch.full((num_modalities, z, h, w), BACKGROUND, dtype=torch.float32)
    present = torch.zeros(num_modalities, dtype=torch.bool)
    for row, channel in enumerate(present_channels):
        volume[channel] = torch.from_numpy(np.asarray(data[row], dtype=np.float32))
        present[channel] = True
    slices = sorted(foreground_slices) if foreground_slices else list(range(z))
    return VolumeInput(volume, present, slices)


def context_indices(centres: torch.Tensor, context: int, depth: int) -> torch.Tensor:
    """(B, C) slice indices around each centre, clamped to the volume (the centre is column C // 2)."""
    offsets = torch.arange(context) - context // 2
    return (centres[:, None] + offsets[None, :]).clamp(0, depth - 1)


def make_noise(shape: tuple[int, ...], depth: int, strategy: str, seed: int) -> torch.Tensor:
    """(Z, *shape) standard normal noise: one draw repeated over slices (`shared`) or one per slice."""
    if strategy not in NOISE_STRATEGIES:
        raise ValueError(f"noise strategy {strategy!r}; choose one of {NOISE_STRATEGIES}")
    generator = torch.Generator().manual_seed(int(seed))
    if strategy == "shared":
        return torch.randn(shape, generator=generator).expand(depth, *shape)
    return torch.randn((depth, *shape), generator=generator)


@torch.no_grad()
def encode_present(autoencoder: torch.nn.Module, volume_input: VolumeInput, latent_channels: int,
                   latent_size: list[int], batch_size: int) -> torch.Tensor:
    """(Z, M, L, h, w) latents of every present slice; zeros where a modality is missing."""
    volume, present = volume_input.volume, volume_input.present
    m, z = volume.shape[:2]
    device = next(autoencoder.parameters()).device
    latents = torch.zeros((z, m, latent_channels, *latent_size), device=device)
    for channel in torch.nonzero(present).flatten().tolist():
        for start in range(0, z, batch_size):
            chunk = volume[channel, start:start + batch_size, None].to(device)
            latents[start:start + batch_size, channel] = autoencoder.encode(chunk)
    return latents


@torch.no_grad()
def synthesize_volume(networks: FoldNetworks, scheduler, config: ConfigurationPlan, volume_input: VolumeInput,
                      targets: list[int], settings: SynthesisSettings, seed: int) -> np.ndarray:
    """(T, Z, H, W) synthesis in [-1, 1] of the `targets` channels, in the model's preprocessed space."""
    volume, present = volume_input.volume, volume_input.present
    m, depth, height, width = volume.shape
    first_network = networks.control if networks.control is not None else networks.disentangler
    device = next(first_network.parameters()).device
    result = np.full((len(targets), depth, height, width), BACKGROUND, dtype=np.float32)
    diffusion = settings.use_diffusion and networks.denoiser is not None
    # The slice size is the volume's own: prediction may grow the canvas past the plans' image_size (whole head).
    latent_size = [height // config.latent_scale, width // config.latent_scale]
    latent_shape = (m, config.autoencoder.latent_channels, *latent_size)
    if diffusion:
        present_latents = encode_present(networks.autoencoder, volume_input, latent_shape[1], latent_size,
                                         settings.batch_size)
        noise = make_noise(latent_shape, depth, settings.noise, seed)
    slices = torch.as_tensor(volume_input.slices, dtype=torch.long)
    for batch in torch.split(slices, settings.batch_size):
        context = context_indices(batch, config.context_slices, depth)                       # (B, C)
        images = volume[:, context].permute(1, 0, 2, 3, 4).to(device)                        # (B, M, C, H, W)
        kept = present[None].expand(len(batch), m).to(device)
        if networks.control is not None:
            decoded = _mirror_averaged(lambda x: networks.control(x, kept)[:, targets], images, settings.mirror_axis)
        elif diffusion:
            guidance = networks.disentangler(images, kept)
            latents, one_pass = _sample_batch(networks, scheduler, config, settings, guidance, kept, present_latents,
                                              context, noise[batch])
            decoded = decode_sample(networks.autoencoder, latents[:, targets], one_pass[:, targets],
                                    guidance.synthesis[:, targets], config.diffusion.target)
        else:
            decoded = _mirror_averaged(lambda x: networks.disentangler(x, kept).synthesis[:, targets], images,
                                       settings.mirror_axis)
        result[:, batch.numpy()] = _as_numpy(decoded)
    return result


def _mirror_averaged(predict, images: torch.Tensor, axis: int | None) -> torch.Tensor:
    """nnU-Net's test-time mirroring: the mean of `predict(images)` (B, T, H, W) and of the prediction for the input
    mirrored along the in-plane `axis`, mirrored back; `images` (B, M, C, H, W). None: one plain pass."""
    prediction = predict(images)
    if axis is None:
        return prediction
    return (prediction + predict(images.flip(3 + axis)).flip(2 + axis)) / 2


def _as_numpy(images: torch.Tensor) -> np.ndarray:
    """(B, T, H, W) → (T, B, H, W) float32 in [−1, 1]."""
    return images.clamp(-1, 1).permute(1, 0, 2, 3).float().cpu().numpy()


def _sample_batch(networks: FoldNetworks, scheduler, config: ConfigurationPlan, settings: SynthesisSettings, guidance,
                  kept: torch.Tensor, present_latents: torch.Tensor, context: torch.Tensor,
                  noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampled latents and the one-pass latents they refine, both (B, M, L, h, w)."""
    from msgldm_auto.diffusion.sampler import sample_latents

    device = kept.device
    centre = config.context_slices // 2
    clean = present_latents[context[:, centre]]                                            # (B, M, L, h, w)
    neighbours = None
    if config.context_slices > 1:
        others = [c for c in range(config.context_slices) if c != centre]
        neighbours = present_latents[context[:, others]].permute(0, 2, 1, 3, 4, 5)          # (B, M, C-1, L, h, w)
    batch, m = kept.shape
    synthesis = guidance.synthesis.reshape(batch * m, 1, *guidance.synthesis.shape[-2:])
    one_pass = networks.autoencoder.encode(synthesis).reshape(batch, m, *clean.shape[2:])
    latents = sample_latents(
        networks.denoiser, scheduler, config,
        clean=clean, kept=kept, neighbours=neighbours, prior=guidance.prior, one_pass=one_pass,
        styles=guidance.styles, steps=settings.steps, noise=noise.to(device),
    )
    return latents, one_pass
