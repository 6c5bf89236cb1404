"""Anatomy of the demo dataset: nilearn's MNI152 2009 tissue maps, per-subject deformations, lesions, a head shell.

All volumes here are partial-volume *fractions* in (i, j, k) voxel order on a RAS grid (nilearn's convention); the
caller turns fractions into MR signal (mr_physics) and converts to the project's Image contract only when writing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from msgldm_auto.dataset.image_io import Image
from msgldm_auto.errors import MSGLDMError

BRAIN_TISSUES = ("csf", "gm", "wm")
_RAS_TO_LPS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """An axis-aligned RAS voxel grid: voxel (i, j, k) sits at origin + spacing * (i, j, k) in RAS millimetres."""
    shape: tuple[int, int, int]
    spacing_mm: float
    origin_ras: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([self.spacing_mm] * 3 + [1.0])
        affine[:3, 3] = self.origin_ras
        return affine

    def to_image(self, array_ijk: np.ndarray) -> Image:
        """The project's Image contract: numpy (k, j, i) order, ITK LPS geometry (what SimpleITK reads from this
        NIfTI)."""
        ox, oy, oz = self.origin_ras
        return Image(np.ascontiguousarray(np.transpose(array_ijk, (2, 1, 0))), (self.spacing_mm,) * 3,
                     (-ox, -oy, oz), _RAS_TO_LPS_DIRECTION)


@dataclass(frozen=True)
class Template:
    fractions: dict[str, np.ndarray]   # "csf", "gm", "wm" -> float32 fractions on `grid`
    grid: Grid


def load_template(resolution_mm: float) -> Template:
    """The MNI152 2009 GM / WM maps and brain mask shipped with nilearn (no download); CSF = mask - GM - WM."""
    try:
        from nilearn import datasets
    except ImportError:
        raise MSGLDMError("the demo dataset needs nilearn: pip install 'msgldm_auto[demo]' (or pip install "
                          "nilearn)") from None
    # The 1 mm maps only when the output is finer than 2 mm: loading them costs seconds.
    source_resolution = 1 if resolution_mm < 2.0 else 2
    gm_img = datasets.load_mni152_gm_template(resolution=source_resolution)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=source_resolution).get_fdata(), dtype=np.float32)
    gm = np.asarray(gm_img.get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=source_resolution).get_fdata(), dtype=np.float32)
    gm, wm = np.clip(gm, 0.0, 1.0), np.clip(wm, 0.0, 1.0)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    total = gm + wm + csf
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    affine = np.asarray(gm_img.affine, dtype=float)
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or np.any(np.diag(affine)[:3] <= 0):
        raise MSGLDMError("nilearn's MNI152 template is not on an axis-aligned RAS grid: upgrade or reinstall nilearn")
    grid = Grid(tuple(int(n) for n in gm.shape), float(affine[0, 0]), tuple(float(v) for v in affine[:3, 3]))
    return Template({"csf": csf * scale, "gm": gm * scale, "wm": wm * scale}, grid)


def output_grid(template: Template, resolution_mm: float) -> Grid:
    """A grid of `resolution_mm` covering the template's field of view (corners aligned)."""
    src = template.grid
    extent = np.asarray(src.shape) * src.spacing_mm
    shape = tuple(int(max(1, round(e / resolution_mm))) for e in extent)
    corner = np.asarray(src.origin_ras) - src.spacing_mm / 2
    return Grid(shape, float(resolution_mm), tuple(float(c + resolution_mm / 2) for c in corner))


@dataclass(frozen=True)
class DeformationSettings:
    displacement_mm: float = 2.5        # typical amplitude of the smooth non-linear part
    wavelength_mm: tuple[float, float] = (50.0, 120.0)
    max_rotation_deg: float = 5.0
    max_scaling: float = 0.05
    max_translation_mm: float = 3.0
    waves: int = 3


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    rotation = np.eye(3)
    for axis in range(3):
        angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
        c, s = np.cos(angle), np.sin(angle)
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[a, a], turn[a, b], turn[b, a], turn[b, b] = c, -s, s, c
        rotation = turn @ rotation
    return rotation


def _smooth_displacement(world: list[np.ndarray], settings: DeformationSettings,
                         rng: np.random.Generator) -> list[np.ndarray]:
    """Each component a sum of a few random plane waves: smooth, cheap, and invertible for small amplitudes."""
    components = []
    amplitude = settings.displacement_mm / np.sqrt(settings.waves)
    for _ in range(3):
        total = np.float32(0.0)
        for _ in range(settings.waves):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            wavenumber = 2 * np.pi / rng.uniform(*settings.wavelength_mm)
            phase = (sum(np.float32(wavenumber * d) * w for d, w in zip(direction, world))
                     + np.float32(rng.uniform(0, 2 * np.pi)))
            total = total + np.float32(rng.normal(0.0, amplitude)) * np.sin(phase)
        components.append(total)
    return components


