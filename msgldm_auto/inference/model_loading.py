"""Find a trained model in MSGLDM_RESULTS and rebuild its networks from the plans and the stage checkpoints.

Prediction needs only `inference_weights` of each stage's checkpoint (EMA weights where the stage keeps an EMA):
`fold_N/structure/` for the one-pass decoder; `fold_N/ae/` and `fold_N/ldm/` too for diffusion; `fold_N/unet/` alone
for the plain UNet control (`method="unet"`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.choices import CHECKPOINT_CHOICES
from msgldm_auto.paths import resolve_dataset_name, results_root
from msgldm_auto.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS_NAME, STAGES, ConfigurationPlan, Plans

ALL_STAGES = STAGES


@dataclass
class FoldNetworks:
    """The networks of one fold that prediction runs, in eval mode: the disentangler alone for the one-pass decoder,
    with the autoencoder and the denoiser for diffusion; for the plain UNet control, `control` alone."""
    fold: str
    autoencoder: torch.nn.Module | None = None
    disentangler: torch.nn.Module | None = None
    denoiser: torch.nn.Module | None = None
    control: torch.nn.Module | None = None


@dataclass
class TrainedModel:
    """What a model folder holds besides the weights."""
    folder: Path
    plans: Plans
    configuration_name: str
    dataset: DatasetJson

    @property
    def configuration(self) -> ConfigurationPlan:
        return self.plans.configuration(self.configuration_name)


def model_folder_name(plans_name: str, configuration: str) -> str:
    return f"{plans_name}__{configuration}"


def find_model_folder(dataset: str | int, configuration: str = DEFAULT_CONFIGURATION,
                      plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    """`MSGLDM_RESULTS/DatasetXXX_Name/<plans>__<config>`; the error names the models there and how to get one."""
    dataset_folder = results_root() / resolve_dataset_name(dataset)
    folder = dataset_folder / model_folder_name(plans_name, configuration)
    if not (folder / "plans.json").is_file():
        trained = sorted(p.name for p in dataset_folder.glob("*__*") if (p / "plans.json").is_file())
        raise MSGLDMError(
            f"{folder}: no trained model here (plans.json missing); models of this dataset (<plans>__<config>, "
            f"pick with -p/-c): {', '.join(trained) or 'none'}; train one with msgldm_train or install one with "
            "msgldm_install_pretrained_model_from_zip"
        )
    return folder


def load_trained_model(model_folder: Path) -> TrainedModel:
    model_folder = Path(model_folder)
    plans = Plans.load(model_folder / "plans.json")
    name = model_folder.name.split("__", 1)[1] if "__" in model_folder.name else next(iter(plans.configurations))
    dataset = DatasetJson.load(model_folder / "dataset.json")
    if dataset.modalities != plans.modalities:
        raise MSGLDMError(f"{model_folder}: dataset.json channels {dataset.modalities} differ from the plans' "
                          f"{plans.modalities}; re-plan or restore the original files")
    return TrainedModel(model_folder, plans, name, dataset)


def normalise_fold(fold: str | int) -> str:
    text = str(fold).strip()
    if text == "all" or text.isdigit():
        return text
    raise MSGLDMError(f"-f {text}: a fold is a number (0..4) or 'all'")


def weights_identity(model_folder: Path, fold: str, stages: tuple[str, ...], checkpoint: str = "final") -> str:
    """Which checkpoint files a prediction used (stage, size, modification time): results kept on disk are reused
    only while it is unchanged, so a retrained fold is never judged by its predecessor's validation."""
    parts = []
    for stage in stages:
        path = checkpoint_path(Path(model_folder), fold, stage, checkpoint)
        stat = path.stat() if path.is_file() else None
        parts.append(f"{stage}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{stage}:missing")
    return " ".join(parts)


def available_folds(model_folder: Path, checkpoint: str = "final", stages: tuple[str, ...] = ALL_STAGES) -> list[str]:
    """Folds whose every needed stage has the chosen checkpoint: numbered folds in order, then `all`."""
    found = []
    for path in Path(model_folder).glob("fold_*"):
        fold = path.name[len("fold_"):]
        if all(checkpoint_path(model_folder, fold, stage, checkpoint).is_file() for stage in stages):
            found.append(fold)
    return sorted(found, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))


