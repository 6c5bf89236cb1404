"""Stage 2: the structure–style disentangler (DESIGN.md §6.2), built from a `ConfigurationPlan` only.

images (B, M, C, H, W) + present (B, M)
  → per-modality structure encoders (HFIB at every stage) → MMSF (masked attention over present modalities) → fused
    pyramid, scale 1 … 1/f → MSSE → structure prior (B, P, H/f, W/f)
  → per-modality style encoders → style codes; absent modalities take their learned prototype
  → per-modality style-modulated decoders → one-pass synthesis of all M modalities; optional segmentation head.
With `disentangler.regression_prior_degree` > 0 each decoder corrects the per-voxel regression prior of its modality
from the other present ones (networks/regression_prior.py) instead of starting from nothing; with
`disentangler.refine_sees_inputs` each decoder's last block also sees every modality's (cleaned) centre slice.

A modality with present=False has exactly zero influence on every output: its input is replaced by zeros before any
network sees it (so even NaNs there are harmless), its fusion weight is exactly 0, and its style is its prototype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.networks.decoder import SegmentationHead, StyleDecoder
from msgldm_auto.networks.regression_prior import RegressionPrior
from msgldm_auto.networks.structure import (
    MultiModalStructureFusion,
    MultiScaleStructureEmbedding,
    StructureEncoder,
    rows_only,
)
from msgldm_auto.networks.style import ModalityStyles, StyleCodes
from msgldm_auto.plans import ConfigurationPlan


@dataclass
class DisentanglerOutput:
    fused: list[torch.Tensor]           # fused structure maps, scale 1 … 1/f, (B, c_l, H/2^l, W/2^l)
    fusion_weights: list[torch.Tensor]  # MMSF weights per scale, (B, M, H/2^l, W/2^l); exactly 0 where absent
    prior: torch.Tensor                 # MSSE structure prior (B, prior_channels, H/f, W/f)
    styles: torch.Tensor                # (B, M, D): code where present, prototype where absent
    style_stats: StyleCodes             # encoder μ, log σ², sampled codes (B, M, D) for the style losses
    prototypes: torch.Tensor            # (M, D) learned per-modality prototypes
    present: torch.Tensor               # (B, M) bool, as given
    synthesis: torch.Tensor             # (B, M, H, W) one-pass image of every modality, in [−1, 1]
    seg_logits: torch.Tensor | None     # (B, K, H, W) or None without labels
    fused_other: list[torch.Tensor] | None = None  # fused pyramid of `other_subset` (structure invariance), if asked


def check_disentangler_plan(config: ConfigurationPlan) -> None:
    plan = config.disentangler
    levels = int(math.log2(config.latent_scale)) + 1
    if len(plan.structure_channels) != levels:
        raise MSGLDMError(
            f"plans: disentangler.structure_channels has {len(plan.structure_channels)} entries but latent_scale "
            f"{config.latent_scale} needs log2(f)+1 = {levels} (one per scale 1 … 1/f); fix the list"
        )
    if plan.prior_channels % plan.msse_heads:
        raise MSGLDMError(
            f"plans: disentangler.prior_channels={plan.prior_channels} is not divisible by msse_heads="
            f"{plan.msse_heads}; pick a divisor"
        )
    if any(s % config.latent_scale for s in config.image_size):
        raise MSGLDMError(
            f"plans: image_size {config.image_size} is not a multiple of latent_scale {config.latent_scale}; "
            "pad image_size up to a multiple of it"
        )


class StructureStyleDisentangler(nn.Module):
    """See the module docstring; `forward` returns a `DisentanglerOutput`."""

    def __init__(self, config: ConfigurationPlan, num_modalities: int, num_label_classes: int = 0):
        super().__init__()
        check_disentangler_plan(config)
        plan = config.disentangler
        self.num_modalities = num_modalities
        self.context_slices = config.context_slices
        channels = list(plan.structure_channels)
        self.structure_encoders = nn.ModuleList(
            StructureEncoder(config.context_slices, channels, hfib=config.ablations.hfib)
            for _ in range(num_modalities)
        )
        self.fusion = MultiModalStructureFusion(channels, num_modalities)
        self.embedding = MultiScaleStructureEmbedding(
            channels, config.latent_scale, plan.prior_channels, plan.msse_heads
        )
        self.styles = ModalityStyles(num_modalities, config.context_slices, plan.style_channels, plan.style_dim)
        self.decoders = nn.ModuleList(
            StyleDecoder(channels, plan.prior_channels, plan.decoder_channels, plan.style_dim,
                         corrects_prior=plan.regression_prior_degree > 0,
                         input_channels=num_modalities if plan.refine_sees_inputs else 0)
            for _ in range(num_modalities)
        )
        self.segmentation = SegmentationHead(channels[0], num_label_classes) if num_label_classes > 0 else None
        degree = plan.regression_prior_degree
        self.regression_prior = RegressionPrior(num_modalities, degree) if degree > 0 else None
        self.refine_sees_inputs = plan.refine_sees_inputs

    def _clean(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5 or images.shape[1] != self.num_modalities or images.shape[2] != self.context_slices:
            raise ValueError(
                f"images must be (B, {self.num_modalities}, {self.context_slices}, H, W), got {tuple(images.shape)}"
            )
        if present.shape != images.shape[:2] or present.dtype != torch.bool:
            raise ValueError(f"present must be a bool tensor of shape {tuple(images.shape[:2])}")
        return torch.where(present[:, :, None, None, None], images, torch.zeros_like(images))

    def _pyramids(self, images: torch.Tensor, encoded: torch.Tensor) -> list[list[torch.Tensor]]:
        clean = self._clean(images, encoded)
        return [rows_only(encoder, clean[:, m], encoded[:, m]) for m, encoder in enumerate(self.structure_encoders)]

    def _regressions(self, clean: torch.Tensor,
                     present: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per modality, the regression prior's logits (B, 1, H, W) and trust (B, 1, 1, 1) for its decoder; None
        without a prior."""
        if self.regression_prior is None:
            return [None] * self.num_modalities
        logits = self.regression_prior.logits(clean[:, :, self.context_slices // 2], present)
        trust = self.regression_prior.trust(present)
        return [(logits[:, m:m + 1], trust[:, m:m + 1]) for m in range(self.num_modalities)]

    def fuse_structure(
        self, images: torch.Tensor, present: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoders + MMSF only: the fused pyramid and its weights."""
        return self.fusion(self._pyramids(images, present), present)

    def forward(self, images: torch.Tensor, present: torch.Tensor,
                other_subset: torch.Tensor | None = None) -> DisentanglerOutput:
        """`other_subset` (B, M) bool, for the structure-invariance loss: also fuse that subset's structure, reusing
        the per-modality encodings (an encoder sees only its own modality, so one encoding serves both fusions and
        the step costs one encoder pass instead of two)."""
        clean = self._clean(images, present)              # checks the shapes before anything runs
        encoded = present if other_subset is None else present | other_subset
        pyramids = self._pyramids(images, encoded)
        subsets = [present] if other_subset is None else [present, other_subset]
        fusions = self.fusion.fuse_subsets(pyramids, subsets)
        fused, weights = fusions[0]
        fused_other = fusions[1][0] if other_subset is not None else None
        prior = self.embedding(fused)
        stats = self.styles.encode(clean)
        styles = self.styles.styles(stats.codes, present)
        regressions = self._regressions(clean, present)
        centre = clean[:, :, self.context_slices // 2] if self.refine_sees_inputs else None
        synthesis = torch.cat(
            [decoder(prior, fused, styles[:, m], regressions[m], centre) for m, decoder in enumerate(self.decoders)],
            dim=1,
        )
        seg_logits = self.segmentation(fused[0]) if self.segmentation is not None else None
        return DisentanglerOutput(
            fused=fused,
            fusion_weights=weights,
            prior=prior,
            styles=styles,
            style_stats=stats,
            prototypes=self.styles.prototypes,
            present=present,
            synthesis=synthesis,
            seg_logits=seg_logits,
            fused_other=fused_other,
        )
