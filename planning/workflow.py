"""The steps of `msgldm_plan_and_preprocess` as library calls: verify, fingerprint, plan, preprocess.

Everything is written under MSGLDM_PREPROCESSED/DatasetXXX_Name/: a copy of dataset.json, dataset_fingerprint.json,
the plans (`<plans_name>.json`) and one folder per configuration (`<plans_name>_<config>/`).
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from msgldm_auto.atomic import atomic_path
from msgldm_auto.dataset.cases import training_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json
from msgldm_auto.paths import preprocessed_root, raw_root
from msgldm_auto.plans import DEFAULT_CONFIGURATION, Plans, plans_file_name
from msgldm_auto.preprocessing.run import PreprocessReport, preprocess_dataset
from planning.fingerprint import FINGERPRINT_FILE, DatasetFingerprint, extract_fingerprint
from planning.planner import plan_experiment
from planning.restoration import measure_round_trip, plan_restoration


def raw_folder(dataset_name: str) -> Path:
    folder = raw_root() / dataset_name
    if not (folder / "dataset.json").is_file():
        raise MSGLDMError(f"{folder}: raw dataset not found (no dataset.json); check MSGLDM_RAW or the dataset ID")
    return folder


def preprocessed_folder(dataset_name: str) -> Path:
    return preprocessed_root() / dataset_name


def verify_raw_dataset(dataset_name: str, resample_mismatched: bool) -> None:
    """Run the dataset integrity checks (msgldm_auto.dataset.verify) before anything is planned; print what they
    find."""
    from msgldm_auto.dataset.verify import verify_dataset  # lazy: only the full command needs it

    report = verify_dataset(raw_folder(dataset_name), resample_mismatched=resample_mismatched)
    if report.problems:
        print(report.format())
    print(report.summary())
    if not report.ok:
        raise MSGLDMError(f"{dataset_name}: dataset verification found {len(report.errors)} error(s) (listed above); "
                          "fix them, or pass --no-verify to skip the checks")


def fingerprint_dataset(dataset_name: str, num_processes: int = 1, resample_mismatched: bool = False,
                        clean: bool = False) -> DatasetFingerprint:
    """Fingerprint a raw dataset, or reuse the stored fingerprint when it covers exactly the current cases."""
    source = raw_folder(dataset_name)
    target = preprocessed_folder(dataset_name)
    target.mkdir(parents=True, exist_ok=True)
    _copy_atomic(source / "dataset.json", target / "dataset.json")
    path = target / FINGERPRINT_FILE
    if path.is_file() and not clean:
        stored = DatasetFingerprint.load(path)
        current = {(c.case_id, tuple(c.present)) for c in training_cases(source)}
        if {(c.case_id, tuple(c.present)) for c in stored.cases} == current:
            return stored
    fingerprint = extract_fingerprint(source, num_processes, resample_mismatched)
    fingerprint.dataset_name = dataset_name
    fingerprint.save(path)
    return fingerprint


def plan_dataset(dataset_name: str, preset: str = "default", gpu_memory_target_gb: float = 8.0,
                 device: str | None = None,
                 overwrite_target_spacing: list[float] | None = None, plans_name: str | None = None,
                 configuration: str = DEFAULT_CONFIGURATION) -> tuple[Plans, Path]:
    folder = preprocessed_folder(dataset_name)
    fingerprint = DatasetFingerprint.load(folder / FINGERPRINT_FILE)
    dataset = DatasetJson.load(folder / "dataset.json") if (folder / "dataset.json").is_file() else \
        DatasetJson.load(raw_folder(dataset_name) / "dataset.json")
    plans = plan_experiment(fingerprint, dataset, preset, gpu_memory_target_gb, device, overwrite_target_spacing,
                            plans_name, configuration)
    config = plans.configuration(configuration)
    plan_restoration(config, measure_round_trip(raw_folder(dataset_name), config))   # reads a few training cases
    path = folder / plans_file_name(plans.plans_name)
    return save_plans_keeping_extras(plans, path), path


def save_plans_keeping_extras(plans: Plans, path: Path) -> Plans:
    """Write the plans; configurations a user added to an existing file of the same name are kept."""
    path = Path(path)
    if path.is_file():
        try:
            old = load_json(path, "it is replaced").get("configurations", {})
        except MSGLDMError as err:
            old = {}
            warnings.warn(str(err), stacklevel=2)
        data = plans.to_dict()
        extras = {name: value for name, value in old.items() if name not in data["configurations"]}
        if extras:
            data["configurations"].update(extras)
            plans = Plans.from_dict(data)
    plans.save(path)
    return plans


def load_plans(dataset_name: str, plans_name: str) -> Plans:
    return Plans.load(preprocessed_folder(dataset_name) / plans_file_name(plans_name))


def preprocess(dataset_name: str, plans: Plans, configuration: str = DEFAULT_CONFIGURATION, num_processes: int = 1,
               clean: bool = False, resample_mismatched: bool = False) -> PreprocessReport:
    config = plans.configuration(configuration)
    output = preprocessed_folder(dataset_name) / (config.data_identifier or f"{plans.plans_name}_{configuration}")
    return preprocess_dataset(raw_folder(dataset_name), output, config, num_processes, clean, resample_mismatched)


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
