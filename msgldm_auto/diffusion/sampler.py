"""DDIM sampling of the missing modalities' latents with the guided denoiser (DESIGN.md §6 stage 3, §7).

Two plans fields decide how diffusion uses the disentangler's one-pass synthesis (`config.diffusion`):
- `target`: "latent" samples the latents themselves (the paper); "residual" samples (latent − one-pass latent) and
  adds the one-pass latent back at the end.
- `sampling_start`: "noise" starts from pure noise at the noisiest timestep; "one_pass" noises the one-pass latent
  (for the residual target: zero, i.e. the one-pass latent itself) to level t0 and spends all `steps` network
  evaluations between t0 and 0, so that few steps refine rather than invent.
Replacement sampling (`ablations.replacement_sampling`) holds the kept modalities to their noised clean values at every
step; it is an ablation only.

Kept modalities are returned as their clean latents: they are known, and the denoiser is never trained on them.
"""
from __future__ import annotations

import torch

from msgldm_auto.diffusion.scheduler import TrailingDDIMScheduler, timestep_for_fraction
from msgldm_auto.diffusion.targets import TARGETS
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan

STARTS = ("noise", "one_pass")


@torch.no_grad()
def sample_latents(
    denoiser: torch.nn.Module,
    scheduler: TrailingDDIMScheduler,
    config: ConfigurationPlan,
    *,
    clean: torch.Tensor,
    kept: torch.Tensor,
    neighbours: torch.Tensor | None,
    prior: torch.Tensor,
    one_pass: torch.Tensor,
    styles: torch.Tensor,
    steps: int | None = None,
    start: str | None = None,
    t0: float | None = None,
    target: str | None = None,
    replacement: bool | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, M, L, h, w) latents: sampled for the non-kept modalities, `clean` for the kept ones.

    Options left as None come from `config` (`diffusion.steps`, `.sampling_start`, `.t0`, `.target`,
    `ablations.replacement_sampling`). `noise` (B, M, L, h, w) is the starting noise (the predictor passes slice-shared
    noise for through-plane consistency); otherwise it is drawn from `generator`. `scheduler` is the
    `make_scheduler(config)` one; the "one_pass" start needs its `set_timesteps(..., start_timestep=)`.
    """
    plan = config.diffusion
    steps = plan.steps if steps is None else steps
    start = plan.sampling_start if start is None else start
    target = plan.target if target is None else target
    replacement = config.ablations.replacement_sampling if replacement is None else replacement
    _check_choice("sampling_start", start, STARTS)
    _check_choice("target", target, TARGETS)
    kept = kept.bool()
    if noise is None:
        device = generator.device if generator is not None else clean.device
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=device).to(clean.device)
    # The variable being diffused: the latent, or its residual from the one-pass latent.
    offset = one_pass if target == "residual" else torch.zeros_like(one_pass)
    kept_values = clean - offset                      # what replacement holds the kept modalities to (before noising)
    sample = _initial_sample(scheduler, start, plan.t0 if t0 is None else t0, steps, one_pass - offset, noise)
    hold = kept[:, :, None, None, None]
    for timestep in scheduler.timesteps.tolist():
        if replacement:
            sample = torch.where(hold, _noised(scheduler, kept_values, noise, timestep), sample)
        t = torch.full((sample.shape[0],), timestep, device=sample.device, dtype=torch.long)
        prediction = denoiser(sample, t, clean, kept, neighbours, prior, one_pass, styles)
        sample, _ = scheduler.step(prediction, timestep, sample)
    return torch.where(hold, clean, sample + offset)


def _noised(scheduler: TrailingDDIMScheduler, value: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
    """`value` at noise level `timestep`, with the run's fixed noise (replacement sampling)."""
    timesteps = torch.full((value.shape[0],), timestep, device=value.device, dtype=torch.long)
    return scheduler.add_noise(value, noise, timesteps)


def _initial_sample(scheduler: TrailingDDIMScheduler, start: str, t0: float, steps: int, one_pass_value: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
    """Set the scheduler's timesteps for this run and return x at its first timestep."""
    if start == "noise":
        scheduler.set_timesteps(steps, device=noise.device)
        return noise * scheduler.init_noise_sigma
    start_timestep = timestep_for_fraction(scheduler, t0)
    scheduler.set_timesteps(steps, device=noise.device, start_timestep=start_timestep)
    first = scheduler.timesteps[:1].expand(noise.shape[0])
    return scheduler.add_noise(one_pass_value, noise, first)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise MSGLDMError(f"plans diffusion.{field} is {value!r}; set it to one of {', '.join(allowed)}")
