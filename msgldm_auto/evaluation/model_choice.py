"""Which prediction mode a trained model should use, chosen from its folds' validation
(`msgldm_find_best_configuration`).

A mode is one way the trained networks can predict: MSG-LDM's one-pass decoder, one diffusion sample, the mean of K
diffusion samples, or the plain UNet control. Each is scored on the same held-out cases; the rule (stated in
documentation/inference.md) is: the best mean PSNR wins; modes within `PSNR_TIE_DB` of it are tied, and the tie goes
to the mode whose in-plane high-frequency energy is closest to the reference's (realism), then to the cheaper mode.
The choice and its table are written to the model folder, where `msgldm_predict` reads them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from msgldm_auto.atomic import write_json_atomic, write_text_atomic
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation.table import ScoredVolume, aggregate, json_safe
from msgldm_auto.json_files import load_json
from msgldm_auto.plans import CONTROL_STAGE, STAGES

CHOICE_FILE = "best_configuration.json"
CHOICE_TABLE_FILE = "best_configuration.txt"
PSNR_TIE_DB = 0.2
DEFAULT_SAMPLES = 8                     # K of the "mean of K diffusion samples" mode
# The trained stages whose weights produce each kind of prediction (`MSGLDMPredictor.mode`).
STAGES_BY_PREDICTOR_MODE = {"unet": (CONTROL_STAGE,), "one_pass": ("structure",), "diffusion": STAGES}


@dataclass(frozen=True)
class PredictionMode:
    """One way to predict with a trained model; `name` is what the tables and the choice file call it."""
    name: str
    method: str = "msgldm"              # "msgldm" | "unet"
    one_pass: bool = False
    num_samples: int = 1
    cost: int = 0                       # relative prediction cost, for ties: fewer network passes first

    @classmethod
    def decoder(cls) -> "PredictionMode":
        return cls("one_pass", one_pass=True, cost=1)

    @classmethod
    def control(cls) -> "PredictionMode":
        return cls("unet", method="unet", cost=0)

    @classmethod
    def diffusion(cls, num_samples: int) -> "PredictionMode":
        name = "diffusion" if num_samples == 1 else f"diffusion_mean{num_samples}"
        return cls(name, num_samples=num_samples, cost=1 + 10 * num_samples)

    @property
    def stages(self) -> tuple[str, ...]:
        """The trained stages a fold needs to predict in this mode."""
        return STAGES_BY_PREDICTOR_MODE[self.predictor_mode]

    @property
    def predictor_mode(self) -> str:
        """What `MSGLDMPredictor.mode` (and a validation summary's `mode`) says for this mode."""
        if self.method == CONTROL_STAGE:
            return "unet"
        return "one_pass" if self.one_pass else "diffusion"


@dataclass(frozen=True)
class ModeScore:
    """A mode's means over every scored volume of the compared folds (None where a metric was not computed)."""
    mode: PredictionMode
    num_volumes: int
    psnr: float | None
    ssim: float | None
    hf_ratio: float | None
    gradient_ratio: float | None
    std_error_spearman: float | None = None
    coverage_2std: float | None = None
    psnr_per_target: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_volumes(cls, mode: PredictionMode, volumes: list[ScoredVolume]) -> "ModeScore":
        summary = aggregate(volumes)

        def mean(metric: str, stats: dict[str, Any] = summary["mean"]) -> float | None:
            return stats[metric]["mean"] if metric in stats else None

        return cls(mode, len(volumes), mean("psnr"), mean("ssim"), mean("hf_ratio"), mean("gradient_ratio"),
                   mean("std_error_spearman"), mean("coverage_2std"),
                   {target: mean("psnr", stats) for target, stats in summary["per_modality"].items()})

    @property
    def realism_gap(self) -> float:
        """|log hf_ratio|: 0 for the reference's high-frequency energy, larger for blur or noise."""
        if not self.hf_ratio or self.hf_ratio <= 0:
            return math.inf
        return abs(math.log(self.hf_ratio))


@dataclass(frozen=True)
class ModelChoice:
    chosen: PredictionMode
    reason: str
    checkpoint: str
    folds: list[str]
    scores: list[ModeScore]
    percentile_matched: bool = False    # the validations were predicted with percentile matching (False: files
                                        # written before it existed)

    def write(self, model_folder: Path) -> Path:
        """`best_configuration.json` (read by `msgldm_predict`) and `best_configuration.txt` (the table)."""
        write_text_atomic(Path(model_folder) / CHOICE_TABLE_FILE, format_choice(self) + "\n")
        write_json_atomic(json_safe(asdict(self)), Path(model_folder) / CHOICE_FILE)
        return Path(model_folder) / CHOICE_FILE

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelChoice":
        scores = [ModeScore(**{**s, "mode": PredictionMode(**s["mode"])}) for s in data["scores"]]
        return cls(PredictionMode(**data["chosen"]), data["reason"], data["checkpoint"], list(data["folds"]), scores,
                   bool(data.get("percentile_matched", False)))


def read_model_choice(model_folder: Path) -> ModelChoice | None:
    """The model folder's choice, or None when `msgldm_find_best_configuration` has not run."""
    path = Path(model_folder) / CHOICE_FILE
    if not path.is_file():
        return None
    fix = "rerun msgldm_find_best_configuration or delete the file"
    try:
        return ModelChoice.from_dict(load_json(path, fix))
    except (KeyError, TypeError) as err:
        raise MSGLDMError(f"{path}: not a readable choice ({type(err).__name__}: {err}); {fix}") from None


def choose_mode(scores: list[ModeScore]) -> tuple[PredictionMode, str]:
    """The rule of the module docstring; returns the mode and a one-line reason."""
    scored = [s for s in scores if s.psnr is not None]
    if not scored:
        raise MSGLDMError("no prediction mode has a validation score to choose by")
    best = max(scored, key=lambda s: s.psnr)
    tied = [s for s in scored if best.psnr - s.psnr <= PSNR_TIE_DB]
    winner = min(tied, key=lambda s: (s.realism_gap, s.mode.cost))
    if len(tied) == 1:
        return winner.mode, f"best mean PSNR ({winner.psnr:.2f} dB)"
    others = ", ".join(f"{s.mode.name} {s.psnr:.2f} dB, HF {_number(s.hf_ratio)}" for s in tied if s is not winner)
    return winner.mode, (f"{winner.psnr:.2f} dB, HF ratio {_number(winner.hf_ratio)}: tied within {PSNR_TIE_DB} dB of "
                         f"the best PSNR with {others}; the HF ratio closest to 1 (then the cheaper mode) wins")


def format_choice(choice: ModelChoice) -> str:
    """The comparison table, then the chosen mode and why."""
    columns = ("mode", "volumes", "PSNR dB", "SSIM", "HF ratio", "grad ratio", "rho(std,err)", "cover 2std",
               "PSNR per target")
    rows = [columns]
    for s in choice.scores:
        per_target = ", ".join(f"{t} {_number(v, 2)}" for t, v in s.psnr_per_target.items())
        rows.append((s.mode.name, str(s.num_volumes), _number(s.psnr, 2), _number(s.ssim), _number(s.hf_ratio),
                     _number(s.gradient_ratio), _number(s.std_error_spearman), _number(s.coverage_2std), per_target))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"folds {' '.join(choice.folds)}, checkpoint {choice.checkpoint}")
    lines.append(f"chosen: {choice.chosen.name} ({choice.reason})")
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
