"""Small stand-ins for the training tests: an in-memory preprocessed dataset and a tiny synthesis stage."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from msgldm_auto.training.data_loader import SliceBatch
from msgldm_auto.training.stages.base import Stage, StepContext


@dataclass
class MemoryCase:
    data: np.ndarray                     # (P, Z, H, W) float32
    present: list[int]
    seg: np.ndarray | None = None
    foreground_slices: list[int] = field(default_factory=list)


class MemoryReader:
    """Stands in for preprocessing.storage: cases whose voxel value encodes (modality, slice) for easy checks."""

    def __init__(self, cases: dict[str, MemoryCase]):
        self.cases = cases

    def open(self, case_id: str) -> MemoryCase:
        return self.cases[case_id]


def coded_case(present: list[int], num_slices: int = 6, size: int = 8, foreground=None, seg: bool = False,
               case_number: int = 0) -> MemoryCase:
    """Voxel value = (modality*100 + slice*10 + case)/1000: each slice of each modality is identifiable."""
    data = np.zeros((len(present), num_slices, size, size), dtype=np.float32)
    for row, modality in enumerate(present):
        for z in range(num_slices):
            data[row, z] = (modality * 100 + z * 10 + case_number) / 1000.0
    labels = np.zeros((num_slices, size, size), dtype=np.uint8) if seg else None
    foreground_slices = list(range(num_slices)) if foreground is None else list(foreground)
    return MemoryCase(data, present, labels, foreground_slices)


def smooth_case(present: list[int], rng: np.random.Generator, num_slices: int = 4, size: int = 8) -> MemoryCase:
    """Modalities are fixed functions of one random anatomy, so one can be learned from another."""
    anatomy = rng.uniform(0, 1, size=(num_slices, size, size)).astype(np.float32)
    data = np.stack([np.clip(anatomy ** (1 + m) * 2 - 1, -1, 1) for m in present]).astype(np.float32)
    return MemoryCase(data, present, None, list(range(num_slices)))


class TinySynthesisStage(Stage):
    """Predicts every modality's centre slice from the kept ones; loss on the dropped-but-present ones."""

    name, metric_name, main_network = "tiny", "psnr", "net"

    def __init__(self, num_modalities: int, context_slices: int, seed: int = 0, lr: float = 1e-2):
        super().__init__()
        torch.manual_seed(seed)
        channels = num_modalities * (context_slices + 1)
        self.networks["net"] = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
                                                   torch.nn.Conv2d(8, num_modalities, 3, padding=1))
        self.optimizers["net"] = torch.optim.Adam(self.networks["net"].parameters(), lr=lr)

    @staticmethod
    def inputs(batch: SliceBatch) -> torch.Tensor:
        b, m, c, h, w = batch.images.shape
        kept = batch.kept[:, :, None, None, None].float()
        images = (batch.images * kept).reshape(b, m * c, h, w)
        return torch.cat([images, kept[:, :, 0].expand(b, m, h, w)], dim=1)

    def _loss(self, module, batch: SliceBatch) -> torch.Tensor:
        prediction = module(self.inputs(batch))
        target = batch.images[:, :, batch.images.shape[2] // 2]
        weight = (batch.present & ~batch.kept)[:, :, None, None].float()
        # A plain mean over the local batch (no data-dependent normaliser), so DDP's gradient average over ranks equals
        # the gradient of one process at the global batch.
        return ((prediction - target) ** 2 * weight).mean()

    def train_step(self, batch: SliceBatch, step: StepContext) -> dict[str, float]:
        with step.autocast():
            loss = self._loss(self.module("net"), batch)
        step.optimize("net", loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_metric(self, batches, device) -> float:
        mse = np.mean([float(self._loss(self.networks["net"], b.to(device))) for b in batches])
        return float(10 * np.log10(4.0 / max(mse, 1e-12)))


def tiny_plans(dataset_name: str, modalities=("T1", "T2", "FLAIR"), context_slices: int = 1, batch_size: int = 4,
               labels: bool = False):
    """A real `Plans` with very small networks: 16² slices, f = 4, DDIM 2 steps."""
    from msgldm_auto.plans import (
        AutoencoderPlan,
        ConfigurationPlan,
        DiffusionPlan,
        DisentanglerPlan,
        Plans,
        StageSchedule,
        UNetPlan,
    )

    config = ConfigurationPlan(
        slice_axis=2, spacing=[2.0, 2.0], image_size=[16, 16], latent_scale=4, context_slices=context_slices,
        batch_size=batch_size,
        autoencoder=AutoencoderPlan(channels=[8, 8, 8], attention_levels=[False, False, False], norm_num_groups=4),
        disentangler=DisentanglerPlan(structure_channels=[8, 8, 8], style_dim=4, style_channels=8, decoder_channels=8,
                                      prior_channels=8, msse_heads=2),
        unet=UNetPlan(channels=[8, 16], attention_levels=[False, False], num_head_channels=8, norm_num_groups=4),
        diffusion=DiffusionPlan(steps=2),
        schedule={s: StageSchedule(epochs=1, iterations_per_epoch=2, learning_rate=1e-3) for s in ("ae", "structure",
                                                                                                   "ldm")},
        data_identifier="MSGLDMPlans_2d",
    )
    return Plans(dataset_name=dataset_name, plans_name="MSGLDMPlans", preset="cpu", modalities=list(modalities),
                 intensity_p995={m: 100.0 for m in modalities}, configurations={"2d": config},
                 has_labels=labels, num_label_classes=2 if labels else 0)


def write_preprocessed_dataset(root, dataset_name: str = "Dataset001_Toy", num_cases: int = 5,
                               missing: dict | None = None,
                               num_slices: int = 5, seed: int = 0, context_slices: int = 1):
    """MSGLDM_PREPROCESSED/<dataset>/ with dataset.json, plans and cases written through preprocessing.storage."""
    import json
    from pathlib import Path

    from msgldm_auto.preprocessing.storage import save_case

    folder = Path(root) / dataset_name
    plans = tiny_plans(dataset_name, context_slices=context_slices)
    plans.save(folder / "MSGLDMPlans.json")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"},
                                                     "file_ending": ".nii.gz", "numTraining": num_cases}))
    rng = np.random.default_rng(seed)
    missing = missing or {}
    for i in range(num_cases):
        case_id = f"case_{i:03d}"
        present = [m for m in range(3) if m not in missing.get(case_id, [])]
        anatomy = rng.uniform(0, 1, size=(num_slices, 16, 16)).astype(np.float32)
        data = np.stack([np.clip(anatomy ** (1 + m) * 2 - 1, -1, 1) for m in present])
        data[:, 0] = -1.0                                   # first slice: no head voxels
        properties = axial_identity_properties(case_id, present, num_slices, 16, list(range(1, num_slices)))
        save_case(folder / "MSGLDMPlans_2d", case_id, data, present, None, properties)
    return folder


