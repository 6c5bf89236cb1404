"""`dataset.json` as a typed object (nnU-Net v2 fields), with errors that name the key and what is expected."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json


@dataclass
class DatasetJson:
    channel_names: dict[int, str]
    file_ending: str
    num_training: int
    labels: dict[str, Any] | None = None
    name: str = ""
    description: str = ""
    # nnU-Net v2's optional explicit file lists: {case: {"images": [...], "label": ...}}, paths relative to the dataset.
    explicit_files: dict[str, dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        """Modality names in channel order."""
        return [self.channel_names[k] for k in sorted(self.channel_names)]

    @property
    def channel_ids(self) -> list[int]:
        return sorted(self.channel_names)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["channel_names"] = {str(k): v for k, v in sorted(self.channel_names.items())}
        out["file_ending"] = self.file_ending
        out["numTraining"] = self.num_training
        if self.labels is not None:
            out["labels"] = dict(self.labels)
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        if self.explicit_files is not None:
            out["dataset"] = self.explicit_files
        return out

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "dataset.json") -> "DatasetJson":
        if not isinstance(data, dict):
            raise MSGLDMError(f"{source}: expected a JSON object at the top level")
        channel_names = _parse_channel_names(data, source)
        file_ending = data.get("file_ending")
        if not isinstance(file_ending, str) or not file_ending.startswith("."):
            raise MSGLDMError(f"{source}: key 'file_ending' must be a string such as \".nii.gz\", got {file_ending!r}")
        num_training = data.get("numTraining")
        if not isinstance(num_training, int) or num_training < 0:
            raise MSGLDMError(f"{source}: key 'numTraining' must be a non-negative integer, got {num_training!r}")
        labels = _parse_labels(data.get("labels"), source)
        known = {"channel_names", "modality", "file_ending", "numTraining", "labels", "name", "description", "dataset"}
        return cls(
            channel_names=channel_names,
            file_ending=file_ending,
            num_training=num_training,
            labels=labels,
            name=str(data.get("name", "")),
            description=str(data.get("description", "")),
            explicit_files=data.get("dataset"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def load(cls, path: Path) -> "DatasetJson":
        path = Path(path)
        data = load_json(path, "every dataset folder needs a valid one (see documentation/dataset_format.md)",
                         missing="dataset.json is missing")
        return cls.from_dict(data, source=str(path))


def _parse_channel_names(data: dict[str, Any], source: str) -> dict[int, str]:
    raw = data.get("channel_names", data.get("modality"))  # "modality" is nnU-Net v1's spelling
    if not isinstance(raw, dict) or not raw:
        raise MSGLDMError(f"{source}: key 'channel_names' must map channel numbers to names, e.g. {{\"0\": \"T1\", "
                          f"\"1\": \"T2\"}}")
    out: dict[int, str] = {}
    for key, value in raw.items():
        if not str(key).isdigit() or not isinstance(value, str) or not value:
            raise MSGLDMError(f"{source}: channel_names entry {key!r}: {value!r} must be \"<number>\": \"<name>\"")
        out[int(key)] = value
    if sorted(out) != list(range(len(out))):
        raise MSGLDMError(f"{source}: channel_names must be numbered 0..{len(out) - 1} without gaps, got {sorted(out)}")
    if len(set(out.values())) != len(out):
        raise MSGLDMError(f"{source}: channel_names has duplicate names {sorted(out.values())}; give each channel its "
                          "own name")
    return out


def _parse_labels(raw: Any, source: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    def is_label_value(v: Any) -> bool:  # nnU-Net region labels are lists of ints
        return isinstance(v, int) or (isinstance(v, list) and all(isinstance(x, int) for x in v))

    if not isinstance(raw, dict) or not all(is_label_value(v) for v in raw.values()):
        raise MSGLDMError(f"{source}: key 'labels' must map names to integer values, e.g. {{\"background\": 0, "
                          f"\"lesion\": 1}}")
    return dict(raw)
