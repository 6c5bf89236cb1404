"""Preview PNGs: every volume of a case in three orthogonal planes through the head's centre.

Rows are volumes (inputs, then synthesis, then truth and |error| when the truth is known); columns are the three planes
(numpy axes 0, 1, 2 held fixed). Two of the three planes cut across the slice axis, so striping between slices shows.
Matplotlib is used through its object API with the Agg canvas: no global pyplot state, no display needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from msgldm_auto.atomic import atomic_path
from msgldm_auto.evaluation.normalization import HIGH_PERCENTILE, LOW_PERCENTILE

PLANE_TITLES = ("axis 0 fixed", "axis 1 fixed", "axis 2 fixed")
TILE_INCHES = 2.2
ERROR_VMAX = 0.5            # |error| on the [0, 1] BraSyn scale; 0.5 is already a gross error


def save_preview(path: Path | str, inputs: Mapping[str, np.ndarray], synthesis: Mapping[str, np.ndarray],
                 truth: Mapping[str, np.ndarray] | None = None, spacing: tuple[float, ...] | None = None,
                 title: str = "") -> Path:
    """Write one PNG: rows inputs | synthesis | (truth | error) for each synthesized modality with a known truth.

    `spacing` (ITK order, as `Image.spacing`) gives the planes their true aspect ratio. Every volume is shown on its own
    robust [0, 1] scale inside the head (non-background voxels of the inputs); the error row is |synthesis − truth|
    on that scale. Works for volumes on the image scale (background 0) and the preprocessed one (background −1).
    """
    if not synthesis:
        raise ValueError("save_preview needs at least one synthesized volume")
    _check_shapes(inputs, synthesis, truth or {})
    head = _head_mask(inputs, synthesis)
    rows = _rows(inputs, synthesis, truth or {}, head)
    centre = _head_centre(head)
    voxel = tuple(reversed(spacing)) if spacing is not None else (1.0, 1.0, 1.0)
    figure = Figure(figsize=(3 * TILE_INCHES, len(rows) * TILE_INCHES))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row, (label, volume, is_error) in enumerate(rows):
        for axis in range(3):
            _draw_plane(axes[row][axis], volume, axis, centre, voxel, is_error)
            if row == 0:
                axes[row][axis].set_title(PLANE_TITLES[axis], fontsize=8)
        axes[row][0].set_ylabel(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _save_atomic(figure, Path(path))


def _rows(inputs: Mapping[str, np.ndarray], synthesis: Mapping[str, np.ndarray],
          truth: Mapping[str, np.ndarray], head: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    rows = [(f"input {n}", _to_unit(v, head), False) for n, v in inputs.items()]
    synthesis01 = {n: _to_unit(v, head) for n, v in synthesis.items()}
    rows += [(f"synthesis {n}", v, False) for n, v in synthesis01.items()]
    for name in synthesis01:
        if name in truth:
            true01 = _to_unit(truth[name], head)
            rows.append((f"truth {name}", true01, False))
            rows.append((f"|error| {name}", np.abs(synthesis01[name] - true01), True))
    return rows


def _check_shapes(*groups: Mapping[str, np.ndarray]) -> None:
    shapes = {np.shape(v) for group in groups for v in group.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"all preview volumes must be 3-D with one shape, got {sorted(shapes)}")


def _head_mask(inputs: Mapping[str, np.ndarray], synthesis: Mapping[str, np.ndarray]) -> np.ndarray:
    """Voxels where any input (or, without inputs, any synthesis) is above its own minimum, i.e. not background.

    Background is the minimum both on the image scale (0) and on the preprocessed scale (−1).
    """
    volumes = [np.asarray(v) for v in (list(inputs.values()) or list(synthesis.values()))]
    return np.any([v > v.min() for v in volumes], axis=0)


def _to_unit(volume: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Display scale: the volume's (0.5, 99.5) percentiles inside the head mapped to [0, 1]; 0 outside the head."""
    volume = np.asarray(volume, dtype=np.float64)
    if volume.shape != head.shape or not np.any(head):
        return np.zeros(volume.shape)
    low, high = np.percentile(volume[head], [LOW_PERCENTILE, HIGH_PERCENTILE])
    out = np.zeros(volume.shape)
    if high > low:
        out[head] = np.clip((volume[head] - low) / (high - low), 0.0, 1.0)
    return out


def _head_centre(head: np.ndarray) -> tuple[int, ...]:
    """Centre of the bounding box of the head; the array centre when it is empty."""
    nonzero = np.argwhere(head)
    if len(nonzero) == 0:
        return tuple(s // 2 for s in head.shape)
    return tuple(int(c) for c in (nonzero.min(axis=0) + nonzero.max(axis=0)) // 2)


def _draw_plane(ax, volume: np.ndarray, axis: int, centre: tuple[int, ...], voxel: tuple[float, ...],
                is_error: bool) -> None:
    plane = np.take(volume, centre[axis], axis=axis)
    rows_axis, cols_axis = [a for a in range(3) if a != axis]
    # Rows of the shown plane run along `rows_axis`; flip so that larger indices are at the top, like a viewer.
    ax.imshow(np.flipud(plane), cmap="magma" if is_error else "gray", vmin=0.0, vmax=ERROR_VMAX if is_error else 1.0,
              aspect=voxel[rows_axis] / voxel[cols_axis], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save_atomic(figure: Figure, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:   # matplotlib picks the format from the ending
        figure.savefig(tmp, dpi=100)
    return path
