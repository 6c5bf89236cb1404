"""msgldm_auto.diffusion: the scheduler, the training targets and loss, and the DDIM sampling loop.

Every test is about our code's behaviour, on tiny tensors:
- the scheduler's timestep set and `step` agree (trailing spacing, the one-pass start's subset below t0);
- a denoiser that predicts the exact target makes the loop land on the clean latent, for every option;
- a toy with a closed-form answer: x0 ~ N(μ, s²) elementwise with μ known. For x_t = √ᾱ x0 + √(1−ᾱ) ε the exact
  predictors are E[ε | x_t] = √(1−ᾱ) (x_t − √ᾱ μ) / D and E[x0 | x_t] = μ + √ᾱ s² (x_t − √ᾱ μ) / D,
  D = ᾱ s² + 1 − ᾱ. A correct DDIM sampler fed these ends within ~s of μ, with mean μ; a timestep set that `step`
  disagrees with (MONAI 1.6.1's, DESIGN.md appendix) leaves residual noise and fails it;
- with the real denoiser: a missing modality has no influence on the sample, and a seed fixes the sample;
- the training example read back the way the sampler reads a prediction gives the clean variable; the loss mask;
- diffusion has one home (DESIGN.md §2): `msgldm_auto/diffusion/`, imported by training and inference alike.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from msgldm_auto.diffusion.sampler import sample_latents
from msgldm_auto.diffusion.scheduler import make_scheduler, split_prediction, timestep_for_fraction
from msgldm_auto.diffusion.targets import diffusion_loss_mask, make_training_example, masked_diffusion_loss
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.networks.denoiser import GuidedDenoiser
from msgldm_auto.plans import ConfigurationPlan, DisentanglerPlan, UNetPlan

LIBRARY = Path(__file__).resolve().parents[1] / "msgldm_auto"
SPREAD = 0.05          # s: std of the toy data around its conditional mean
MEAN_TOLERANCE = 0.01  # |average sample − μ| per element
RMS_TOLERANCE = SPREAD  # a correct sampler ends within ~s of μ


def toy_config(prediction_type: str = "epsilon", context_slices: int = 1, **diffusion) -> ConfigurationPlan:
    config = ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=[32, 32], latent_scale=8, context_slices=context_slices,
        batch_size=2,
        unet=UNetPlan(channels=[8, 16], attention_levels=[False, False], num_head_channels=8, norm_num_groups=4),
        disentangler=DisentanglerPlan(prior_channels=4, style_dim=4),
    )
    config.diffusion.prediction_type = prediction_type
    for key, value in diffusion.items():
        setattr(config.diffusion, key, value)
    return config


def exact_prediction(scheduler, noisy: torch.Tensor, x0: torch.Tensor, timestep: int) -> torch.Tensor:
    """The ε or v (per the scheduler) that a denoiser knowing the clean variable `x0` would output at `timestep`."""
    alpha = scheduler.alphas_cumprod[timestep]
    epsilon = (noisy - alpha.sqrt() * x0) / (1 - alpha).sqrt()
    if scheduler.prediction_type == "epsilon":
        return epsilon
    return alpha.sqrt() * epsilon - (1 - alpha).sqrt() * x0


class OracleDenoiser:
    """Knows the true latents; outputs the exact target for the diffused variable (latent or residual)."""

    def __init__(self, scheduler, truth: torch.Tensor, target: str):
        self.scheduler, self.truth, self.target = scheduler, truth, target
        self.timesteps: list[int] = []

    def __call__(self, noisy, timesteps, clean, kept, neighbours, prior, one_pass, styles):
        t = int(timesteps[0])
        self.timesteps.append(t)
        x0 = self.truth - one_pass if self.target == "residual" else self.truth
        return exact_prediction(self.scheduler, noisy, x0, t)


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


def run_toy(scheduler, prediction_type: str, steps: int, seed: int = 0,
            **options) -> tuple[torch.Tensor, dict, ExactGaussianDenoiser]:
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


def test_t0_outside_the_schedule_is_a_plans_error():
    with pytest.raises(MSGLDMError, match="diffusion.t0"):
        timestep_for_fraction(make_scheduler(toy_config()), 0.0)


# --- the loop with an exact denoiser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("target", ["latent", "residual"])
@pytest.mark.parametrize("start", ["noise", "one_pass"])
@pytest.mark.parametrize("steps", [1, 4])
def test_a_denoiser_predicting_the_exact_target_reaches_the_clean_latent(prediction_type, target, start, steps):
    config = toy_config(prediction_type, t0=0.3)
    scheduler = make_scheduler(config)
    conditions = toy_conditions(batch=3)
    conditions.pop("mean")
    generator = torch.Generator().manual_seed(7)
    truth = torch.randn(conditions["clean"].shape, generator=generator)
    conditions["one_pass"] = truth + 0.5 * torch.randn(truth.shape, generator=generator)   # an imperfect one-pass
    denoiser = OracleDenoiser(scheduler, truth, target)
    result = sample_latents(denoiser, scheduler, config, steps=steps, start=start, target=target,
                            generator=torch.Generator().manual_seed(0), **conditions)
    assert len(denoiser.timesteps) == steps
    assert torch.allclose(result[:, 1], truth[:, 1], atol=1e-4)
    assert torch.equal(result[:, 0], conditions["clean"][:, 0])       # kept modalities come back as given


@pytest.mark.parametrize("t0, steps, expected", [
    (0.25, 5, [249, 199, 149, 99, 49]),
    (0.5, 3, [499, 332, 166]),
    (1.0, 2, [999, 499]),
    (0.004, 10, [3, 2, 1, 0]),      # fewer levels below t0 than steps: one step per level, never a repeat
])
def test_the_one_pass_start_evaluates_the_trailing_subset_below_t0(t0, steps, expected):
    config = toy_config("v_prediction", sampling_start="one_pass", t0=t0, target="latent")
    scheduler = make_scheduler(config)
    conditions = toy_conditions(batch=2)
    conditions.pop("mean")
    denoiser = OracleDenoiser(scheduler, conditions["one_pass"], "latent")
    sample_latents(denoiser, scheduler, config, steps=steps, generator=torch.Generator().manual_seed(0), **conditions)
    assert denoiser.timesteps == expected
    assert expected[0] == timestep_for_fraction(scheduler, t0)


# --- the loop on a toy with a closed-form answer ---------------------------------------------------------------------

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
    with pytest.raises(MSGLDMError, match="diffusion.target"):
        run_toy(make_scheduler(toy_config()), "epsilon", steps=2, target="image")


# --- the loop with the real denoiser ---------------------------------------------------------------------------------

def awake_denoiser(config: ConfigurationPlan, num_modalities: int) -> GuidedDenoiser:
    """A GuidedDenoiser whose zero-initialised layers (output conv, guidance adapters) are nudged, as after some
    training: otherwise it outputs zeros and no input could influence the sample."""
    torch.manual_seed(0)
    denoiser = GuidedDenoiser(config, num_modalities).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in denoiser.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return denoiser


def real_conditions(config: ConfigurationPlan, num_modalities: int, batch: int = 2) -> dict:
    """Conditions for `num_modalities` modalities at the plans' latent size; modality 0 kept, the others not."""
    generator = torch.Generator().manual_seed(4)
    latent, (h, w) = config.autoencoder.latent_channels, config.latent_size
    shape = (batch, num_modalities, latent, h, w)
    context = config.context_slices - 1
    kept = torch.zeros(batch, num_modalities, dtype=torch.bool)
    kept[:, 0] = True
    return dict(
        clean=torch.randn(shape, generator=generator), kept=kept,
        neighbours=torch.randn(batch, num_modalities, context, latent, h, w, generator=generator) if context else None,
        prior=torch.randn(batch, config.disentangler.prior_channels, h, w, generator=generator),
        one_pass=torch.randn(shape, generator=generator),
        styles=torch.randn(batch, num_modalities, config.disentangler.style_dim, generator=generator),
    )


