"""The DDIM scheduler fix and the sampling loop, checked against a toy with a closed-form answer.

Toy: given the conditions, the target latent is Gaussian, x0 ~ N(μ, s²) elementwise, with μ known. For x_t = √ᾱ x0 +
√(1−ᾱ) ε the exact predictors are E[ε | x_t] = √(1−ᾱ) (x_t − √ᾱ μ) / D and E[x0 | x_t] = μ + √ᾱ s² (x_t − √ᾱ μ) / D,
D = ᾱ s² + 1 − ᾱ. A correct DDIM sampler fed these ends within ~s of μ, with mean μ; MONAI 1.6.1's unpatched
DDIMScheduler leaves the residual noise of a mismatched timestep set (DESIGN.md appendix).
"""
from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.sampler import sample_latents
from msgldm_auto.networks.denoiser import GuidedDenoiser
from msgldm_auto.networks.scheduler import make_scheduler, timestep_for_fraction
from msgldm_auto.plans import ConfigurationPlan, DisentanglerPlan, UNetPlan

SPREAD = 0.05          # s: std of the toy data around its conditional mean
MEAN_TOLERANCE = 0.01  # |average sample − μ| per element
RMS_TOLERANCE = SPREAD  # a correct sampler ends within ~s of μ


def toy_config(prediction_type: str = "epsilon", **diffusion) -> ConfigurationPlan:
    config = ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=[32, 32], latent_scale=8, context_slices=1, batch_size=2,
        unet=UNetPlan(channels=[8, 16], attention_levels=[False, False], num_head_channels=8, norm_num_groups=4),
        disentangler=DisentanglerPlan(prior_channels=4, style_dim=4),
    )
    config.diffusion.prediction_type = prediction_type
    for key, value in diffusion.items():
        setattr(config.diffusion, key, value)
    return config


class ExactGaussianDenoiser:
    """The Bayes-optimal ε / v predictor for x0 ~ N(mean, SPREAD²), with the denoiser's call signature.

    `mean` is the conditional mean of the *diffused variable* (the latent, or its residual). Records every call."""

    def __init__(self, scheduler, mean: torch.Tensor, prediction_type: str):
        self.scheduler, self.mean, self.prediction_type = scheduler, mean, prediction_type
        self.calls: list[tuple[int, torch.Tensor]] = []

    def __call__(self, noisy, timesteps, clean, kept, neighbours, prior, one_pass, styles):
        t = int(timesteps[0])
        self.calls.append((t, noisy.clone()))
        alpha = self.scheduler.alphas_cumprod[t]
        centred = noisy - alpha.sqrt() * self.mean
        spread = alpha * SPREAD**2 + 1 - alpha
        epsilon = (1 - alpha).sqrt() * centred / spread
        if self.prediction_type == "epsilon":
            return epsilon
        x0 = self.mean + alpha.sqrt() * SPREAD**2 * centred / spread
        return alpha.sqrt() * epsilon - (1 - alpha).sqrt() * x0


def toy_conditions(batch: int = 128) -> dict:
    """Two modalities, modality 0 kept, modality 1 to synthesise; μ varies over the latent elements."""
    shape = (batch, 2, 4, 4, 4)
    mean = torch.linspace(-1.5, 1.5, 64).reshape(1, 1, 4, 4, 4).expand(shape).contiguous()
    clean = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    return dict(
        clean=clean, kept=torch.tensor([[True, False]]).expand(batch, 2), neighbours=None,
        prior=torch.zeros(batch, 4, 4, 4), one_pass=torch.zeros(shape), styles=torch.zeros(batch, 2, 4), mean=mean,
    )


def run_toy(scheduler, prediction_type: str, steps: int, seed: int = 0, **options) -> tuple[torch.Tensor, dict, ExactGaussianDenoiser]:
    conditions = toy_conditions()
    mean = conditions.pop("mean")
    conditions.update({key: options.pop(key) for key in list(options) if key in conditions})
    diffused_mean = mean - conditions["one_pass"] if options.get("target") == "residual" else mean
    denoiser = ExactGaussianDenoiser(scheduler, diffused_mean, prediction_type)
    options.setdefault("start", "noise")
    options.setdefault("target", "latent")
    result = sample_latents(
        denoiser, scheduler, toy_config(prediction_type), steps=steps,
        generator=torch.Generator().manual_seed(seed), **conditions, **options,
    )
    return result, dict(conditions, mean=mean), denoiser


def errors(result: torch.Tensor, mean: torch.Tensor) -> tuple[float, float]:
    """(worst per-element bias over the batch, RMS distance to μ) of the synthesised modality."""
    difference = (result - mean)[:, 1]
    return difference.mean(dim=0).abs().max().item(), difference.pow(2).mean().sqrt().item()


def monai_ddim(prediction_type: str) -> DDIMScheduler:
    plan = toy_config().diffusion
    return DDIMScheduler(
        num_train_timesteps=plan.num_train_timesteps, schedule=plan.beta_schedule, beta_start=plan.beta_start,
        beta_end=plan.beta_end, clip_sample=False, prediction_type=prediction_type,
    )


# --- the scheduler ---------------------------------------------------------------------------------------------------

