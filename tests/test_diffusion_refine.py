"""Diffusion as a refiner of the one-pass synthesis: the residual sample decoded as a change to the one-pass image, the
denoiser trained only over the noise levels the one-pass start samples from, and the validation header that keeps a
validation made under another t0 from being reused."""
from __future__ import annotations

import pytest
import torch

from msgldm_auto.diffusion.scheduler import make_scheduler, timestep_for_fraction
from msgldm_auto.diffusion.targets import decode_sample, make_training_example, training_timestep_limit
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan, DiffusionPlan
from msgldm_auto.training.validation import sampling_identity


class LossyAutoencoder(torch.nn.Module):
    """A decoder that is not the identity (it blurs and shifts), like a briefly trained autoencoder."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        blurred = torch.nn.functional.avg_pool2d(latents[:, :1], 3, stride=1, padding=1)
        return torch.tanh(blurred) * 0.9 + 0.05


def _tensors(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 3, 4, 8, 8, generator=generator)
    one_pass_latents = torch.randn(2, 3, 4, 8, 8, generator=generator)
    one_pass_images = torch.rand(2, 3, 8, 8, generator=generator) * 2 - 1
    return latents, one_pass_latents, one_pass_images


def test_a_residual_sample_equal_to_the_one_pass_latent_decodes_to_the_one_pass_image():
    autoencoder = LossyAutoencoder()
    _, one_pass_latents, one_pass_images = _tensors()
    decoded = decode_sample(autoencoder, one_pass_latents, one_pass_latents, one_pass_images, "residual")
    assert decoded.shape == one_pass_images.shape
    torch.testing.assert_close(decoded, one_pass_images, rtol=0, atol=1e-6)   # the autoencoder error cancels
    plain = decode_sample(autoencoder, one_pass_latents, one_pass_latents, one_pass_images, "latent")
    assert (plain - one_pass_images).abs().mean() > 0.1     # decoding the latent itself keeps that error


def test_a_residual_sample_adds_its_decoded_change_and_the_latent_target_decodes_the_sample():
    autoencoder = LossyAutoencoder()
    latents, one_pass_latents, one_pass_images = _tensors(1)

    def decode(z):
        return autoencoder.decode(z.reshape(-1, *z.shape[2:])).reshape(*z.shape[:2], 8, 8)

    residual = decode_sample(autoencoder, latents, one_pass_latents, one_pass_images, "residual")
    torch.testing.assert_close(residual, one_pass_images + decode(latents) - decode(one_pass_latents))
    torch.testing.assert_close(decode_sample(autoencoder, latents, one_pass_latents, one_pass_images, "latent"),
                               decode(latents))


def _config(**diffusion) -> ConfigurationPlan:
    return ConfigurationPlan(slice_axis=2, spacing=[1.0, 1.0], image_size=[32, 32], latent_scale=8, context_slices=1,
                             batch_size=2, diffusion=DiffusionPlan(**diffusion))


@pytest.mark.parametrize("t0", [0.05, 0.25])
def test_sampled_training_timesteps_stop_at_the_one_pass_start(t0):
    config = _config(train_timesteps="sampled", t0=t0)
    scheduler = make_scheduler(config)
    limit = training_timestep_limit(scheduler, config.diffusion)
    assert limit == timestep_for_fraction(scheduler, t0) == round(t0 * 1000) - 1
    latents = torch.randn(512, 2, 1, 2, 2)
    example = make_training_example(scheduler, latents, torch.zeros_like(latents), torch.ones(512, 2), "residual",
                                    generator=torch.Generator().manual_seed(0), max_timestep=limit)
    assert int(example.timesteps.max()) == limit and int(example.timesteps.min()) == 0   # the whole range, no more


def test_the_default_trains_the_sampled_range_and_all_timesteps_when_asked_or_from_a_noise_start():
    config = _config()
    assert training_timestep_limit(make_scheduler(config), config.diffusion) == 249         # t0 = 0.25 by default
    for config in (_config(train_timesteps="all"), _config(sampling_start="noise")):
        scheduler = make_scheduler(config)
        assert training_timestep_limit(scheduler, config.diffusion) == 999


def test_an_unknown_training_range_is_a_plans_error():
    config = _config(train_timesteps="below_t0")
    with pytest.raises(MSGLDMError, match="diffusion.train_timesteps is 'below_t0'; set it to one of all, sampled"):
        training_timestep_limit(make_scheduler(config), config.diffusion)


def test_a_validation_is_tied_to_the_sampling_settings_of_the_plans():
    assert sampling_identity(None) == ""                         # no diffusion: nothing of the plans matters
    base = sampling_identity(DiffusionPlan())
    assert sampling_identity(DiffusionPlan(t0=0.05)) != base
    assert sampling_identity(DiffusionPlan(target="latent")) != base
    assert sampling_identity(DiffusionPlan(sampling_start="noise")) != base
    assert sampling_identity(DiffusionPlan(steps=5)) == base      # steps are a header field of their own
