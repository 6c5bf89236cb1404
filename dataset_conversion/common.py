"""What every converter shares: the description of a source dataset that a reader produces, and small helpers.

A converter is split in two. A *reader* (brats.py, wmh.py, ixi.py, nnunet.py, folder.py) walks the untouched source
tree and returns a `SourceDataset`: which file is which channel of which case, which label values map to what, and every
file it skipped with the reason. The *writer* (writer.py) then materializes that description as a raw dataset. Readers
never write anything, so the source is never modified and a failed conversion leaves nothing behind.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from msgldm_auto.errors import MSGLDMError

NIFTI_ENDINGS = (".nii.gz", ".nii")
OUTPUT_FILE_ENDING = ".nii.gz"


@dataclass
class SourceCase:
    """One case as found in the source: channel name -> source file, and its label file if any."""
    case_id: str
    images: dict[str, Path]
    label: Path | None = None
    # Resample every other channel onto this channel's grid (rigid registration when the grids differ), e.g. IXI's T2.
    register_onto: str | None = None
    # "Ts" keeps a case out of training whatever it holds (an imported imagesTs); None lets the writer decide.
    split: str | None = None


@dataclass
class SkippedFile:
    path: Path
    reason: str


@dataclass
class SourceDataset:
    """Everything a reader found; the writer turns it into `DatasetXXX_Name/`."""
    kind: str
    channel_names: list[str]                      # output channel order
    cases: list[SourceCase]
    # channel -> the file pattern that found it (for the summary)
    patterns: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] | None = None          # declared in dataset.json
    label_mapping: dict[int, int] | None = None   # source value -> stored value; None copies labels unchanged
    file_ending: str = OUTPUT_FILE_ENDING
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # release quirks that were recognised and handled
    description: str = ""
    default_name: str = "Converted"
    extra_json: dict = field(default_factory=dict)   # further dataset.json keys to keep (e.g. an imported licence)


def strip_nifti_ending(name: str) -> str | None:
    """`x_t1.nii.gz` -> `x_t1`; None when the name is not a NIfTI file."""
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return None


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def require_source_folder(source: Path) -> Path:
    source = Path(source).expanduser()
    if not source.is_dir():
        raise MSGLDMError(f"{source}: source folder does not exist; pass the folder you downloaded/extracted")
    return source.resolve()


def safe_case_id(text: str) -> str:
    """Case IDs become file names: keep letters, digits, '.', '-' and '_' and replace everything else by '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._\-]", "_", text).strip("._")
    if not cleaned:
        raise MSGLDMError(f"case ID {text!r} has no usable characters; adjust --case-id")
    return cleaned


def add_image(case: SourceCase, channel: str, path: Path) -> None:
    """Assign `path` to a channel, refusing two files for the same channel of one case (which one would be right?)."""
    existing = case.images.get(channel)
    if existing is not None and existing != path:
        raise MSGLDMError(
            f"case {case.case_id}: two files for channel {channel} ({existing} and {path}); remove one from the source "
            "or use a more specific pattern"
        )
    case.images[channel] = path


def hidden_files(root: Path) -> list[Path]:
    """Files that `walk_files` leaves out (`.DS_Store`, macOS `._*` copies, anything in a hidden folder)."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and _in_hidden_place(p, root)]


def walk_files(root: Path) -> list[Path]:
    """Every visible file below `root`, sorted, hidden files and folders excluded."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not _in_hidden_place(p, root)]


def _in_hidden_place(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
