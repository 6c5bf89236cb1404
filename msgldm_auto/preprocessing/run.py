"""Preprocess every training case of a raw dataset into one configuration folder, in parallel and resumably.

A case whose `CASE.json` exists is finished and skipped (unless `clean`); a case that fails is reported by name while
the others finish, and the run then ends with one error line listing the failures.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from msgldm_auto.dataset.cases import Case, training_cases
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.preprocessing.parallel import failure_summary, parallel_map
from msgldm_auto.preprocessing.pipeline import preprocess_case, read_raw_case
from msgldm_auto.preprocessing.storage import list_cases, save_case


@dataclass
class PreprocessReport:
    folder: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def preprocess_one(case: Case, config: ConfigurationPlan, folder: Path, resample_mismatched: bool) -> str:
    """Worker: read, preprocess and store one case (everything it needs travels in the arguments)."""
    images, seg = read_raw_case(case)
    data, present, seg_stack, properties = preprocess_case(images, config, seg, resample_mismatched=resample_mismatched,
                                                           case_id=case.case_id)
    save_case(folder, case.case_id, data, present, seg_stack, properties)
    return case.case_id


def preprocess_dataset(raw_folder: Path, output_folder: Path, config: ConfigurationPlan, num_processes: int = 1,
                       clean: bool = False, resample_mismatched: bool = False,
                       raise_on_failure: bool = True) -> PreprocessReport:
    raw_folder, output_folder = Path(raw_folder), Path(output_folder)
    dataset = DatasetJson.load(raw_folder / "dataset.json")
    cases = training_cases(raw_folder, dataset)
    if not cases:
        raise MSGLDMError(f"{raw_folder}: no training cases in imagesTr; add "
                          f"{{CASE}}_{{CHANNEL:04d}}{dataset.file_ending} files")
    if clean and output_folder.exists():
        shutil.rmtree(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    finished = set(list_cases(output_folder))
    report = PreprocessReport(output_folder, skipped=sorted(c.case_id for c in cases if c.case_id in finished))
    jobs = [(c.case_id, (c, config, output_folder, resample_mismatched)) for c in cases if c.case_id not in finished]
    failures = []
    for outcome in parallel_map(preprocess_one, jobs, num_processes, f"preprocess {output_folder.name}"):
        if outcome.error is None:
            report.done.append(outcome.name)
        else:
            failures.append(outcome)
            report.failed[outcome.name] = outcome.error
            print(f"case {outcome.name} failed: {outcome.error}", flush=True)
    report.done.sort()
    if failures and raise_on_failure:
        raise MSGLDMError(failure_summary(failures, f"preprocessing into {output_folder}") +
                          "; the other cases are stored: fix those and re-run (finished cases are skipped)")
    return report
