"""The plain UNet control: one 2D UNet any→all, the yardstick that says whether MSG-LDM's structure–style machinery
pays.

Input: the C context slices of every modality (zeros where a modality is absent, exactly as the disentangler sees
them) plus one availability channel per modality; output: every modality's centre slice through tanh, in [−1, 1].
No latent space, no styles, no fusion: early fusion of everything by a MONAI `UNet`, widths from `ControlPlan`.
An absent modality has no influence: its image channels are zeroed before the network, and its mask channel is 0.
With `control.regression_prior_degree` > 0 (the planner's choice: measured, it paid for the control and not for the
disentangler) the UNet corrects the per-voxel regression prior that MSG-LDM's decoders can also correct
(networks/regression_prior.py): it sees the prior's logits as M more input channels, and a learned trust × those
logits is added to its output before the tanh.
"""
from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.networks.regression_prior import RegressionPrior
from msgldm_auto.plans import ConfigurationPlan


class PlainUNet(nn.Module):
    """(B, M, C, H, W) images + (B, M) bool availability → (B, M, H, W) synthesis of every modality."""

    def __init__(self, config: ConfigurationPlan, num_modalities: int):
        super().__init__()
        plan = config.control
        if config.size_multiple % 2 ** (len(plan.channels) - 1):
            raise MSGLDMError(f"plans: control.channels {plan.channels} down-sample {2 ** (len(plan.channels) - 1)}x, "
                              f"which does not divide the slice size multiple {config.size_multiple}; re-plan "
                              "(msgldm_plan_experiment) or shorten control.channels")
        self.num_modalities = num_modalities
        self.context_slices = config.context_slices
        self.unet = UNet(
            spatial_dims=2,
            in_channels=num_modalities * (config.context_slices + 1 + int(plan.regression_prior_degree > 0)),
            out_channels=num_modalities,
            channels=tuple(plan.channels),
            strides=(2,) * (len(plan.channels) - 1),
            num_res_units=plan.num_res_units,
            norm="INSTANCE",
        )
        degree = plan.regression_prior_degree
        self.regression_prior = RegressionPrior(num_modalities, degree) if degree > 0 else None

    def forward(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        batch, modalities, context, height, width = images.shape
        if modalities != self.num_modalities or context != self.context_slices:
            raise ValueError(f"images must be (B, {self.num_modalities}, {self.context_slices}, H, W), "
                             f"got {tuple(images.shape)}")
        mask = present[:, :, None, None, None].to(images.dtype)
        clean = torch.where(present[:, :, None, None, None], images, torch.zeros_like(images))
        availability = mask[:, :, 0].expand(batch, modalities, height, width)
        inputs = [clean.reshape(batch, modalities * context, height, width), availability]
        if self.regression_prior is None:
            return torch.tanh(self.unet(torch.cat(inputs, dim=1)))
        logits = self.regression_prior.logits(clean[:, :, context // 2], present)
        correction = self.unet(torch.cat([*inputs, logits], dim=1))
        return torch.tanh(correction + self.regression_prior.trust(present) * logits)
