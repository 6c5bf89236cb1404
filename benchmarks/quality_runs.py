"""The measuring core of bench_quality.py: synthesize a fixed test set with one trained fold under many settings and
score every synthesized volume exactly like `msgldm_evaluate` does.

Every method goes through the product's own path — `preprocess_case` -> networks (`synthesize_volume`) ->
`export.restore_to_input_grid` -> dataset intensity -> head mask — so the numbers are those `msgldm_predict` would
give. A case is preprocessed once and reused by every setting. Several samples of one setting use the predictor's own
per-sample seeds, so "1 sample" is exactly sample 0 of the "K samples" run (the scores of both come from one run).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from msgldm_auto.dataset.cases import discover_cases, image_file_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image
from msgldm_auto.evaluation.metrics import evaluate_volumes, slice_axis_from_spacing
from msgldm_auto.inference import export
from msgldm_auto.inference.predictor import MSGLDMPredictor
from msgldm_auto.inference.synthesis import SynthesisSettings, make_volume_input, synthesize_volume
from msgldm_auto.preprocessing.pipeline import preprocess_case
from msgldm_auto.preprocessing.properties import CaseProperties

METRICS = ("psnr", "ssim", "mae", "gradient_ratio", "ssim_tumour")


@dataclass(frozen=True)
class Setting:
    """One way of synthesizing with a trained fold."""
    steps: int = 10
    start: str = "one_pass"          # "noise" | "one_pass"
    t0: float = 0.5
    samples: int = 1                 # samples computed; both sample 0 alone and the mean of all are scored
    noise: str = "shared"
    one_pass: bool = False           # the disentangler's one-pass decoder (no diffusion)

    @property
    def name(self) -> str:
        if self.one_pass:
            return "one-pass decoder"
        start = "noise" if self.start == "noise" else f"one-pass t0={self.t0:g}"
        noise = "" if self.noise == "shared" else ", independent noise"
        return f"DDIM {self.steps}, start {start}{noise}"


@dataclass
class TestCase:
    case_id: str
    images: dict[int, Image]            # present channels
    references: dict[int, Image]        # held-out truth of the missing channels
    label: np.ndarray | None

    @property
    def targets(self) -> list[int]:
        return sorted(self.references)


@dataclass
class PreparedCase:
    """A test case preprocessed for one model, ready for any number of settings."""
    case: TestCase
    volume_input: Any
    properties: CaseProperties
    grid: Image
    head_mask: np.ndarray


@dataclass
class Scores:
    """metrics[method][case][target name] = {metric: value}; seconds[method] = wall seconds per volume-set."""
    metrics: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)          # case -> availability pattern
    seconds: dict[str, list[float]] = field(default_factory=dict)   # method -> seconds per case

    def add(self, method: str, case_id: str, target: str, values: dict[str, float]) -> None:
        self.metrics.setdefault(method, {}).setdefault(case_id, {})[target] = {k: float(v) for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "patterns": self.patterns, "seconds": self.seconds}


def load_fold_with_denoiser(model_folder: Path, fold: str) -> MSGLDMPredictor:
    """One fold with its denoiser, whatever the plans say: the `cpu` plans switch diffusion off (prediction then
    skips the LDM), and the benchmarks measure both paths. The LDM must have been trained (`--stage ldm`)."""
    from msgldm_auto.inference.model_loading import load_fold_networks, load_trained_model
    from msgldm_auto.inference.predictor import PredictionOptions

    model = load_trained_model(model_folder)
    model.configuration.ablations.diffusion = True
    networks = [load_fold_networks(model, fold, "final", torch.device("cpu"), ("ae", "structure", "ldm"))]
    return MSGLDMPredictor(model, networks, torch.device("cpu"), PredictionOptions(seed=0))


def load_test_cases(dataset_folder: Path, dataset: DatasetJson) -> list[TestCase]:
    """imagesTs with the held-out truth from referenceTs and lesion labels from labelsTs (the demo's layout)."""
    cases, _ = discover_cases(dataset_folder / "imagesTs", dataset)
    found = []
    for case in cases:
        references = {}
        for channel in dataset.channel_names:
            path = dataset_folder / "referenceTs" / image_file_name(case.case_id, channel, dataset.file_ending)
            if channel not in case.images and path.is_file():
                references[channel] = read_image(path)
        label_path = dataset_folder / "labelsTs" / f"{case.case_id}{dataset.file_ending}"
        label = read_image(label_path).array if label_path.is_file() else None
        if references:
            found.append(TestCase(case.case_id, {ch: read_image(p) for ch, p in case.images.items()}, references, label))
    return found


def pattern_name(case: TestCase, modalities: list[str]) -> str:
    return "+".join(modalities[ch] for ch in sorted(case.images))


def prepare_case(predictor: MSGLDMPredictor, case: TestCase) -> PreparedCase:
    config = predictor.model.configuration
    data, present, _, properties = preprocess_case(case.images, config, case_id=case.case_id, whole_head=True)
    volume_input = make_volume_input(np.asarray(data), list(present), len(predictor.modalities),
                                     properties.foreground_slices)
    grid = case.images[min(case.images)]
    return PreparedCase(case, volume_input, properties, grid, export.head_mask_on_input_grid(properties, grid))


@contextlib.contextmanager
def sampling_plan(predictor: MSGLDMPredictor, setting: Setting) -> Iterator[None]:
    """Temporarily give the model's plans this setting's start and t0 (the sampler reads them from the plans)."""
    diffusion = predictor.model.configuration.diffusion
    saved = (diffusion.sampling_start, diffusion.t0)
    diffusion.sampling_start, diffusion.t0 = setting.start, setting.t0
    try:
        yield
    finally:
        diffusion.sampling_start, diffusion.t0 = saved


def synthesize(predictor: MSGLDMPredictor, prepared: PreparedCase, setting: Setting) -> list[np.ndarray]:
    """One (T, k, j, i) array per sample: dataset intensity on the input grid, zero outside the head (= msgldm_predict)."""
    config = predictor.model.configuration
    networks = predictor.networks[0]
    use_diffusion = not setting.one_pass and networks.denoiser is not None
    settings = SynthesisSettings(use_diffusion, setting.steps, setting.noise, config.batch_size)
    scales = [predictor.model.plans.intensity_p995[predictor.modalities[ch]] for ch in prepared.case.targets]
    outputs = []
    with sampling_plan(predictor, setting):
        for sample in range(setting.samples if use_diffusion else 1):
            synthesis = synthesize_volume(networks, predictor.scheduler, config, prepared.volume_input,
                                          prepared.case.targets, settings, predictor._sample_seed(sample))
            outputs.append(np.stack([_export(synthesis[i], scale, prepared) for i, scale in enumerate(scales)]))
    return outputs


def _export(volume: np.ndarray, scale: float, prepared: PreparedCase) -> np.ndarray:
    restored = export.to_dataset_intensity(export.restore_to_input_grid(volume, prepared.properties, prepared.grid), scale)
    return export.finish_volume(restored, prepared.head_mask, prepared.grid).array


@torch.no_grad()
def autoencoder_ceiling(predictor: MSGLDMPredictor, case: TestCase) -> np.ndarray:
    """(T, k, j, i): the autoencoder's reconstruction of the TRUE targets, through the same export path."""
    config = predictor.model.configuration
    autoencoder = predictor.networks[0].autoencoder
    device = next(autoencoder.parameters()).device
    everything = {**case.images, **case.references}
    data, present, _, properties = preprocess_case(everything, config, case_id=case.case_id, whole_head=True)
    grid = case.images[min(case.images)]
    head_mask = export.head_mask_on_input_grid(properties, grid)
    prepared = PreparedCase(case, None, properties, grid, head_mask)
    results = []
    for channel in case.targets:
        slices = torch.from_numpy(np.asarray(data[list(present).index(channel)], dtype=np.float32))[:, None]
        decoded = torch.cat([autoencoder.decode(autoencoder.encode(chunk.to(device))).cpu()
                             for chunk in torch.split(slices, config.batch_size)])
        scale = predictor.model.plans.intensity_p995[predictor.modalities[channel]]
        results.append(_export(decoded[:, 0].clamp(-1, 1).numpy(), scale, prepared))
    return np.stack(results)


def score(case: TestCase, channel: int, prediction: np.ndarray) -> dict[str, float]:
    reference = case.references[channel]
    axis = slice_axis_from_spacing(reference.spacing)
    return evaluate_volumes(reference.array, prediction, label=case.label, slice_axis=axis)


def run_setting(predictor: MSGLDMPredictor, prepared: list[PreparedCase], setting: Setting, scores: Scores,
                prefix: str = "") -> None:
    """Score sample 0 under `prefix + setting.name` and, with several samples, their mean under `... ×K`."""
    modalities = predictor.modalities
    single = prefix + setting.name
    averaged = f"{single} ×{setting.samples}" if setting.samples > 1 and not setting.one_pass else None
    for item in prepared:
        case = item.case
        scores.patterns[case.case_id] = pattern_name(case, modalities)
        start = time.perf_counter()
        samples = synthesize(predictor, item, setting)
        scores.seconds.setdefault(single, []).append(time.perf_counter() - start)
        for i, channel in enumerate(case.targets):
            scores.add(single, case.case_id, modalities[channel], score(case, channel, samples[0][i]))
            if averaged:
                scores.add(averaged, case.case_id, modalities[channel], score(case, channel, np.mean([s[i] for s in samples], axis=0)))


def run_ceiling(predictor: MSGLDMPredictor, cases: list[TestCase], scores: Scores, method: str = "ceiling: autoencoder reconstruction") -> None:
    for case in cases:
        reconstruction = autoencoder_ceiling(predictor, case)
        for i, channel in enumerate(case.targets):
            scores.add(method, case.case_id, predictor.modalities[channel], score(case, channel, reconstruction[i]))


def run_floors(train_cases: list, dataset_folder: Path, dataset: DatasetJson, cases: list[TestCase], output: Path,
               scores: Scores) -> None:
    """Copy and regression floors fitted on the fold's training cases, written by the product's floor runner."""
    from msgldm_auto.inference.baseline_prediction import predict_floor_folders

    folders = {"copy": output / "floor_copy", "regression": output / "floor_regression"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    predict_floor_folders(train_cases, dataset_folder / "imagesTs", dataset, folders)
    for floor, folder in folders.items():
        for case in cases:
            for channel in case.targets:
                array = read_image(folder / image_file_name(case.case_id, channel, dataset.file_ending)).array
                scores.add(f"{floor} floor", case.case_id, dataset.channel_names[channel], score(case, channel, array))
