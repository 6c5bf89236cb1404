"""The demo dataset: a realistic four-contrast brain-MRI dataset (T1, T2, FLAIR, PD) built from real anatomy.

Anatomy: nilearn's bundled MNI152 2009 tissue maps (demo_anatomy). Contrast: literature tissue parameters and MR signal
equations (mr_physics). Per subject: smooth deformation + small affine, tissue-value jitter, white-matter lesions
(written as labels), a bias field per contrast, a scanner gain, Rician noise. Every 4th training case misses one
contrast; test cases in imagesTs hold one or more contrasts out, the held-out truth goes to referenceTs/ and the lesion
masks to labelsTs/. Deterministic by seed: case i uses its own generator seeded by (seed, i).

Without `add_skull` the images are skull-stripped like BraTS (exactly 0 outside the brain); with it a CSF / bone /
scalp shell surrounds the brain and noise fills the background, as in an unstripped scan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset_conversion import mr_physics
from dataset_conversion.demo_anatomy import (
    DeformationSettings,
    Grid,
    Template,
    add_head_shell,
    add_lesions,
    deform_template,
    load_template,
    output_grid,
)
from msgldm_auto import paths
from msgldm_auto.atomic import staged_folder
from msgldm_auto.dataset.cases import image_file_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import write_image
from msgldm_auto.errors import MSGLDMError

CHANNEL_NAMES = {0: "T1", 1: "T2", 2: "FLAIR", 3: "PD"}
LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"
MISSING_EVERY = 4            # training cases 3, 7, 11, ... miss one contrast
SCANNER_UNITS = 1000.0       # signal (0..1) -> stored integer units, like a scanner's int16 output
_TISSUE_OF = {"csf": mr_physics.CSF, "gm": mr_physics.GREY_MATTER, "wm": mr_physics.WHITE_MATTER,
              "lesion": mr_physics.LESION, "bone": mr_physics.BONE, "fat": mr_physics.FAT}


@dataclass(frozen=True)
class DemoSettings:
    resolution_mm: float = 2.0
    add_skull: bool = False
    noise_level: float = 0.02              # Rician sigma relative to the brightest tissue of each contrast
    bias_strength: float = 0.06             # about +-15 % over the brain, typical of 1.5 T head coils
    gain_range: tuple[float, float] = (0.8, 1.25)
    lesion_count: tuple[int, int] = (1, 5)
    deformation: DeformationSettings = field(default_factory=DeformationSettings)


@dataclass
class SimulatedSubject:
    images: dict[int, np.ndarray]          # channel -> int16 volume, (i, j, k) order on the grid
    lesion_mask: np.ndarray                # uint8, 1 = lesion
    fractions: dict[str, np.ndarray]       # tissue name -> partial-volume fraction (for tests and inspection)
    grid: Grid


def simulate_subject(template: Template, grid: Grid, settings: DemoSettings,
                     rng: np.random.Generator) -> SimulatedSubject:
    """One subject with all four contrasts (the caller decides which ones to keep)."""
    fractions = deform_template(template, grid, settings.deformation, rng)
    fractions["lesion"] = add_lesions(fractions, grid.spacing_mm, rng, settings.lesion_count)
    brain = sum(fractions.values())
    if settings.add_skull:
        fractions = add_head_shell(fractions, grid.spacing_mm)
    tissues = {name: _jitter(name, rng) for name in fractions}
    images = {}
    for channel, sequence in enumerate(mr_physics.DEMO_SEQUENCES):
        signal = _mix_signal(sequence, fractions, tissues)
        gain = SCANNER_UNITS * rng.uniform(*settings.gain_range)
        signal *= mr_physics.bias_field(grid.shape, rng, settings.bias_strength) * np.float32(gain)
        brightest = max(sequence.tissue_signal(t) for t in tissues.values()) * gain
        noisy = mr_physics.add_rician_noise(signal, settings.noise_level * brightest, rng)
        if not settings.add_skull:
            noisy[brain < 0.05] = 0.0      # skull-stripped: exactly zero outside the brain
        images[channel] = np.round(noisy).astype(np.int16)
    lesion_mask = (fractions["lesion"] >= 0.5).astype(np.uint8)
    return SimulatedSubject(images, lesion_mask, fractions, grid)


def _jitter(name: str, rng: np.random.Generator) -> mr_physics.Tissue:
    # CSF is nearly pure water: its relaxation times vary far less between subjects than those of tissue, and
    # FLAIR's CSF nulling depends on it.
    relaxation_sd = 0.02 if name == "csf" else 0.05
    return mr_physics.jitter_tissue(_TISSUE_OF[name], rng, relaxation_sd=relaxation_sd)


def _mix_signal(sequence: mr_physics.Sequence, fractions: dict[str, np.ndarray],
                tissues: dict[str, mr_physics.Tissue]) -> np.ndarray:
    """Partial volume: a voxel's signal is the fraction-weighted sum of its tissues' signals."""
    signal = np.zeros(next(iter(fractions.values())).shape, dtype=np.float32)
    for name, fraction in fractions.items():
        signal += np.float32(sequence.tissue_signal(tissues[name])) * fraction
    return signal


def case_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def case_name(name: str, index: int) -> str:
    return f"{name.lower()}_{index:03d}"


def training_channels(index: int, rng: np.random.Generator) -> list[int]:
    """All four contrasts, except every MISSING_EVERY-th case, which loses one at random."""
    channels = list(CHANNEL_NAMES)
    if index % MISSING_EVERY == MISSING_EVERY - 1:
        channels.remove(int(rng.integers(len(channels))))
    return channels


def held_out_channels(rng: np.random.Generator) -> list[int]:
    """One to three contrasts held out of a test case (at least one stays as input)."""
    count = int(rng.integers(1, len(CHANNEL_NAMES)))
    return sorted(int(c) for c in rng.choice(list(CHANNEL_NAMES), size=count, replace=False))


def make_demo_dataset(dataset_id: int = 901, name: str = "Demo", cases: int = 24, test_cases: int = 4, seed: int = 0,
                      resolution_mm: float = 2.0, add_skull: bool = False, overwrite: bool = False,
                      noise_level: float = 0.02) -> Path:
    """Build the demo dataset in `paths.raw_root()` and return its folder. Written to a temporary folder, then
    renamed."""
    _check_arguments(cases, test_cases, resolution_mm, noise_level)
    settings = DemoSettings(resolution_mm=float(resolution_mm), add_skull=bool(add_skull),
                            noise_level=float(noise_level))
    raw = paths.raw_root()
    final = raw / paths.make_dataset_name(dataset_id, name)
    existing = paths.datasets_with_id(dataset_id, [raw])
    if existing and not overwrite:
        raise MSGLDMError(f"{existing[0]} already exists: pass --overwrite to replace it, or choose another -d ID")
    with staged_folder(final, replaces=existing) as staging:
        _write_dataset(staging, name, cases, test_cases, seed, settings)
    return final


def _check_arguments(cases: int, test_cases: int, resolution_mm: float, noise_level: float) -> None:
    if cases < 1:
        raise MSGLDMError(f"--cases {cases}: the demo dataset needs at least 1 training case")
    if test_cases < 0:
        raise MSGLDMError(f"--test-cases {test_cases}: use 0 or more")
    if not 0.5 <= resolution_mm <= 8.0:
        raise MSGLDMError(f"--resolution {resolution_mm}: use a voxel size between 0.5 and 8 mm")
    if not 0.0 <= noise_level <= 0.5:
        raise MSGLDMError(f"noise_level {noise_level}: use a value between 0 and 0.5")


def _write_dataset(folder: Path, name: str, cases: int, test_cases: int, seed: int, settings: DemoSettings) -> None:
    template = load_template(settings.resolution_mm)
    grid = output_grid(template, settings.resolution_mm)
    for index in range(cases):
        rng = case_rng(seed, index)
        subject = simulate_subject(template, grid, settings, rng)
        _write_case(folder, "imagesTr", "labelsTr", case_name(name, index), subject, training_channels(index, rng))
    for index in range(cases, cases + test_cases):
        rng = case_rng(seed, index)
        subject = simulate_subject(template, grid, settings, rng)
        held_out = held_out_channels(rng)
        case_id = case_name(name, index)
        _write_case(folder, "imagesTs", "labelsTs", case_id, subject, [c for c in CHANNEL_NAMES if c not in held_out])
        _write_case(folder, "referenceTs", None, case_id, subject, held_out)
    _dataset_json(name, cases, test_cases, seed, settings).save(folder / "dataset.json")


def _write_case(folder: Path, images_dir: str, labels_dir: str | None, case_id: str, subject: SimulatedSubject,
                channels: list[int]) -> None:
    for channel in channels:
        write_image(subject.grid.to_image(subject.images[channel]),
                    folder / images_dir / image_file_name(case_id, channel, FILE_ENDING))
    if labels_dir is not None:
        write_image(subject.grid.to_image(subject.lesion_mask), folder / labels_dir / f"{case_id}{FILE_ENDING}")


def _dataset_json(name: str, cases: int, test_cases: int, seed: int, settings: DemoSettings) -> DatasetJson:
    return DatasetJson(
        channel_names=dict(CHANNEL_NAMES),
        file_ending=FILE_ENDING,
        num_training=cases,
        labels=dict(LABELS),
        name=name,
        description=("Synthetic multi-contrast brain MRI from the MNI152 2009 templates (nilearn), BrainWeb tissue "
                     "parameters, spin-echo / inversion-recovery signal equations, white-matter lesions, bias field, "
                     "Rician noise. imagesTs cases hold contrasts out; their truth is in referenceTs."),
        extra={"demo": {"seed": int(seed), "training_cases": int(cases), "test_cases": int(test_cases),
                        "resolution_mm": settings.resolution_mm, "skull": settings.add_skull,
                        "noise_level": settings.noise_level, "missing_every": MISSING_EVERY},
               "reference": "referenceTs"},
    )