def deform_template(template: Template, grid: Grid, settings: DeformationSettings,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tissue fractions of a new subject on `grid`: small affine about the brain centre + smooth warp, then
    resampled."""
    src = template.grid
    axes = [np.float32(o) + np.float32(grid.spacing_mm) * np.arange(n, dtype=np.float32)
            for o, n in zip(grid.origin_ras, grid.shape)]
    world = np.meshgrid(*axes, indexing="ij", sparse=True)
    centre = np.asarray(src.origin_ras) + src.spacing_mm * (np.asarray(src.shape) - 1) / 2
    linear = _random_rotation(rng, settings.max_rotation_deg) @ np.diag(1 + rng.uniform(-settings.max_scaling,
                                                                                        settings.max_scaling, 3))
    shift = rng.uniform(-settings.max_translation_mm, settings.max_translation_mm, 3)
    warp = _smooth_displacement(world, settings, rng)
    # source voxel index = (centre + linear (x - centre) + shift + warp(x) - src_origin) / src_spacing
    coordinates = []
    for d in range(3):
        point = sum(np.float32(linear[d, e]) * (world[e] - np.float32(centre[e])) for e in range(3))
        point = point + np.float32(centre[d] + shift[d] - src.origin_ras[d]) + warp[d]
        coordinates.append(np.broadcast_to(point / np.float32(src.spacing_mm), grid.shape))
    coordinates = np.stack(coordinates)
    # Anti-alias before sampling a coarser grid (sigma so the effective resolution matches the output voxel).
    ratio = grid.spacing_mm / src.spacing_mm
    sigma = 0.42 * np.sqrt(ratio ** 2 - 1) if ratio > 1 else 0.0
    fractions = {}
    for name in BRAIN_TISSUES:
        source = ndimage.gaussian_filter(template.fractions[name], sigma) if sigma > 0 else template.fractions[name]
        fractions[name] = ndimage.map_coordinates(source, coordinates, order=1, mode="constant",
                                                  cval=0.0).astype(np.float32)
    return fractions


def _blob(grid_shape, spacing: float, centre: np.ndarray,
          semi_axes_mm: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """A soft ellipsoid (1 in its core, fading to 0 at its surface) on the smallest box that holds it."""
    radius = np.ceil(semi_axes_mm / spacing).astype(int) + 1
    lo = np.maximum(centre - radius, 0)
    hi = np.minimum(centre + radius + 1, grid_shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = np.meshgrid(*[(np.arange(a, b) - c) * spacing / s for a, b, c, s in zip(lo, hi, centre, semi_axes_mm)],
                        indexing="ij", sparse=True)
    rho = np.sqrt(sum(g * g for g in local))
    return box, np.clip((1.0 - rho) / 0.3, 0.0, 1.0).astype(np.float32)


def add_lesions(fractions: dict[str, np.ndarray], spacing_mm: float, rng: np.random.Generator,
                count_range: tuple[int, int] = (1, 5)) -> np.ndarray:
    """White-matter lesions: clusters of soft ellipsoids in deep WM; takes WM's share of each voxel. Returns the lesion
    fraction."""
    wm = fractions["wm"]
    candidates = np.flatnonzero(wm > 0.9)
    shape = np.asarray(wm.shape)
    envelope = np.zeros_like(wm)
    if candidates.size:
        for _ in range(int(rng.integers(count_range[0], count_range[1] + 1))):
            centre = np.asarray(np.unravel_index(candidates[rng.integers(candidates.size)], wm.shape))
            for _ in range(int(rng.integers(1, 4))):      # irregular lesions: 1-3 overlapping blobs
                semi_axes = np.maximum(rng.uniform(2.5, 6.0, 3), 1.2 * spacing_mm)
                offset = np.round(rng.normal(0, 0.5, 3) * semi_axes / spacing_mm).astype(int)
                box, blob = _blob(shape, spacing_mm, np.clip(centre + offset, 0, shape - 1), semi_axes)
                envelope[box] = np.maximum(envelope[box], blob)
    lesion = envelope * wm
    fractions["wm"] = wm - lesion
    return lesion


def add_head_shell(fractions: dict[str, np.ndarray], spacing_mm: float) -> dict[str, np.ndarray]:
    """Layers around the brain, by distance from it: CSF (0-2 mm), skull (2-7 mm), scalp fat (7-12 mm).

    Each layer takes whatever share of a voxel the brain tissues leave free, so the transitions keep partial volume.
    """
    brain = sum(fractions[name] for name in fractions)
    distance = ndimage.distance_transform_edt(brain < 0.5, sampling=spacing_mm).astype(np.float32)
    free = np.clip(1.0 - brain, 0.0, 1.0)
    shell = {
        "csf": (distance > 0) & (distance <= 2.0),
        "bone": (distance > 2.0) & (distance <= 7.0),
        "fat": (distance > 7.0) & (distance <= 12.0),
    }
    out = dict(fractions)
    out["csf"] = fractions["csf"] + free * shell["csf"]
    out["bone"] = free * shell["bone"]
    out["fat"] = free * shell["fat"]
    return out
