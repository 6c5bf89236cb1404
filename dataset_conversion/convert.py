"""One call per conversion: read the source, write the dataset (all or nothing), summarise, run the integrity check."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dataset_conversion.brats import RELEASES, read_brats
from dataset_conversion.common import SkippedFile, SourceDataset, hidden_files, require_source_folder
from dataset_conversion.folder import read_folder
from dataset_conversion.ixi import read_ixi
from dataset_conversion.nnunet import read_nnunet
from dataset_conversion.registration import RigidRegistrationSettings
from dataset_conversion.summary import format_summary
from dataset_conversion.wmh import read_wmh
from dataset_conversion.writer import COPY, ConversionResult, WriteOptions, write_dataset
from msgldm_auto.dataset.verify import VerifyReport, verify_dataset

KINDS = ("brats2020", "brats2021", "brats2023", "wmh2017", "ixi", "nnunet", "folder")


@dataclass
class FolderOptions:
    """Only for kind `folder`: (channel name, glob) in channel order, the case-ID rule and the label glob."""
    modalities: list[tuple[str, str]] = field(default_factory=list)
    case_id: str | None = None
    label: str | None = None


@dataclass
class Conversion:
    source: SourceDataset
    result: ConversionResult
    summary: str
    verification: VerifyReport


def read_source(kind: str, source: Path, folder: FolderOptions | None = None) -> SourceDataset:
    found = _read(kind, source, folder)
    found.skipped.extend(SkippedFile(p, "hidden file") for p in hidden_files(Path(source)))
    return found


def _read(kind: str, source: Path, folder: FolderOptions | None) -> SourceDataset:
    if kind in RELEASES:
        return read_brats(source, kind)
    if kind == "wmh2017":
        return read_wmh(source)
    if kind == "ixi":
        return read_ixi(source)
    if kind == "nnunet":
        return read_nnunet(source)
    if kind == "folder":
        folder = folder or FolderOptions()
        return read_folder(source, folder.modalities, folder.case_id, folder.label)
    raise ValueError(f"unknown conversion kind {kind!r}; expected one of {KINDS}")


def convert_dataset(kind: str, source: Path | str, dataset_id: int, name: str | None = None, mode: str = COPY,
                    overwrite: bool = False, folder: FolderOptions | None = None,
                    registration: RigidRegistrationSettings | None = None) -> Conversion:
    """Convert `source` into `MSGLDM_RAW/DatasetXXX_<name>`; the source is only read (or linked to)."""
    root = require_source_folder(Path(source))
    found = read_source(kind, root, folder)
    options = WriteOptions(dataset_id=dataset_id, name=name or found.default_name, mode=mode, overwrite=overwrite,
                           registration=registration or RigidRegistrationSettings())
    result = write_dataset(found, options, root, log=lambda r: format_summary(found, r, root, complete=True))
    return Conversion(found, result, format_summary(found, result, root), verify_dataset(result.dataset_folder))

