"""Trained models travel as one zip, as in nnU-Net.

The zip holds `DatasetXXX_Name/<plans>__<config>/` with plans.json, dataset.json, dataset_fingerprint.json and, per
chosen fold, every stage's chosen checkpoint stripped to what prediction needs (`inference_weights` plus a few plain
metadata fields; no optimizer state, no raw network weights beside the EMA ones). Installing extracts it into
MSGLDM_RESULTS, refusing entries that would land outside it and refusing to overwrite an existing model folder
unless asked to. Each model folder is extracted into a staging folder and swapped in whole: an interrupted install
leaves the old model (or none), never half of one.
"""
from __future__ import annotations

import io
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

import torch

from msgldm_auto.atomic import atomic_path, staged_folder
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation.model_choice import CHOICE_FILE, CHOICE_TABLE_FILE, read_model_choice
from msgldm_auto.inference.model_loading import (
    available_folds,
    checkpoint_path,
    load_trained_model,
    resolve_folds,
)
from msgldm_auto.paths import DATASET_NAME_PATTERN, results_root
from msgldm_auto.plans import CONTROL_STAGE, METHODS, STAGES

MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
KEPT_CHECKPOINT_KEYS = ("stage", "epoch", "inference_weights", "plans_name", "configuration", "fold")


def _folds_and_stages(model_folder: Path, config, folds, checkpoint: str) -> tuple[list[str], tuple[str, ...]]:
    """The folds to export and the stages of every method (MSG-LDM, the plain UNet control) that all of them have:
    a zip predicts every way its folder did. A method only some folds have is left out, with a warning."""
    per_method = {m: config.method_stages(m) for m in METHODS}
    trained = [m for m, stages in per_method.items() if available_folds(model_folder, checkpoint, stages)]
    chosen = resolve_folds(model_folder, folds, checkpoint, per_method[trained[0] if trained else "msgldm"])
    exported = []
    for method in trained:
        missing = [f for f in chosen if f not in available_folds(model_folder, checkpoint, per_method[method])]
        if missing:
            print(f"warning: -m {method} is not trained for fold(s) {', '.join(missing)}; the zip leaves it out",
                  file=sys.stderr)
        else:
            exported.append(method)
    if not exported:
        raise MSGLDMError(f"{model_folder}: fold(s) {', '.join(chosen)} have no fully trained method with "
                          f"checkpoint_{checkpoint}.pth; finish training (msgldm_train) or choose -f / -chk")
    stages = [s for m in exported for s in per_method[m]]
    if all(f in available_folds(model_folder, checkpoint, STAGES) for f in chosen):
        stages += STAGES    # an LDM trained beyond the plans (--stage ldm): the folder samples with it, so must the zip
    return chosen, tuple(s for s in STAGES + (CONTROL_STAGE,) if s in stages)


def export_model_zip(model_folder: Path, output: Path, folds: list[str | int] | None = None,
                     checkpoint: str = "final") -> list[str]:
    """Write the zip atomically; return its member names."""
    model_folder, output = Path(model_folder), Path(output)
    model = load_trained_model(model_folder)
    chosen, stages = _folds_and_stages(model_folder, model.configuration, folds, checkpoint)
    prefix = PurePosixPath(model_folder.parent.name, model_folder.name)
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            _add_model_files(archive, model_folder, prefix)
            _add_mode_choice(archive, model_folder, prefix, stages)
            for fold in chosen:
                for stage in stages:
                    source = checkpoint_path(model_folder, fold, stage, checkpoint)
                    member = prefix / f"fold_{fold}" / stage / source.name
                    archive.writestr(str(member), _stripped_checkpoint(source))
            names = archive.namelist()
    return names


def _add_model_files(archive: zipfile.ZipFile, model_folder: Path, prefix: PurePosixPath) -> None:
    for name in MODEL_FILES:
        path = model_folder / name
        if not path.is_file():
            raise MSGLDMError(f"{path}: missing, so the model cannot be exported; copy it from the preprocessed "
                              "dataset folder")
        archive.write(path, str(prefix / name))


