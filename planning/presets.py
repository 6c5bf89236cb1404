"""Planner presets: budgets (sizes, widths, epochs, minutes, batch caps), never the algorithm (DESIGN.md §4).

`default` targets a GPU and full training; `cpu` is sized so that one fold trains in about ten minutes on two CPU
cores for the demo dataset at 2 mm: 10 minutes of wall-clock budget for the disentangler, whose one-pass decoder is
what the `cpu` plans predict with; the autoencoder and the LDM (2 minutes each) are trained only if the plans switch
diffusion back on.
"""
from __future__ import annotations

from dataclasses import dataclass

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import DEFAULT_PLANS_NAME, STAGES


@dataclass(frozen=True)
class Preset:
    name: str
    max_side: int                          # longest in-plane side of a slice before the spacing is coarsened
    ae_channels: tuple[int, ...]           # autoencoder widths from full resolution down (first log2(f)+1 used)
    ae_res_blocks: int
    structure_channels: tuple[int, ...]    # structure-encoder widths per scale 1 .. 1/f
    unet_channels: tuple[int, ...]         # diffusion UNet widths per level; its length caps the depth
    unet_attention: tuple[bool, ...]
    control_channels: tuple[int, ...]      # the plain UNet control's widths per level (capped by the size multiple)
    norm_groups: int                       # preferred GroupNorm groups (lowered until it divides every width)
    style_channels: int
    decoder_channels: int
    prior_channels: int
    epochs: tuple[tuple[str, int], ...]
    iterations_per_epoch: int
    learning_rates: tuple[tuple[str, float], ...]
    max_minutes: tuple[tuple[str, float | None], ...]
    ddim_steps: int
    max_batch_size: int
    cpu_memory_budget_gb: float            # activation budget when planning for -device cpu
    min_width: int = 8                     # widths are halved down to this when even batch 2 does not fit
    # False: the plans' `ablations.diffusion` is off, so prediction uses the one-pass decoder. Set where
    # benchmarks/bench_quality.py found no diffusion setting as good as the one-pass decoder at the preset's budget
    # (DESIGN §6; documentation/benchmarks.md): the LDM still trains and `ablations.diffusion: true` switches it on.
    diffusion: bool = True

    @property
    def plans_name(self) -> str:
        return DEFAULT_PLANS_NAME if self.name == "default" else f"{DEFAULT_PLANS_NAME}_{self.name}"

    def stage_epochs(self, stage: str) -> int:
        return dict(self.epochs)[stage]

    def stage_learning_rate(self, stage: str) -> float:
        return dict(self.learning_rates)[stage]

    def stage_minutes(self, stage: str) -> float | None:
        return dict(self.max_minutes)[stage]


def _default() -> Preset:
    return Preset(
        name="default", max_side=256, ae_channels=(32, 64, 128, 128, 128), ae_res_blocks=2,
        structure_channels=(32, 64, 128, 256, 256), unet_channels=(64, 128, 256, 256),
        unet_attention=(False, True, True, True), control_channels=(32, 64, 128, 256, 512), norm_groups=32,
        style_channels=32, decoder_channels=32,
        prior_channels=64, epochs=tuple((s, 100) for s in STAGES), iterations_per_epoch=250,
        learning_rates=tuple((s, 1e-4) for s in STAGES),
        max_minutes=tuple((s, None) for s in STAGES), ddim_steps=50, max_batch_size=64, cpu_memory_budget_gb=8.0,
    )


def _cpu() -> Preset:
    # Epochs are generous on purpose: the wall-clock budget ends each stage (10 minutes on 2 cores).
    # diffusion=False: at this budget the denoiser samples worse than the one-pass decoder (bench_quality.py), so
    # neither the autoencoder nor the LDM is trained and their minutes go to the structure stage, whose one-pass
    # decoder (image space: it never uses the autoencoder) gains most from time;
    # structure learning rate 1e-3: far from convergence at this budget, 2e-4 learned slowest of 2e-4 / 8e-4 / 2e-3
    # on the measured-contrast set (3-minute runs, documentation/benchmarks.md); 1e-3 sits between the two that tied
    # (the control, trained with the structure stage's schedule, gets it too);
    # ddim_steps=5: within 0.5 dB of 50 steps there (better, in fact), for whoever switches diffusion back on.
    return Preset(
        name="cpu", max_side=64, ae_channels=(16, 32, 32, 32, 32), ae_res_blocks=1,
        structure_channels=(16, 32, 64, 64, 64), unet_channels=(32, 64), unet_attention=(False, True),
        control_channels=(32, 64, 128, 256), norm_groups=8,
        style_channels=16, decoder_channels=16, prior_channels=32, epochs=tuple((s, 1000) for s in STAGES),
        iterations_per_epoch=50,
        learning_rates=(("ae", 2e-4), ("structure", 1e-3), ("ldm", 2e-4)),
        max_minutes=(("ae", 2.0), ("structure", 10.0), ("ldm", 2.0)),
        ddim_steps=5, max_batch_size=8, cpu_memory_budget_gb=4.0, diffusion=False,
    )


PRESET_NAMES = ("default", "cpu")


def get_preset(name: str) -> Preset:
    """A fresh preset by name (built on each call: presets are data, not shared state)."""
    if name == "default":
        return _default()
    if name == "cpu":
        return _cpu()
    raise MSGLDMError(f"-pl {name}: unknown planner preset; use one of {', '.join(PRESET_NAMES)}")
