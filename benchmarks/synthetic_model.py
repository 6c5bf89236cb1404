"""A BraTS-sized stand-in for the memory and GPU benchmarks: plans made by the real planner for a BraTS-like dataset
fingerprint (240 x 240 x 155, 1 mm, four contrasts), networks of exactly those plans with RANDOM weights (memory and
speed do not depend on the weight values), and a synthetic head of the same size. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, write_image
from msgldm_auto.inference.model_loading import FoldNetworks, TrainedModel, build_networks, checkpoint_path
from msgldm_auto.plans import Plans
from planning.fingerprint import CaseFingerprint, DatasetFingerprint
from planning.planner import plan_experiment

BRATS_SHAPE = (155, 240, 240)                     # numpy (k, j, i), 1 mm isotropic
BRATS_MODALITIES = ("T1", "T1ce", "T2", "FLAIR")
# The head box of a BraTS case in RAS (i, j, k) voxels: about 140 x 175 x 140 mm of the 240 x 240 x 155 grid.
BRATS_CROP_BOX = [[50, 190], [32, 207], [5, 145]]
DATASET_NAME = "Dataset990_BraTSLike"


def brats_dataset_json() -> DatasetJson:
    return DatasetJson(channel_names=dict(enumerate(BRATS_MODALITIES)), file_ending=".nii.gz", num_training=20,
                       name="BraTSLike")


def brats_fingerprint(cases: int = 20) -> DatasetFingerprint:
    """What msgldm_extract_fingerprint would report for BraTS: identical grids, complete cases."""
    percentiles = {str(c): [0.0, 400.0, 1000.0] for c in range(len(BRATS_MODALITIES))}
    found = [CaseFingerprint(case_id=f"brats_{i:03d}", shape=list(BRATS_SHAPE), spacing=[1.0, 1.0, 1.0],
                             direction=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], present=list(range(len(BRATS_MODALITIES))),
                             crop_box=[list(b) for b in BRATS_CROP_BOX], percentiles=percentiles, skull_stripped=True)
             for i in range(cases)]
    return DatasetFingerprint(dataset_name=DATASET_NAME, modalities=list(BRATS_MODALITIES), cases=found)


def brats_plans(preset: str = "default", device: str = "cuda") -> Plans:
    """Plans the real planner makes for a BraTS-like dataset with the given preset."""
    return plan_experiment(brats_fingerprint(), brats_dataset_json(), preset=preset, device=device)


def random_networks(plans: Plans, device: torch.device | str, seed: int = 0, fold: str = "0") -> FoldNetworks:
    torch.manual_seed(seed)
    networks = build_networks(plans, plans.configuration("2d"), ("ae", "structure", "ldm"))
    ae, disentangler, denoiser = (networks[s].to(torch.device(device)).eval() for s in ("ae", "structure", "ldm"))
    return FoldNetworks(fold, autoencoder=ae, disentangler=disentangler, denoiser=denoiser)


def trained_model_stub(plans: Plans, folder: Path) -> TrainedModel:
    return TrainedModel(Path(folder), plans, "2d", brats_dataset_json())


def write_random_model(results_dataset_folder: Path, plans: Plans, seed: int = 0) -> Path:
    """A model folder `<plans>__2d/fold_0/{ae,structure,ldm}/checkpoint_final.pth` with random inference weights."""
    folder = Path(results_dataset_folder) / f"{plans.plans_name}__2d"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    plans.save(folder / "plans.json")
    brats_dataset_json().save(folder / "dataset.json")
    from msgldm_auto.training.checkpoint import save_checkpoint

    networks = random_networks(plans, "cpu", seed)
    for stage, network in (("ae", networks.autoencoder), ("structure", networks.disentangler),
                           ("ldm", networks.denoiser)):
        # What prediction reads of a checkpoint (model_loading.load_inference_weights), at the path it looks in.
        payload = {"stage": stage, "iteration": 0, "inference_weights": network.state_dict(),
                   "plans_name": plans.plans_name, "configuration": "2d", "fold": "0"}
        save_checkpoint(payload, checkpoint_path(folder, "0", stage, "final"))
    return folder


def brats_case(shape: tuple[int, int, int] = BRATS_SHAPE, present: tuple[int, ...] = (0, 1, 2),
               seed: int = 0) -> dict[int, Image]:
    """A smooth ellipsoidal head with tissue-like texture, one image per present contrast (zero background)."""
    rng = np.random.default_rng(seed)
    k, j, i = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    radius = (k[:, None, None] / 0.9) ** 2 + (j[None, :, None] / 0.73) ** 2 + (i[None, None, :] / 0.58) ** 2
    head = radius < 1.0
    coarse = rng.random((8, 8, 8)).astype(np.float32)
    from scipy.ndimage import zoom

    texture = zoom(coarse, [s / 8 for s in shape], order=1)[: shape[0], : shape[1], : shape[2]]
    images = {}
    for channel in present:
        contrast = (0.3 + 0.7 * texture) ** (1 + channel) * 1000.0 * (1 - 0.3 * radius)
        array = np.where(head, contrast + rng.normal(0, 10, shape).astype(np.float32), 0).astype(np.float32)
        images[channel] = Image(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    return images


def write_case(folder: Path, case_id: str, images: dict[int, Image], file_ending: str = ".nii.gz") -> list[Path]:
    paths = []
    for channel, image in images.items():
        path = Path(folder) / f"{case_id}_{channel:04d}{file_ending}"
        write_image(image, path)
        paths.append(path)
    return paths
