"""The plans: a typed, versioned document that the planner writes and everything after planning reads.

Every field is a decision a user may read and edit in `MSGLDMPlans.json`; `rationale` maps a field name to one line
saying why the planner chose it. Presets (`default`, `cpu`) change budgets (sizes, widths, epochs, minutes), never the
algorithm. Serialisation is plain JSON through `to_dict` / `from_dict`; unknown keys are refused with a clear error.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgldm_auto.atomic import write_text_atomic
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json

PLANS_VERSION = 1
DEFAULT_PLANS_NAME = "MSGLDMPlans"           # `-pl cpu` writes DEFAULT_PLANS_NAME + "_cpu" (planning/presets.py)
DEFAULT_CONFIGURATION = "2d"                 # the one configuration the planner writes
STAGES = ("ae", "structure", "ldm")          # MSG-LDM's stages, in training order
CONTROL_STAGE = "unet"                       # the plain UNet control (one stage, its own method)
METHODS = ("msgldm", "unet")
# What each stage trains on top of: the disentangler learns from images alone, the LDM needs both earlier stages.
STAGE_NEEDS = {"ae": (), "structure": (), "ldm": ("ae", "structure"), CONTROL_STAGE: ()}


@dataclass
class AutoencoderPlan:
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])  # len = log2(f) + 1
    num_res_blocks: int = 1
    latent_channels: int = 4
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, False, False])
    norm_num_groups: int = 16


@dataclass
class DisentanglerPlan:
    structure_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # one per scale 1 .. 1/f
    style_dim: int = 8
    style_channels: int = 32
    decoder_channels: int = 32
    prior_channels: int = 64          # channels of the MSSE structure prior at latent resolution
    msse_heads: int = 4
    regression_prior_degree: int = 0  # > 0: the decoders correct a per-voxel polynomial of this degree fitted on the
                                      # fold's training voxels (networks/regression_prior.py); 0: none
    refine_sees_inputs: bool = False  # each decoder's last block also sees every modality's centre slice (0 if absent)


@dataclass
class UNetPlan:
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    attention_levels: list[bool] = field(default_factory=lambda: [False, True, True])
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 32


@dataclass
class ControlPlan:
    """The plain UNet control (networks/plain_unet.py): trained by `msgldm_train ... --method unet` on the same data
    and wall-clock budget as MSG-LDM, to tell whether the structure-style machinery pays."""
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])   # 2**(len-1) divides size_multiple
    num_res_units: int = 2
    regression_prior_degree: int = 0  # as DisentanglerPlan's, for the control


@dataclass
class DiffusionPlan:
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear_beta"      # the paper's square-root-linear schedule
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "v_prediction"          # "epsilon" | "v_prediction"
    target: str = "residual"                       # "latent" (paper) | "residual" (target - one-pass latent)
    sampling_start: str = "one_pass"               # "noise" | "one_pass" (one-pass latent noised to t0)
    t0: float = 0.25                               # fraction of the schedule used when sampling_start == "one_pass"
                                                   # (benchmarks/bench_refine.py: smaller t0 stays closer to the
                                                   # one-pass decoder, 0.25 gives the widest spread of samples)
    train_timesteps: str = "sampled"               # "sampled": only the noise levels the one-pass start samples
                                                   # from, t ~ U{0..t0's timestep}; "all": t ~ U{0..T-1}
    steps: int = 10                                # DDIM steps at inference
    ema_decay: float = 0.999


@dataclass
class LossWeights:
    ae_l1: float = 1.0
    ae_ssim: float = 0.5
    ae_spectral: float = 0.1
    ae_adversarial: float = 0.01
    ae_kl: float = 1e-6
    ae_adversarial_warmup_fraction: float = 0.5   # fraction of the AE stage before the discriminator switches on
    reconstruction: float = 1.0                   # structure-aware: L1 + SSIM of DCT magnitudes
    reconstruction_kept: float = 1.0              # weight of the kept (input) modalities' reconstruction vs dropped
    reconstruction_image_ssim: float = 0.0        # image-space 1 − SSIM added to the dropped ones' reconstruction
    segmentation: float = 2.0
    style_kl: float = 0.05
    style_contrastive: float = 0.1
    structure_invariance: float = 0.1


@dataclass
class Ablations:
    hfib: bool = True                   # False: structure encoders without High-Frequency Injection Blocks
    multiscale_injection: bool = True   # False: structure prior concatenated at the UNet input only (published code)
    style_consistency: bool = True      # False: no supervised-contrastive style loss
    diffusion: bool = True              # False: neither the autoencoder nor the LDM is trained (the planner's call
                                        # where its budget does not pay for them); prediction then uses the decoder
    replacement_sampling: bool = False  # True: hold present latents to their noised values while sampling


# A stage that a wall-clock budget ends lowers its learning rate linearly to 0 over this last fraction of the budget
# (training/trainer.cooldown_factor): the model a user gets then no longer depends on where the clock stops
# (documentation/benchmarks.md, levers). Stages ended by their epochs decay by the poly schedule already. The planner
# plans it for the stages its preset gives minutes; training applies it to a `--max-minutes` the plans did not plan.
TIME_BUDGET_COOLDOWN = 0.2


@dataclass
class StageSchedule:
    epochs: int = 100
    iterations_per_epoch: int = 250
    learning_rate: float = 1e-4
    max_minutes: float | None = None    # wall-clock budget; the stage ends cleanly at a checkpoint when it is spent
    ema_decay: float | None = None      # structure (and the control): predict with this EMA of the weights (None:
                                        # the last ones); the LDM's is diffusion.ema_decay
    cooldown_fraction: float = 0.0      # the learning rate falls linearly to 0 over this last fraction of the stage
                                        # (iterations or minutes, whichever run out first); 0: no cool-down

    def __post_init__(self) -> None:
        if not 0.0 <= self.cooldown_fraction < 1.0:
            raise MSGLDMError(f"plans: schedule cooldown_fraction={self.cooldown_fraction} is not in [0, 1); use 0 for "
                              "no cool-down or e.g. 0.2 for the last fifth of the stage")


@dataclass
class ConfigurationPlan:
    slice_axis: int                              # axis of the RAS-reoriented volume that slices are taken across
    spacing: list[float]                         # in-plane target spacing (mm), RAS order of the two in-plane axes
    image_size: list[int]                        # [H, W] of a preprocessed slice, multiple of the total down-sampling
    latent_scale: int                            # f: 4, 8 or 16
    context_slices: int                          # 1 or 3 (2.5D: the slice and its two neighbours)
    batch_size: int
    autoencoder: AutoencoderPlan = field(default_factory=AutoencoderPlan)
    disentangler: DisentanglerPlan = field(default_factory=DisentanglerPlan)
    unet: UNetPlan = field(default_factory=UNetPlan)
    diffusion: DiffusionPlan = field(default_factory=DiffusionPlan)
    losses: LossWeights = field(default_factory=LossWeights)
    ablations: Ablations = field(default_factory=Ablations)
    control: ControlPlan = field(default_factory=ControlPlan)
    schedule: dict[str, StageSchedule] = field(default_factory=lambda: {s: StageSchedule() for s in STAGES})
    data_identifier: str = ""                    # name of the preprocessed folder of this configuration
    normalization: str = "p995"                  # intensity scheme (msgldm_auto.preprocessing.normalization)
    head_aware_restore: bool = True              # prediction back to the input grid from head pixels only (True) or
                                                 # blending the rim with the background; planned by
                                                 # planning/restoration.py (True for plans written before it)
    estimated_minutes: dict[str, float] = field(default_factory=dict)  # planner's training-time estimate per stage
    rationale: dict[str, str] = field(default_factory=dict)

    @property
    def latent_size(self) -> list[int]:
        return [s // self.latent_scale for s in self.image_size]

    @property
    def trained_stages(self) -> tuple[str, ...]:
        """Stages a model of these plans needs: without diffusion prediction runs the disentangler's one-pass decoder,
        which never touches the latent space, so neither the autoencoder nor the LDM is trained."""
        return STAGES if self.ablations.diffusion else ("structure",)

    def method_stages(self, method: str = "msgldm", one_pass: bool = False) -> tuple[str, ...]:
        """The stages a method's prediction needs, in training order: the control's one, or MSG-LDM's (for its
        one-pass decoder alone when asked, or when the plans switch diffusion off)."""
        if method not in METHODS:
            raise MSGLDMError(f"--method {method}: choose one of {', '.join(METHODS)}")
        if method == CONTROL_STAGE:
            return (CONTROL_STAGE,)
        return ("structure",) if one_pass else self.trained_stages

    def stage_schedule(self, stage: str) -> StageSchedule:
        """A stage's schedule; the control's is MSG-LDM's whole budget (its trained stages' epochs and minutes added
        up), so that the two are compared at equal cost, with the structure stage's learning rate and averaging."""
        if stage != CONTROL_STAGE:
            return self.schedule[stage]
        trained = [self.schedule[s] for s in self.trained_stages]
        minutes = [s.max_minutes for s in trained]
        main = self.schedule["structure"]
        return StageSchedule(
            epochs=sum(s.epochs for s in trained), iterations_per_epoch=main.iterations_per_epoch,
            learning_rate=main.learning_rate, max_minutes=None if None in minutes else float(sum(minutes)),
            ema_decay=main.ema_decay, cooldown_fraction=main.cooldown_fraction,
        )

    @property
    def size_multiple(self) -> int:
        """Total down-sampling (autoencoder f x UNet levels): every slice size the networks take is a multiple of it."""
        return self.latent_scale * 2 ** (len(self.unet.channels) - 1)


