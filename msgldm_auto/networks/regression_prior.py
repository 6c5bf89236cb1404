"""The per-voxel regression prior: each modality's polynomial estimate from the other given modalities, the start
that a synthesis network corrects (`regression_prior_degree` of DisentanglerPlan and ControlPlan).

On the measured-contrast set both networks sat at the per-voxel regression floor on PD after the `cpu` budget: a
near-voxelwise contrast that the networks had to rediscover from scratch. A network that corrects this estimate sees
its logits (atanh) as input and outputs `tanh(network + trust × logits)`, with the trust per (target, pattern)
learned, so it learns what the voxel's own intensities do not already say. Measured (documentation/benchmarks.md,
levers), it paid for the plain UNet control and not for the disentangler, so the planner gives it to the control.

The polynomials are the regression floor's (inference/baselines.py), fitted on the fold's training voxels in the
normalised space the networks see, one per (target, availability pattern) and stored here as buffers, so that a
checkpoint carries them. For modality m under availability pattern p the estimate uses only the modalities of
p other than m, so an absent modality has no influence on it; with no such fit (m is the only one given, or no
training case had m with any of them) the estimate is 0, i.e. no prior.
"""
from __future__ import annotations

import torch
from torch import nn

from msgldm_auto.inference.baselines import FloorModels, PolynomialFit, monomial_exponents

ESTIMATE_LIMIT = 0.999      # keeps atanh finite; the network still reaches ±1 through its own output


class RegressionPrior(nn.Module):
    """(B, M, H, W) images + (B, M) bool availability → (B, M, H, W) estimate of every modality, in (−1, 1)."""

    def __init__(self, num_modalities: int, degree: int):
        super().__init__()
        patterns, self.num_modalities = 2 ** num_modalities, num_modalities
        self.exponents = monomial_exponents(num_modalities, degree)          # K monomials over the M modalities
        self.register_buffer("coefficients", torch.zeros(num_modalities, patterns, len(self.exponents)))
        self.register_buffer("input_mean", torch.zeros(num_modalities, patterns, num_modalities))
        self.register_buffer("input_scale", torch.ones(num_modalities, patterns, num_modalities))
        self.register_buffer("target_range", torch.tensor([[-1.0, 1.0]] * num_modalities))        # (M, 2)
        # How far the network trusts each (target, pattern) polynomial, learned from 1: a poor voxelwise fit (T1 from
        # T2 and PD) passes the inputs' noise and lesions into the target, which the network would otherwise have to
        # cancel voxel by voxel.
        self.gain = nn.Parameter(torch.ones(num_modalities, patterns))

    def load_fits(self, floors: FloorModels) -> None:
        """Copy the regression floor's polynomials into the buffers: for every target and pattern, the fit of the
        largest subset of the pattern's other modalities (FloorModels.polynomial_fit)."""
        names = floors.modalities
        if len(names) != self.num_modalities:
            raise ValueError(f"floors fitted on {len(names)} modalities, the prior has {self.num_modalities}")
        basis = {tuple(e): k for k, e in enumerate(self.exponents)}
        for target_index, target in enumerate(names):
            if target in floors.target_range:
                self.target_range[target_index] = torch.tensor(floors.target_range[target])
            for pattern in range(2 ** len(names)):
                given = [n for i, n in enumerate(names) if pattern >> i & 1 and n != target]
                if given and any(set(f.present) <= set(given) for f in floors.polynomial.get(target, {}).values()):
                    self._load_fit(target_index, pattern, floors.polynomial_fit(target, given), names, basis)

    def _load_fit(self, target: int, pattern: int, fit: PolynomialFit, names: list[str],
                  basis: dict[tuple, int]) -> None:
        columns = [names.index(n) for n in fit.present]
        for exponent, coefficient in zip(fit.exponents, fit.coefficients):
            full = [0] * len(names)
            for column, power in zip(columns, exponent):
                full[column] = power
            self.coefficients[target, pattern, basis[tuple(full)]] = coefficient
        self.input_mean[target, pattern, columns] = torch.tensor(fit.input_mean, dtype=self.input_mean.dtype)
        self.input_scale[target, pattern, columns] = torch.tensor(fit.input_scale, dtype=self.input_scale.dtype)

    def _rows(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index pair selecting, for every sample and target, its (target, availability pattern) entry: (B, M) each."""
        pattern = (present.long() << torch.arange(present.shape[1], device=present.device)).sum(dim=1)   # (B,)
        targets = torch.arange(self.num_modalities, device=present.device)[None, :]
        return targets, pattern[:, None]

    def forward(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        rows = self._rows(present)
        mean, scale = self.input_mean[rows], self.input_scale[rows]          # (B, M target, M input)
        coefficients = self.coefficients[rows]                              # (B, M, K)
        # Absent inputs stand at z = 0, so every monomial holding one vanishes (their coefficients are 0 anyway).
        z = (images.float()[:, None] - mean[..., None, None]) / scale[..., None, None]   # (B, M, M, H, W)
        z = torch.where(present[:, None, :, None, None], z, torch.zeros_like(z))
        estimate = torch.zeros(z.shape[:2] + z.shape[3:], dtype=z.dtype, device=z.device)
        for k, exponent in enumerate(self.exponents):
            monomial = torch.ones_like(estimate)
            for column, power in enumerate(exponent):
                if power:
                    monomial = monomial * z[:, :, column] ** power
            estimate = estimate + coefficients[:, :, k, None, None] * monomial
        has_fit = coefficients.ne(0).any(dim=2)[..., None, None]
        low, high = self.target_range[:, 0, None, None], self.target_range[:, 1, None, None]
        estimate = torch.where(has_fit, torch.maximum(torch.minimum(estimate, high), low), estimate)
        return estimate.clamp(-ESTIMATE_LIMIT, ESTIMATE_LIMIT)

    def logits(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The estimate before tanh (B, M, H, W): what a network sees of the prior."""
        return torch.atanh(self(images, present))

    def trust(self, present: torch.Tensor) -> torch.Tensor:
        """(B, M, 1, 1) learned weight of each sample's (target, pattern) prior: what a network adds is
        trust × logits."""
        return self.gain[self._rows(present)][..., None, None]
