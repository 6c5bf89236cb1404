"""Per-stage progress: a text log (`training_log.txt`) and a figure (`progress.png`: loss, learning rate, validation
metric, epoch time). The history is plain lists so it travels inside checkpoints and survives a resume."""
from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOG_NAME = "training_log.txt"
FIGURE_NAME = "progress.png"


@dataclass
class History:
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    val_metric: list[float | None] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls(**{k: list(v) for k, v in data.items()})


class ProgressLog:
    """Only the writing rank creates one with `enabled=True`; the others log nothing."""

    def __init__(self, stage_folder: Path, stage: str, metric_name: str, enabled: bool = True):
        self.folder, self.stage, self.metric_name, self.enabled = Path(stage_folder), stage, metric_name, enabled
        self.history = History()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.folder / LOG_NAME, "a") as handle:
            handle.write(f"{stamp}  {text}\n")
        print(f"{stamp}  {text}", flush=True)   # the same line on stdout, as nnU-Net does: readable in SLURM logs

    def end_epoch(self, epoch: int, train_loss: float, learning_rate: float, val_metric: float | None, seconds: float,
                  iterations_per_second: float) -> None:
        """One line per epoch; iterations/s (training steps only) shows at once when a shared machine slows training."""
        for name, value in (("epoch", epoch), ("train_loss", train_loss), ("learning_rate", learning_rate),
                            ("val_metric", val_metric), ("epoch_seconds", seconds)):
            getattr(self.history, name).append(value)
        metric = "-" if val_metric is None else f"{val_metric:.3f}"
        self.line(f"[{self.stage}] epoch {epoch}: loss {train_loss:.5f}  lr {learning_rate:.2e}  "
                  f"{self.metric_name} {metric}  {seconds:.1f} s  {iterations_per_second:.2f} it/s")

    def plot(self) -> None:
        if not self.enabled or not self.history.epoch:
            return
        import matplotlib

        matplotlib.use("Agg")   # files only; never open a window on a cluster node
        import matplotlib.pyplot as plt

        h = self.history
        figure, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
        axes[0].plot(h.epoch, h.train_loss, color="tab:blue")
        axes[0].set_ylabel("training loss")
        axes[1].plot(h.epoch, h.learning_rate, color="tab:orange")
        axes[1].set_ylabel("learning rate")
        measured = [(e, v) for e, v in zip(h.epoch, h.val_metric) if v is not None]
        if measured:
            axes[2].plot(*zip(*measured), marker="o", color="tab:green")
        axes[2].set_ylabel(self.metric_name)
        axes[3].plot(h.epoch, h.epoch_seconds, color="tab:gray")
        axes[3].set_ylabel("epoch time (s)")
        axes[3].set_xlabel("epoch")
        figure.suptitle(f"stage {self.stage}")
        figure.tight_layout()
        tmp = self.folder / f".{FIGURE_NAME}.tmp.png"
        figure.savefig(tmp, dpi=80)
        plt.close(figure)
        tmp.replace(self.folder / FIGURE_NAME)
