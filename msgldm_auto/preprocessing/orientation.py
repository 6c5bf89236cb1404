"""Reorientation to RAS by axis permutation and flips only (no interpolation), and its exact inverse.

An `Image` array is in numpy (k, j, i) order and its direction matrix (ITK, LPS) maps index axes (i, j, k) to world
axes. The RAS volume has axis 0 pointing Right, axis 1 Anterior, axis 2 Superior (nibabel's "canonical" layout), so a
plans `slice_axis` of 2 always means axial slices, whatever order the scanner stored the voxels in.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SUPERIOR_INFERIOR = 2          # the RAS axis of axial slices
ISOTROPY_TOLERANCE = 1.1       # axes within 10 % of the coarsest count as equally coarse (scanner rounding)


@dataclass(frozen=True)
class Reorientation:
    """For each RAS axis r: the index axis (0=i, 1=j, 2=k) that runs along it, and whether it runs backwards."""

    source_axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def from_direction(cls, direction: tuple[float, ...] | list[float]) -> "Reorientation":
        ras = _LPS_TO_RAS @ np.asarray(direction, dtype=float).reshape(3, 3)  # columns: index axes in RAS world
        # Choose the assignment of index axes to world axes that is most aligned overall; a plain argmax per column
        # could give two index axes the same world axis for oblique (e.g. 45 degree) acquisitions.
        best = max(itertools.permutations(range(3)), key=lambda perm: sum(abs(ras[r, perm[r]]) for r in range(3)))
        flips = tuple(bool(ras[r, best[r]] < 0) for r in range(3))
        return cls(tuple(int(a) for a in best), flips)  # type: ignore[arg-type]

    def to_ras(self, array_kji: np.ndarray) -> np.ndarray:
        """(k, j, i) array -> RAS-ordered view (no copy; flips are negative strides)."""
        ijk = np.transpose(array_kji, (2, 1, 0))
        ras = np.transpose(ijk, self.source_axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                ras = np.flip(ras, axis)
        return ras

    def from_ras(self, ras: np.ndarray) -> np.ndarray:
        """Exact inverse of `to_ras`: RAS-ordered array -> contiguous (k, j, i) array."""
        for axis, flip in enumerate(self.flips):
            if flip:
                ras = np.flip(ras, axis)
        ijk = np.transpose(ras, tuple(int(a) for a in np.argsort(self.source_axes)))
        return np.ascontiguousarray(np.transpose(ijk, (2, 1, 0)))

    def ras_spacing(self, spacing_ijk: tuple[float, ...] | list[float]) -> list[float]:
        return [float(spacing_ijk[a]) for a in self.source_axes]

    def ras_shape(self, shape_kji: tuple[int, ...] | list[int]) -> list[int]:
        shape_ijk = list(reversed(shape_kji))
        return [int(shape_ijk[a]) for a in self.source_axes]

    def axis_codes(self) -> str:
        """Orientation code as nibabel writes it: for index axes i, j, k the world direction each one points to."""
        letters = {(0, False): "R", (0, True): "L", (1, False): "A", (1, True): "P", (2, False): "S", (2, True): "I"}
        world_of = {a: r for r, a in enumerate(self.source_axes)}
        return "".join(letters[(world_of[a], self.flips[world_of[a]])] for a in range(3))

    def to_dict(self) -> dict:
        return {"source_axes": list(self.source_axes), "flips": list(self.flips), "codes": self.axis_codes()}

    @classmethod
    def from_dict(cls, data: dict) -> "Reorientation":
        return cls(tuple(int(a) for a in data["source_axes"]), tuple(bool(f) for f in data["flips"]))  # type: ignore[arg-type]


def slice_layout(slice_axis: int) -> tuple[int, int, int]:
    """Axis order that turns a RAS volume into (Z, H, W): the slice axis first, the other two in RAS order."""
    in_plane = [a for a in range(3) if a != slice_axis]
    return (slice_axis, in_plane[0], in_plane[1])


def left_right_axis(slice_axis: int) -> int | None:
    """The in-plane axis of a slice (0: H, 1: W) that runs left-right (RAS axis 0); None when slices are sagittal.
    Brains are roughly left-right symmetric: training mirrors along it, and prediction averages over that mirror."""
    in_plane = slice_layout(slice_axis)[1:]
    return in_plane.index(0) if 0 in in_plane else None


def to_slices(ras: np.ndarray, slice_axis: int) -> np.ndarray:
    return np.transpose(ras, slice_layout(slice_axis))


def from_slices(zhw: np.ndarray, slice_axis: int) -> np.ndarray:
    return np.transpose(zhw, tuple(int(a) for a in np.argsort(slice_layout(slice_axis))))


def coarsest_axes(ras_spacing: tuple[float, ...] | list[float]) -> list[int]:
    """The RAS axes whose spacing is within ISOTROPY_TOLERANCE of the coarsest (all three: isotropic)."""
    coarsest = max(ras_spacing)
    return [a for a in range(3) if ras_spacing[a] * ISOTROPY_TOLERANCE >= coarsest]


def slice_axis_for_spacing(ras_spacing: tuple[float, ...] | list[float]) -> int:
    """DESIGN.md §4, the one slice-axis rule: the coarsest RAS axis; superior-inferior when isotropic or tied."""
    candidates = coarsest_axes(ras_spacing)
    return SUPERIOR_INFERIOR if SUPERIOR_INFERIOR in candidates else candidates[0]


def numpy_slice_axis(spacing_itk: tuple[float, ...] | list[float],
                     direction: tuple[float, ...] | list[float] | None = None) -> int:
    """The numpy axis of an `Image` array that `slice_axis_for_spacing` picks (no direction: index axes i, j, k
    taken to run along R, A, S)."""
    reorientation = Reorientation.from_direction(direction if direction is not None else _IDENTITY_DIRECTION)
    index_axis = reorientation.source_axes[slice_axis_for_spacing(reorientation.ras_spacing(spacing_itk))]
    return 2 - index_axis       # numpy order is (k, j, i)
