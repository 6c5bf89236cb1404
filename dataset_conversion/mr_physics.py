"""MR physics of the demo dataset: tissue relaxation parameters, pulse sequences, signal equations, bias, noise.

Tissue T1 / T2 (ms) and relative proton density (PD) at 1.5 T are the values of the BrainWeb digital brain phantom:
  Kwan RK-S, Evans AC, Pike GB. "MRI simulation-based evaluation of image-processing and classification methods."
  IEEE Transactions on Medical Imaging 1999;18(11):1085-1097 (tissue table of the BrainWeb simulator).
The MS-lesion entry is BrainWeb's as well. BrainWeb gives bone no signal at all; we give it a small PD and a very
short T2 so that the skull shell of `--skull` looks like cortical bone (dark, but not an exact constant).

Signal equations (magnitude, perfect spoiling, TE << T1):
  spin echo            S = PD * (1 - exp(-TR/T1)) * exp(-TE/T2)
  inversion recovery   S = PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| * exp(-TE/T2)
FLAIR's inversion time is chosen to null CSF: TI = T1_csf * ln(2 / (1 + exp(-TR/T1_csf))).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    name: str
    t1_ms: float
    t2_ms: float
    pd: float


# BrainWeb (Kwan et al. 1999), 1.5 T. Tuples, not dicts: module-level constants stay immutable.
CSF = Tissue("csf", 2569.0, 329.0, 1.00)
GREY_MATTER = Tissue("gm", 833.0, 83.0, 0.86)
WHITE_MATTER = Tissue("wm", 500.0, 70.0, 0.77)
LESION = Tissue("lesion", 752.0, 237.0, 0.76)
FAT = Tissue("fat", 350.0, 70.0, 1.00)            # scalp of the optional head shell
BONE = Tissue("bone", 300.0, 5.0, 0.05)           # see the module docstring
TISSUES: tuple[Tissue, ...] = (CSF, GREY_MATTER, WHITE_MATTER, LESION, FAT, BONE)


@dataclass(frozen=True)
class Sequence:
    name: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None = None      # None: spin echo; a number: inversion recovery

    def signal(self, t1_ms, t2_ms, pd):
        """Steady-state magnitude signal; works on floats and numpy arrays alike."""
        t1 = np.asarray(t1_ms, dtype=np.float64)
        decay = np.exp(-self.te_ms / np.asarray(t2_ms, dtype=np.float64))
        recovery = np.exp(-self.tr_ms / t1)
        if self.ti_ms is None:
            longitudinal = 1.0 - recovery
        else:
            longitudinal = np.abs(1.0 - 2.0 * np.exp(-self.ti_ms / t1) + recovery)
        return np.asarray(pd, dtype=np.float64) * longitudinal * decay

    def tissue_signal(self, tissue: Tissue) -> float:
        return float(self.signal(tissue.t1_ms, tissue.t2_ms, tissue.pd))


def null_inversion_time(t1_ms: float, tr_ms: float) -> float:
    """The TI at which a tissue of this T1 gives no signal in an inversion-recovery sequence of this TR."""
    return t1_ms * math.log(2.0 / (1.0 + math.exp(-tr_ms / t1_ms)))


# Clinical-style protocols. Channel order of the demo dataset: 0 T1, 1 T2, 2 FLAIR, 3 PD.
T1_WEIGHTED = Sequence("T1", tr_ms=500.0, te_ms=15.0)
T2_WEIGHTED = Sequence("T2", tr_ms=4000.0, te_ms=100.0)
FLAIR = Sequence("FLAIR", tr_ms=9000.0, te_ms=120.0, ti_ms=null_inversion_time(CSF.t1_ms, 9000.0))
PD_WEIGHTED = Sequence("PD", tr_ms=4000.0, te_ms=10.0)
DEMO_SEQUENCES: tuple[Sequence, ...] = (T1_WEIGHTED, T2_WEIGHTED, FLAIR, PD_WEIGHTED)


PD_JITTER_SD = 0.02      # proton density varies less between subjects than relaxation times


def jitter_tissue(tissue: Tissue, rng: np.random.Generator, relaxation_sd: float = 0.05) -> Tissue:
    """Per-subject tissue values: relative Gaussian jitter, clipped at 2 SD so contrast orderings always survive."""
    def factor(sd: float) -> float:
        return 1.0 + float(np.clip(rng.normal(0.0, sd), -2 * sd, 2 * sd))

    return Tissue(tissue.name, tissue.t1_ms * factor(relaxation_sd), tissue.t2_ms * factor(relaxation_sd),
                  tissue.pd * factor(PD_JITTER_SD))


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.1) -> np.ndarray:
    """A smooth multiplicative field exp(p(x)), p a random quadratic polynomial over the box, mean 1.

    Quadratic terms are what a receive coil's profile looks like at this scale; `strength` is the standard
    deviation of each linear coefficient (half that for the quadratic ones).
    """
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    log_field = np.zeros(shape, dtype=np.float32)
    for i, gi in enumerate(grids):
        log_field += np.float32(rng.normal(0.0, strength)) * gi
        for gj in grids[i:]:
            log_field += np.float32(rng.normal(0.0, strength / 2)) * gi * gj
    field = np.exp(log_field)
    return field / field.mean(dtype=np.float64)


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of `sigma` in both channels (Rician statistics)."""
    sigma = np.float32(sigma)
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)
