"""DDIM noise scheduler for the latent diffusion stage, with a timestep set that `step` agrees with.

MONAI 1.6.1's `DDIMScheduler.set_timesteps` spaces the inference timesteps as `linspace(999 -> 0)` while its `step`
assumes the previous timestep is `t - 1000 // N`. The two disagree (e.g. N = 10: the chain evaluates t = 888 on a
sample that `step` left at level 899, and the last step treats a sample at level 11 as clean), so sampling ends with
residual noise. `TrailingDDIMScheduler` fixes both sides: timesteps are spaced "trailing" (999, 899, ..., 99 for N = 10,
the last step jumping to the clean sample) and `step` goes to the next timestep of that very list.
`tests/test_diffusion.py` keeps a closed-form check of our sampler that a mismatched timestep set fails.
"""
from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan

PREDICTION_TYPES = ("epsilon", "v_prediction")
# MONAI schedules that take beta_start / beta_end; "cosine" takes neither.
BETA_SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta")


class TrailingDDIMScheduler(DDIMScheduler):
    """DDIM with "trailing" timestep spacing and a `step` that moves to the next timestep of `self.timesteps`.

    `set_timesteps(N, start_timestep=s)` spreads the N steps over [0, s] instead of the whole schedule; the sampler
    uses it to refine a one-pass latent noised to level s ("one_pass" start) with all N network evaluations.
    """

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None, start_timestep: int | None = None
    ) -> None:
        start = self.num_train_timesteps - 1 if start_timestep is None else int(start_timestep)
        if not 0 <= start < self.num_train_timesteps:
            raise ValueError(f"start_timestep {start} outside [0, {self.num_train_timesteps})")
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        # More steps than timesteps below `start` would repeat timesteps; the chain cannot get finer than one per level.
        steps = min(int(num_inference_steps), start + 1)
        spacing = (start + 1) / steps
        trailing = torch.round(torch.arange(start + 1, 0, -spacing, dtype=torch.float64)[:steps]) - 1
        self.num_inference_steps = steps
        self.timesteps = trailing.long().to(device)

    def previous_timestep(self, timestep: int) -> int:
        """The timestep that `step` lands on: the next entry of `self.timesteps`, or -1 (clean) after the last."""
        timesteps = self.timesteps.tolist()
        index = timesteps.index(int(timestep))
        return timesteps[index + 1] if index + 1 < len(timesteps) else -1

    def alpha_cumprod_at(self, timestep: int) -> torch.Tensor:
        """ᾱ_t, with ᾱ_{-1} = the final ("clean") value."""
        return self.alphas_cumprod[timestep] if timestep >= 0 else self.final_alpha_cumprod

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update from `timestep` to `previous_timestep(timestep)`; returns (x_prev, predicted x_0)."""
        timestep = int(timestep)
        prev_timestep = self.previous_timestep(timestep)
        alpha_t = self.alpha_cumprod_at(timestep).to(sample)
        alpha_prev = self.alpha_cumprod_at(prev_timestep).to(sample)
        pred_original, pred_epsilon = split_prediction(self.prediction_type, model_output, sample, alpha_t)
        variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
        std_dev = eta * variance.clamp(min=0) ** 0.5
        prev_sample = alpha_prev**0.5 * pred_original + (1 - alpha_prev - std_dev**2).clamp(min=0) ** 0.5 * pred_epsilon
        if eta > 0:
            noise = torch.randn(sample.shape, dtype=sample.dtype, device=sample.device, generator=generator)
            prev_sample = prev_sample + std_dev * noise
        return prev_sample, pred_original


def split_prediction(
    prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor, alpha_cumprod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted x_0, predicted ε) from an ε- or v-prediction at the noise level whose cumulative ᾱ is
    `alpha_cumprod`."""
    sqrt_alpha, sqrt_one_minus = alpha_cumprod**0.5, (1 - alpha_cumprod) ** 0.5
    if prediction_type == "epsilon":
        return (sample - sqrt_one_minus * model_output) / sqrt_alpha, model_output
    if prediction_type == "v_prediction":
        return sqrt_alpha * sample - sqrt_one_minus * model_output, sqrt_alpha * model_output + sqrt_one_minus * sample
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def make_scheduler(config: ConfigurationPlan) -> TrailingDDIMScheduler:
    """The scheduler of `config.diffusion` (β schedule, prediction type).

    `clip_sample=False` because latents are unbounded."""
    plan = config.diffusion
    if plan.prediction_type not in PREDICTION_TYPES:
        raise MSGLDMError(
            f"plans diffusion.prediction_type is {plan.prediction_type!r}; "
            f"set it to one of {', '.join(PREDICTION_TYPES)}"
        )
    takes_betas = plan.beta_schedule in BETA_SCHEDULES
    schedule_args = {"beta_start": plan.beta_start, "beta_end": plan.beta_end} if takes_betas else {}
    if plan.beta_schedule not in BETA_SCHEDULES + ("cosine",):
        raise MSGLDMError(
            f"plans diffusion.beta_schedule is {plan.beta_schedule!r}; "
            f"set it to one of {', '.join(BETA_SCHEDULES + ('cosine',))}"
        )
    return TrailingDDIMScheduler(
        num_train_timesteps=plan.num_train_timesteps,
        schedule=plan.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=plan.prediction_type,
        **schedule_args,
    )


def timestep_for_fraction(scheduler: DDIMScheduler, fraction: float) -> int:
    """The training timestep at `fraction` of the schedule (1.0 -> the noisiest, T-1); the one-pass start's t0."""
    if not 0.0 < fraction <= 1.0:
        raise MSGLDMError(f"plans diffusion.t0 is {fraction}; set it to a fraction in (0, 1]")
    return max(0, min(scheduler.num_train_timesteps - 1, round(fraction * scheduler.num_train_timesteps) - 1))


def velocity(scheduler: DDIMScheduler, sample: torch.Tensor, noise: torch.Tensor,
             timesteps: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ ε − √(1−ᾱ) x_0 (MONAI's `get_velocity`, named for readers of the training code)."""
    return scheduler.get_velocity(sample, noise, timesteps)