def resolve_folds(model_folder: Path, folds: list[str | int] | tuple | None, checkpoint: str,
                  stages: tuple[str, ...]) -> list[str]:
    """The requested folds, or (None) every trained numbered fold, falling back to `all` when it is the only one."""
    if folds:
        return [normalise_fold(f) for f in folds]
    found = available_folds(model_folder, checkpoint, stages)
    numbered = [f for f in found if f.isdigit()]
    if numbered or found:
        return numbered or found
    raise MSGLDMError(f"{model_folder}: no fold has checkpoint_{checkpoint}.pth for stages {', '.join(stages)}; finish "
                      "training (msgldm_train) or choose -chk")


def checkpoint_path(model_folder: Path, fold: str, stage: str, checkpoint: str = "final") -> Path:
    if checkpoint not in CHECKPOINT_CHOICES:
        raise MSGLDMError(f"-chk {checkpoint}: choose one of {', '.join(CHECKPOINT_CHOICES)}")
    return Path(model_folder) / f"fold_{fold}" / stage / f"checkpoint_{checkpoint}.pth"


def load_inference_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MSGLDMError(f"{path}: checkpoint missing; train this fold and stage (msgldm_train), pick other folds "
                          "with -f, or another -chk")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise MSGLDMError(f"{path}: unreadable checkpoint ({type(err).__name__}); re-export or retrain it") from None
    if not isinstance(checkpoint, dict) or "inference_weights" not in checkpoint:
        raise MSGLDMError(f"{path}: not an msgldm checkpoint (no 'inference_weights'); re-export or retrain it")
    return checkpoint["inference_weights"]


def build_networks(plans: Plans, config: ConfigurationPlan, stages: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """Untrained networks with the plan's shapes for the given stages (weights are loaded afterwards)."""
    from msgldm_auto.networks.autoencoder import LatentAutoencoder
    from msgldm_auto.networks.denoiser import GuidedDenoiser
    from msgldm_auto.networks.disentangler import StructureStyleDisentangler
    from msgldm_auto.networks.plain_unet import PlainUNet

    builders = {
        "ae": lambda: LatentAutoencoder(config),
        "structure": lambda: StructureStyleDisentangler(config, plans.num_modalities, plans.num_label_classes),
        "ldm": lambda: GuidedDenoiser(config, plans.num_modalities),
        "unet": lambda: PlainUNet(config, plans.num_modalities),
    }
    return {stage: builders[stage]() for stage in stages}


def load_fold_networks(model: TrainedModel, fold: str, checkpoint: str, device: torch.device,
                       stages: tuple[str, ...]) -> FoldNetworks:
    networks = build_networks(model.plans, model.configuration, stages)
    for stage, network in networks.items():
        path = checkpoint_path(model.folder, fold, stage, checkpoint)
        try:
            network.load_state_dict(load_inference_weights(path))
        except RuntimeError as err:
            raise MSGLDMError(f"{path}: weights do not fit the networks of plans.json ({str(err).splitlines()[0]}); "
                              "the plans were changed after training, or an older msgldm_auto with other networks "
                              "trained it: retrain that stage") from None
        network.to(device).eval()
    return FoldNetworks(fold, autoencoder=networks.get("ae"), disentangler=networks.get("structure"),
                        denoiser=networks.get("ldm"), control=networks.get("unet"))


def resolve_device(name: str | torch.device) -> torch.device:
    """`cpu`, `cuda` (or `cuda:N`), `mps`; a device that is not there is a user error, not a crash deep in torch."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MSGLDMError(f"-device {name}: CUDA is not available on this machine; use -device cpu")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise MSGLDMError(f"-device {name}: MPS is not available on this machine; use -device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise MSGLDMError(f"-device {name}: choose cpu, cuda or mps")
    return device
