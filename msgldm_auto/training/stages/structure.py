"""Stage 2: the structure–style disentangler (per-modality structure encoders with HFIB, MMSF, MSSE, styles, decoders).

Step: the disentangler sees the kept modalities and reconstructs every present one (structure-aware loss), with the
style losses and the structure invariance between the kept subset and its complement (both non-empty by
construction of the availability pattern; the complement is not fused when the invariance weighs 0), plus
segmentation when labels exist.
Metric: one-pass synthesis PSNR (dB) of the dropped-but-present modalities of the validation slices.
"""
from __future__ import annotations

import torch

from msgldm_auto.inference.baselines import FloorModels
from msgldm_auto.networks.disentangler import StructureStyleDisentangler
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.losses import StyleContrastiveLoss, disentangler_loss
from msgldm_auto.training.stages.base import Stage, StepContext
from msgldm_auto.training.stages.common import as_float32, load_regression_prior, mean_psnr


def dropped_pairs(synthesis: torch.Tensor, batch: SliceBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, truth) (H, W) pairs for the modalities that exist but were not given as input."""
    targets = batch.images[:, :, batch.images.shape[2] // 2]
    sample, modality = torch.nonzero(batch.present & ~batch.kept, as_tuple=True)
    return list(zip(synthesis[sample, modality], targets[sample, modality]))


class StructureStage(Stage):
    name, metric_name, main_network = "structure", "one-pass synthesis PSNR (dB)", "disentangler"

    def __init__(self, config: ConfigurationPlan, num_modalities: int, num_label_classes: int, device: torch.device,
                 learning_rate: float, regression_prior: FloorModels | None = None):
        super().__init__()
        self.config = config
        disentangler = StructureStyleDisentangler(config, num_modalities, num_label_classes)
        load_regression_prior(disentangler, regression_prior)
        self.networks = {
            "disentangler": disentangler.to(device),
            "style_contrastive": StyleContrastiveLoss().to(device),   # holds the learnable temperature
        }
        parameters = [p for net in self.networks.values() for p in net.parameters()]
        self.optimizers = {"disentangler": torch.optim.Adam(parameters, lr=learning_rate)}
        self.keep_average(config.stage_schedule(self.name).ema_decay)

    def parallelize(self, context, compile_networks: bool) -> None:
        super().parallelize(context, compile_networks)
        self.train_modules["style_contrastive"] = self.networks["style_contrastive"]  # a loss: no DDP wrapper needed

    def train_step(self, batch: SliceBatch, step: StepContext) -> dict[str, float]:
        # the complement's fusion only feeds the invariance loss: not built when its weight is 0
        complement = batch.present & ~batch.kept if self.config.losses.structure_invariance else None
        with step.autocast():
            output = as_float32(self.module("disentangler")(batch.images, batch.kept, other_subset=complement))
        losses = disentangler_loss(output, batch.images[:, :, batch.images.shape[2] // 2], batch.present,
                                   self.config.losses, self.config.ablations, self.networks["style_contrastive"],
                                   seg_target=batch.seg, fused_other_subset=output.fused_other)
        step.optimize("disentangler", losses.total)
        results = losses.as_floats()
        results["loss"] = results.pop("total")
        return results

    @torch.no_grad()
    def validation_metric(self, batches: list[SliceBatch], device: torch.device) -> float:
        pairs = []
        for batch in batches:
            batch = batch.to(device)
            output = self.prediction_network()(batch.images, batch.kept)
            pairs.extend(dropped_pairs(output.synthesis, batch))
        return mean_psnr(pairs)