def axial_identity_properties(case_id: str, present: list[int], num_slices: int, size: int,
                              foreground_slices: list[int]):
    """`CaseProperties` of a RAS-stored input of `num_slices` axial slices of size x size at 1 mm, all of it head:
    preprocessing only slices it (no flips, cropping, resampling or padding)."""
    import numpy as np

    from msgldm_auto.preprocessing.orientation import Reorientation
    from msgldm_auto.preprocessing.properties import CaseProperties, OriginalGrid, PackedMask

    ras_direction = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]   # ITK (LPS) direction of a volume stored in RAS
    ras_shape = [size, size, num_slices]
    return CaseProperties(
        case_id=case_id, present=list(present), resampled_channels=[],
        original=OriginalGrid([num_slices, size, size], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], ras_direction),
        reorientation=Reorientation.from_direction(ras_direction),
        ras_shape=ras_shape, ras_spacing=[1.0, 1.0, 1.0], crop_box=[[0, n] for n in ras_shape],
        head_mask=PackedMask.pack(np.ones(ras_shape, dtype=bool)), skull_stripped=True,
        slice_axis=2, cropped_shape=[num_slices, size, size], resampled_shape=[num_slices, size, size],
        image_size=[size, size], in_plane_offset=[0, 0], spacing=[1.0, 1.0, 1.0],
        normalization="p995", percentiles={c: [0.0, 50.0, 100.0] for c in present}, scale={c: 100.0 for c in present},
        foreground_slices=list(foreground_slices),
    )
