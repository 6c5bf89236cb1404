"""Losses of stage 1 (autoencoder) and stage 2 (structure–style disentangler); weights come from `config.losses`.

Nothing here needs downloaded weights. MONAI supplies the generic terms (JukeboxLoss, PatchAdversarialLoss,
DiceCELoss); SSIM is MONAI's definition computed with a separable window (`ssim_loss`); MSG-LDM's own are the
structure-aware reconstruction (L1 + SSIM of DCT magnitudes), the supervised contrastive style consistency with a
learnable temperature, the structure invariance across modality subsets, and the prototype pull that teaches a missing
modality's style.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, JukeboxLoss, PatchAdversarialLoss
from torch import nn

from msgldm_auto.plans import Ablations, LossWeights

IMAGE_DATA_RANGE = 2.0          # images live in [−1, 1]
DCT_SSIM_WINDOW = 7
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03   # MONAI's SSIMLoss defaults
TEMPERATURE_INIT = 0.1
TEMPERATURE_RANGE = (0.01, 1.0)  # a free temperature would run to 0 once the clusters separate


def _zero_like_graph(x: torch.Tensor) -> torch.Tensor:
    """A zero that stays attached to x's graph, for batches where a term has nothing to measure."""
    return x.sum() * 0.0


# --------------------------------------------------------------------------------------------------- reconstruction
def ssim_loss(prediction: torch.Tensor, target: torch.Tensor, data_range: float,
              window: int = SSIM_WINDOW) -> torch.Tensor:
    """1 − mean SSIM of (N, C, H, W) images: MONAI's SSIMLoss (Gaussian window, σ 1.5, valid convolution, the same
    value), with the window applied as two 1-D passes. MONAI convolves the full window × window kernel, several times
    slower on CPU (`benchmarks/bench_step_costs.py ssim`, documentation/benchmarks.md): a large part of a training
    step's time for what is a small term of its loss."""
    taps = torch.arange(window, dtype=torch.float32, device=prediction.device) - (window - 1) / 2
    gaussian = torch.exp(-(taps**2) / (2 * SSIM_SIGMA**2))
    gaussian = (gaussian / gaussian.sum()).to(prediction.dtype)
    x, y = prediction.flatten(0, 1)[:, None], target.flatten(0, 1)[:, None]
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)                     # (N·C, 5, H, W)
    moments = F.conv2d(moments, gaussian.view(1, 1, 1, -1).expand(5, 1, 1, -1), groups=5)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = F.conv2d(moments, gaussian.view(1, 1, -1, 1).expand(5, 1, -1, 1),
                                               groups=5).unbind(1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * (mu_xy - mu_x * mu_y) + c2) / (mu_xx - mu_x**2 + mu_yy - mu_y**2 + c2)
    return 1 - (luminance * contrast_structure).mean()


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n × n): D @ x transforms along the first axis (torch.fft has no DCT)."""
    k = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    i = torch.arange(n, dtype=torch.float64, device=device)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D DCT-II over the last two axes."""
    rows = dct_matrix(x.shape[-2], x.dtype, x.device)
    cols = dct_matrix(x.shape[-1], x.dtype, x.device)
    return rows @ x @ cols.T


