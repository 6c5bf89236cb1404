"""Test-time mirroring of the deterministic predictions (nnU-Net's TTA): the one-pass decoder and the plain UNet control
average their prediction with the mirrored prediction of the left-right mirrored input; `--disable_tta` runs once."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from msgldm_auto.inference.model_loading import FoldNetworks
from msgldm_auto.inference.synthesis import SynthesisSettings, VolumeInput, synthesize_volume
from msgldm_auto.preprocessing.orientation import left_right_axis


class LopsidedControl(torch.nn.Module):
    """(B, M, C, H, W) -> (B, M, H, W): a function that is not mirror symmetric (a ramp along W is added), so that its
    mirror-averaged prediction differs from its plain one."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = 0

    def forward(self, images: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        centre = images[:, :, images.shape[2] // 2]
        ramp = torch.linspace(-0.3, 0.3, centre.shape[-1])
        return torch.tanh(self.scale * centre + ramp)


class LopsidedDisentangler(LopsidedControl):
    def forward(self, images: torch.Tensor, kept: torch.Tensor):
        return types.SimpleNamespace(synthesis=super().forward(images, kept))


def _volume() -> VolumeInput:
    generator = torch.Generator().manual_seed(0)
    volume = torch.rand(3, 4, 8, 12, generator=generator) * 2 - 1
    volume[2] = -1.0                                               # modality 2 missing
    return VolumeInput(volume, torch.tensor([True, True, False]), list(range(4)))


def _synthesize(networks: FoldNetworks, mirror_axis: int | None) -> np.ndarray:
    autoencoder = types.SimpleNamespace(latent_channels=4)
    config = types.SimpleNamespace(context_slices=3, latent_scale=4, autoencoder=autoencoder)
    settings = SynthesisSettings(use_diffusion=False, steps=0, batch_size=2, mirror_axis=mirror_axis)
    return synthesize_volume(networks, None, config, _volume(), [2], settings, seed=0)


@pytest.mark.parametrize("role", ["control", "disentangler"])
def test_mirroring_averages_the_prediction_with_the_mirrored_prediction_of_the_mirrored_input(role):
    network = LopsidedControl() if role == "control" else LopsidedDisentangler()
    networks = FoldNetworks("0", **{role: network})
    plain = _synthesize(networks, None)
    assert network.calls == 2                                      # 4 slices in batches of 2, once each
    mirrored = _synthesize(networks, 1)
    assert network.calls == 2 + 4                                  # twice per batch
    volume = _volume().volume
    centre = volume.permute(1, 0, 2, 3)                            # (Z, M, H, W)
    expected_plain = torch.tanh(0.5 * centre[:, 2] + torch.linspace(-0.3, 0.3, 12))
    flipped_back = torch.tanh(0.5 * centre[:, 2].flip(-1) + torch.linspace(-0.3, 0.3, 12)).flip(-1)
    np.testing.assert_allclose(plain[0], expected_plain.numpy(), atol=1e-6)
    np.testing.assert_allclose(mirrored[0], ((expected_plain + flipped_back) / 2).numpy(), atol=1e-6)
    assert np.abs(mirrored - plain).max() > 0.05


def test_the_mirror_is_the_left_right_axis_of_the_slice():
    assert left_right_axis(2) == 0         # axial slices (R, A): H runs left-right
    assert left_right_axis(1) == 0         # coronal slices (R, S)
    assert left_right_axis(0) is None      # sagittal slices: left-right is through-plane, nothing to mirror


def test_predict_mirrors_by_default_and_disable_tta_turns_it_off():
    from msgldm_auto.cli.predict import build_parser
    from msgldm_auto.inference.predictor import PredictionOptions

    base = ["-i", "in", "-o", "out", "-d", "1"]
    assert build_parser().parse_args(base).mirror is True and PredictionOptions().mirror is True
    assert build_parser().parse_args(base + ["--disable_tta"]).mirror is False
