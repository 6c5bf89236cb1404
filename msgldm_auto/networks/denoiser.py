"""Stage 3: the guided denoiser — one MONAI `DiffusionModelUNet` for every availability pattern.

Input channels, in this order (M modalities, L latent channels, C context slices, P prior channels):
  noisy latents of all M modalities                       M·L  (kept ones zeroed, see below)
  clean latents of the kept modalities, zeros elsewhere     M·L
  the kept mask as constant maps                            M
  kept modalities' latents of the C−1 neighbouring slices   M·(C−1)·L, zeros for non-kept
  the MSSE structure prior                                  P
  the latent of the disentangler's one-pass synthesis       M·L
Output: ε or v for all M modalities (M·L channels); the loss reads only the dropped ones.

Masking uses `torch.where`, not multiplication, so whatever a non-kept entry holds (even NaN) has no influence.
The noisy channels of kept modalities are zeroed too: their clean latent is already an input, and at sampling time
those channels would otherwise follow an unsupervised trajectory (no loss is taken on kept modalities), a train/test
mismatch. Only the replacement-sampling ablation, which holds them to their noised clean values both in training and
sampling, lets the UNet read them.

Conditioning: the availability pattern is MONAI's class label (`num_class_embeds = 2^M`, label = Σ kept[m] << m).
The target styles enter as cross-attention context, one token per modality (its style code + a one-hot modality id):
MONAI's UNet offers cross-attention natively (no patching of its forward), every location can attend to the style of
every modality, and the mid block always has attention, so styles reach even plans without attention levels.

Multiscale guidance (the method's name): a strided-conv pyramid on the prior yields one tensor per UNet skip
connection and one for the mid block, each through a zero-initialised 1×1 conv, passed as MONAI's
`down_block_additional_residuals` / `mid_block_additional_residual`. Their shapes are read from the UNet's own blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan


@dataclass(frozen=True)
class SkipShape:
    """One tensor that the UNet adds a guidance residual to: its channels and its down-sampling relative to the
    input."""
    channels: int
    stride: int

    @property
    def level(self) -> int:
        return self.stride.bit_length() - 1


def unet_skip_shapes(unet: DiffusionModelUNet) -> tuple[list[SkipShape], SkipShape]:
    """The skip tensors in the order MONAI's forward collects them, and the mid-block output.

    MONAI 1.6.1 collects `conv_in`'s output, then per down block each resnet's output and the down-sampler's output;
    `down_block_additional_residuals` is zipped against that list (a wrong count would be silently truncated, hence
    reading it from the blocks rather than assuming a formula).
    """
    skips = [SkipShape(unet.block_out_channels[0], 1)]
    stride = 1
    for block in unet.down_blocks:
        skips += [SkipShape(resnet.out_channels, stride) for resnet in block.resnets]
        if block.downsampler is not None:
            stride *= 2
            skips.append(SkipShape(block.resnets[-1].out_channels, stride))
    return skips, SkipShape(unet.block_out_channels[-1], stride)


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1×1 conv that starts at exactly zero, so a fresh adapter leaves the UNet's computation unchanged."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class MultiscaleGuidance(nn.Module):
    """Structure prior -> one residual per UNet skip connection + one for the mid block (MSSE's guidance heads).

    A pyramid of 3×3 convs (stride 1, then stride 2 per level, the same geometry as MONAI's down-samplers) brings the
    prior to every UNet level; a zero-initialised 1×1 adapter per skip maps it to that skip's channels.
    """

    def __init__(self, prior_channels: int, level_channels: list[int], skips: list[SkipShape], mid: SkipShape):
        super().__init__()
        self.pyramid = nn.ModuleList()
        previous = prior_channels
        for level, channels in enumerate(level_channels):
            stride = 1 if level == 0 else 2
            self.pyramid.append(nn.Sequential(nn.Conv2d(previous, channels, 3, stride=stride, padding=1), nn.SiLU()))
            previous = channels
        self.skip_levels = [skip.level for skip in skips]
        self.skip_adapters = nn.ModuleList(zero_conv(level_channels[s.level], s.channels) for s in skips)
        self.mid_level = mid.level
        self.mid_adapter = zero_conv(level_channels[mid.level], mid.channels)

    def forward(self, prior: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        levels = []
        features = prior
        for stage in self.pyramid:
            features = stage(features)
            levels.append(features)
        down = tuple(adapter(levels[level]) for adapter, level in zip(self.skip_adapters, self.skip_levels))
        return down, self.mid_adapter(levels[self.mid_level])


def head_channels_per_level(channels: list[int], num_head_channels: int) -> tuple[int, ...]:
    """MONAI needs heads that divide the width; a level narrower than (or not divisible by) the plan's head size gets
    one head."""
    return tuple(num_head_channels if c % num_head_channels == 0 else c for c in channels)


def check_unet_plan(config: ConfigurationPlan) -> None:
    unet = config.unet
    if len(unet.attention_levels) != len(unet.channels):
        raise MSGLDMError(
            f"plans: unet.attention_levels has {len(unet.attention_levels)} entries but unet.channels has "
            f"{len(unet.channels)}; give one boolean per level"
        )
    if any(c % unet.norm_num_groups for c in unet.channels):
        raise MSGLDMError(
            f"plans: unet.norm_num_groups={unet.norm_num_groups} does not divide every unet.channels entry "
            f"{unet.channels}; pick a common divisor"
        )
    down_sampling = 2 ** (len(unet.channels) - 1)
    if any(size % down_sampling for size in config.latent_size):
        raise MSGLDMError(
            f"plans: latent size {config.latent_size} is not a multiple of the UNet's down-sampling {down_sampling} "
            f"({len(unet.channels)} levels); pad image_size or use fewer unet.channels"
        )


class GuidedDenoiser(nn.Module):
    """ε/v predictor for the latents of all modalities, conditioned on the kept ones, the prior and the styles."""

    def __init__(self, config: ConfigurationPlan, num_modalities: int):
        super().__init__()
        check_unet_plan(config)
        self.num_modalities = num_modalities
        self.latent_channels = config.autoencoder.latent_channels
        self.context_slices = config.context_slices
        self.prior_channels = config.disentangler.prior_channels
        self.style_dim = config.disentangler.style_dim
        self.prediction_type = config.diffusion.prediction_type
        self.multiscale_injection = config.ablations.multiscale_injection
        # Only the replacement ablation trains and samples with the kept modalities' noisy channels held to their
        # noised clean values; otherwise they are zeroed (see the module docstring).
        self.reads_kept_noisy = config.ablations.replacement_sampling
        self.unet = self._build_unet(config)
        self.guidance: MultiscaleGuidance | None = None
        if self.multiscale_injection:
            skips, mid = unet_skip_shapes(self.unet)
            self.guidance = MultiscaleGuidance(self.prior_channels, list(config.unet.channels), skips, mid)

    @property
    def in_channels(self) -> int:
        m, latent = self.num_modalities, self.latent_channels
        return 3 * m * latent + m + m * (self.context_slices - 1) * latent + self.prior_channels

    def _build_unet(self, config: ConfigurationPlan) -> DiffusionModelUNet:
        unet = config.unet
        return DiffusionModelUNet(
            spatial_dims=2,
            in_channels=self.in_channels,
            out_channels=self.num_modalities * self.latent_channels,
            num_res_blocks=unet.num_res_blocks,
            channels=tuple(unet.channels),
            attention_levels=tuple(unet.attention_levels),
            norm_num_groups=unet.norm_num_groups,
            num_head_channels=head_channels_per_level(list(unet.channels), unet.num_head_channels),
            with_conditioning=True,
            cross_attention_dim=self.style_dim + self.num_modalities,
            num_class_embeds=2**self.num_modalities,
        )

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        clean: torch.Tensor,
        kept: torch.Tensor,
        neighbours: torch.Tensor | None,
        prior: torch.Tensor,
        one_pass: torch.Tensor,
        styles: torch.Tensor,
    ) -> torch.Tensor:
        kept = kept.bool()
        x = self._input_channels(noisy, clean, kept, neighbours, prior, one_pass)
        down, mid = self.guidance(prior) if self.guidance is not None else (None, None)
        output = self.unet(
            x,
            timesteps,
            context=self._style_tokens(styles),
            class_labels=availability_label(kept),
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        )
        return output.reshape(noisy.shape)

    def _input_channels(self, noisy, clean, kept, neighbours, prior, one_pass) -> torch.Tensor:
        batch = noisy.shape[0]
        per_modality = kept[:, :, None, None, None]                               # (B, M, 1, 1, 1)
        zero = noisy.new_zeros(())
        if not self.reads_kept_noisy:
            noisy = torch.where(per_modality, zero, noisy)
        parts = [noisy, torch.where(per_modality, clean, zero)]
        mask_maps = kept.to(noisy.dtype)[:, :, None, None].expand(-1, -1, *noisy.shape[-2:])
        if self.context_slices > 1:
            if neighbours is None:
                raise ValueError(f"the plan has context_slices={self.context_slices}; pass neighbours (B, M, C-1, L, "
                                 "h, w)")
            parts.append(torch.where(kept[:, :, None, None, None, None], neighbours, zero))
        flat = [p.reshape(batch, -1, *noisy.shape[-2:]) for p in parts]
        return torch.cat([*flat[:2], mask_maps, *flat[2:], prior, one_pass.reshape(batch, -1, *noisy.shape[-2:])],
                         dim=1)

    def _style_tokens(self, styles: torch.Tensor) -> torch.Tensor:
        """(B, M, D) styles -> (B, M, D + M) tokens: each style with the one-hot id of its modality."""
        batch, modalities, _ = styles.shape
        identity = torch.eye(modalities, dtype=styles.dtype, device=styles.device).expand(batch, -1, -1)
        return torch.cat([styles, identity], dim=-1)


def availability_label(kept: torch.Tensor) -> torch.Tensor:
    """(B,) class label Σ kept[m] << m of a (B, M) kept mask (same code as training.patterns.pattern_code)."""
    weights = 2 ** torch.arange(kept.shape[1], device=kept.device)
    return (kept.long() * weights).sum(dim=1)
