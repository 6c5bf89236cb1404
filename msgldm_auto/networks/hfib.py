"""High-Frequency Injection Block (HFIB): re-inject the high-pass part of a feature map at the end of every stage.

`high = x − GaussianBlur_σ(x)` with one learnable σ per channel, σ = softplus(param) initialised at 1 and capped at
`SIGMA_MAX`. The Gaussian is separable and built every forward from σ, so σ gets a gradient; its radius is fixed at
⌈3·σ_max⌉ (a fixed kernel size keeps shapes static), shrunk only when a feature map is too small for reflect padding.
The blur is applied as a banded matrix product (see `blur_matrix`). Reflect padding makes a constant region — including
one touching the border — have an exactly flat blur, so the high-pass is ~0 there and large only at edges. `[x, high]`
is fused back to x's width by a 3×3 convolution and added to x.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

SIGMA_MAX = 3.0
SIGMA_INIT = 1.0


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class HighFrequencyInjection(nn.Module):
    """x → x + conv([x, x − blur_σ(x)]), same shape as x."""

    def __init__(self, channels: int, sigma_max: float = SIGMA_MAX):
        super().__init__()
        self.channels = channels
        self.sigma_max = sigma_max
        self.radius = math.ceil(3 * sigma_max)
        self.sigma_param = nn.Parameter(torch.full((channels,), _inverse_softplus(SIGMA_INIT)))
        self.fuse = Convolution(2, 2 * channels, channels, kernel_size=3, act="PRELU", norm="INSTANCE")

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.sigma_param).clamp(max=self.sigma_max)

    def gaussian_kernel(self, radius: int) -> torch.Tensor:
        """(channels, 2·radius+1) normalised 1-D Gaussians, one per channel."""
        taps = torch.arange(-radius, radius + 1, dtype=self.sigma_param.dtype, device=self.sigma_param.device)
        kernel = torch.exp(-(taps[None, :] ** 2) / (2 * self.sigma[:, None] ** 2))
        return kernel / kernel.sum(dim=1, keepdim=True)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        # Reflect padding needs pad < side; on the coarsest maps of small images the kernel is truncated instead.
        radius = min(self.radius, x.shape[-2] - 1, x.shape[-1] - 1)
        if radius < 1:
            return x
        kernel = self.gaussian_kernel(radius)
        x = x @ self.blur_matrix(kernel, x.shape[-1]).transpose(-1, -2)   # along W
        return self.blur_matrix(kernel, x.shape[-2]) @ x                  # along H

    @staticmethod
    def blur_matrix(kernel: torch.Tensor, size: int) -> torch.Tensor:
        """(channels, size, size) matrices applying the 1-D kernels with reflect padding: out[i] = Σ_j A[i, j] in[j].

        A matmul instead of a depthwise convolution: on CPU the depthwise weight gradient of a 19-tap kernel costs as
        much as a full 3×3 convolution, a banded matmul a fraction of it, and the reflect padding folds into A.
        """
        radius = (kernel.shape[1] - 1) // 2
        positions = torch.arange(size, device=kernel.device)[:, None] + torch.arange(-radius, radius + 1,
                                                                                     device=kernel.device)
        reflected = positions.abs()
        reflected = torch.where(reflected > size - 1, 2 * (size - 1) - reflected, reflected)       # (size, taps)
        channels = kernel.shape[0]
        index = reflected[None].expand(channels, -1, -1)
        values = kernel[:, None, :].expand(-1, size, -1)
        return torch.zeros(channels, size, size, dtype=kernel.dtype, device=kernel.device).scatter_add(2, index, values)

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.blur(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Residual: the fuse conv instance-normalises, so without `x +` every stage would hand on features stripped of
        # their absolute level, which is what a voxelwise contrast mapping needs (benchmarks.md: +2.6 dB on the
        # measured-contrast set at the cpu budget).
        return x + self.fuse(torch.cat([x, self.high_pass(x)], dim=1))
