"""Stage 1: the shared 2D autoencoder (one KL autoencoder for all modalities, single-modality slices).

Step: L1 + SSIM + spectral + KL (+ patch-adversarial after the warm-up, with its own discriminator step).
Metric: reconstruction PSNR (dB) of the validation slices' present modalities, encoded to the posterior mean.
At the end the latent scale factor is set to 1 / std of the training latents, so diffusion sees unit-variance latents.
"""
from __future__ import annotations

import torch

from msgldm_auto.networks.autoencoder import LatentAutoencoder, build_discriminator
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.losses import adversarial_active, autoencoder_generator_loss, discriminator_loss
from msgldm_auto.training.stages.base import Stage, StepContext
from msgldm_auto.training.stages.common import as_float32, mean_psnr

SCALE_FACTOR_BATCHES = 4   # training batches whose latents estimate the scale factor


def present_centre_slices(batch: SliceBatch) -> torch.Tensor:
    """(N, 1, H, W): the centre slice of every present modality of every sample."""
    centre = batch.images[:, :, batch.images.shape[2] // 2]
    return centre[batch.present][:, None]


class AutoencoderStage(Stage):
    name, metric_name, main_network = "ae", "reconstruction PSNR (dB)", "autoencoder"

    def __init__(self, config: ConfigurationPlan, device: torch.device, learning_rate: float):
        super().__init__()
        self.config, self.weights = config, config.losses
        self.networks = {"autoencoder": LatentAutoencoder(config).to(device),
                         "discriminator": build_discriminator(config).to(device)}
        self.optimizers = {name: torch.optim.Adam(net.parameters(), lr=learning_rate)
                           for name, net in self.networks.items()}

    def _slices(self, batch: SliceBatch) -> torch.Tensor:
        """Keep the plan's batch size: a random subset of the present single-modality slices (torch RNG,
        checkpointed)."""
        slices = present_centre_slices(batch)
        chosen = torch.randperm(slices.shape[0])[: batch.images.shape[0]]
        return slices[chosen.to(slices.device)]

    def train_step(self, batch: SliceBatch, step: StepContext) -> dict[str, float]:
        images = self._slices(batch)
        adversarial = adversarial_active(step.progress, self.weights)
        with step.autocast():
            reconstruction, z_mu, z_sigma = as_float32(self.module("autoencoder")(images))
        # Losses in float32, outside autocast (the spectral loss's FFT has no bf16 kernel). The raw discriminator
        # (not its DDP wrapper): this pass only feeds the generator's gradient.
        losses = autoencoder_generator_loss(reconstruction, images, z_mu, z_sigma, self.weights,
                                            self.networks["discriminator"] if adversarial else None)
        step.optimize("autoencoder", losses.total)
        results = losses.as_floats()
        if adversarial:
            d_loss = discriminator_loss(self.module("discriminator"), images, reconstruction.detach())
            step.optimize("discriminator", d_loss)
            results["discriminator"] = float(d_loss.detach())
        results["loss"] = results.pop("total")
        return results

    @torch.no_grad()
    def validation_metric(self, batches: list[SliceBatch], device: torch.device) -> float:
        autoencoder = self.networks["autoencoder"]
        pairs = []
        for batch in batches:
            images = present_centre_slices(batch.to(device))
            reconstruction = autoencoder.decode(autoencoder.encode(images))
            pairs.extend(zip(reconstruction[:, 0], images[:, 0]))
        return mean_psnr(pairs)

    @torch.no_grad()
    def finish(self, batches, device: torch.device) -> None:
        autoencoder = self.networks["autoencoder"]
        autoencoder.eval()
        autoencoder.scale_factor.fill_(1.0)
        latents = [autoencoder.encode(present_centre_slices(next(batches).to(device)))
                   for _ in range(SCALE_FACTOR_BATCHES)]
        std = torch.cat([z.flatten() for z in latents]).std()
        autoencoder.scale_factor.fill_(float(1.0 / std.clamp(min=1e-6)))
        autoencoder.train()
