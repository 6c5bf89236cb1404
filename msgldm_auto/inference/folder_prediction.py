"""Predict a folder of cases (or one case given as files) into OUTPUT, the way `msgldm_predict` does.

Per case: `OUTPUT/{CASE}_{CHANNEL:04d}{ending}` for every synthesized modality; with `save_std`
`OUTPUT/uncertainty/{CASE}_{CHANNEL:04d}_std{ending}` (a subfolder, so nnU-Net never reads them as channels); with
`complete` byte copies of the present modalities; with `preview` `OUTPUT/previews/{CASE}.png`. `predictions.json`
is rewritten (atomically) after every case, so an interrupted run keeps what it finished and
`continue_prediction` skips exactly those cases. A failing case is recorded under "failed" and the others go on.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

import msgldm_auto
from msgldm_auto.atomic import write_json_atomic
from msgldm_auto.dataset.cases import image_file_name, std_map_path
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.case_input import InputCase, discover_input
from msgldm_auto.inference.export import copy_atomic, write_output_image
from msgldm_auto.json_files import load_json

PREDICTIONS_FILE = "predictions.json"
PREVIEW_FOLDER = "previews"


@dataclass
class FolderReport:
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)                 # finished earlier (--continue_prediction)
    failed: dict[str, str] = field(default_factory=dict)             # case -> one-line reason
    output_folder: Path | None = None


def predict_folder(predictor, inputs, output_folder: Path, targets: list[int | str] | None = None,
                   complete: bool = False,
                   save_std: bool = False, continue_prediction: bool = False, preview: bool = False,
                   progress: bool = True) -> FolderReport:
    dataset = predictor.model.dataset
    cases = discover_input(inputs, dataset)
    _refuse_output_inside_input(inputs, output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    record = _load_record(output_folder, strict=continue_prediction)   # other cases' entries are kept
    record.update(_header(predictor))
    report = FolderReport(output_folder=output_folder)
    for case in tqdm(cases, desc="cases", unit="case",
                     disable=None if progress else True):  # None: a bar on a terminal only
        if continue_prediction and _is_finished(record, case.case_id, output_folder):
            report.skipped.append(case.case_id)
            continue
        try:
            entry = _predict_one(predictor, case, output_folder, targets, complete, save_std, preview)
        except MSGLDMError as err:
            _fail(record, report, case.case_id, str(err))
        except Exception as err:  # a bug or a corrupt file must not cost the other cases their predictions
            _fail(record, report, case.case_id, f"{type(err).__name__}: {err}")
            traceback.print_exc()
        else:
            record["cases"][case.case_id] = entry
            record["failed"].pop(case.case_id, None)
            report.predicted.append(case.case_id)
        write_json_atomic(record, output_folder / PREDICTIONS_FILE)
    return report


def _predict_one(predictor, case: InputCase, output_folder: Path, targets, complete: bool, save_std: bool,
                 preview: bool) -> dict[str, Any]:
    if case.problem:
        raise MSGLDMError(case.problem)
    ending = predictor.model.dataset.file_ending
    result = predictor.predict_case_full(case.images, targets, case_id=case.case_id, with_std=save_std)
    files = []
    for channel, image in sorted(result.synthesized.items()):
        name = image_file_name(case.case_id, channel, ending)
        write_output_image(image, output_folder / name)
        files.append(name)
    for channel, image in sorted(result.std.items()):
        name = std_map_path(case.case_id, channel, ending)
        write_output_image(image, output_folder / name)
        files.append(name)
    if complete:
        for channel, source in sorted(case.images.items()):
            name = image_file_name(case.case_id, channel, ending)
            copy_atomic(source, output_folder / name)
            files.append(name)
    if preview and result.synthesized:
        files.append(_write_preview(predictor, case, result, output_folder))
    return _case_entry(predictor, result, files)


def _case_entry(predictor, result, files: list[str]) -> dict[str, Any]:
    names = predictor.modalities
    return {
        "present": [names[c] for c in result.present],
        "synthesized": [names[c] for c in sorted(result.synthesized)],
        "present_channels": list(result.present),
        "synthesized_channels": sorted(result.synthesized),
        "files": files,
        "folds": predictor.folds,
        "checkpoint": predictor.checkpoint,
        "mode": predictor.mode,
        "steps": predictor.steps,
        "samples": predictor.samples,
        "mirrored": predictor.mirrors,
        "percentile_matched": predictor.options.match_percentile,
        "noise": predictor.options.noise,
        "seed": predictor.options.seed,
        "version": msgldm_auto.__version__,
    }


def _write_preview(predictor, case: InputCase, result, output_folder: Path) -> str:
    from msgldm_auto.dataset.image_io import read_image
    from msgldm_auto.evaluation.previews import save_preview

    names = predictor.modalities
    inputs = {names[c]: read_image(p).array for c, p in sorted(case.images.items())}
    synthesis = {names[c]: image.array for c, image in sorted(result.synthesized.items())}
    reference = next(iter(result.synthesized.values()))
    path = output_folder / PREVIEW_FOLDER / f"{case.case_id}.png"
    save_preview(path, inputs, synthesis, spacing=reference.spacing, title=case.case_id)
    return f"{PREVIEW_FOLDER}/{case.case_id}.png"


def _header(predictor) -> dict[str, Any]:
    model = predictor.model
    return {
        "version": msgldm_auto.__version__,
        "dataset": model.plans.dataset_name,
        "plans": model.plans.plans_name,
        "configuration": model.configuration_name,
        "channel_names": {str(i): n for i, n in enumerate(predictor.modalities)},
    }


def _empty_record() -> dict[str, Any]:
    return {"cases": {}, "failed": {}}


def _load_record(output_folder: Path, strict: bool) -> dict[str, Any]:
    path = output_folder / PREDICTIONS_FILE
    if not path.is_file():
        return _empty_record()
    try:
        record = load_json(path, "delete it (the outputs are then redone) or run without --continue_prediction")
    except MSGLDMError:
        if not strict:
            return _empty_record()
        raise
    record.setdefault("cases", {})
    record.setdefault("failed", {})
    return record


def _is_finished(record: dict[str, Any], case_id: str, output_folder: Path) -> bool:
    entry = record["cases"].get(case_id)
    return bool(entry) and all((output_folder / name).is_file() for name in entry.get("files", []))


def _fail(record: dict[str, Any], report: FolderReport, case_id: str, message: str) -> None:
    record["cases"].pop(case_id, None)
    record["failed"][case_id] = message
    report.failed[case_id] = message


def _refuse_output_inside_input(inputs, output_folder: Path) -> None:
    """Writing into the input folder would make synthesized files look like inputs on the next run."""
    paths = [Path(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    input_folders = {(p if p.is_dir() else p.parent).resolve() for p in paths}
    if output_folder.resolve() in input_folders:
        raise MSGLDMError(f"-o {output_folder}: the output folder must not be the input folder; choose another -o")