@dataclass
class Plans:
    dataset_name: str
    plans_name: str
    preset: str                                   # "default" | "cpu"
    modalities: list[str]                         # names in channel order (dataset.json channel_names)
    intensity_p995: dict[str, float]              # dataset median p99.5 per modality: export scale (DESIGN §7)
    configurations: dict[str, ConfigurationPlan]
    has_labels: bool = False
    num_label_classes: int = 0                    # segmentation classes including background, 0 without labels
    version: int = PLANS_VERSION
    rationale: dict[str, str] = field(default_factory=dict)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            planned = ", ".join(sorted(self.configurations))
            raise MSGLDMError(
                f"configuration '{name}': plans {self.plans_name} have configuration(s) {planned}; "
                f"pick one (the planner writes {DEFAULT_CONFIGURATION}; others must be added to the plans file)"
            )
        return self.configurations[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plans":
        if data.get("version") != PLANS_VERSION:
            raise MSGLDMError(f"plans version {data.get('version')!r} is not supported (expected {PLANS_VERSION}); "
                              "re-run msgldm_plan_experiment")
        return _build(cls, data, "plans")

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "Plans":
        path = Path(path).expanduser()
        data = load_json(path, "run msgldm_plan_and_preprocess (or msgldm_plan_experiment) first",
                         missing="plans file not found")
        try:
            return cls.from_dict(data)
        except MSGLDMError as err:
            raise MSGLDMError(f"{path}: {err}") from None


def _build(tp: Any, value: Any, where: str) -> Any:
    """Rebuild typed dataclasses from plain JSON values, refusing unknown keys so that typos surface."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise MSGLDMError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = set(value) - names
        if unknown:
            raise MSGLDMError(f"{where}: unknown key(s) {sorted(unknown)}; known keys are {sorted(names)}")
        return tp(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _build(args[0], value, where)
    if origin is dict:
        _, value_type = typing.get_args(tp)
        return {k: _build(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(tp)
        return [_build(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def plans_file_name(plans_name: str) -> str:
    return f"{plans_name}.json"
