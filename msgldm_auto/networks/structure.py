"""Structure path of the disentangler: per-modality structure encoders, MMSF fusion and the MSSE structure prior.

- `StructureEncoder`: one per modality; C context slices in, log2(f)+1 stages at scales 1 … 1/f, each ending in an HFIB.
- `MultiModalStructureFusion` (MMSF): at each scale, a per-pixel softmax over the *available* modalities only; a missing
  modality gets a weight of exactly 0 and its features are replaced by zeros before the weighted sum, so it has no
  influence at all (not even through NaNs in its input).
- `MultiScaleStructureEmbedding` (MSSE): every fused level is pixel-unshuffled to the latent resolution 1/f and
  projected to `prior_channels`; a cross-scale attention per latent pixel mixes the levels into the structure prior.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from msgldm_auto.networks.hfib import HighFrequencyInjection


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` where masked-out entries get weight exactly 0; an all-masked slice gives all zeros, not
    NaN."""
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(logits.dtype)


class StructureEncoder(nn.Module):
    """C slices of one modality → feature pyramid [scale 1, 1/2, …, 1/f] with widths `channels`."""

    def __init__(self, in_channels: int, channels: list[int], hfib: bool):
        super().__init__()
        stages = []
        previous = in_channels
        for level, width in enumerate(channels):
            stride = 1 if level == 0 else 2
            block = [ResidualUnit(2, previous, width, strides=stride, subunits=2)]
            if hfib:
                block.append(HighFrequencyInjection(width))
            stages.append(nn.Sequential(*block))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pyramid = []
        for stage in self.stages:
            x = stage(x)
            pyramid.append(x)
        return pyramid


def rows_only(module: nn.Module, inputs: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
    """`module`'s outputs (a tensor or a sequence of them, batch first) for the rows (N,) bool of `inputs`, zeros in
    the other rows.

    The fusion gives an absent modality's features a weight of exactly 0, so encoding or scoring its rows is wasted
    work: about half of them under uniform availability patterns. Without any row the module still runs on one row,
    scaled to zero, so that every parameter stays in the graph (DDP expects a gradient for each). Under torch.compile
    (`msgldm_train --compile`) every row runs: a row count that depends on the data would break the compiled graph.
    """
    def run(x: torch.Tensor) -> list[torch.Tensor]:
        outputs = module(x)
        return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)

    if torch.compiler.is_compiling() or bool(rows.all()):
        return run(inputs)
    index = torch.nonzero(rows).flatten()
    if index.numel() == 0:
        return [out.mul(0).expand(len(rows), *out.shape[1:]) for out in run(inputs[:1])]
    return [out.new_zeros((len(rows), *out.shape[1:])).index_copy(0, index, out) for out in run(inputs[index])]


class MultiModalStructureFusion(nn.Module):
    """MMSF: per scale, attention weights over available modalities → one fused structure map."""

    def __init__(self, channels: list[int], num_modalities: int):
        super().__init__()
        self.scorers = nn.ModuleList(
            Convolution(2, width, 1, kernel_size=3, conv_only=True) for width in channels
        )
        # A learned prior preference per modality and scale (e.g. T1ce for enhancing structure), added to the scores.
        self.modality_bias = nn.Parameter(torch.zeros(len(channels), num_modalities))

    def forward(
        self, pyramids: list[list[torch.Tensor]], present: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """pyramids[m][level]: (B, c, h, w); present (B, M) bool → fused maps and weights (B, M, h, w) per level."""
        return self.fuse_subsets(pyramids, [present])[0]

    def fuse_subsets(
        self, pyramids: list[list[torch.Tensor]], subsets: list[torch.Tensor]
    ) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """One fusion (fused maps, weights) per availability subset (B, M) bool. A modality's score depends on its own
        features only and a subset only masks the softmax, so the subsets share one scoring pass (the scorers' thin
        convolutions cost about a seventh of the forward pass on CPU)."""
        results: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in subsets]
        scored = torch.stack(subsets).any(dim=0).flatten()                          # (B·M,): absent ones are masked
        for level, scorer in enumerate(self.scorers):
            features = torch.stack([pyramid[level] for pyramid in pyramids], dim=1)  # (B, M, c, h, w)
            batch, modalities = features.shape[:2]
            scores = rows_only(scorer, features.flatten(0, 1), scored)[0].view(batch, modalities, *features.shape[-2:])
            scores = scores + self.modality_bias[level][None, :, None, None]
            for (fused, weights), subset in zip(results, subsets):
                # an absent modality's features are zeroed and its weight is exactly 0: no influence, even via NaNs
                kept = torch.where(subset[:, :, None, None, None], features, torch.zeros_like(features))
                level_weights = masked_softmax(scores, subset[:, :, None, None], dim=1)
                fused.append((level_weights[:, :, None] * kept).sum(dim=1))
                weights.append(level_weights)
        return results


class MultiScaleStructureEmbedding(nn.Module):
    """MSSE: fused pyramid → structure prior (B, prior_channels, H/f, W/f) by cross-scale attention."""

    def __init__(self, channels: list[int], latent_scale: int, prior_channels: int, heads: int):
        super().__init__()
        self.factors = [latent_scale // 2**level for level in range(len(channels))]
        self.projections = nn.ModuleList(
            nn.Conv2d(width * factor**2, prior_channels, kernel_size=1) for width, factor in zip(channels, self.factors)
        )
        self.level_embedding = nn.Parameter(torch.zeros(len(channels), prior_channels))
        self.query = nn.Parameter(torch.zeros(prior_channels))
        self.norm = nn.LayerNorm(prior_channels)
        self.attention = nn.MultiheadAttention(prior_channels, heads, batch_first=True)
        self.out = nn.Conv2d(prior_channels, prior_channels, kernel_size=1)

    def forward(self, fused: list[torch.Tensor]) -> torch.Tensor:
        levels = [proj(F.pixel_unshuffle(x, f)) for proj, x, f in zip(self.projections, fused, self.factors)]
        tokens = torch.stack(levels, dim=1)                       # (B, L, P, h, w)
        batch, num_levels, width, h, w = tokens.shape
        tokens = tokens.permute(0, 3, 4, 1, 2).reshape(batch * h * w, num_levels, width)
        tokens = self.norm(tokens + self.level_embedding)
        mean = tokens.mean(dim=1, keepdim=True)
        mixed, _ = self.attention(mean + self.query, tokens, tokens, need_weights=False)
        prior = (mean + mixed).view(batch, h, w, width).permute(0, 3, 1, 2)
        return self.out(prior)
