"""One-pass synthesis path: per-modality style-modulated decoders (fused structure + style → image) and the
segmentation head.

A decoder starts from the MSSE structure prior at 1/f (so the prior is trained by the reconstruction loss already in
stage 2), climbs back to scale 1 taking the fused structure map of every scale as a skip, and modulates every block
with the target modality's style code: a per-channel scale and shift from the style (AdaIN's affine part). Unlike
AdaIN it does not instance-normalise first: a per-slice normalisation pins every slice's feature statistics, so a
slice with little brain cannot come out darker than one full of it (the flat top slices of coronal views), and on the
measured-contrast set it cost 0.6 dB at the cpu budget (benchmarks.md). Output through tanh: images in [−1, 1]; with
a regression prior the last block sees the prior's logits and a learned trust × those logits is added before the
tanh, so the decoder learns a correction of the prior. With `input_channels` > 0 the last block also sees the given
modalities' centre slices (zeros where absent): the joint intensities of a voxel, which the fused structure, a convex
mix of per-modality features, does not carry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn


class StyleModulation(nn.Module):
    """Scale and shift x per channel from the style code (FiLM); starts as the identity."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.affine = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)  # start as the identity; the style earns its influence
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(style)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class StyleBlock(nn.Module):
    """conv 3×3 → style modulation → LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.conv = Convolution(2, in_channels, out_channels, kernel_size=3, conv_only=True)
        self.modulation = StyleModulation(out_channels, style_dim)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.act(self.modulation(self.conv(x), style))


class StyleDecoder(nn.Module):
    """(prior at 1/f, fused pyramid scale 1 … 1/f, style (B, D)) → image (B, 1, H, W)."""

    def __init__(self, structure_channels: list[int], prior_channels: int, width: int, style_dim: int,
                 corrects_prior: bool = False, input_channels: int = 0):
        super().__init__()
        self.stem = Convolution(2, prior_channels, width, kernel_size=1, conv_only=True)
        self.skips = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in structure_channels)
        self.blocks = nn.ModuleList(StyleBlock(2 * width, width, style_dim) for _ in structure_channels)
        self.corrects_prior = corrects_prior
        self.input_channels = input_channels
        # the refine block sees the prior it corrects and, with input_channels > 0, the inputs' centre slices
        self.refine = StyleBlock(width + int(corrects_prior) + input_channels, width, style_dim)
        self.out = nn.Conv2d(width, 1, kernel_size=1)

    def forward(self, prior: torch.Tensor, fused: list[torch.Tensor], style: torch.Tensor,
                regression: tuple[torch.Tensor, torch.Tensor] | None = None,
                inputs: torch.Tensor | None = None) -> torch.Tensor:
        """`regression`: (logits, trust) of the regression prior, (B, 1, H, W) and (B, 1, 1, 1), for a decoder that
        corrects it: the refine block sees the logits, and trust × logits is added before the tanh. `inputs`: the
        (B, input_channels, H, W) centre slices the refine block also sees, for a decoder built with input_channels."""
        if self.corrects_prior != (regression is not None):
            raise ValueError("a decoder built to correct a regression prior needs one, and only such a decoder")
        x = self.stem(prior)
        for level in reversed(range(len(fused))):
            if x.shape[-2:] != fused[level].shape[-2:]:
                x = F.interpolate(x, size=fused[level].shape[-2:], mode="nearest")
            x = self.blocks[level](torch.cat([x, self.skips[level](fused[level])], dim=1), style)
        if self.input_channels != (0 if inputs is None else inputs.shape[1]):
            raise ValueError(f"this decoder's refine block takes {self.input_channels} input channel(s)")
        seen = [x] + ([] if regression is None else [regression[0]]) + ([] if inputs is None else [inputs])
        x = self.out(self.refine(torch.cat(seen, dim=1), style))
        if regression is None:
            return torch.tanh(x)
        logits, trust = regression
        return torch.tanh(x + trust * logits)


class SegmentationHead(nn.Module):
    """Fused scale-1 structure → label logits; only built when the dataset has labels."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            Convolution(2, in_channels, in_channels, kernel_size=3, act="PRELU", norm="INSTANCE"),
            nn.Conv2d(in_channels, num_classes, kernel_size=1),
        )

    def forward(self, fused_full_resolution: torch.Tensor) -> torch.Tensor:
        return self.body(fused_full_resolution)
