"""`make demo`: the whole main job on the embedded demo dataset with the `cpu` plans, end to end.

demo dataset -> plan and preprocess -> train fold 0 (the plans' time budget), MSG-LDM and the plain UNet control
with the same budget -> choose the prediction mode from fold 0's validation (msgldm_find_best_configuration) ->
predict imagesTs (MSG-LDM, its one-pass decoder too when the plans sample with diffusion, and
the control) -> the two floors fitted on fold 0's training cases -> evaluate everything against referenceTs ->
comparison table. Exits 1 unless MSG-LDM beats the copy floor on every target and the regression floor on the mean
over targets (PSNR). Each step calls the same entry point a user would, in-process, and a rerun reuses what earlier
runs finished.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from msgldm_auto.cli import demo_dataset, find_best_configuration, plan_and_preprocess, predict, train
from msgldm_auto.cli._common import entry_point, print_roots
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.paths import make_dataset_name, preprocessed_root, raw_root, results_root
from msgldm_auto.plans import DEFAULT_CONFIGURATION, Plans, plans_file_name
from planning.presets import get_preset

PLANS = get_preset("cpu").plans_name


def _step(title: str, rc: int) -> None:
    print(f"\n=== {title}: {'done' if rc == 0 else f'exit status {rc}'}", flush=True)
    if rc != 0:
        raise MSGLDMError(f"demo step '{title}' failed (exit status {rc}); see the messages above")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msgldm_demo", description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset-id", type=int, default=901)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--max-minutes", type=float, default=None, help="override the plans' per-stage training budget")
    parser.add_argument("--iters-per-epoch", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    return parser.parse_args(argv)


VALIDATION_CASES = 2


def _train_args(args: argparse.Namespace) -> list[str]:
    extra = ["--c", "-device", "cpu", "--val-cases", str(VALIDATION_CASES)]
    for flag, value in (("--max-minutes", args.max_minutes), ("--iters-per-epoch", args.iters_per_epoch),
                        ("--epochs", args.epochs)):
        if value is not None:
            extra += [flag, str(value)]
    return [str(args.dataset_id), DEFAULT_CONFIGURATION, "0", "-p", PLANS] + extra


def run_pipeline(args: argparse.Namespace) -> Path:
    """Steps 1-4; returns the folder that holds the prediction folders."""
    name = make_dataset_name(args.dataset_id, "Demo")
    if not (raw_root() / name / "dataset.json").is_file():
        _step("demo dataset", demo_dataset.main(["-d", str(args.dataset_id), "--cases", str(args.cases), "--test-cases",
                                                 str(args.test_cases), "--seed", str(args.seed), "--resolution",
                                                 str(args.resolution)]))
    _step("plan and preprocess", plan_and_preprocess.main(["-d", str(args.dataset_id), "-pl", "cpu", "-np", "2"]))
    _step("train fold 0 (MSG-LDM)", train.main(_train_args(args)))
    _step("train fold 0 (plain UNet control, same budget)", train.main(_train_args(args) + ["-m", "unet"]))
    # Reuses the validations training just wrote (same cases), so it costs seconds.
    _step("choose the prediction mode on fold 0's validation",
          find_best_configuration.main([str(args.dataset_id), "-p", PLANS, "-f", "0", "--max-cases",
                                        str(VALIDATION_CASES), "-device", "cpu"]))
    out = results_root() / name / "demo_predictions"
    common = ["-i", str(raw_root() / name / "imagesTs"), "-d", str(args.dataset_id), "-p", PLANS, "-f", "0", "--seed",
              str(args.seed), "-device", "cpu"]
    _step("predict (MSG-LDM)", predict.main(common + ["-o", str(out / "msgldm"), "--preview", "-m", "msgldm"]))
    if _plans_use_diffusion(name):      # otherwise MSG-LDM already ran its one-pass decoder: nothing to compare
        _step("predict (one-pass decoder)", predict.main(common + ["-o", str(out / "one_pass"), "--one-pass"]))
    _step("predict (plain UNet control)", predict.main(common + ["-o", str(out / "unet"), "-m", "unet"]))
    return out


def _plans_use_diffusion(dataset_name: str) -> bool:
    plans = Plans.load(preprocessed_root() / dataset_name / plans_file_name(PLANS))
    return plans.configuration(DEFAULT_CONFIGURATION).ablations.diffusion


def run_floors(dataset_id: int, out: Path) -> None:
    from msgldm_auto.dataset.cases import training_cases
    from msgldm_auto.dataset.dataset_json import DatasetJson
    from msgldm_auto.inference.baseline_prediction import predict_floor_folders

    name = make_dataset_name(dataset_id, "Demo")
    dataset = DatasetJson.load(raw_root() / name / "dataset.json")
    splits = json.loads((preprocessed_root() / name / "splits_final.json").read_text())
    train_ids = set(splits[0]["train"])
    cases = [c for c in training_cases(raw_root() / name, dataset) if c.case_id in train_ids]
    predict_floor_folders(cases, raw_root() / name / "imagesTs", dataset,
                          {"copy": out / "floor_copy", "regression": out / "floor_regression"})
    print("\n=== floors fitted on fold 0's training cases: done", flush=True)


def evaluate_all(dataset_id: int, out: Path) -> int:
    from msgldm_auto.dataset.dataset_json import DatasetJson
    from msgldm_auto.evaluation.comparison import beats, comparison_table
    from msgldm_auto.evaluation.folder import evaluate_folder

    name = make_dataset_name(dataset_id, "Demo")
    raw = raw_root() / name
    dataset = DatasetJson.load(raw / "dataset.json")
    methods = {"MSG-LDM": "msgldm", "one-pass": "one_pass", "plain UNet control": "unet", "copy floor": "floor_copy",
               "regression floor": "floor_regression"}
    if not _plans_use_diffusion(name):
        del methods["one-pass"]            # MSG-LDM itself ran the one-pass decoder
    summaries = {label: evaluate_folder(raw / "referenceTs", out / folder, dataset=dataset, labels_dir=raw / "labelsTs",
                                        output_file=out / folder / "summary.json") for label, folder in methods.items()}
    modes = {c.get("mode") for c in json.loads((out / "msgldm" / "predictions.json").read_text())["cases"].values()}
    print(f"\nMSG-LDM ran in mode: {', '.join(sorted(m for m in modes if m))} "
          "(the cpu plans train no LDM, so the one-pass decoder: documentation/benchmarks.md says why)")
    print(_choice_line(name))
    print("Mean over the synthesized test volumes (BraSyn-style normalisation):\n")
    print(comparison_table(summaries))
    for target, ok in beats(summaries["MSG-LDM"], summaries["regression floor"]).items():
        if not ok:
            print(f"note: MSG-LDM does not beat the regression floor on {target} (PSNR); see "
                  "documentation/benchmarks.md")
    print(_control_line(summaries["MSG-LDM"], summaries["plain UNet control"]))
    print(f"\nOutputs: {out}/<method>/ (NIfTI, predictions.json, summary.json); previews in "
          f"{out / 'msgldm' / 'previews'}")
    return _gate(summaries)


def _choice_line(dataset_name: str) -> str:
    from msgldm_auto.evaluation.model_choice import read_model_choice

    choice = read_model_choice(results_root() / dataset_name / f"{PLANS}__2d")
    if choice is None:
        return "no prediction mode was chosen (msgldm_find_best_configuration did not run)"
    return (f"msgldm_predict's default for this model: {choice.chosen.name}, chosen on fold 0's validation "
            f"({choice.reason})")


def _control_line(ours: dict, control: dict) -> str:
    from msgldm_auto.evaluation.comparison import mean_over_targets

    ours_mean, control_mean = mean_over_targets(ours), mean_over_targets(control)
    if ours_mean is None or control_mean is None:
        return "MSG-LDM − plain UNet control: nothing to compare (no synthesized volume was scored)"
    return f"MSG-LDM − plain UNet control (same budget): {ours_mean - control_mean:+.2f} dB PSNR, mean over targets"


def _gate(summaries: dict) -> int:
    from msgldm_auto.evaluation.comparison import quality_gate

    failed = quality_gate(summaries["MSG-LDM"], summaries["copy floor"], summaries["regression floor"])
    if failed:
        print(f"FAIL: MSG-LDM does not beat {'; '.join(failed)} (PSNR)", file=sys.stderr)
        return 1
    print("PASS: MSG-LDM beats the copy floor on every target and the regression floor on the mean (PSNR)")
    return 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    print_roots()
    out = run_pipeline(args)
    run_floors(args.dataset_id, out)
    return evaluate_all(args.dataset_id, out)


if __name__ == "__main__":
    sys.exit(main())
