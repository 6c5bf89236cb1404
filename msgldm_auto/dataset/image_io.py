"""Image reader/writer with one precise contract.

`Image.array` is in numpy order (k, j, i) exactly as `SimpleITK.GetArrayFromImage` returns it; `spacing`, `origin` and
`direction` are in ITK's physical conventions: (i, j, k) order, LPS world coordinates, direction as 9 row-major numbers.
Reading then writing an image reproduces its grid exactly. SimpleITK is tried first; files it rejects are read with
nibabel and converted to the same contract (RAS -> LPS). Writes are atomic: a temporary file in the target folder,
then a rename, so an interrupted write never leaves a half-written image under the final name.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from msgldm_auto.atomic import atomic_path
from msgldm_auto.errors import MSGLDMError

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Image:
    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def direction_matrix(self) -> np.ndarray:
        n = len(self.spacing)
        return np.asarray(self.direction, dtype=float).reshape(n, n)

    def with_array(self, array: np.ndarray) -> "Image":
        """The same grid holding other voxels (shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return replace(self, array=array)

    def same_grid(self, other: "Image", atol: float = 1e-4) -> bool:
        """Equal shape; spacing, origin and direction equal up to float noise (relative to the spacing)."""
        if self.array.shape != other.array.shape:
            return False
        tol = atol * max(1.0, float(np.max(self.spacing)))
        return (np.allclose(self.spacing, other.spacing, rtol=atol, atol=atol)
                and np.allclose(self.origin, other.origin, atol=tol)
                and np.allclose(self.direction, other.direction, atol=atol))


def read_image(path: Path | str) -> Image:
    path = Path(path)
    if not path.is_file():
        raise MSGLDMError(f"{path}: file does not exist")
    try:
        itk = sitk.ReadImage(str(path))
    except RuntimeError:
        return _read_with_nibabel(path)
    return Image(sitk.GetArrayFromImage(itk), tuple(itk.GetSpacing()), tuple(itk.GetOrigin()),
                 tuple(itk.GetDirection()))


def read_image_header(path: Path | str) -> Image:
    """The grid of an image file from its header alone: `array` is a read-only zero view of the right shape, so
    `same_grid` compares files without reading their voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise MSGLDMError(f"{path}: unreadable image header; re-export or remove this file") from None
    shape = tuple(reversed(reader.GetSize()))
    return Image(np.broadcast_to(np.zeros((), np.uint8), shape), tuple(reader.GetSpacing()),
                 tuple(reader.GetOrigin()), tuple(reader.GetDirection()))


def _read_with_nibabel(path: Path) -> Image:
    import nibabel as nib

    try:
        nii = nib.load(str(path))
        data = np.asanyarray(nii.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise MSGLDMError(f"{path}: unreadable image ({type(err).__name__}: {err}); re-export or replace the "
                          "file") from None
    affine = np.asarray(nii.affine, dtype=float)
    spatial = min(data.ndim, 3)
    zooms = np.linalg.norm(affine[:3, :spatial], axis=0)
    direction = _RAS_TO_LPS @ (affine[:3, :spatial] / zooms)
    origin = _RAS_TO_LPS @ affine[:3, 3]
    array = np.ascontiguousarray(np.transpose(data, tuple(reversed(range(data.ndim)))))
    return Image(array, tuple(float(z) for z in zooms), tuple(float(o) for o in origin),
                 tuple(direction.ravel().tolist()))


def to_sitk(image: Image) -> sitk.Image:
    itk = sitk.GetImageFromArray(image.array)
    itk.SetSpacing([float(s) for s in image.spacing])
    itk.SetOrigin([float(o) for o in image.origin])
    itk.SetDirection([float(d) for d in image.direction])
    return itk


def write_image(image: Image, path: Path | str) -> None:
    path = Path(path)
    ending = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=ending) as tmp:     # SimpleITK picks the format from the ending
        sitk.WriteImage(to_sitk(image), str(tmp), useCompression=True)
