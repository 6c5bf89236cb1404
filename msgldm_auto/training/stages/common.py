"""Helpers the stages share: PSNR on [-1, 1] images, latent encoding of every modality, frozen networks from a
previous stage's checkpoint, the fitted regression prior."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.baselines import FloorModels
from msgldm_auto.training.checkpoint import load_checkpoint
from msgldm_auto.training.losses import IMAGE_DATA_RANGE


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB over all given pixels, data range 2 (images in [-1, 1])."""
    mse = torch.mean((prediction.float().clamp(-1, 1) - target.float()) ** 2).item()
    return float(10.0 * torch.log10(torch.tensor(IMAGE_DATA_RANGE**2 / max(mse, 1e-10))))


def mean_psnr(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Slice-averaged PSNR of (prediction, target) pairs of (H, W) images."""
    values = [psnr(p, t) for p, t in pairs]
    return float(sum(values) / len(values)) if values else float("nan")


def encode_images(autoencoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, M, C, H, W) images -> (B, M, C, L, h, w) scaled latents (posterior means), one slice at a time for the AE."""
    b, m, c, h, w = images.shape
    latents = autoencoder.encode(images.reshape(b * m * c, 1, h, w))
    return latents.reshape(b, m, c, *latents.shape[1:])


def load_frozen(network: torch.nn.Module, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """Load a previous stage's `inference_weights` and freeze the network (eval mode, no gradients)."""
    payload = load_checkpoint(checkpoint, map_location="cpu")
    try:
        network.load_state_dict(payload["inference_weights"])
    except (KeyError, RuntimeError) as err:
        raise MSGLDMError(f"{checkpoint}: weights do not fit the current plans ({str(err).splitlines()[0][:120]}); "
                          "retrain that stage") from None
    network.to(device).eval()
    network.requires_grad_(False)
    return network


def load_regression_prior(network: torch.nn.Module, floors: FloorModels | None) -> None:
    """Give a network that corrects a regression prior its fitted polynomials (training/regression_prior.py), before
    any copy of its weights (the average) is made."""
    prior = getattr(network, "regression_prior", None)
    if prior is None:
        return
    if floors is None:
        raise ValueError("the plans ask for a regression prior (regression_prior_degree > 0) but none was fitted")
    prior.load_fits(floors)


def as_float32(value: Any) -> Any:
    """Network outputs made under autocast (bf16/fp16), back in float32 for the losses: MONAI's spectral loss runs an
    FFT that has no bf16 kernel, and SSIM statistics want the precision. Recurses into lists and dataclasses."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(as_float32(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value,
                                   **{f.name: as_float32(getattr(value, f.name))
                                      for f in dataclasses.fields(value) if f.init})
    return value
