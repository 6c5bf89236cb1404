"""Style path of the disentangler: per-modality style encoders and the learned prototype style of each modality.

A style encoder is a small conv stack without normalisation (normalising would erase the contrast statistics that
*are* the style), global-average-pooled into μ and log σ² of a `style_dim` code; the code is sampled (reparameterised)
in training and is μ in eval. A modality that is not present has no image to encode: its style is its prototype,
which the losses pull toward that modality's codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution
from torch import nn

LOGVAR_RANGE = (-10.0, 10.0)


@dataclass
class StyleCodes:
    """Per-modality style statistics; tensors are (B, M, D); entries of absent modalities are meaningless."""

    mu: torch.Tensor
    logvar: torch.Tensor
    codes: torch.Tensor


class StyleEncoder(nn.Module):
    """(N, C, H, W) → μ, log σ² of shape (N, style_dim)."""

    def __init__(self, in_channels: int, width: int, style_dim: int, num_downsamplings: int = 3):
        super().__init__()
        layers = [Convolution(2, in_channels, width, kernel_size=3, act="LEAKYRELU", norm=None)]
        for _ in range(num_downsamplings):
            layers.append(Convolution(2, width, width, strides=2, kernel_size=3, act="LEAKYRELU", norm=None))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * style_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.features(x).mean(dim=(-2, -1))
        mu, logvar = self.head(pooled).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class ModalityStyles(nn.Module):
    """One style encoder and one learned prototype per modality."""

    def __init__(self, num_modalities: int, in_channels: int, width: int, style_dim: int):
        super().__init__()
        self.encoders = nn.ModuleList(StyleEncoder(in_channels, width, style_dim) for _ in range(num_modalities))
        self.prototypes = nn.Parameter(torch.zeros(num_modalities, style_dim))
        nn.init.normal_(self.prototypes, std=0.5)  # distinct starting points so modalities are told apart

    def encode(self, images: torch.Tensor) -> StyleCodes:
        """images (B, M, C, H, W), already cleaned of absent modalities → style statistics (B, M, D)."""
        stats = [encoder(images[:, m]) for m, encoder in enumerate(self.encoders)]
        mu = torch.stack([s[0] for s in stats], dim=1)
        logvar = torch.stack([s[1] for s in stats], dim=1)
        codes = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return StyleCodes(mu=mu, logvar=logvar, codes=codes)

    def styles(self, codes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Codes where the modality is present, its prototype where it is not: (B, M, D)."""
        prototypes = self.prototypes[None].expand_as(codes)
        return torch.where(present[..., None], codes, prototypes)
