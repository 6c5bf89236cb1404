"""`MSGLDMPredictor`: the Python API of prediction (the CLI `msgldm_predict` is a thin layer over it).

    predictor = MSGLDMPredictor.from_trained_folder(model_folder, folds=[0, 1], device="cuda")
    outputs = predictor.predict_case({0: "case_0000.nii.gz", 2: "case_0002.nii.gz"})   # {1: Image, 3: Image}

One case: read and grid-check its images -> `preprocess_case` -> for every fold and sample, synthesize the targets on
the slice grid -> invert the preprocessing -> dataset intensity scale. Folds and samples are averaged in image space
(each fold has its own autoencoder, so latents of different folds are not comparable); their per-voxel std is the
uncertainty map. Everything outside the head mask is zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msgldm_auto.dataset.image_io import Image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation.model_choice import CHOICE_FILE, STAGES_BY_PREDICTOR_MODE, PredictionMode, read_model_choice
from msgldm_auto.inference import export
from msgldm_auto.inference.case_input import load_images
from msgldm_auto.inference.model_loading import (
    FoldNetworks,
    TrainedModel,
    available_folds,
    load_fold_networks,
    load_trained_model,
    normalise_fold,
    resolve_device,
    resolve_folds,
)
from msgldm_auto.inference.synthesis import NOISE_STRATEGIES, SynthesisSettings, make_volume_input, synthesize_volume
from msgldm_auto.plans import CONTROL_STAGE, METHODS, STAGES
from msgldm_auto.preprocessing.orientation import left_right_axis


@dataclass
class PredictionOptions:
    steps: int | None = None            # DDIM steps; None: the plans' `diffusion.steps`
    num_samples: int = 1                # samples averaged per fold
    seed: int = 0
    one_pass: bool = False              # True: the disentangler's one-pass decoder (fast mode), no diffusion
    method: str = "msgldm"              # "msgldm" | "unet" (the plain UNet control, `msgldm_train ... --method unet`)
    noise: str = "shared"               # "shared" (one draw for all slices) | "independent" (one per slice)
    batch_size: int | None = None       # slices per forward pass; None: the plans' batch size
    mirror: bool = True                 # the deterministic passes average over the left-right mirror (nnU-Net's TTA;
                                        # msgldm_predict --disable_tta); diffusion averages samples instead
    resample_mismatched: bool = False
    match_percentile: bool = True       # stretch each synthesis's brightest 5 % so that its p99.5 inside the head is
                                        # the export scale, as a real acquisition's (export.match_head_percentile;
                                        # msgldm_predict --no_percentile_match)

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise MSGLDMError(f"--steps {self.steps}: use at least 1 step")
        if self.method not in METHODS:
            raise MSGLDMError(f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if self.method == "unet" and (self.one_pass or self.steps is not None or self.num_samples > 1):
            raise MSGLDMError("-m unet predicts in one deterministic pass: drop --one-pass, --steps and --num-samples")
        if self.num_samples < 1:
            raise MSGLDMError(f"--num-samples {self.num_samples}: use at least 1 sample")
        if self.noise not in NOISE_STRATEGIES:
            raise MSGLDMError(f"--noise {self.noise}: choose one of {', '.join(NOISE_STRATEGIES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise MSGLDMError(f"--batch-size {self.batch_size}: use at least 1")

    def with_mode(self, mode: PredictionMode) -> "PredictionOptions":
        """These options predicting in `mode` (e.g. the one `msgldm_find_best_configuration` chose)."""
        return replace(self, method=mode.method, one_pass=mode.one_pass, num_samples=mode.num_samples)


@dataclass
class CasePrediction:
    case_id: str
    present: list[int]                                   # channel ids the case came with
    synthesized: dict[int, Image]                        # channel id -> float32 image on the input grid
    std: dict[int, Image] = field(default_factory=dict)  # per-voxel std over folds x samples (only when asked)


class MSGLDMPredictor:
    def __init__(self, model: TrainedModel, networks: list[FoldNetworks], device: torch.device,
                 options: PredictionOptions | None = None,
                 checkpoint: str = "final"):
        self.model = model
        self.networks = networks
        self.device = device
        self.options = options or PredictionOptions()
        self.options.validate()
        self.checkpoint = checkpoint
        self.scheduler = self._make_scheduler() if self.uses_diffusion else None

    @classmethod
    def from_trained_folder(cls, model_folder: Path | str, folds: list[int | str] | tuple | None = None,
                            checkpoint: str = "final", device: str | torch.device = "cpu",
                            options: PredictionOptions | None = None) -> "MSGLDMPredictor":
        """Load the chosen folds (default: every trained numbered fold, else `all`) of a results model folder."""
        options = options or PredictionOptions()
        options.validate()
        model = load_trained_model(Path(model_folder).expanduser())
        stages = _stages_to_load(model, options, folds, checkpoint)
        fold_names = resolve_folds(model.folder, folds, checkpoint, stages)
        torch_device = resolve_device(device)
        networks = [load_fold_networks(model, fold, checkpoint, torch_device, stages) for fold in fold_names]
        return cls(model, networks, torch_device, options, checkpoint)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def modalities(self) -> list[str]:
        return self.model.plans.modalities

    @property
    def folds(self) -> list[str]:
        return [n.fold for n in self.networks]

    @property
    def uses_diffusion(self) -> bool:
        return all(n.denoiser is not None for n in self.networks) and not self.options.one_pass

    @property
    def mode(self) -> str:
        """What produced the images: `diffusion`, `one_pass` (MSG-LDM's decoder) or `unet` (the plain UNet control)."""
        if self.options.method == "unet":
            return "unet"
        return "diffusion" if self.uses_diffusion else "one_pass"

    @property
    def stages(self) -> tuple[str, ...]:
        """The trained stages whose weights produce this predictor's images."""
        return STAGES_BY_PREDICTOR_MODE[self.mode]

    @property
    def steps(self) -> int:
        """DDIM steps actually used (0 for the one-pass decoder)."""
        if not self.uses_diffusion:
            return 0
        return self.options.steps or self.model.configuration.diffusion.steps

    @property
    def mirrors(self) -> bool:
        """Whether the deterministic pass averages over the left-right mirror (never while sampling)."""
        return self.options.mirror and not self.uses_diffusion

    @property
    def samples(self) -> int:
        """Samples per fold: the one-pass decoder is deterministic, so more than one would only repeat it."""
        return self.options.num_samples if self.uses_diffusion else 1

    # ----------------------------------------------------------------------------------------------- prediction
    def resolve_targets(self, present: list[int], targets: list[int | str] | None) -> list[int]:
        """Channel ids to synthesize: the named ones (names or ids) that are missing, else every missing one."""
        if targets is None:
            return [c for c in range(len(self.modalities)) if c not in present]
        chosen = []
        for target in targets:
            channel = self._channel_of(target)
            if channel not in present and channel not in chosen:
                chosen.append(channel)
        return sorted(chosen)

    def predict_case(self, images: dict[int, Path | str | Image],
                     targets: list[int | str] | None = None) -> dict[int, Image]:
        """{channel: Image} of the synthesized modalities, on the exact grid of the input images."""
        return self.predict_case_full(images, targets).synthesized

    def predict_case_full(self, images: dict[int, Path | str | Image], targets: list[int | str] | None = None,
                          case_id: str = "case", with_std: bool = False) -> CasePrediction:
        images = {int(ch): Path(p).expanduser() if isinstance(p, (str, Path)) else p for ch, p in images.items()}
        self._check_channels(images, case_id)
        loaded = load_images(images, case_id)
        present = sorted(loaded)
        wanted = self.resolve_targets(present, targets)
        if not wanted:
            return CasePrediction(case_id, present, {})
        mean, std, reference, head_mask = self._ensemble(loaded, wanted, with_std, case_id)
        if self.options.match_percentile:
            mean, std = self._match_percentiles(mean, std, head_mask, wanted)
        synthesized = {ch: export.finish_volume(mean[i], head_mask, reference) for i, ch in enumerate(wanted)}
        std_maps = ({ch: export.finish_volume(std[i], head_mask, reference) for i, ch in enumerate(wanted)}
                    if with_std else {})
        return CasePrediction(case_id, present, synthesized, std_maps)

    def predict_folder(self, inputs, output_folder: Path | str, **kwargs: Any):
        """Predict every case of a folder (or one case given as files); see `folder_prediction.predict_folder`."""
        from msgldm_auto.inference.folder_prediction import predict_folder

        if isinstance(inputs, (list, tuple)):
            inputs = [Path(p).expanduser() for p in inputs]
        else:
            inputs = Path(inputs).expanduser()
        return predict_folder(self, inputs, Path(output_folder).expanduser(), **kwargs)

    # ----------------------------------------------------------------------------------------------- internals
    def _ensemble(self, images: dict[int, Image], targets: list[int], with_std: bool, case_id: str):
        """Mean (and std) over folds x samples of the targets in dataset intensity on the input grid."""
        from msgldm_auto.preprocessing.pipeline import preprocess_case

        config = self.model.configuration
        data, present_channels, _, properties = preprocess_case(
            images, config, resample_mismatched=self.options.resample_mismatched, case_id=case_id, whole_head=True)
        reference = images[min(images)]
        volume_input = make_volume_input(np.asarray(data), list(present_channels), len(self.modalities),
                                         properties.foreground_slices)
        settings = SynthesisSettings(self.uses_diffusion, self.steps, self.options.noise,
                                     self.options.batch_size or config.batch_size,
                                     left_right_axis(config.slice_axis) if self.mirrors else None)
        scales = self._scales(targets)
        total = np.zeros((len(targets), *reference.array.shape), dtype=np.float64)
        total_sq = np.zeros_like(total) if with_std else None
        count = 0
        for networks in self.networks:
            for sample in range(self.samples):
                synthesis = synthesize_volume(networks, self.scheduler, config, volume_input, targets, settings,
                                              self._sample_seed(sample))
                for i, scale in enumerate(scales):
                    restored = export.to_dataset_intensity(export.restore_to_input_grid(
                        synthesis[i], properties, reference, config.head_aware_restore), scale)
                    total[i] += restored
                    if total_sq is not None:
                        total_sq[i] += np.square(restored, dtype=np.float64)
                count += 1
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0)) if total_sq is not None else None
        head_mask = export.head_mask_on_input_grid(properties, reference)
        return mean.astype(np.float32), None if std is None else std.astype(np.float32), reference, head_mask

    def _match_percentiles(self, mean: np.ndarray, std: np.ndarray | None, head_mask: np.ndarray,
                           targets: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        for i, scale in enumerate(self._scales(targets)):
            stretch = export.match_head_percentile(mean[i], head_mask, scale)
            if std is not None:
                std[i] = stretch.apply_to_std(std[i], mean[i])
            mean[i] = stretch.apply(mean[i])
        return mean, std

    def _scales(self, targets: list[int]) -> list[float]:
        """The export intensity scale (dataset median p99.5) of each target."""
        return [self.model.plans.intensity_p995[self.modalities[ch]] for ch in targets]

    def _sample_seed(self, sample: int) -> int:
        """Independent, reproducible seeds per sample (the same for every fold and case)."""
        return int(np.random.SeedSequence([int(self.options.seed), int(sample)]).generate_state(1)[0])

    def _channel_of(self, target: int | str) -> int:
        if isinstance(target, int) or str(target).isdigit():
            channel = int(target)
            if 0 <= channel < len(self.modalities):
                return channel
        elif target in self.modalities:
            return self.modalities.index(target)
        raise MSGLDMError(f"--targets {target}: not a modality of this model; choose from {', '.join(self.modalities)}")

    def _check_channels(self, images: dict[int, Any], case_id: str) -> None:
        unknown = [ch for ch in images if not 0 <= ch < len(self.modalities)]
        if unknown:
            raise MSGLDMError(f"case {case_id}: channel(s) {unknown} are not modalities of this model "
                              f"({dict(enumerate(self.modalities))})")

    def _make_scheduler(self):
        from msgldm_auto.diffusion.scheduler import make_scheduler

        return make_scheduler(self.model.configuration)


def _stages_to_load(model: TrainedModel, options: PredictionOptions, folds, checkpoint: str) -> tuple[str, ...]:
    """MSG-LDM samples with diffusion unless `one_pass`: plans that train it need it (a missing checkpoint is an error);
    plans that do not (the `cpu` preset) use it when the chosen folds have it trained anyway (`--stage ldm`)."""
    planned = model.configuration.method_stages(options.method, options.one_pass)
    if options.method == CONTROL_STAGE or options.one_pass or "ldm" in planned:
        return planned
    with_diffusion = available_folds(model.folder, checkpoint, STAGES)
    wanted = [normalise_fold(f) for f in folds] if folds else with_diffusion
    return STAGES if wanted and all(f in with_diffusion for f in wanted) else ("structure",)


def apply_mode_choice(options: PredictionOptions, model_folder: Path, mode_name: str | None,
                      explicit: bool) -> tuple[PredictionOptions, PredictionMode | None, str | None]:
    """The options in the mode named by `--mode`, else in the mode `msgldm_find_best_configuration` chose unless the
    user's flags (`explicit`: --one-pass, -m, --num-samples, --steps) already say how to predict. Returns the options,
    the mode applied (None: the options as given) and a line for the log."""
    if mode_name is not None:
        if explicit:
            raise MSGLDMError(f"--mode {mode_name} says how to predict already: drop --one-pass, -m, --num-samples "
                              "and --steps")
        mode = _named_mode(mode_name)
        return options.with_mode(mode), mode, None
    choice = None if explicit else read_model_choice(model_folder)
    if choice is None:
        return options, None, None
    note = f"mode {choice.chosen.name}, chosen by cross-validation ({model_folder / CHOICE_FILE}): {choice.reason}"
    if options.match_percentile and not choice.percentile_matched:
        note += ("; chosen on validations predicted without percentile matching, which this run applies: rerun "
                 "msgldm_find_best_configuration to choose under it")
    return options.with_mode(choice.chosen), choice.chosen, note


def _named_mode(name: str) -> PredictionMode:
    if name in ("one_pass", "unet"):
        return PredictionMode.decoder() if name == "one_pass" else PredictionMode.control()
    samples = (name[len("diffusion_mean"):] if name.startswith("diffusion_mean")
               else ("1" if name == "diffusion" else ""))
    if not samples.isdigit() or int(samples) < 1:
        raise MSGLDMError(f"--mode {name}: choose one_pass, diffusion, diffusion_meanK (K samples, e.g. "
                          "diffusion_mean8) or unet")
    return PredictionMode.diffusion(int(samples))