def dct_magnitude_ssim_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − SSIM between log-compressed DCT magnitudes of (N, 1, H, W) images.

    The DC coefficient dwarfs the rest, so magnitudes are log1p-compressed and both maps are divided by the target's
    per-image maximum (no gradient through the scale), which puts SSIM's data range at 1.
    """
    pred_mag = torch.log1p(dct2(prediction.float()).abs())  # float32 even under autocast: DC ≫ the rest
    target_mag = torch.log1p(dct2(target.float()).abs())
    scale = target_mag.amax(dim=(-2, -1), keepdim=True).detach().clamp(min=1e-6)
    window = min(DCT_SSIM_WINDOW, *prediction.shape[-2:])
    return ssim_loss(pred_mag / scale, target_mag / scale, data_range=1.0, window=window)


def structure_aware_reconstruction_loss(
    synthesis: torch.Tensor, target: torch.Tensor, exists: torch.Tensor, image_ssim: float = 0.0
) -> torch.Tensor:
    """L1 + DCT-magnitude SSIM (+ `image_ssim` × image-space 1 − SSIM) over the modalities that exist in the data:
    (B, M, H, W), (B, M, H, W), (B, M) bool."""
    if not bool(exists.any()):
        return _zero_like_graph(synthesis)
    prediction = synthesis[exists][:, None]
    reference = target[exists][:, None]
    loss = F.l1_loss(prediction, reference) + dct_magnitude_ssim_loss(prediction, reference)
    if image_ssim:
        loss = loss + image_ssim * ssim_loss(prediction, reference, IMAGE_DATA_RANGE)
    return loss


# ------------------------------------------------------------------------------------------------------------ style
class StyleContrastiveLoss(nn.Module):
    """Supervised contrastive loss on style codes: same modality = positive; cosine similarity / learnable temperature.

    Holds only log τ; give it to the stage-2 optimiser together with the disentangler.
    """

    def __init__(self, temperature: float = TEMPERATURE_INIT):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(*TEMPERATURE_RANGE)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """codes (N, D), labels (N,) → mean over anchors that have a positive of −mean log p(positive | anchor)."""
        unit = F.normalize(codes, dim=-1)
        logits = unit @ unit.T / self.temperature
        not_self = ~torch.eye(len(codes), dtype=torch.bool, device=codes.device)
        logits = logits.masked_fill(~not_self, torch.finfo(logits.dtype).min)
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positives = (labels[:, None] == labels[None, :]) & not_self
        count = positives.sum(dim=1)
        has_positive = count > 0
        if not bool(has_positive.any()):
            return _zero_like_graph(codes) + _zero_like_graph(self.log_temperature)
        per_anchor = -(log_prob * positives).sum(dim=1)[has_positive] / count[has_positive]
        return per_anchor.mean()


def style_consistency_loss(
    contrastive: StyleContrastiveLoss, mu: torch.Tensor, present: torch.Tensor, prototypes: torch.Tensor
) -> torch.Tensor:
    """Contrast the present modalities' style means (B, M, D) and the M prototypes, labelled by modality."""
    modality = torch.arange(mu.shape[1], device=mu.device)
    codes = torch.cat([mu[present], prototypes], dim=0)
    labels = torch.cat([modality.expand_as(present)[present], modality], dim=0)
    return contrastive(codes, labels)


def prototype_pull_loss(prototypes: torch.Tensor, mu: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """MSE between each prototype and the batch mean of its modality's (detached) style means.

    Only the prototypes receive this gradient, so it teaches the style of a missing modality without bending the
    encoders toward it.
    """
    weights = present.to(mu.dtype)[..., None]                     # (B, M, 1)
    counts = weights.sum(dim=0)                                   # (M, 1)
    seen = counts[:, 0] > 0
    if not bool(seen.any()):
        return _zero_like_graph(prototypes)
    means = (mu.detach() * weights).sum(dim=0) / counts.clamp(min=1)
    return F.mse_loss(prototypes[seen], means[seen])


def style_kl_loss(mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over style dims, averaged over present (sample, modality) pairs."""
    if not bool(present.any()):
        return _zero_like_graph(mu)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)
    return kl[present].mean()


# -------------------------------------------------------------------------------------------- structure, labels
def structure_invariance_loss(fused_a: list[torch.Tensor], fused_b: list[torch.Tensor]) -> torch.Tensor:
    """Mean over scales of per-pixel cosine distance (over channels) between two fused pyramids of the same slices.

    Cosine, not MSE: the decoders instance-normalise, so an MSE could be lowered for free by shrinking all features.
    Rows where either subset was empty (MMSF fuses an empty subset to exactly zero) have nothing to compare and are
    skipped, so callers may pass e.g. `present & ~kept` without checking that it is non-empty in every row.
    """
    rows = _nonzero_rows(fused_a) & _nonzero_rows(fused_b)
    if not bool(rows.any()):
        return _zero_like_graph(fused_a[0]) + _zero_like_graph(fused_b[0])
    distances = [
        (1 - F.cosine_similarity(a[rows].float(), b[rows].float(), dim=1, eps=1e-6)).mean()
        for a, b in zip(fused_a, fused_b)
    ]
    return torch.stack(distances).mean()


def _nonzero_rows(pyramid: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([level.detach().flatten(1).abs().amax(dim=1) > 0 for level in pyramid]).any(dim=0)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + cross-entropy; logits (B, K, H, W), integer target (B, H, W) or (B, 1, H, W)."""
    if target.ndim == logits.ndim - 1:
        target = target[:, None]
    return DiceCELoss(to_onehot_y=True, softmax=True)(logits, target.long())


# ----------------------------------------------------------------------------------------------- stage-2 total
@dataclass
class DisentanglerLosses:
    total: torch.Tensor
    reconstruction: torch.Tensor
    style_contrastive: torch.Tensor
    style_kl: torch.Tensor
    prototype: torch.Tensor
    structure_invariance: torch.Tensor
    segmentation: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in vars(self).items()}


def disentangler_loss(
    output,
    targets: torch.Tensor,
    exists: torch.Tensor,
    weights: LossWeights,
    ablations: Ablations,
    contrastive: StyleContrastiveLoss,
    seg_target: torch.Tensor | None = None,
    fused_other_subset: list[torch.Tensor] | None = None,
) -> DisentanglerLosses:
    """Stage-2 objective from a `DisentanglerOutput`.

    targets (B, M, H, W): centre slices of every modality; exists (B, M): which exist in the data (the reconstruction
    covers the dropped ones, the synthesis task, and the kept ones weighted by `reconstruction_kept`);
    `fused_other_subset`: `fuse_structure` of the same slices with another modality
    subset (invariance is skipped without it); the prototype pull has a fixed weight 1 (it only moves prototypes).
    """
    mu, logvar = output.style_stats.mu, output.style_stats.logvar
    present = output.present
    zero = _zero_like_graph(output.synthesis)
    dropped = structure_aware_reconstruction_loss(output.synthesis, targets, exists & ~present,
                                                  weights.reconstruction_image_ssim)
    kept = structure_aware_reconstruction_loss(output.synthesis, targets, exists & present)
    reconstruction = dropped + weights.reconstruction_kept * kept
    contrast = (
        style_consistency_loss(contrastive, mu, present, output.prototypes) if ablations.style_consistency else zero
    )
    kl = style_kl_loss(mu, logvar, present)
    prototype = prototype_pull_loss(output.prototypes, mu, present)
    invariance = (
        structure_invariance_loss(output.fused, fused_other_subset) if fused_other_subset is not None else zero
    )
    seg = (
        segmentation_loss(output.seg_logits, seg_target)
        if output.seg_logits is not None and seg_target is not None
        else zero
    )
    total = (
        weights.reconstruction * reconstruction
        + weights.style_contrastive * contrast
        + weights.style_kl * kl
        + prototype
        + weights.structure_invariance * invariance
        + weights.segmentation * seg
    )
    return DisentanglerLosses(total, reconstruction, contrast, kl, prototype, invariance, seg)


# ------------------------------------------------------------------------------------------------- autoencoder
@dataclass
class AutoencoderLosses:
    total: torch.Tensor
    l1: torch.Tensor
    ssim: torch.Tensor
    spectral: torch.Tensor
    kl: torch.Tensor
    adversarial: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in vars(self).items()}