def test_trailing_timesteps_and_step_agree():
    scheduler = make_scheduler(toy_config("v_prediction"))
    assert scheduler.clip_sample is False and scheduler.prediction_type == "v_prediction"
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    chain = [scheduler.previous_timestep(t) for t in scheduler.timesteps.tolist()]
    assert chain == scheduler.timesteps.tolist()[1:] + [-1]
    scheduler.set_timesteps(5, start_timestep=timestep_for_fraction(scheduler, 0.5))
    assert scheduler.timesteps.tolist() == [499, 399, 299, 199, 99]
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [999]
    # The paper's schedule: β on a square-root-linear ramp from 0.0015 to 0.0195.
    assert scheduler.betas[0].item() == pytest.approx(0.0015) and scheduler.betas[-1].item() == pytest.approx(0.0195)


def test_unknown_prediction_type_is_a_one_line_plans_error():
    with pytest.raises(MSGLDMError, match="diffusion.prediction_type"):
        make_scheduler(toy_config("sample"))


# --- closed-form sampler correctness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 10, 50])
def test_exact_predictor_recovers_the_conditional_mean(prediction_type, steps):
    scheduler = make_scheduler(toy_config(prediction_type))
    result, conditions, denoiser = run_toy(scheduler, prediction_type, steps)
    bias, rms = errors(result, conditions["mean"])
    assert bias < MEAN_TOLERANCE and rms < RMS_TOLERANCE, (bias, rms)
    assert len(denoiser.calls) == steps
    # Kept modalities come back as their clean latents.
    assert torch.equal(result[:, 0], conditions["clean"][:, 0])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unpatched_monai_ddim_fails_the_same_check(prediction_type):
    """Regression guard: if this starts passing, MONAI fixed its timestep spacing (or the toy lost its power)."""
    result, conditions, _ = run_toy(monai_ddim(prediction_type), prediction_type, steps=10)
    bias, rms = errors(result, conditions["mean"])
    assert bias > MEAN_TOLERANCE and rms > RMS_TOLERANCE, (bias, rms)


@pytest.mark.parametrize("target", ["latent", "residual"])
def test_one_pass_start_spends_every_step_below_t0(target):
    scheduler = make_scheduler(toy_config("v_prediction"))
    conditions = toy_conditions()
    one_pass = conditions["mean"] + 0.3            # a biased one-pass synthesis; diffusion has to correct it
    noise = torch.randn(conditions["clean"].shape, generator=torch.Generator().manual_seed(1))
    result, truth, denoiser = run_toy(scheduler, "v_prediction", steps=4, start="one_pass", t0=0.4, target=target,
                                      one_pass=one_pass, noise=noise)
    start = timestep_for_fraction(scheduler, 0.4)
    assert [t for t, _ in denoiser.calls] == [399, 299, 199, 99] and denoiser.calls[0][0] == start
    # The first input is the one-pass value (the latent, or zero residual) noised to t0 with the given noise.
    value = torch.zeros_like(one_pass) if target == "residual" else one_pass
    expected = scheduler.add_noise(value, noise, torch.full((noise.shape[0],), start))
    assert torch.allclose(denoiser.calls[0][1], expected)
    bias, rms = errors(result, truth["mean"])
    assert bias < MEAN_TOLERANCE and rms < RMS_TOLERANCE, (bias, rms)


def test_residual_target_adds_the_one_pass_latent_back():
    """With a perfect one-pass latent the residual is N(0, s²): the sampled residual ~ 0, the result ~ one-pass."""
    scheduler = make_scheduler(toy_config("epsilon"))
    conditions = toy_conditions()
    result, truth, denoiser = run_toy(scheduler, "epsilon", steps=10, target="residual", one_pass=conditions["mean"])
    assert denoiser.mean.abs().max() == 0             # the diffused variable's mean is the zero residual
    bias, rms = errors(result, truth["mean"])
    assert bias < MEAN_TOLERANCE and rms < RMS_TOLERANCE, (bias, rms)


def test_replacement_holds_kept_latents_to_their_noised_values():
    scheduler = make_scheduler(toy_config("epsilon"))
    noise = torch.randn(128, 2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    _, conditions, held = run_toy(scheduler, "epsilon", steps=5, replacement=True, noise=noise)
    for t, noisy in held.calls:
        expected = scheduler.add_noise(conditions["clean"], noise, torch.full((128,), t))
        assert torch.allclose(noisy[:, 0], expected[:, 0], atol=1e-6)
    _, _, free = run_toy(scheduler, "epsilon", steps=5, replacement=False, noise=noise)
    t, noisy = free.calls[-1]
    assert not torch.allclose(noisy[:, 0], scheduler.add_noise(conditions["clean"], noise, torch.full((128,), t))[:, 0])


def test_bad_sampling_option_is_a_plans_error():
    with pytest.raises(MSGLDMError, match="diffusion.sampling_start"):
        run_toy(make_scheduler(toy_config()), "epsilon", steps=2, start="halfway")


def test_sampling_with_the_real_denoiser_uses_the_plan_defaults():
    config = toy_config("v_prediction", steps=3, sampling_start="one_pass", t0=0.5, target="residual")
    torch.manual_seed(0)
    denoiser = GuidedDenoiser(config, 2).eval()
    conditions = toy_conditions(batch=2)
    conditions.pop("mean")
    conditions["one_pass"] = torch.randn_like(conditions["clean"])
    first = sample_latents(denoiser, make_scheduler(config), config, generator=torch.Generator().manual_seed(5), **conditions)
    again = sample_latents(denoiser, make_scheduler(config), config, generator=torch.Generator().manual_seed(5), **conditions)
    assert first.shape == conditions["clean"].shape and torch.isfinite(first).all()
    assert torch.equal(first, again)                  # seeded: reproducible
    assert torch.equal(first[:, 0], conditions["clean"][:, 0])