def _add_mode_choice(archive: zipfile.ZipFile, model_folder: Path, prefix: PurePosixPath,
                     stages: tuple[str, ...]) -> None:
    """The prediction mode chosen by cross-validation travels with the model when the zip can run it."""
    choice = read_model_choice(model_folder)
    if choice is None:
        return
    if not set(choice.chosen.stages) <= set(stages):
        print(f"warning: the chosen mode {choice.chosen.name} is not in the zip; it predicts in its default mode",
              file=sys.stderr)
        return
    for name in (CHOICE_FILE, CHOICE_TABLE_FILE):
        archive.write(model_folder / name, str(prefix / name))


def _stripped_checkpoint(path: Path) -> bytes:
    if not path.is_file():
        raise MSGLDMError(f"{path}: checkpoint missing; train this fold (msgldm_train), choose other folds with -f, or "
                          "another -chk")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "inference_weights" not in checkpoint:
        raise MSGLDMError(f"{path}: not an msgldm checkpoint (no 'inference_weights')")
    buffer = io.BytesIO()
    torch.save({k: checkpoint[k] for k in KEPT_CHECKPOINT_KEYS if k in checkpoint}, buffer)
    return buffer.getvalue()


def install_model_zip(zip_path: Path, overwrite: bool = False, destination: Path | None = None) -> list[Path]:
    """Extract into MSGLDM_RESULTS (or `destination`); return the installed model folders."""
    zip_path = Path(zip_path)
    destination = Path(destination) if destination is not None else results_root()
    if not zipfile.is_zipfile(zip_path):
        raise MSGLDMError(f"{zip_path}: not a zip file; pass a file written by msgldm_export_model_to_zip")
    with zipfile.ZipFile(zip_path) as archive:
        model_dirs = _validated_model_dirs(archive, zip_path)
        for model_dir in model_dirs:
            target = destination / model_dir
            if target.exists() and not overwrite:
                raise MSGLDMError(f"{target}: a model is already installed there; remove it or pass --overwrite")
        installed = []
        for model_dir in model_dirs:
            with staged_folder(destination / model_dir) as staging:
                _extract_model_dir(archive, model_dir, staging)
            installed.append(destination / model_dir)
    return installed


def _validated_model_dirs(archive: zipfile.ZipFile, zip_path: Path) -> list[PurePosixPath]:
    """`DatasetXXX_Name/<plans>__<config>` of every member; anything else (absolute, `..`, stray files) is refused."""
    model_dirs: set[PurePosixPath] = set()
    for name in archive.namelist():
        member = PurePosixPath(name)
        if (member.is_absolute() or ".." in member.parts or len(member.parts) < 3
                or not DATASET_NAME_PATTERN.match(member.parts[0])):
            raise MSGLDMError(f"{zip_path}: entry '{name}' is not DatasetXXX_Name/<plans>__<config>/...; this is not "
                              "an msgldm model zip")
        model_dirs.add(PurePosixPath(*member.parts[:2]))
    if not model_dirs:
        raise MSGLDMError(f"{zip_path}: empty zip; pass a file written by msgldm_export_model_to_zip")
    for model_dir in model_dirs:
        if str(model_dir / "plans.json") not in archive.namelist():
            raise MSGLDMError(f"{zip_path}: {model_dir} has no plans.json; this is not an msgldm model zip")
    return sorted(model_dirs)


def _extract_model_dir(archive: zipfile.ZipFile, model_dir: PurePosixPath, folder: Path) -> None:
    """The members under `model_dir` (already validated: relative, no `..`) written below `folder`."""
    for info in archive.infolist():
        member = PurePosixPath(info.filename)
        if info.is_dir() or member.parts[:2] != model_dir.parts:
            continue
        path = folder.joinpath(*member.parts[2:])
        path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target)
