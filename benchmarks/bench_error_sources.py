"""Where a synthesized contrast's error comes from, and whether the std map points at it (section `error_sources`).

On the measured-contrast set each contrast of a case gets its own bias field, scanner gain and Rician noise
(dataset_conversion/icbm_benchmark.py), so a held-out reference carries an acquisition that none of the inputs show.
No model can predict it. This script replays the generator for each test case (it is deterministic by seed) to get
the held-out contrast before acquisition (warped template with lesions: no bias, gain or noise). It scores a trained
model's predictions against both the reference as written and that clean contrast, and against the reference after
the best global affine map of the normalised prediction (what is left when the volume's overall calibration is
forgiven: the per-volume percentile normalisation of the scores makes a prediction without the reference's bias and
noise tails pay for its narrower histogram):
- `--model`: the one-pass decoder averaged over the given folds (its std map is their spread when there are
  several) and, with an LDM trained, the diffusion mean of K samples per fold (std map: their spread);
- `--predictions LABEL=FOLDER[,FOLDER...]`: prediction folders written earlier (e.g. bench_sets' control and
  regression floor); with several folders, their mean, scored with their spread as its std map (an ensemble of
  independently trained models, as five folds are);
- the first prediction's own intensity, and its gradient magnitude, used as "std maps": baselines that know nothing
  about the errors.

    python -m benchmarks.bench_error_sources run --home /tmp/bench_icbm -d 902 --name NAME [--model FOLDER
        [--folds 0 1 2 3 4] [--samples 8]] [--predictions LABEL=FOLDER[,FOLDER] ...] [--max-cases 9] --wheel WHEEL
    python -m benchmarks.bench_error_sources write

FOLDER is a results model folder whose training cases are the set's own (the test cases are never trained on); WHEEL
the spm-runtime wheel the set was built from. The cases are taken in turn over the targets. Results:
benchmarks/results/error_sources.json, one record per NAME.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_gradient_magnitude

from benchmarks._common import (
    RESULTS,
    load_results,
    machine_line,
    markdown_table,
    replace_section,
    save_results,
    today,
)

RESULTS_NAME = "error_sources"


def _clean_reference(source, settings, seed: int, case_id: str, channel: int, folder: Path):
    """The held-out contrast of `case_id` before acquisition, as an Image on the reference's grid (via a file, so
    that it is read exactly as the reference is)."""
    from dataset_conversion.demo_dataset import case_rng
    from dataset_conversion.icbm_benchmark import simulate_subject
    from msgldm_auto.dataset.image_io import read_image, write_image

    index = int(case_id.rsplit("_", 1)[1])
    subject = simulate_subject(source, settings, case_rng(seed, index))
    path = folder / f"{case_id}_clean.nii.gz"
    write_image(subject.grid.to_image(subject.clean[channel]), path)
    return read_image(path)


def _test_cases(raw: Path, max_cases: int) -> list[tuple[str, int]]:
    """(case id, held-out channel), taken in turn over the held-out channels."""
    cases = sorted(p.name[:-len(".nii.gz")].rsplit("_", 1)[0] for p in (raw / "referenceTs").glob("*.nii.gz"))
    held_out = {case: int(next((raw / "referenceTs").glob(f"{case}_*.nii.gz")).name[-len("0000.nii.gz"):][:4])
                for case in cases}
    return [(case, held_out[case]) for case in cases][:max_cases]


def _scores(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, std: np.ndarray | None,
            affine: bool = False) -> dict[str, float]:
    from msgldm_auto.evaluation.metrics import evaluate_volumes, psnr
    from msgldm_auto.evaluation.normalization import normalize_brasyn

    result = evaluate_volumes(reference, prediction, mask, std=std)
    scores = {key: result[key] for key in ("psnr", "ssim", "std_error_spearman", "coverage_2std") if key in result}
    if affine:
        truth, guess = normalize_brasyn(reference, mask), normalize_brasyn(prediction, mask)[mask]
        design = np.stack([guess, np.ones_like(guess)], axis=1)
        fitted = np.zeros(mask.shape)
        fitted[mask] = design @ np.linalg.lstsq(design, truth[mask], rcond=None)[0]
        scores["psnr_affine"] = psnr(truth, fitted, mask)
    return scores


def _predictors(model: Path | None, folds: list[str], samples: int) -> dict:
    from msgldm_auto.inference.model_loading import checkpoint_path
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    if model is None:
        return {}
    predictors = {"one_pass": MSGLDMPredictor.from_trained_folder(model, folds, options=PredictionOptions(
        one_pass=True))}
    if checkpoint_path(model, folds[0], "ldm", "final").is_file():
        predictors["diffusion_mean"] = MSGLDMPredictor.from_trained_folder(model, folds, options=PredictionOptions(
            num_samples=samples))
    return predictors


def _score_case(record: dict, truth: dict, mask: np.ndarray, predictions: dict) -> None:
    """predictions: label -> (prediction, std or None); adds `label:against` scores to the record."""
    for number, (label, (prediction, std)) in enumerate(predictions.items()):
        for against, reference in truth.items():
            record[f"{label}:{against}"] = _scores(reference, prediction, mask, std, affine=against == "reference")
            if number == 0:    # the first prediction's intensity and edges as std maps: baselines that know no error
                record[f"intensity:{against}"] = _scores(reference, prediction, mask, prediction)
                edges = gaussian_gradient_magnitude(np.asarray(prediction, np.float64), sigma=1.0)
                record[f"edges:{against}"] = _scores(reference, prediction, mask, edges)


def run(args: argparse.Namespace) -> dict:
    os.environ["MSGLDM_HOME"] = str(args.home)
    from dataset_conversion.icbm_benchmark import CHANNEL_NAMES, IcbmSettings, load_source
    from msgldm_auto.dataset.dataset_json import DatasetJson
    from msgldm_auto.dataset.image_io import read_image
    from msgldm_auto.paths import raw_dataset_folder

    raw = raw_dataset_folder(args.dataset_id)
    provenance = DatasetJson.load(raw / "dataset.json").extra["icbm152"]
    if provenance["settings"] != json.loads(json.dumps(asdict(IcbmSettings()))):   # the replay uses the defaults
        raise SystemExit(f"{raw}: not built with the default IcbmSettings; its clean contrasts cannot be replayed")
    seed = provenance["seed"]
    source = load_source(args.wheel)
    predictors = _predictors(args.model, args.folds, args.samples)
    folders = dict(item.split("=", 1) for item in args.predictions)
    records = []
    with tempfile.TemporaryDirectory(prefix="error_sources_") as scratch:
        for case, target in _test_cases(raw, args.max_cases):
            inputs = {int(p.name[-len("0000.nii.gz"):][:4]): p for p in sorted((raw / "imagesTs").glob(f"{case}_*"))}
            name = f"{case}_{target:04d}.nii.gz"
            truth = {"reference": read_image(raw / "referenceTs" / name).array,
                     "clean": _clean_reference(source, IcbmSettings(), seed, case, target, Path(scratch)).array}
            predictions = {}
            for mode, predictor in predictors.items():
                result = predictor.predict_case_full(inputs, [target], case_id=case, with_std=True)
                predictions[mode] = (result.synthesized[target].array, result.std[target].array)
            for label, paths in folders.items():      # several folders: their mean, their spread as the std map
                arrays = np.stack([read_image(Path(folder) / name).array for folder in paths.split(",")])
                predictions[label] = (arrays.mean(axis=0), arrays.std(axis=0) if len(arrays) > 1 else None)
            record = {"case": case, "target": CHANNEL_NAMES[target]}
            _score_case(record, truth, read_image(raw / "masksTs" / f"{case}.nii.gz").array > 0, predictions)
            print(json.dumps(record), flush=True)
            records.append(record)
    data = {"name": args.name, "records": records, "model": str(args.model) if args.model else None,
            "folds": args.folds, "samples": args.samples, "labels": [*predictors, *folders],
            "dataset": raw.name, "machine": machine_line(), "date": today(), "command": _command(args, folders)}
    kept = [r for r in _load_all() if r["name"] != args.name]
    save_results(RESULTS_NAME, kept + [data])
    return data


def _command(args: argparse.Namespace, folders: dict[str, str]) -> str:
    parts = ["python -m benchmarks.bench_error_sources run --home H", f"-d {args.dataset_id}",
             f"--name {shlex.quote(args.name)}"]
    if args.model:
        parts.append(f"--model M --folds {' '.join(args.folds)} --samples {args.samples}")
    if folders:
        parts.append(" ".join(["--predictions", *(shlex.quote(f"{label}=F") for label in folders)]))
    return " ".join([*parts, f"--max-cases {args.max_cases}"])


def _load_all() -> list[dict]:
    return load_results(RESULTS_NAME) if (RESULTS / f"{RESULTS_NAME}.json").is_file() else []


def _mean(records: list[dict], key: str, metric: str) -> float:
    values = [r[key][metric] for r in records if key in r and metric in r[key] and np.isfinite(r[key][metric])]
    return float(np.mean(values)) if values else float("nan")


LABELS = {"one_pass": "MSG-LDM one-pass decoder", "diffusion_mean": "MSG-LDM diffusion, mean of {samples} samples"}


def _label(data: dict, label: str) -> str:
    name = LABELS.get(label, label).format(samples=data["samples"])
    if label in LABELS and len(data["folds"]) > 1:
        name += f", {len(data['folds'])} folds"
    return name


def _cell(value: float, digits: int) -> str:
    return "–" if np.isnan(value) else f"{value:.{digits}f}"


def _record_section(data: dict) -> str:
    records = data["records"]
    targets = sorted({r["target"] for r in records})
    rows = []
    for label in data["labels"]:
        for group in (*targets, "mean"):
            chosen = records if group == "mean" else [r for r in records if r["target"] == group]
            cells = [_mean(chosen, f"{label}:reference", "psnr"), _mean(chosen, f"{label}:reference", "psnr_affine"),
                     _mean(chosen, f"{label}:clean", "psnr")]
            spearman = [_mean(chosen, f"{label}:{against}", "std_error_spearman") for against in ("reference", "clean")]
            rows.append([_label(data, label), group, *(_cell(v, 2) for v in cells), *(_cell(v, 3) for v in spearman)])
    for baseline, name in (("intensity", "intensity as std"), ("edges", "edges as std")):
        for group in (*targets, "mean"):
            chosen = records if group == "mean" else [r for r in records if r["target"] == group]
            spearman = [_mean(chosen, f"{baseline}:{against}", "std_error_spearman")
                        for against in ("reference", "clean")]
            rows.append([name, group, "", "", "", *(_cell(v, 3) for v in spearman)])
    table = markdown_table(["prediction", "target", "PSNR vs reference", "after the best global affine",
                            "PSNR vs clean contrast", "Spearman(std, abs. error) vs reference", "vs clean contrast"],
                           rows)
    model = f"model `{Path(data['model']).name}`, fold(s) {', '.join(data['folds'])}; " if data["model"] else ""
    return (f"### {data['name']}\n\n{model}{len(records)} test cases.\n\n{table}\n\n*Machine:* {data['machine']}. "
            f"*Command:* `{data['command']}`. *Date:* {data['date']}.")


def section(records: list[dict]) -> str:
    return ("## Where the error comes from, and what the std map points at\n\n"
            "Test cases of the measured-contrast set, taken in turn over the targets. *Reference*: the held-out "
            "contrast as written, with its own bias field, scanner gain and Rician noise, none of which any input "
            "shows. *Clean contrast*: the same contrast before acquisition, replayed from the generator "
            "(deterministic by seed). Both are scored the same way (BraSyn normalisation inside the brain mask). "
            "*After the best global affine*: PSNR against the reference once the normalised prediction is mapped by "
            "the least-squares a·x + b over the brain, i.e. with the volume's overall calibration forgiven. "
            "*Intensity as std*, *edges as std*: the first prediction itself, and its gradient magnitude (σ = 1 "
            "voxel), used as std maps: baselines that know nothing about the errors. A model's std map is the spread "
            "over folds x samples, as `msgldm_predict --save_std` writes it.\n\n"
            + "\n\n".join(_record_section(data) for data in records))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_error_sources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("run", help="predict and score the test cases")
    measure.add_argument("--home", type=Path, required=True, help="MSGLDM_HOME holding the raw set")
    measure.add_argument("-d", "--dataset-id", dest="dataset_id", type=int, default=902)
    measure.add_argument("--name", required=True, help="what this record is called in the section")
    measure.add_argument("--model", type=Path, default=None, help="results model folder to predict with")
    measure.add_argument("--predictions", nargs="*", default=[], metavar="LABEL=FOLDER[,FOLDER]",
                         help="prediction folders written earlier, scored beside the model")
    measure.add_argument("--folds", nargs="+", default=["0"], help="folds averaged (default 0)")
    measure.add_argument("--samples", type=int, default=8, help="diffusion samples averaged (default 8)")
    measure.add_argument("--max-cases", dest="max_cases", type=int, default=6)
    measure.add_argument("--wheel", type=Path, required=True, help="the spm-runtime wheel the set was built from")
    commands.add_parser("write", help="render the section from benchmarks/results/error_sources.json")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
    replace_section(RESULTS_NAME, section(_load_all()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