@pytest.mark.parametrize("replacement", [False, True])
def test_a_missing_modality_has_no_influence_on_the_sample(replacement):
    """Whatever a missing modality's slot holds (here NaN, in the centre slice and the 2.5D neighbours), the sample is
    bit-identical for a fixed seed; a kept modality's latent, by contrast, does change it."""
    config = toy_config("v_prediction", context_slices=3, steps=3, sampling_start="one_pass", t0=0.5,
                        target="residual")
    config.ablations.replacement_sampling = replacement
    denoiser = awake_denoiser(config, 3)
    conditions = real_conditions(config, 3)
    missing = 2

    def sample(inputs: dict) -> torch.Tensor:
        return sample_latents(denoiser, make_scheduler(config), config,
                              generator=torch.Generator().manual_seed(5), **inputs)

    reference = sample(conditions)
    garbage = dict(conditions, clean=conditions["clean"].clone(), neighbours=conditions["neighbours"].clone())
    garbage["clean"][:, missing] = float("nan")
    garbage["neighbours"][:, missing] = float("nan")
    assert torch.equal(sample(garbage)[:, :missing], reference[:, :missing])
    changed_kept = dict(conditions, clean=conditions["clean"].clone())
    changed_kept["clean"][:, 0] += 1.0
    assert not torch.allclose(sample(changed_kept)[:, 1], reference[:, 1])


