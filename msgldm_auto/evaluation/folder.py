"""`evaluate_folder`: match `{CASE}_{CHANNEL:04d}` files of a reference and a prediction folder and score every pair."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msgldm_auto.atomic import write_json_atomic
from msgldm_auto.dataset.cases import split_image_name, std_map_path
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation.metrics import PSNR_CAP_DB, evaluate_volumes
from msgldm_auto.evaluation.predictions_json import PredictionsRecord, read_predictions_json
from msgldm_auto.evaluation.table import ScoredVolume, summarise
from msgldm_auto.preprocessing.orientation import numpy_slice_axis

UNKNOWN_PATTERN = "unknown"


@dataclass
class Pair:
    case_id: str
    channel: int
    reference: Path
    prediction: Path


def evaluate_folder(ref_dir: Path | str, pred_dir: Path | str, dataset: DatasetJson | None = None,
                    mask_dir: Path | str | None = None, labels_dir: Path | str | None = None,
                    file_ending: str | None = None, slice_axis: int | None = None,
                    output_file: Path | str | None = None) -> dict[str, Any]:
    """Score every prediction that has a reference; return (and optionally write) the summary dict.

    Modality names come from `dataset`, else from PRED/predictions.json, else channel numbers. Availability patterns
    come from PRED/predictions.json ('unknown' without it); cases it lists are scored on their synthesized modalities
    only (copies made by `--complete` would score perfectly). Std maps in PRED/uncertainty/ (`--save-std`) add the
    uncertainty metrics. `slice_axis` is a numpy axis; None infers it per case
    from the reference spacing. Masks and labels are read as `{CASE}{file_ending}`.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for folder, flag in ((ref_dir, "-ref"), (pred_dir, "-pred")):
        if not folder.is_dir():
            raise MSGLDMError(f"{flag} {folder}: folder does not exist")
    ending = file_ending or (dataset.file_ending if dataset else ".nii.gz")
    record = read_predictions_json(pred_dir)
    names = _channel_names(dataset, record)
    pairs, unmatched = _match_pairs(ref_dir, pred_dir, ending, record, names)
    if not pairs:
        raise MSGLDMError(f"-ref {ref_dir} and -pred {pred_dir} share no {{CASE}}_{{CHANNEL:04d}}{ending} file to "
                          "compare; check the folders and --file-ending")
    volumes = _score_pairs(pairs, names, record, ending, mask_dir, labels_dir, slice_axis)
    summary = summarise(volumes, _header(ref_dir, pred_dir, unmatched))
    if output_file is not None:
        write_json_atomic(summary, Path(output_file))
    return summary


def _channel_names(dataset: DatasetJson | None, record: PredictionsRecord | None) -> dict[int, str]:
    if dataset is not None:
        return dict(dataset.channel_names)
    if record is not None and record.channel_names:
        return dict(record.channel_names)
    return {}


def modality_name(channel: int, names: dict[int, str]) -> str:
    return names.get(channel, f"{channel:04d}")


def _image_files(folder: Path, ending: str) -> dict[tuple[str, int], Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        parsed = split_image_name(path.name, ending) if not path.name.startswith(".") else None
        if parsed is not None:
            found[parsed] = path
    return found


def _match_pairs(ref_dir: Path, pred_dir: Path, ending: str, record: PredictionsRecord | None,
                 names: dict[int, str]) -> tuple[list[Pair], list[str]]:
    references, predictions = _image_files(ref_dir, ending), _image_files(pred_dir, ending)
    pairs, unmatched = [], []
    for (case_id, channel), ref_path in sorted(references.items()):
        if (case_id, channel) not in predictions:
            unmatched.append(ref_path.name)
        elif _was_synthesized(record, case_id, modality_name(channel, names)):
            pairs.append(Pair(case_id, channel, ref_path, predictions[(case_id, channel)]))
    return pairs, unmatched


def _was_synthesized(record: PredictionsRecord | None, case_id: str, name: str) -> bool:
    if record is None or case_id not in record.cases:
        return True
    case = record.cases[case_id]
    return name in case.synthesized or name not in case.present


def _score_pairs(pairs: list[Pair], names: dict[int, str], record: PredictionsRecord | None, ending: str,
                 mask_dir: Path | str | None, labels_dir: Path | str | None,
                 slice_axis: int | None) -> list[ScoredVolume]:
    volumes = []
    order = [names[k] for k in sorted(names)] or None
    for pair in pairs:
        reference, prediction = read_image(pair.reference), read_image(pair.prediction)
        _check_same_grid(reference, pair.reference, prediction, pair.prediction)
        if not np.all(np.isfinite(prediction.array)):
            raise MSGLDMError(f"{pair.prediction}: contains NaN or infinite values; rerun the prediction for this case")
        mask = _optional_volume(mask_dir, pair, ending, reference, required=True)
        label = _optional_volume(labels_dir, pair, ending, reference, required=False)
        std = _std_map(pair, ending, reference)
        axis = slice_axis if slice_axis is not None else numpy_slice_axis(reference.spacing, reference.direction)
        metrics = evaluate_volumes(reference.array, prediction.array, mask=None if mask is None else mask > 0,
                                   label=label, slice_axis=axis, std=std)
        pattern = (record.pattern(pair.case_id, order) if record else None) or UNKNOWN_PATTERN
        volumes.append(ScoredVolume(pair.case_id, modality_name(pair.channel, names), pair.channel, pattern, axis,
                                    metrics, str(pair.reference), str(pair.prediction)))
    return volumes


def _std_map(pair: Pair, ending: str, reference: Image) -> np.ndarray | None:
    """The prediction's std map written by `--save-std`, on the reference grid; None when there is none."""
    path = pair.prediction.parent / std_map_path(pair.case_id, pair.channel, ending)
    if not path.is_file():
        return None
    image = read_image(path)
    _check_same_grid(reference, pair.reference, image, path)
    return image.array


def _check_same_grid(reference: Image, ref_path: Path, other: Image, other_path: Path) -> None:
    if reference.same_grid(other):
        return
    if reference.array.shape != other.array.shape:
        detail = f"shape {other.array.shape} vs {reference.array.shape}"
    else:
        detail = (f"spacing/origin/direction {_geometry(other)} vs {_geometry(reference)}")
    raise MSGLDMError(f"{other_path} does not lie on the grid of {ref_path} ({detail}); "
                      "resample it onto the reference grid or compare the right files")


def _geometry(image: Image) -> str:
    return (f"{tuple(round(s, 4) for s in image.spacing)}/{tuple(round(o, 3) for o in image.origin)}/"
            f"{tuple(round(d, 3) for d in image.direction)}")


def _optional_volume(folder: Path | str | None, pair: Pair, ending: str, reference: Image,
                     required: bool) -> np.ndarray | None:
    """The case's `{CASE}{ending}` from `folder` on the reference grid; None when no folder (or optional and absent)."""
    if folder is None:
        return None
    path = Path(folder) / f"{pair.case_id}{ending}"
    if not path.is_file():
        if required:
            raise MSGLDMError(f"--mask: {path} does not exist; provide a mask for every case or leave out --mask")
        return None
    image = read_image(path)
    _check_same_grid(reference, pair.reference, image, path)
    return image.array


def _header(ref_dir: Path, pred_dir: Path, unmatched: list[str]) -> dict[str, Any]:
    return {"reference_folder": str(ref_dir), "prediction_folder": str(pred_dir),
            "normalisation": "each volume clipped to its own (0.5, 99.5) percentiles inside the brain mask, "
                             "scaled to [0, 1]",
            "psnr_cap_db": PSNR_CAP_DB, "missing_predictions": unmatched}
