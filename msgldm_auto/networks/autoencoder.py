"""Stage 1: the latent autoencoder shared by all modalities, and its patch discriminator.

Both are MONAI's generic components (`AutoencoderKL`, `PatchDiscriminator`); what is ours is the check that the plans'
widths really give the planned latent scale f, and the stored latent scale factor that makes latents roughly unit-std
for the diffusion stage (set by the AE trainer, saved with the weights as a buffer).
"""
from __future__ import annotations

import math

import torch
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from torch import nn

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan


def check_autoencoder_plan(config: ConfigurationPlan) -> None:
    """Refuse an autoencoder plan whose widths do not give the planned latent scale, or that MONAI cannot build."""
    ae = config.autoencoder
    down_sampling = 2 ** (len(ae.channels) - 1)
    if down_sampling != config.latent_scale:
        raise MSGLDMError(
            f"plans: autoencoder.channels has {len(ae.channels)} levels, which down-samples by {down_sampling}, but "
            f"latent_scale is {config.latent_scale}; give autoencoder.channels log2(latent_scale)+1 = "
            f"{int(math.log2(config.latent_scale)) + 1} entries"
        )
    if len(ae.attention_levels) != len(ae.channels):
        raise MSGLDMError(
            f"plans: autoencoder.attention_levels has {len(ae.attention_levels)} entries but autoencoder.channels has "
            f"{len(ae.channels)}; give one boolean per level"
        )
    if any(c % ae.norm_num_groups for c in ae.channels):
        raise MSGLDMError(
            f"plans: autoencoder.norm_num_groups={ae.norm_num_groups} does not divide every autoencoder.channels entry "
            f"{ae.channels}; pick a common divisor"
        )
    if any(s % config.latent_scale for s in config.image_size):
        raise MSGLDMError(
            f"plans: image_size {config.image_size} is not a multiple of latent_scale {config.latent_scale}; "
            "pad image_size up to a multiple of it"
        )


class LatentAutoencoder(nn.Module):
    """One 2D `AutoencoderKL` (1 channel in/out) with a stored latent scale factor.

    `encode` returns the posterior mean times `scale_factor` (what the diffusion stage sees), `decode` divides it back
    out; `forward` is MONAI's sampling forward for AE training.
    """

    def __init__(self, config: ConfigurationPlan):
        super().__init__()
        check_autoencoder_plan(config)
        ae = config.autoencoder
        self.latent_scale = config.latent_scale
        self.latent_channels = ae.latent_channels
        self.autoencoder = AutoencoderKL(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=tuple(ae.channels),
            num_res_blocks=ae.num_res_blocks,
            attention_levels=tuple(ae.attention_levels),
            latent_channels=ae.latent_channels,
            norm_num_groups=ae.norm_num_groups,
        )
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z_mu, _ = self.autoencoder.encode(x)
        return z_mu * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z / self.scale_factor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.autoencoder(x)


def discriminator_layers(image_size: list[int]) -> int:
    """Down-sampling layers of the patch discriminator: 3 (MONAI's usual) unless the image is too small for it.

    Each layer halves the side and the last two 4×4 convolutions shrink it by one each; keep at least a 2×2 patch map.
    """
    smallest = min(image_size)
    return max(1, min(3, int(math.log2(smallest)) - 3))


def build_discriminator(config: ConfigurationPlan) -> PatchDiscriminator:
    """MONAI `PatchDiscriminator` for the AE's adversarial loss; its last output is the patch logits map."""
    return PatchDiscriminator(
        spatial_dims=2,
        channels=config.autoencoder.channels[0],
        in_channels=1,
        out_channels=1,
        num_layers_d=discriminator_layers(config.image_size),
    )