def adversarial_active(progress: float, weights: LossWeights) -> bool:
    """Whether the discriminator is on at `progress` ∈ [0, 1] of the AE stage (off during the warm-up)."""
    return progress >= weights.ae_adversarial_warmup_fraction


def autoencoder_kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL of the latent posterior to N(0, 1), summed per image and averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1)
    return kl.flatten(1).sum(dim=1).mean()


def _adversarial_criterion() -> PatchAdversarialLoss:
    return PatchAdversarialLoss(criterion="least_squares")


def autoencoder_generator_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    z_mu: torch.Tensor,
    z_sigma: torch.Tensor,
    weights: LossWeights,
    discriminator: nn.Module | None = None,
) -> AutoencoderLosses:
    """L1 + SSIM + spectral (Jukebox) + KL, plus the patch-adversarial term when a discriminator is given.

    Pass the discriminator only after the warm-up (`adversarial_active`); images (N, 1, H, W) in [−1, 1].
    """
    l1 = F.l1_loss(reconstruction, target)
    ssim = ssim_loss(reconstruction, target, IMAGE_DATA_RANGE)
    spectral = JukeboxLoss(spatial_dims=2)(reconstruction, target)
    kl = autoencoder_kl_loss(z_mu, z_sigma)
    if discriminator is not None:
        fake_logits = discriminator(reconstruction)[-1]
        adversarial = _adversarial_criterion()(fake_logits, target_is_real=True, for_discriminator=False)
    else:
        adversarial = _zero_like_graph(reconstruction)
    total = (
        weights.ae_l1 * l1
        + weights.ae_ssim * ssim
        + weights.ae_spectral * spectral
        + weights.ae_kl * kl
        + weights.ae_adversarial * adversarial
    )
    return AutoencoderLosses(total, l1, ssim, spectral, kl, adversarial)


def discriminator_loss(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares patch loss of the discriminator; `fake` is detached here so the AE gets no gradient from it."""
    criterion = _adversarial_criterion()
    fake_logits = discriminator(fake.detach())[-1]
    real_logits = discriminator(real)[-1]
    fake_term = criterion(fake_logits, target_is_real=False, for_discriminator=True)
    real_term = criterion(real_logits, target_is_real=True, for_discriminator=True)
    return 0.5 * (fake_term + real_term)
