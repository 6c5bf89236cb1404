"""The experiment planner: fingerprint + dataset.json + preset -> `Plans`, each decision with a one-line rationale.

Heuristics (DESIGN.md §4), in the order they depend on each other:
slice axis -> in-plane spacing -> raw slice size (95th percentile) -> latent scale f -> UNet depth -> image size
(padded to the total down-sampling) -> 2.5D context -> widths and batch size (activation memory) -> schedule,
sampler steps, ablations -> estimated training time.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import (
    DEFAULT_CONFIGURATION,
    STAGES,
    TIME_BUDGET_COOLDOWN,
    Ablations,
    AutoencoderPlan,
    ConfigurationPlan,
    ControlPlan,
    DiffusionPlan,
    DisentanglerPlan,
    LossWeights,
    Plans,
    StageSchedule,
    UNetPlan,
)
from msgldm_auto.preprocessing.orientation import coarsest_axes, slice_axis_for_spacing, slice_layout
from msgldm_auto.preprocessing.resampling import resampled_size
from planning.cost import activation_bytes_per_sample, estimate_stage_minutes, fold_summary, usable_memory_bytes
from planning.fingerprint import DatasetFingerprint
from planning.presets import Preset, get_preset

LATENT_SCALES = (4, 8, 16)
MAX_LATENT_SIDE = 32
MIN_BOTTLENECK = 4
CONTEXT_RATIO = 2.0            # 2.5D context when slice spacing < 2 x in-plane spacing
SIZE_PERCENTILE = 95
MAX_BATCH_FRACTION = 0.05      # a batch holds at most 5 % of all training slices
# Degree of the per-voxel regression prior each network corrects (networks/regression_prior.py; 0: none), as measured
# in documentation/benchmarks.md (levers): for the control on both sets; for the disentangler on top of the cool-down
# +0.12 / +0.63 dB on the measured-contrast set's two seeds, a tie on the demo (+0.08).
CONTROL_REGRESSION_PRIOR = 2
DISENTANGLER_REGRESSION_PRIOR = 2
# Each decoder's last block also sees every given modality's centre slice: the fused structure is a per-pixel convex
# mix of per-modality features, and a contrast that is nearly a joint voxelwise function of the others (PD from T1 and
# T2) needs the joint intensities, which the control's early fusion has. Measured at 2000 iterations on the
# measured-contrast set: +0.11 and +0.23 dB on two seeds, PD +0.68 and +0.37, a tie on the demo; no measurable step
# cost (benchmarks, step costs).
DECODER_SEES_INPUTS = True
# The disentangler reconstructs the modalities it was given as well as the dropped ones; prediction only asks for the
# dropped ones, and those given are a near-identity task that competed for the small decoders. Measured at the cpu
# budget (documentation/benchmarks.md, levers), weighting them 0.1 instead of 1 raised the measured-contrast set on
# two seeds (+0.37, +0.27 dB) and tied on the demo.
KEPT_RECONSTRUCTION_WEIGHT = 0.1
# Image-space SSIM of the dropped modalities, added to the structure-aware reconstruction (whose SSIM is on DCT
# magnitudes): the control's loss has it and the benchmarks score it. Measured at 2000 iterations on the
# measured-contrast set: +0.22 and −0.01 dB on two seeds, SSIM +0.008 and +0.006, PD +0.5 and +0.4 dB.
IMAGE_SSIM_WEIGHT = 1.0
# MSG-LDM's consistency terms (style KL, style-contrastive, structure invariance) shape the codes; they do not score
# the synthesis. Where a wall-clock budget of minutes ends the disentangler's training they compete with it for the
# few thousand steps there are: at 2000 iterations without them the measured-contrast set scored +0.26, +0.15 and
# +0.13 dB on three seeds, the demo tied (documentation/benchmarks.md, levers), and the step is cheaper (step costs:
# 1.20x with them), so a time-budgeted structure stage is planned without them. Training that runs its epochs (the
# default preset) keeps the published objective.
BUDGETED_CONSISTENCY_WEIGHT = 0.0
AXIS_NAMES = ("R-L: sagittal slices", "A-P: coronal slices", "S-I: axial slices")


def plan_experiment(fingerprint: DatasetFingerprint, dataset_json: DatasetJson, preset: str = "default",
                    gpu_memory_target_gb: float = 8.0, device: str | None = None,
                    overwrite_target_spacing: list[float] | None = None, plans_name: str | None = None,
                    configuration: str = DEFAULT_CONFIGURATION, cpu_cores: int | None = None) -> Plans:
    if not fingerprint.cases:
        raise MSGLDMError(f"fingerprint of {fingerprint.dataset_name} has no cases; re-run msgldm_extract_fingerprint")
    chosen = get_preset(preset)
    device = device or ("cpu" if chosen.name == "cpu" else "cuda")
    name = plans_name or chosen.plans_name
    config = plan_configuration(fingerprint, chosen, gpu_memory_target_gb, device, overwrite_target_spacing, cpu_cores)
    config.data_identifier = f"{name}_{configuration}"
    labels = dataset_json.labels
    num_classes = _num_label_classes(labels)
    p995 = fingerprint.median_p995()
    return Plans(
        dataset_name=fingerprint.dataset_name, plans_name=name, preset=chosen.name, modalities=dataset_json.modalities,
        intensity_p995=p995, configurations={configuration: config}, has_labels=num_classes > 0,
        num_label_classes=num_classes,
        rationale={
            "intensity_p995": "dataset median of each modality's per-case p99.5 inside the head mask: the intensity "
                              "scale of synthesized images",
            "modalities": f"dataset.json channel order; availability {fingerprint.modality_counts()} of "
                          f"{len(fingerprint.cases)} cases",
            "num_label_classes": f"{num_classes} classes from dataset.json labels" if num_classes else "no labels in "
                                                                                                       "dataset.json: "
                                                                                                       "no "
                                                                                                       "segmentation "
                                                                                                       "head",
            "preset": f"preset '{chosen.name}' on device '{device}' (presets change budgets, never the algorithm)",
        },
    )


def plan_configuration(fingerprint: DatasetFingerprint, preset: Preset, gpu_memory_target_gb: float, device: str,
                       overwrite_target_spacing: list[float] | None = None,
                       cpu_cores: int | None = None) -> ConfigurationPlan:
    why: dict[str, str] = {}
    axis = choose_slice_axis(fingerprint, why)
    spacing = choose_spacing(fingerprint, axis, preset.max_side, overwrite_target_spacing, why)
    raw_size = percentile_size(fingerprint, axis, spacing)
    f = choose_latent_scale(raw_size, why)
    levels = choose_unet_levels(raw_size, f, len(preset.unet_channels), why)
    image_size = pad_image_size(raw_size, f, levels, why)
    context = choose_context(fingerprint, axis, spacing, why)
    config = ConfigurationPlan(
        slice_axis=axis, spacing=spacing, image_size=image_size, latent_scale=f, context_slices=context, batch_size=2,
        diffusion=DiffusionPlan(steps=preset.ddim_steps),
        ablations=Ablations(diffusion=preset.diffusion),
        losses=plan_loss_weights(preset.stage_minutes("structure")),
        schedule={s: StageSchedule(preset.stage_epochs(s), preset.iterations_per_epoch, preset.stage_learning_rate(s),
                                   preset.stage_minutes(s), cooldown_fraction=_cooldown(preset.stage_minutes(s)))
                  for s in STAGES},
    )
    config = fit_memory(config, preset, levels, len(fingerprint.modalities), fingerprint, gpu_memory_target_gb, device,
                        why)
    config.estimated_minutes = estimate_stage_minutes(config, len(fingerprint.modalities), device, cpu_cores)
    why["diffusion"] = _diffusion_rationale(config, preset)
    why["schedule"] = _schedule_rationale(config, preset)
    why["ablations"] = ("full MSG-LDM (HFIB, multiscale injection, style consistency, diffusion); set a switch to "
                        "false to ablate it"
                        if preset.diffusion else
                        "HFIB, multiscale injection and style consistency on; diffusion not trained by this preset "
                        "(training skips the autoencoder and the LDM, so prediction uses the one-pass decoder): "
                        "msgldm_train ... --stage ae, then --stage ldm, trains them, and prediction then samples "
                        "with them; msgldm_find_best_configuration chooses the mode")
    if not config.losses.style_contrastive:
        why["ablations"] += "; the style-consistency loss weighs 0 in these plans (see losses)"
    why["regression_prior_degree"] = (
        f"the control corrects the degree-{config.control.regression_prior_degree} per-voxel regression of each "
        f"contrast from the given ones, the disentangler degree {config.disentangler.regression_prior_degree} (0: "
        "none): measured, it paid for the control on both benchmark sets and, on top of the cool-down, for the "
        "disentangler on the measured-contrast set (a tie on the demo) "
        "(documentation/benchmarks.md, levers)")
    why["losses"] = _losses_rationale(config.losses)
    why["estimated_minutes"] = f"estimated on {device}: {fold_summary(config.estimated_minutes)}"
    config.rationale = why
    return config


def _diffusion_rationale(config: ConfigurationPlan, preset: Preset) -> str:
    """Why the sampler is set up as it is; the choices come from benchmarks/bench_quality.py
    (documentation/benchmarks.md)."""
    d = config.diffusion
    text = (f"DDIM {d.steps} steps ({preset.name} preset); target '{d.target}', start '{d.sampling_start}' at t0 "
            f"{d.t0:g} as measured by benchmarks/bench_quality.py (documentation/benchmarks.md)")
    if not preset.diffusion:
        text += ("; at this preset's training budget no diffusion setting matched the one-pass decoder there, so "
                 "prediction defaults to the one-pass decoder (ablations.diffusion false)")
    return text


def choose_slice_axis(fingerprint: DatasetFingerprint, why: dict[str, str]) -> int:
    """The coarsest RAS axis; axial (2) when isotropic or tied."""
    spacing = fingerprint.median_ras_spacing()
    axis = slice_axis_for_spacing(spacing)
    text = " x ".join(f"{s:.2f}" for s in spacing)
    if len(coarsest_axes(spacing)) == 3:
        why["slice_axis"] = f"median RAS spacing {text} mm is isotropic: axial slices, axis 2 ({AXIS_NAMES[2]})"
    else:
        why["slice_axis"] = f"median RAS spacing {text} mm: slices across the coarsest axis {axis} ({AXIS_NAMES[axis]})"
    return axis


def _in_plane(values: list[float] | list[int], axis: int) -> list:
    layout = slice_layout(axis)
    return [values[layout[1]], values[layout[2]]]


def choose_spacing(fingerprint: DatasetFingerprint, axis: int, max_side: int, overwrite: list[float] | None,
                   why: dict[str, str]) -> list[float]:
    if overwrite:
        if len(overwrite) not in (2, 3) or min(overwrite) <= 0:
            raise MSGLDMError(f"--overwrite_target_spacing {overwrite}: give 2 (in-plane) or 3 (RAS) positive spacings "
                              "in mm")
        spacing = [float(s) for s in (overwrite if len(overwrite) == 2 else _in_plane(list(overwrite), axis))]
        why["spacing"] = (f"in-plane spacing {spacing} mm set by --overwrite_target_spacing (the slice axis is never "
                          "resampled)")
        return spacing
    median = [float(s) for s in _in_plane(fingerprint.median_ras_spacing(), axis)]
    spacing = list(median)
    for _ in range(100):
        size = percentile_size(fingerprint, axis, spacing)
        if max(size) <= max_side:
            break
        # Coarsen the finer axes first (towards isotropic pixels), like nnU-Net's low-resolution configuration.
        needed = max(n * s for n, s in zip(size, spacing)) / max_side
        coarser = [max(s, needed) for s in spacing]
        spacing = coarser if coarser != spacing else [s * 1.02 for s in spacing]
    spacing = [round(s, 4) for s in spacing]
    if spacing == [round(s, 4) for s in median]:
        why["spacing"] = (f"median in-plane spacing {spacing} mm; the {SIZE_PERCENTILE}th-percentile head fits "
                          f"max_side {max_side}")
    else:
        why["spacing"] = (f"median in-plane spacing {[round(s, 3) for s in median]} mm coarsened to {spacing} mm so "
                          f"the {SIZE_PERCENTILE}th-percentile head box fits max_side {max_side}")
    return spacing


def percentile_size(fingerprint: DatasetFingerprint, axis: int, spacing: list[float]) -> list[int]:
    """95th percentile of the cropped in-plane size of the cases at `spacing` (same rounding as preprocessing)."""
    sizes = []
    for case in fingerprint.cases:
        shape, case_spacing = _in_plane(case.cropped_shape, axis), _in_plane(case.ras_spacing, axis)
        sizes.append([resampled_size(n, s, t) for n, s, t in zip(shape, case_spacing, spacing)])
    return [int(math.ceil(v)) for v in np.percentile(np.asarray(sizes), SIZE_PERCENTILE, axis=0)]


def choose_latent_scale(raw_size: list[int], why: dict[str, str]) -> int:
    side = max(raw_size)
    for f in LATENT_SCALES:
        if math.ceil(side / f) <= MAX_LATENT_SIDE:
            why["latent_scale"] = (f"f = {f}: the smallest of {LATENT_SCALES} giving a latent side <= "
                                   f"{MAX_LATENT_SIDE} ({side} px -> {math.ceil(side / f)})")
            return f
    f = LATENT_SCALES[-1]
    why["latent_scale"] = (f"f = {f}: even the largest scale leaves a {math.ceil(side / f)}-px latent "
                           f"(slices of {side} px); consider a coarser spacing")
    return f


def choose_unet_levels(raw_size: list[int], f: int, max_levels: int, why: dict[str, str]) -> int:
    latent = math.ceil(min(raw_size) / f)
    levels = 1
    while levels < max_levels and latent / 2 ** levels >= MIN_BOTTLENECK:
        levels += 1
    why["unet"] = (f"{levels} UNet level(s): halving the {latent}-px latent once more would drop the bottleneck below "
                   f"{MIN_BOTTLENECK}x{MIN_BOTTLENECK}" if levels < max_levels else
                   f"{levels} UNet levels: the preset's maximum (latent side {latent} px)")
    return levels


def pad_image_size(raw_size: list[int], f: int, levels: int, why: dict[str, str]) -> list[int]:
    multiple = f * 2 ** (levels - 1)
    size = [int(math.ceil(n / multiple) * multiple) for n in raw_size]
    why["image_size"] = (f"{SIZE_PERCENTILE}th percentile of the cropped slices {raw_size} px, padded to a multiple of "
                         f"the total down-sampling {multiple} (f {f} x UNet {2 ** (levels - 1)}); larger slices are "
                         "centre-cropped for training (prediction grows its canvas to hold the whole head)")
    return size


def choose_context(fingerprint: DatasetFingerprint, axis: int, spacing: list[float], why: dict[str, str]) -> int:
    slice_spacing = fingerprint.median_ras_spacing()[axis]
    in_plane = min(spacing)
    context = 3 if slice_spacing < CONTEXT_RATIO * in_plane else 1
    relation = "<" if context == 3 else ">="
    why["context_slices"] = (f"slice spacing {slice_spacing:.2f} mm {relation} {CONTEXT_RATIO:g} x in-plane "
                             f"{in_plane:.2f} mm: "
                             + ("2.5D with the two neighbouring slices" if context == 3 else "neighbours too far "
                                                                                             "apart, single slices"))
    return context


def _widths(channels: tuple[int, ...], count: int, divisor: int, minimum: int) -> list[int]:
    picked = list(channels[:count]) + [channels[-1]] * max(0, count - len(channels))
    return [max(minimum, c // divisor) for c in picked]


def _groups(channels: list[int], preferred: int) -> int:
    common = math.gcd(*channels)
    return max(g for g in range(1, preferred + 1) if common % g == 0)


def build_networks(config: ConfigurationPlan, preset: Preset, levels: int, divisor: int) -> ConfigurationPlan:
    """Widths of the three networks for this f and UNet depth; `divisor` halves them when memory is short."""
    stages = int(math.log2(config.latent_scale)) + 1
    ae = _widths(preset.ae_channels, stages, divisor, preset.min_width)
    structure = _widths(preset.structure_channels, stages, divisor, preset.min_width)
    unet = _widths(preset.unet_channels, levels, divisor, preset.min_width)
    attention = list(preset.unet_attention[:levels])
    head_channels = math.gcd(32, *[c for c, a in zip(unet, attention) if a]) if any(attention) else 32
    prior = max(preset.min_width, preset.prior_channels // divisor)
    # The control down-samples 2**(levels-1) times, which must divide every slice size (a multiple of size_multiple).
    control_levels = min(len(preset.control_channels), int(math.log2(config.latent_scale)) + levels)
    control = _widths(preset.control_channels, control_levels, divisor, preset.min_width)
    return replace(
        config,
        autoencoder=AutoencoderPlan(channels=ae, num_res_blocks=preset.ae_res_blocks, latent_channels=4,
                                    attention_levels=[False] * stages, norm_num_groups=_groups(ae, preset.norm_groups)),
        disentangler=DisentanglerPlan(structure_channels=structure, style_dim=8,
                                      style_channels=max(preset.min_width, preset.style_channels // divisor),
                                      decoder_channels=max(preset.min_width, preset.decoder_channels // divisor),
                                      prior_channels=prior, msse_heads=math.gcd(4, prior),
                                      regression_prior_degree=DISENTANGLER_REGRESSION_PRIOR,
                                      refine_sees_inputs=DECODER_SEES_INPUTS),
        unet=UNetPlan(channels=unet, attention_levels=attention, num_res_blocks=1, num_head_channels=head_channels,
                      norm_num_groups=_groups(unet, preset.norm_groups)),
        control=ControlPlan(channels=control, regression_prior_degree=CONTROL_REGRESSION_PRIOR),
    )


def total_training_slices(fingerprint: DatasetFingerprint, axis: int) -> int:
    """Slices with head voxels of the cases with at least two modalities (the only ones training uses)."""
    return sum(case.cropped_shape[axis] for case in fingerprint.cases if len(case.present) >= 2)


def fit_memory(config: ConfigurationPlan, preset: Preset, levels: int, modalities: int, fingerprint: DatasetFingerprint,
               gpu_memory_target_gb: float, device: str, why: dict[str, str]) -> ConfigurationPlan:
    """Largest batch the activation budget allows; halve the widths (to the preset's floor) if not even 2 fit."""
    budget = usable_memory_bytes(device, gpu_memory_target_gb, preset.cpu_memory_budget_gb)
    target = (f"{gpu_memory_target_gb:g} GB GPU target" if device != "cpu"
              else f"{preset.cpu_memory_budget_gb:g} GB RAM budget")
    divisor = 1
    while True:
        candidate = build_networks(config, preset, levels, divisor)
        per_sample = activation_bytes_per_sample(candidate, modalities)
        by_memory = int(budget // per_sample) if per_sample > 0 else preset.max_batch_size
        if by_memory >= 2 or min(candidate.unet.channels + candidate.autoencoder.channels) <= preset.min_width:
            break
        divisor *= 2
    cap_slices = max(2, int(MAX_BATCH_FRACTION * total_training_slices(fingerprint, config.slice_axis)))
    batch = max(2, min(by_memory, preset.max_batch_size, cap_slices))
    limits = {by_memory: f"{per_sample / 1e6:.0f} MB activations per sample against the {target}",
              preset.max_batch_size: f"the {preset.name} preset's cap of {preset.max_batch_size}",
              cap_slices: f"{MAX_BATCH_FRACTION:.0%} of {total_training_slices(fingerprint, config.slice_axis)} "
                          "training slices"}
    binding = (limits.get(batch, "the minimum of 2") if batch > 2 or by_memory >= 2
               else "the minimum of 2 (over the memory target)")
    why["batch_size"] = f"batch {batch}: limited by {binding} (memory allows {by_memory})"
    width_note = "" if divisor == 1 else f", preset widths divided by {divisor} to fit the {target}"
    why["autoencoder"] = (f"{len(candidate.autoencoder.channels)} stages = log2(f)+1, widths "
                          f"{candidate.autoencoder.channels}{width_note}")
    why["disentangler"] = (f"structure encoders with log2(f)+1 = {len(candidate.disentangler.structure_channels)} "
                           f"stages, widths {candidate.disentangler.structure_channels}; each decoder's last block "
                           "sees the given modalities' centre slices (refine_sees_inputs): measured, it raised PD "
                           "and the mean on the measured-contrast set (documentation/benchmarks.md, levers)")
    why["control"] = (f"plain UNet control (msgldm_train ... --method unet), widths {candidate.control.channels}: "
                      f"{len(candidate.control.channels) - 1} down-samplings divide the slice size multiple "
                      f"{candidate.size_multiple}; trained with MSG-LDM's whole budget")
    candidate.batch_size = batch
    return candidate


def _schedule_rationale(config: ConfigurationPlan, preset: Preset) -> str:
    parts = []
    for stage in STAGES:
        s = config.schedule[stage]
        budget = f", at most {s.max_minutes:g} min" if s.max_minutes is not None else ""
        skipped = "" if stage in config.trained_stages else " (not trained while diffusion is off)"
        cooldown = f", cooling down over its last {s.cooldown_fraction:.0%}" if s.cooldown_fraction else ""
        parts.append(f"{stage} {s.epochs}x{s.iterations_per_epoch} it, lr {s.learning_rate:g}{budget}{cooldown}"
                     f"{skipped}")
    why = "--max-minutes overrides at training time"
    if any(config.schedule[s].cooldown_fraction for s in STAGES):
        why += ("; a stage its minutes end cools its learning rate down to 0, so where the clock stops does not "
                "decide the model")
    return f"{preset.name} preset: " + "; ".join(parts) + f" ({why})"


def plan_loss_weights(structure_minutes: float | None) -> LossWeights:
    """The loss weights; a disentangler that a wall-clock budget ends trains without the consistency terms."""
    weights = LossWeights(reconstruction_kept=KEPT_RECONSTRUCTION_WEIGHT, reconstruction_image_ssim=IMAGE_SSIM_WEIGHT)
    if structure_minutes is None:
        return weights
    return replace(weights, style_kl=BUDGETED_CONSISTENCY_WEIGHT, style_contrastive=BUDGETED_CONSISTENCY_WEIGHT,
                   structure_invariance=BUDGETED_CONSISTENCY_WEIGHT)


def _losses_rationale(weights: LossWeights) -> str:
    text = (f"the given modalities' reconstruction weighs {weights.reconstruction_kept:g} × the dropped ones' (the "
            f"synthesis task), and the dropped ones' adds image-space SSIM × {weights.reconstruction_image_ssim:g}; ")
    consistency = (weights.style_kl, weights.style_contrastive, weights.structure_invariance)
    if not any(consistency):
        text += ("the consistency terms (style KL, style-contrastive, structure invariance) are off because a "
                 "wall-clock budget ends the disentangler's training; ")
    else:
        text += "style KL × {:g}, style-contrastive × {:g}, structure invariance × {:g}; ".format(*consistency)
    return text + "measured at the cpu budget on the measured-contrast set (documentation/benchmarks.md, levers)"


def _cooldown(max_minutes: float | None) -> float:
    """The cool-down of a stage: planned where a wall-clock budget, not the epochs, ends it."""
    return TIME_BUDGET_COOLDOWN if max_minutes is not None else 0.0


def _num_label_classes(labels: dict | None) -> int:
    if not labels:
        return 0
    values = [v for value in labels.values() for v in (value if isinstance(value, list) else [value])]
    return max(values) + 1 if values else 0


def describe_plans(plans: Plans) -> str:
    """The decisions and the training-time estimate, one line each, for the terminal."""
    lines = [f"plans {plans.plans_name} for {plans.dataset_name} (preset {plans.preset})"]
    for name, config in plans.configurations.items():
        lines.append(f"  configuration {name} -> {config.data_identifier}")
        for key, text in config.rationale.items():
            lines.append(f"    {key}: {text}")
    return "\n".join(lines)
