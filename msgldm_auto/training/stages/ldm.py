"""Stage 3: the guided latent denoiser, with the autoencoder and the disentangler frozen.

Step: encode every modality (and its context neighbours) with the frozen AE; run the frozen disentangler on the kept
modalities for the structure prior, the styles and the one-pass synthesis (encoded too); noise the target (latent or
residual) at a timestep up to `training_timestep_limit` and regress ε or v, counting only dropped-but-present
modalities (the trainer then updates the EMA).
Metric: synthesis PSNR (dB) of the dropped-but-present modalities, sampled with the EMA weights at the planned DDIM
steps (`sample_latents`) from a fixed noise seed, decoded to images as prediction decodes them (`decode_sample`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from msgldm_auto.diffusion.sampler import sample_latents
from msgldm_auto.diffusion.scheduler import make_scheduler
from msgldm_auto.diffusion.targets import (
    decode_sample,
    diffusion_loss_mask,
    make_training_example,
    masked_diffusion_loss,
    training_timestep_limit,
)
from msgldm_auto.networks.denoiser import GuidedDenoiser
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.stages.base import Stage, StepContext
from msgldm_auto.training.stages.common import encode_images, mean_psnr
from msgldm_auto.training.stages.structure import dropped_pairs

VALIDATION_NOISE_SEED = 1234


@dataclass
class Conditioning:
    clean: torch.Tensor                 # (B, M, L, h, w) centre-slice latents
    neighbours: torch.Tensor | None     # (B, M, C-1, L, h, w)
    prior: torch.Tensor
    one_pass: torch.Tensor              # (B, M, L, h, w) latents of the one-pass synthesis
    styles: torch.Tensor
    one_pass_images: torch.Tensor       # (B, M, H, W) the one-pass synthesis itself


class LatentDiffusionStage(Stage):
    name, metric_name, main_network = "ldm", "synthesis PSNR (dB)", "denoiser"

    def __init__(self, config: ConfigurationPlan, num_modalities: int, autoencoder: torch.nn.Module,
                 disentangler: torch.nn.Module, device: torch.device, learning_rate: float):
        super().__init__()
        self.config, self.autoencoder, self.disentangler = config, autoencoder, disentangler
        self.scheduler = make_scheduler(config)
        self.networks = {"denoiser": GuidedDenoiser(config, num_modalities).to(device)}
        self.optimizers = {"denoiser": torch.optim.AdamW(self.networks["denoiser"].parameters(), lr=learning_rate)}
        self.keep_average(config.diffusion.ema_decay)
        self.max_timestep = training_timestep_limit(self.scheduler, config.diffusion)

    @torch.no_grad()
    def condition(self, batch: SliceBatch) -> Conditioning:
        latents = encode_images(self.autoencoder, batch.images)              # (B, M, C, L, h, w)
        centre = latents.shape[2] // 2
        neighbours = None
        if latents.shape[2] > 1:
            neighbours = torch.cat([latents[:, :, :centre], latents[:, :, centre + 1:]], dim=2)
        output = self.disentangler(batch.images, batch.kept)
        one_pass = encode_images(self.autoencoder, output.synthesis[:, :, None])[:, :, 0]
        return Conditioning(latents[:, :, centre], neighbours, output.prior, one_pass, output.styles, output.synthesis)

    def train_step(self, batch: SliceBatch, step: StepContext) -> dict[str, float]:
        cond = self.condition(batch)
        example = make_training_example(self.scheduler, cond.clean, cond.one_pass, batch.present,
                                        self.config.diffusion.target, max_timestep=self.max_timestep)
        with step.autocast():
            prediction = self.module("denoiser")(example.noisy, example.timesteps, cond.clean, batch.kept,
                                                 cond.neighbours, cond.prior, cond.one_pass, cond.styles)
        loss = masked_diffusion_loss(prediction.float(), example.target, diffusion_loss_mask(batch.present, batch.kept))
        step.optimize("denoiser", loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_metric(self, batches: list[SliceBatch], device: torch.device) -> float:
        denoiser = self.prediction_network().eval()
        generator = torch.Generator().manual_seed(VALIDATION_NOISE_SEED)   # fixed, and the training RNG stays untouched
        pairs = []
        for batch in batches:
            batch = batch.to(device)
            cond = self.condition(batch)
            latents = sample_latents(denoiser, self.scheduler, self.config, clean=cond.clean, kept=batch.kept,
                                     neighbours=cond.neighbours, prior=cond.prior, one_pass=cond.one_pass,
                                     styles=cond.styles, generator=generator)
            images = decode_sample(self.autoencoder, latents, cond.one_pass, cond.one_pass_images,
                                   self.config.diffusion.target)
            pairs.extend(dropped_pairs(images, batch))
        return mean_psnr(pairs)
