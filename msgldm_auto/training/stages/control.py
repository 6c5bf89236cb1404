"""The plain UNet control's one stage (networks/plain_unet.py), trained like MSG-LDM's stages by the same loop.

Step: the UNet sees the kept modalities (the drawn availability pattern) and is scored on the modalities that exist
but were dropped, with L1 + SSIM: exactly the synthesis task that prediction asks of it.
Metric: synthesis PSNR (dB) of the dropped-but-present modalities of the validation slices, like the structure stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from msgldm_auto.inference.baselines import FloorModels
from msgldm_auto.networks.plain_unet import PlainUNet
from msgldm_auto.plans import CONTROL_STAGE, ConfigurationPlan
from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.losses import ssim_loss
from msgldm_auto.training.stages.base import Stage, StepContext
from msgldm_auto.training.stages.common import IMAGE_DATA_RANGE, as_float32, load_regression_prior, mean_psnr
from msgldm_auto.training.stages.structure import dropped_pairs

SSIM_WEIGHT = 1.0


def synthesis_loss(synthesis: torch.Tensor, batch: SliceBatch) -> torch.Tensor:
    """L1 + SSIM over the dropped-but-present modalities' centre slices; (B, M, H, W) synthesis."""
    pairs = dropped_pairs(synthesis, batch)
    if not pairs:
        return synthesis.sum() * 0.0
    prediction = torch.stack([p for p, _ in pairs])[:, None]
    target = torch.stack([t for _, t in pairs])[:, None]
    ssim = ssim_loss(prediction, target, IMAGE_DATA_RANGE)
    return F.l1_loss(prediction, target) + SSIM_WEIGHT * ssim


class PlainUNetStage(Stage):
    name, metric_name, main_network = CONTROL_STAGE, "synthesis PSNR (dB)", "unet"

    def __init__(self, config: ConfigurationPlan, num_modalities: int, device: torch.device, learning_rate: float,
                 regression_prior: FloorModels | None = None):
        super().__init__()
        unet = PlainUNet(config, num_modalities)
        load_regression_prior(unet, regression_prior)
        self.networks = {"unet": unet.to(device)}
        self.optimizers = {"unet": torch.optim.Adam(self.networks["unet"].parameters(), lr=learning_rate)}
        self.keep_average(config.stage_schedule(self.name).ema_decay)

    def train_step(self, batch: SliceBatch, step: StepContext) -> dict[str, float]:
        with step.autocast():
            synthesis = as_float32(self.module("unet")(batch.images, batch.kept))
        loss = synthesis_loss(synthesis, batch)
        step.optimize("unet", loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_metric(self, batches: list[SliceBatch], device: torch.device) -> float:
        pairs = []
        for batch in batches:
            batch = batch.to(device)
            pairs.extend(dropped_pairs(self.prediction_network()(batch.images, batch.kept), batch))
        return mean_psnr(pairs)