def test_a_seed_fixes_the_sample_and_options_left_out_come_from_the_plans():
    config = toy_config("v_prediction", steps=3, sampling_start="one_pass", t0=0.5, target="residual")
    denoiser = awake_denoiser(config, 2)
    conditions = real_conditions(config, 2)
    timesteps: list[int] = []

    def recorded(noisy, t, *rest):
        timesteps.append(int(t[0]))
        return denoiser(noisy, t, *rest)

    def sample(seed: int) -> torch.Tensor:
        return sample_latents(recorded, make_scheduler(config), config,
                              generator=torch.Generator().manual_seed(seed), **conditions)

    first = sample(5)
    assert timesteps == [499, 332, 166]            # the plans' 3 steps below t0 = 0.5
    assert first.shape == conditions["clean"].shape and torch.isfinite(first).all()
    assert torch.equal(first, sample(5))
    assert not torch.allclose(first[:, 1], sample(6)[:, 1])
    assert torch.equal(first[:, 0], conditions["clean"][:, 0])


# --- training targets and loss ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("target", ["latent", "residual"])
def test_training_example_is_consistent_with_the_sampler_parametrisation(prediction_type, target):
    scheduler = make_scheduler(toy_config(prediction_type))
    g = torch.Generator().manual_seed(0)
    latents, one_pass = torch.randn(6, 3, 4, 4, 4, generator=g), torch.randn(6, 3, 4, 4, 4, generator=g)
    present = torch.tensor([[True, True, False]] * 6)
    latents[:, 2] = float("nan")  # an absent modality's latent is arbitrary
    example = make_training_example(scheduler, latents, one_pass, present, target=target, generator=g)
    assert torch.isfinite(example.noisy).all() and torch.isfinite(example.target).all()
    alpha = scheduler.alphas_cumprod[example.timesteps][:, None, None, None, None]
    x0 = latents - one_pass if target == "residual" else latents
    expected_noisy = alpha.sqrt() * x0[:, :2] + (1 - alpha).sqrt() * example.noise[:, :2]
    assert torch.allclose(example.noisy[:, :2], expected_noisy, atol=1e-5)
    # The exact regression target, read back the way the sampler reads a prediction, gives the clean variable.
    recovered, epsilon = split_prediction(prediction_type, example.target, example.noisy, alpha)
    assert torch.allclose(recovered[:, :2], x0[:, :2], atol=1e-3)
    assert torch.allclose(epsilon, example.noise, atol=1e-3)
    # The absent modality is treated as if its truth were the one-pass synthesis.
    absent_x0 = torch.zeros_like(one_pass[:, 2]) if target == "residual" else one_pass[:, 2]
    assert torch.allclose(recovered[:, 2], absent_x0, atol=1e-3)


def test_diffusion_loss_counts_only_dropped_modalities_that_exist():
    present = torch.tensor([[True, True, True, False]])
    kept = torch.tensor([[True, False, False, False]])
    mask = diffusion_loss_mask(present, kept)
    assert mask.tolist() == [[False, True, True, False]]
    target = torch.zeros(1, 4, 2, 3, 3)
    target[:, 3] = float("nan")                       # no truth for the absent modality
    prediction = torch.ones(1, 4, 2, 3, 3, requires_grad=True)
    loss = masked_diffusion_loss(prediction, target, mask)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(prediction.grad).all()
    assert prediction.grad[:, [0, 3]].abs().sum() == 0 and prediction.grad[:, [1, 2]].abs().sum() > 0
    # Kept and absent predictions do not move the loss; a dropped one does.
    other = prediction.detach().clone()
    other[:, 0] = 50.0
    other[:, 3] = -50.0
    assert masked_diffusion_loss(other, target, mask).item() == pytest.approx(1.0)
    other[:, 1] = 3.0
    assert masked_diffusion_loss(other, target, mask).item() > 1.0
    nothing = masked_diffusion_loss(prediction, target, torch.zeros_like(mask))
    assert nothing.item() == 0.0 and nothing.requires_grad


# --- where diffusion lives -------------------------------------------------------------------------------------------

def imported_modules(package: str) -> set[str]:
    """Every module that a file of `msgldm_auto/<package>/` imports, at module level or inside a function."""
    modules = set()
    for path in (LIBRARY / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    return modules


def reaches(modules: set[str], package: str) -> bool:
    return any(m == f"msgldm_auto.{package}" or m.startswith(f"msgldm_auto.{package}.") for m in modules)


def test_diffusion_has_one_home_that_training_and_inference_share():
    diffusion = imported_modules("diffusion")
    assert not reaches(diffusion, "training") and not reaches(diffusion, "inference")
    assert not reaches(imported_modules("networks"), "diffusion")        # networks are pure modules, no sampling loops
    assert not reaches(imported_modules("inference"), "training")
    for user in ("training", "inference"):
        assert {"msgldm_auto.diffusion.sampler", "msgldm_auto.diffusion.scheduler"} <= imported_modules(user)
    for old in ("networks/scheduler.py", "training/diffusion_targets.py", "inference/sampler.py"):
        assert not (LIBRARY / old).exists(), f"{old} came back: diffusion lives in msgldm_auto/diffusion/"
