"""The measuring core of bench_quality: synthesize a fixed test set with one trained fold under many settings and
score every synthesized volume exactly like `msgldm_evaluate` does.

Every setting is a `MSGLDMPredictor` (the object behind `msgldm_predict`) sharing the fold's networks; its sampling
start and t0 come from a copy of the plans (`plans_edits.model_variant`), its steps, samples and noise from
`PredictionOptions`. So the numbers are those `msgldm_predict` gives, and there is no second prediction path to keep
in step with the product. A setting with K samples is predicted twice: with K samples (their mean in image space, the
`×K` row) and with one (by the predictor's per-sample seeds exactly sample 0 of the K, the 1-sample row).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.plans_edits import model_variant
from msgldm_auto.dataset.cases import discover_cases, image_file_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image
from msgldm_auto.evaluation.metrics import evaluate_volumes, slice_axis_from_spacing
from msgldm_auto.inference import export
from msgldm_auto.inference.model_loading import ALL_STAGES, load_fold_networks, load_trained_model
from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions
from msgldm_auto.preprocessing.pipeline import preprocess_case

METRICS = ("psnr", "ssim", "mae", "gradient_ratio", "ssim_tumour")
CPU = torch.device("cpu")


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
class Scores:
    """metrics[method][case][target name] = {metric: value}; seconds[method] = wall seconds per volume-set."""
    metrics: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)          # case -> availability pattern
    seconds: dict[str, list[float]] = field(default_factory=dict)   # method -> seconds per case

    def add(self, method: str, case_id: str, target: str, values: dict[str, float]) -> None:
        self.metrics.setdefault(method, {}).setdefault(case_id, {})[target] = {k: float(v) for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "patterns": self.patterns, "seconds": self.seconds}


def load_fold(model_folder: Path, fold: str) -> MSGLDMPredictor:
    """One fold with its denoiser, whatever the plans say: the `cpu` plans switch diffusion off (prediction then
    skips the LDM), and the benchmarks measure both paths. The LDM must have been trained (`--stage ldm`)."""
    model = model_variant(load_trained_model(model_folder), {"ablations": {"diffusion": True}})
    networks = [load_fold_networks(model, fold, "final", CPU, ALL_STAGES)]
    return MSGLDMPredictor(model, networks, CPU, PredictionOptions(seed=0))


def setting_predictor(base: MSGLDMPredictor, setting: Setting, samples: int) -> MSGLDMPredictor:
    """The fold's networks predicting under `setting` with `samples` samples (the seed stays the base's)."""
    start = {"diffusion": {"sampling_start": setting.start, "t0": setting.t0}}
    options = PredictionOptions(steps=setting.steps, num_samples=samples, seed=base.options.seed,
                                one_pass=setting.one_pass, noise=setting.noise)
    return MSGLDMPredictor(model_variant(base.model, start), base.networks, base.device, options)


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
            images = {ch: read_image(p) for ch, p in case.images.items()}
            found.append(TestCase(case.case_id, images, references, label))
    return found


def pattern_name(case: TestCase, modalities: list[str]) -> str:
    return "+".join(modalities[ch] for ch in sorted(case.images))


def predict(predictor: MSGLDMPredictor, case: TestCase) -> dict[int, np.ndarray]:
    """{target channel: array} on the input grid, dataset intensity, zero outside the head (= msgldm_predict)."""
    result = predictor.predict_case_full(case.images, case.targets, case_id=case.case_id)
    return {channel: image.array for channel, image in result.synthesized.items()}


@torch.no_grad()
def autoencoder_ceiling(predictor: MSGLDMPredictor, case: TestCase) -> dict[int, np.ndarray]:
    """{target: array}: the autoencoder's reconstruction of the TRUE targets, through the predictor's export steps.

    No predictor setting expresses this (it needs the held-out truth as input), so it calls the autoencoder and the
    public preprocessing and export functions directly; it samples nothing."""
    config = predictor.model.configuration
    autoencoder = predictor.networks[0].autoencoder
    device = next(autoencoder.parameters()).device
    data, present, _, properties = preprocess_case({**case.images, **case.references}, config, case_id=case.case_id,
                                                   whole_head=True)
    grid = case.images[min(case.images)]
    head_mask = export.head_mask_on_input_grid(properties, grid)
    results = {}
    for channel in case.targets:
        slices = torch.from_numpy(np.asarray(data[list(present).index(channel)], dtype=np.float32))[:, None]
        decoded = torch.cat([autoencoder.decode(autoencoder.encode(chunk.to(device))).cpu()
                             for chunk in torch.split(slices, config.batch_size)])
        restored = export.restore_to_input_grid(decoded[:, 0].clamp(-1, 1).numpy(), properties, grid,
                                                config.head_aware_restore)
        scale = predictor.model.plans.intensity_p995[predictor.modalities[channel]]
        results[channel] = export.finish_volume(export.to_dataset_intensity(restored, scale), head_mask, grid).array
    return results


def score(case: TestCase, channel: int, prediction: np.ndarray) -> dict[str, float]:
    reference = case.references[channel]
    axis = slice_axis_from_spacing(reference.spacing)
    return evaluate_volumes(reference.array, prediction, label=case.label, slice_axis=axis)


def add_scores(scores: Scores, method: str, case: TestCase, modalities: list[str],
               predictions: dict[int, np.ndarray]) -> None:
    for channel in case.targets:
        scores.add(method, case.case_id, modalities[channel], score(case, channel, predictions[channel]))


def run_setting(base: MSGLDMPredictor, cases: list[TestCase], setting: Setting, scores: Scores,
                prefix: str = "") -> None:
    """Score sample 0 under `prefix + setting.name` and, with several samples, their mean under `... ×K`.

    seconds[`prefix + setting.name`] is the wall time of the whole K-sample prediction of a case (quality_report
    divides it by K)."""
    modalities = base.modalities
    single = prefix + setting.name
    several = setting.samples > 1 and not setting.one_pass
    timed = setting_predictor(base, setting, setting.samples if several else 1)
    first_sample = setting_predictor(base, setting, 1) if several else timed
    for case in cases:
        scores.patterns[case.case_id] = pattern_name(case, modalities)
        started = time.perf_counter()
        predictions = predict(timed, case)
        scores.seconds.setdefault(single, []).append(time.perf_counter() - started)
        if several:
            add_scores(scores, f"{single} ×{setting.samples}", case, modalities, predictions)
            predictions = predict(first_sample, case)
        add_scores(scores, single, case, modalities, predictions)


def run_ceiling(predictor: MSGLDMPredictor, cases: list[TestCase], scores: Scores,
                method: str = "ceiling: autoencoder reconstruction") -> None:
    for case in cases:
        add_scores(scores, method, case, predictor.modalities, autoencoder_ceiling(predictor, case))


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
