"""What preprocessing did to one case, recorded so that one function can undo it (DESIGN.md §5).

`preprocess_case` returns a `CaseProperties`; storage writes it as `CASE.json` next to the case's arrays; the inverse
(`pipeline.restore_original`, `pipeline.head_mask_original`), prediction export and the training loader read its
attributes. On disk it is plain JSON through `to_dict` / `from_dict`, with the keys (and channel ids as string keys)
that preprocessed folders have always had, so folders written before this class existed load unchanged. A file with
missing or unknown keys is refused: it comes from another version, and guessing the missing steps of an inverse would
put synthesized images on the wrong grid without a word.
"""
from __future__ import annotations

import base64
import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.preprocessing.orientation import Reorientation


@dataclass
class OriginalGrid:
    """The input images' grid: `shape` in numpy (k, j, i) order; `spacing`, `origin`, `direction` (row-major 3x3) as
    ITK gives them, in (i, j, k) order and LPS world coordinates."""

    shape: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]


@dataclass
class PackedMask:
    """A bool array bit-packed, deflated and base64-encoded: a head mask costs a few kB in CASE.json, and a training
    loader that holds many cases open keeps them this small."""

    shape: list[int]
    bits: str

    @classmethod
    def pack(cls, mask: np.ndarray) -> "PackedMask":
        packed = np.packbits(np.asarray(mask, dtype=bool).ravel())
        return cls([int(n) for n in mask.shape], base64.b64encode(zlib.compress(packed.tobytes(), 9)).decode("ascii"))

    def unpack(self) -> np.ndarray:
        packed = np.frombuffer(zlib.decompress(base64.b64decode(self.bits)), dtype=np.uint8)
        return np.unpackbits(packed, count=int(np.prod(self.shape))).astype(bool).reshape(self.shape)


@dataclass
class CaseProperties:
    """Every step from one case's input images to its stored (P, Z, H, W) array, in the order preprocessing takes them.

    Channel ids are the dataset.json channel numbers (ints here, string keys in the JSON)."""

    # The case and its stored rows: `present` names the channel of each row of the data array, in order;
    # `resampled_channels` were moved onto the first present channel's grid (--resample-mismatched).
    case_id: str
    present: list[int]
    resampled_channels: list[int]

    # Input grid, and the reorientation to RAS (axis permutation and flips only) with the RAS volume's shape and
    # spacing (mm).
    original: OriginalGrid
    reorientation: Reorientation
    ras_shape: list[int]
    ras_spacing: list[float]

    # The one head mask, in the RAS volume: `crop_box` is its bounding box ([start, stop) per RAS axis), `head_mask`
    # the mask inside that box; `skull_stripped` says it is the nonzero region rather than an Otsu mask.
    crop_box: list[list[int]]
    head_mask: PackedMask
    skull_stripped: bool

    # Slicing and in-plane geometry: the cropped box as (Z, H, W) across `slice_axis`, resampled in-plane to
    # `resampled_shape`, then placed centred into `image_size` with its first pixel at `in_plane_offset` (negative:
    # cropped). `spacing` is the stored (slice, H, W) spacing in mm.
    slice_axis: int
    cropped_shape: list[int]
    resampled_shape: list[int]
    image_size: list[int]
    in_plane_offset: list[int]
    spacing: list[float]

    # Intensities: the scheme's name (preprocessing.normalization), the (0.5, 50, 99.5) percentiles inside the head
    # and the scale each present channel was divided by; `foreground_slices` hold head voxels (training skips others).
    normalization: str
    percentiles: dict[int, list[float]]
    scale: dict[int, float]
    foreground_slices: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, in the CASE.json layout."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(original=dataclasses.asdict(self.original), reorientation=self.reorientation.to_dict(),
                    head_mask=dataclasses.asdict(self.head_mask),
                    percentiles={str(c): list(v) for c, v in self.percentiles.items()},
                    scale={str(c): v for c, v in self.scale.items()})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaseProperties":
        """Rebuild from `to_dict`'s layout; a missing or unknown key or a malformed value is an `MSGLDMError`."""
        _check_keys(data)
        try:
            return cls._convert(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise MSGLDMError(f"malformed case properties ({type(err).__name__}: {err})") from None

    @classmethod
    def _convert(cls, data: dict[str, Any]) -> "CaseProperties":
        original, mask = data["original"], data["head_mask"]
        return cls(
            case_id=str(data["case_id"]), present=_ints(data["present"]),
            resampled_channels=_ints(data["resampled_channels"]),
            original=OriginalGrid(_ints(original["shape"]), _floats(original["spacing"]), _floats(original["origin"]),
                                  _floats(original["direction"])),
            reorientation=Reorientation.from_dict(data["reorientation"]),
            ras_shape=_ints(data["ras_shape"]), ras_spacing=_floats(data["ras_spacing"]),
            crop_box=[_ints(axis) for axis in data["crop_box"]],
            head_mask=PackedMask(_ints(mask["shape"]), str(mask["bits"])),
            skull_stripped=bool(data["skull_stripped"]),
            slice_axis=int(data["slice_axis"]), cropped_shape=_ints(data["cropped_shape"]),
            resampled_shape=_ints(data["resampled_shape"]), image_size=_ints(data["image_size"]),
            in_plane_offset=_ints(data["in_plane_offset"]), spacing=_floats(data["spacing"]),
            normalization=str(data["normalization"]),
            percentiles={int(c): _floats(v) for c, v in data["percentiles"].items()},
            scale={int(c): float(v) for c, v in data["scale"].items()},
            foreground_slices=_ints(data["foreground_slices"]),
        )


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values]


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def _check_keys(data: Any) -> None:
    if not isinstance(data, dict):
        raise MSGLDMError(f"case properties must be a JSON object, not {type(data).__name__}")
    expected = {f.name for f in dataclasses.fields(CaseProperties)}
    missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
    if missing or unknown:
        problems = [f"{kind} key(s) {keys}" for kind, keys in (("missing", missing), ("unknown", unknown)) if keys]
        raise MSGLDMError(f"case properties with {' and '.join(problems)}")
