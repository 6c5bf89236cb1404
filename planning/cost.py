"""Rough cost model of the three stages: activation memory per sample (for the batch size) and time per iteration
(for the printed training-time estimate). Like nnU-Net's VRAM estimate it counts feature maps, not exact bytes;
constants are calibrated on the figures in DESIGN.md's appendix (2 CPU cores, torch 2.13: AutoencoderKL width 16 at
64², batch 8, ~0.2 s per step; widths 32-64-64 at 96², batch 16, ~4.7 s per step -> ~25 GFLOP/s).
"""
from __future__ import annotations

import os

from msgldm_auto.plans import STAGES, ConfigurationPlan

BYTES_PER_VALUE = 4
SAVED_MAPS_PER_CONV = 3          # norm input, activation input, conv input kept for the backward pass
BACKWARD_FACTOR = 3              # forward + backward ~ 3x forward
CPU_FLOPS_PER_CORE = 12.5e9      # effective fp32 conv throughput of one CPU core in torch
GPU_FLOPS = 8e12                 # effective throughput of small 2D convnets on a data-centre GPU (well below peak)
OVERHEAD_SECONDS = {"cpu": 0.02, "cuda": 0.03}   # data loading, optimizer step, Python per iteration
GPU_RESERVED_BYTES = 0.5e9       # CUDA context, weights, optimizer state


def _conv_flops(c_in: int, c_out: int, pixels: float) -> float:
    return 2.0 * 9 * c_in * c_out * pixels


def _pyramid(size: list[int], channels: list[int]) -> list[tuple[int, float]]:
    """(width, pixels) per level of a network that halves the resolution at each level."""
    return [(c, size[0] * size[1] / 4 ** level) for level, c in enumerate(channels)]


def _autoencoder(config: ConfigurationPlan) -> tuple[float, float]:
    """(flops, saved values) of one image through encoder and decoder."""
    convs = 2 * config.autoencoder.num_res_blocks + 1
    levels = _pyramid(config.image_size, config.autoencoder.channels)
    flops = 2 * sum(convs * _conv_flops(c, c, p) for c, p in levels)
    values = 2 * sum(convs * SAVED_MAPS_PER_CONV * c * p for c, p in levels)
    return flops, values


def _disentangler(config: ConfigurationPlan, modalities: int) -> tuple[float, float]:
    """(flops, saved values) of one slice: a structure encoder (+ HFIB) and a decoder per modality."""
    levels = _pyramid(config.image_size, config.disentangler.structure_channels)
    decoder = config.disentangler.decoder_channels
    full = config.image_size[0] * config.image_size[1]
    per_modality_flops = sum(3 * _conv_flops(c, c, p) for c, p in levels) + 4 * _conv_flops(decoder, decoder, full)
    per_modality_values = (sum(3 * SAVED_MAPS_PER_CONV * c * p for c, p in levels)
                           + 4 * SAVED_MAPS_PER_CONV * decoder * full)
    return modalities * per_modality_flops, modalities * per_modality_values


def _unet(config: ConfigurationPlan) -> tuple[float, float]:
    """(flops, saved values) of one denoiser pass at latent resolution (down and up paths, plus attention maps)."""
    levels = _pyramid(config.latent_size, config.unet.channels)
    convs = 2 * config.unet.num_res_blocks * 2 + 1
    flops = sum(convs * _conv_flops(c, c, p) for c, p in levels)
    values = sum(convs * SAVED_MAPS_PER_CONV * c * p for c, p in levels)
    for (c, p), attention in zip(levels, config.unet.attention_levels):
        if attention:
            heads = max(1, c // config.unet.num_head_channels)
            flops += 4 * p * p * c
            values += 2 * heads * p * p
    return flops, values


def stage_costs(config: ConfigurationPlan, modalities: int) -> dict[str, tuple[float, float]]:
    """Per training sample and stage: (training flops, activation bytes)."""
    ae_flops, ae_values = _autoencoder(config)
    dis_flops, dis_values = _disentangler(config, modalities)
    unet_flops, unet_values = _unet(config)
    encode_flops = modalities * config.context_slices * ae_flops / 4   # frozen encoder, forward only
    return {
        "ae": (BACKWARD_FACTOR * ae_flops * 1.3, ae_values * BYTES_PER_VALUE * 1.3),  # +30 %: patch discriminator
        "structure": (BACKWARD_FACTOR * dis_flops, dis_values * BYTES_PER_VALUE),
        "ldm": (BACKWARD_FACTOR * unet_flops + dis_flops / 2 + encode_flops, unet_values * BYTES_PER_VALUE),
    }


def activation_bytes_per_sample(config: ConfigurationPlan, modalities: int) -> float:
    """The largest stage decides the batch size, since one batch size serves all three."""
    return max(memory for _, memory in stage_costs(config, modalities).values())


def usable_memory_bytes(device: str, gpu_memory_target_gb: float, cpu_memory_budget_gb: float) -> float:
    if device == "cpu":
        return cpu_memory_budget_gb * 1e9
    return max(gpu_memory_target_gb * 1e9 - GPU_RESERVED_BYTES, 0.0)


def throughput(device: str, cpu_cores: int | None = None) -> float:
    if device == "cpu":
        return CPU_FLOPS_PER_CORE * max(1, cpu_cores or os.cpu_count() or 1)
    return GPU_FLOPS


def estimate_stage_minutes(config: ConfigurationPlan, modalities: int, device: str,
                           cpu_cores: int | None = None) -> dict[str, float]:
    """Minutes per stage: epochs x iterations x seconds per iteration, capped by the stage's wall-clock budget."""
    speed = throughput(device, cpu_cores)
    out = {}
    for stage, (flops, _) in stage_costs(config, modalities).items():
        if stage not in config.trained_stages:
            continue
        schedule = config.schedule[stage]
        seconds = config.batch_size * flops / speed + OVERHEAD_SECONDS.get(device, 0.03)
        minutes = schedule.epochs * schedule.iterations_per_epoch * seconds / 60.0
        if schedule.max_minutes is not None:
            minutes = min(minutes, schedule.max_minutes)
        out[stage] = round(minutes, 1)
    return out


def format_minutes(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60.0
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def fold_summary(estimate: dict[str, float]) -> str:
    per_fold = sum(estimate.get(s, 0.0) for s in STAGES)
    parts = ", ".join(f"{s} {format_minutes(estimate[s])}" for s in STAGES if s in estimate)
    return f"{format_minutes(per_fold)} per fold ({parts}); {format_minutes(5 * per_fold)} for five folds"

