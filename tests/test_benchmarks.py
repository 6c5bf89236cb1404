"""Benchmarks (issues 8, 14): every module imports, document sections, statistics, the default-choosing rule, plans
variants made as copies, variant preparation, and the GPU script's dry run. The heavy benchmark runs themselves are
not tests; these check the code that turns them into numbers and decisions."""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import benchmarks
from benchmarks import _common, quality_report, quality_tables


# --------------------------------------------------------------------------------------------------- the package
def benchmark_modules() -> list[str]:
    return sorted(f"benchmarks.{m.name}" for m in pkgutil.iter_modules(benchmarks.__path__))


@pytest.mark.parametrize("name", benchmark_modules())
def test_every_benchmark_module_imports(name):
    """A script is run as `python -m benchmarks.<name>`: a broken import (a moved product module, a private name that
    went away) must fail here, not when someone runs an hour-long benchmark."""
    importlib.import_module(name)


def test_the_import_test_sees_every_script():
    scripts = {f"benchmarks.{p.stem}" for p in Path(benchmarks.__path__[0]).glob("*.py") if p.stem != "__init__"}
    assert set(benchmark_modules()) == scripts and "benchmarks.quality_runs" in scripts


# --------------------------------------------------------------------------------------------------- _common
def test_replace_section_replaces_only_its_block_and_appends_new_ones(tmp_path):
    document = tmp_path / "benchmarks.md"
    document.write_text("# Benchmarks\n\nintro\n\n<!-- a:start -->\nold a\n<!-- a:end -->\n\ntail\n")
    _common.replace_section("a", "new a", document)
    _common.replace_section("b", "first b", document)
    _common.replace_section("b", "second b", document)
    text = document.read_text()
    assert "old a" not in text and "new a" in text
    assert text.index("intro") < text.index("new a") < text.index("tail")
    assert "first b" not in text and text.count("<!-- b:start -->") == 1 and text.rstrip().endswith("<!-- b:end -->")


def test_mean_std_is_the_sample_std_over_finite_values():
    mean, std, n = _common.mean_std([1.0, 2.0, 3.0, math.nan, None])
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)
    assert _common.mean_std([5.0])[1] == 0.0
    assert math.isnan(_common.mean_std([])[0])
    assert _common.fmt_mean_std([1.0, 3.0], 1, signed=True) == "+2.0 ± 1.4"


# --------------------------------------------------------------------------------------------------- quality tables
def _metrics(**methods: list[float]) -> dict:
    """metrics[method][case][target]: psnr from the list; ssim = psnr / 100; two cases x two targets."""
    keys = [("c1", "T1"), ("c1", "T2"), ("c2", "T1"), ("c2", "T2")]
    out = {}
    for method, values in methods.items():
        for (case, target), value in zip(keys, values):
            out.setdefault(method, {}).setdefault(case, {})[target] = {"psnr": value, "ssim": value / 100,
                                                                       "mae": 1 / value,
                                                                        "gradient_ratio": 1.0}
    return out


def test_paired_differences_pair_the_same_case_and_target():
    metrics = _metrics(a=[20, 21, 22, 23], b=[19, 21, 25, 20])
    assert sorted(quality_tables.paired_differences(metrics, "a", "b", "psnr")) == [-3, 0, 1, 3]
    assert quality_tables.paired_differences(metrics, "a", "b", "psnr", target="T1") == [1, -3]


@pytest.mark.parametrize("diffusion, keeps", [([21, 22, 23, 24], True), ([19, 20, 21, 22], False)])
def test_choose_default_keeps_diffusion_only_when_not_worse_than_one_pass(diffusion, keeps):
    metrics = _metrics(**{"DDIM 10, start noise": [10, 10, 10, 10], "DDIM 10, start one-pass t0=0.5": diffusion,
                          "one-pass decoder": [20, 21, 22, 23]})
    choice = quality_tables.choose_default(metrics, ["DDIM 10, start noise", "DDIM 10, start one-pass t0=0.5"],
                                           "one-pass decoder")
    assert choice.best_setting == "DDIM 10, start one-pass t0=0.5"
    assert choice.diffusion_default is keeps
    assert choice.margin_db == pytest.approx(1.0 if keeps else -1.0)


def test_gradient_verdict_uses_the_design_band():
    metrics = _metrics(smooth=[20] * 4, striped=[20] * 4)
    for case in metrics["striped"].values():
        for values in case.values():
            values["gradient_ratio"] = 1.6
    verdict = quality_tables.gradient_verdict(metrics, ["smooth", "striped"])
    assert verdict["smooth"] == (1.0, True) and verdict["striped"] == (pytest.approx(1.6), False)


def test_minimum_steps_within_half_a_db_of_50():
    metrics = _metrics(**{f"DDIM {n}, start noise": [v] * 4
                          for n, v in ((50, 20.0), (25, 19.9), (10, 19.6), (5, 18.0))})
    fewest, by_steps = quality_report.minimum_steps_within(metrics, "start noise")
    assert fewest == 10 and by_steps[5] == 18.0


def test_sampling_section_renders_every_method_and_the_decision():
    names = ["DDIM 10, start one-pass t0=0.5", "DDIM 10, start one-pass t0=0.5 ×4", "DDIM 50, start one-pass t0=0.5",
             "DDIM 10, start one-pass t0=0.5, independent noise", "DDIM 50, start noise", "DDIM 10, start noise"]
    metrics = _metrics(**{name: [20 + i, 21, 22, 23] for i, name in enumerate(names)},
                       **{"one-pass decoder": [20, 21, 22, 23], "copy floor": [15, 15, 15, 15],
                          "regression floor": [24, 24, 24, 24],
                          "ceiling: autoencoder reconstruction": [30, 30, 30, 30]})
    record = {"scores": {"metrics": metrics, "patterns": {"c1": "T2", "c2": "T1"}, "seconds": {}},
              "model": {"plans": "MSGLDMPlans_cpu", "fold": "0", "iterations": {"ae": 600},
                        "diffusion": {"steps": 10, "sampling_start": "one_pass", "t0": 0.5}},
              "machine": "test machine", "date": "2026-01-01", "command": "bench_quality.py sampling",
              "test_cases": ["c1", "c2"]}
    body, choice = quality_report.sampling_section(record)
    for name in names + ["copy floor", "regression floor", "one-pass decoder"]:
        assert name in body
    assert "test machine" in body and "bench_quality.py sampling" in body and "2026-01-01" in body
    assert choice.diffusion_default and "diffusion stays the default" in body
    assert "regression floor" in body and "beats it on 0 of 4" in body


# --------------------------------------------------------------------------------------------------- plans variants
@pytest.fixture(scope="module")
def cpu_plans():
    from benchmarks.plans_edits import plans_variant
    from benchmarks.synthetic_model import brats_plans

    plans = brats_plans("cpu", device="cpu")
    return plans_variant(plans, "2d", {"data_identifier": "MSGLDMPlans_cpu_2d"}, plans_name="MSGLDMPlans_cpu")


def test_plans_variants_are_copies_and_refuse_unknown_fields(cpu_plans):
    from benchmarks.plans_edits import dotted_changes, plans_variant

    before = json.dumps(cpu_plans.to_dict(), sort_keys=True)
    changes = dotted_changes(["schedule.structure.learning_rate=8e-4", "ablations.hfib=false", "diffusion.t0=0.5"])
    variant = plans_variant(cpu_plans, "2d", changes, plans_name="MSGLDMPlans_cpu_x")
    config = variant.configuration("2d")
    assert variant.plans_name == "MSGLDMPlans_cpu_x" and config.schedule["structure"].learning_rate == 8e-4
    assert config.ablations.hfib is False and config.diffusion.t0 == 0.5
    assert config.schedule["ae"] == cpu_plans.configuration("2d").schedule["ae"]
    assert json.dumps(cpu_plans.to_dict(), sort_keys=True) == before          # the loaded plans are untouched
    for typo in ({"ablations": {"hbif": False}}, {"schedule": {"structur": {"epochs": 1}}}):
        with pytest.raises(KeyError):
            plans_variant(cpu_plans, "2d", typo)


def test_setting_predictors_share_the_networks_and_leave_the_model_alone(cpu_plans):
    import torch

    from benchmarks.quality_runs import Setting, setting_predictor
    from benchmarks.synthetic_model import random_networks, trained_model_stub
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    model = trained_model_stub(cpu_plans, Path("/nonexistent"))
    base = MSGLDMPredictor(model, [random_networks(cpu_plans, "cpu")], torch.device("cpu"), PredictionOptions(seed=3))
    diffusion = dataclasses.asdict(model.configuration.diffusion)
    setting = Setting(steps=2, start="noise", t0=0.75, samples=4, noise="independent")
    predictor = setting_predictor(base, setting, samples=4)
    assert predictor.networks is base.networks and predictor.steps == 2 and predictor.samples == 4
    assert predictor.options.noise == "independent" and predictor.options.seed == 3
    assert predictor.model.configuration.diffusion.sampling_start == "noise"
    assert predictor.model.configuration.diffusion.t0 == 0.75
    assert dataclasses.asdict(base.model.configuration.diffusion) == diffusion
    assert setting_predictor(base, Setting(one_pass=True), samples=1).mode == "one_pass"


def test_quality_runs_score_sample_0_and_the_mean_through_the_predictor(cpu_plans):
    """A tiny case through the path bench_quality measures: the predictor per setting, the ceiling beside it."""
    import torch

    from benchmarks.plans_edits import model_variant
    from benchmarks.quality_runs import Scores, Setting, TestCase, run_ceiling, run_setting
    from benchmarks.synthetic_model import brats_case, random_networks, trained_model_stub
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    model = model_variant(trained_model_stub(cpu_plans, Path("/nonexistent")), {"ablations": {"diffusion": True}})
    base = MSGLDMPredictor(model, [random_networks(cpu_plans, "cpu")], torch.device("cpu"), PredictionOptions())
    images = brats_case((16, 48, 48), present=(0, 1, 2, 3))
    case = TestCase("c0", {0: images[0], 1: images[1]}, {3: images[3]}, None)
    scores = Scores()
    run_setting(base, [case], Setting(steps=1, start="noise", samples=2), scores, prefix="m: ")
    run_ceiling(base, [case], scores)
    single, mean = scores.metrics["m: DDIM 1, start noise"], scores.metrics["m: DDIM 1, start noise ×2"]
    assert set(single["c0"]) == {"FLAIR"} and single["c0"]["FLAIR"]["psnr"] != mean["c0"]["FLAIR"]["psnr"]
    assert len(scores.seconds["m: DDIM 1, start noise"]) == 1 and scores.patterns == {"c0": "T1+T1ce"}
    assert math.isfinite(scores.metrics["ceiling: autoencoder reconstruction"]["c0"]["FLAIR"]["psnr"])


# --------------------------------------------------------------------------------------------------- retrained variants
def _fake_source(root: Path, plans) -> Path:
    pre = root / "preprocessed" / "Dataset901_Demo"
    (pre / "MSGLDMPlans_cpu_2d").mkdir(parents=True)
    for name in ("dataset.json", "dataset_fingerprint.json", "splits_final.json"):
        (pre / name).write_text("{}")
    plans.save(pre / "MSGLDMPlans_cpu.json")
    for stage in ("ae", "structure", "ldm"):
        folder = root / "results" / "Dataset901_Demo" / "MSGLDMPlans_cpu__2d" / "fold_0" / stage
        folder.mkdir(parents=True)
        (folder / "checkpoint_final.pth").write_text(stage)
    return root


def test_prepare_variant_edits_plans_reuses_data_and_copies_only_untouched_stages(tmp_path, cpu_plans):
    from benchmarks import bench_quality

    source, home = _fake_source(tmp_path / "source", cpu_plans), tmp_path / "home"
    stages = bench_quality.prepare_variant(source, home, "no_hfib")
    assert stages == ["structure", "ldm"]
    pre = home / "preprocessed" / "Dataset901_Demo"
    plans = json.loads((pre / "MSGLDMPlans_cpu_no_hfib.json").read_text())
    assert plans["plans_name"] == "MSGLDMPlans_cpu_no_hfib"
    ablations = plans["configurations"]["2d"]["ablations"]
    assert ablations == {**dataclasses.asdict(cpu_plans.configuration("2d").ablations), "hfib": False}
    assert (pre / "MSGLDMPlans_cpu_2d").is_symlink()
    fold = home / "results" / "Dataset901_Demo" / "MSGLDMPlans_cpu_no_hfib__2d" / "fold_0"
    assert (fold / "ae" / "checkpoint_final.pth").read_text() == "ae"
    assert not (fold / "structure").exists() and not (fold / "ldm").exists()
    assert bench_quality.prepare_variant(source, home, "latent") == ["ldm"]
    latent = json.loads((pre / "MSGLDMPlans_cpu_latent.json").read_text())
    assert latent["configurations"]["2d"]["diffusion"]["target"] == "latent"
    # the source is never modified
    assert json.loads((source / "preprocessed" / "Dataset901_Demo"
                       / "MSGLDMPlans_cpu.json").read_text())["plans_name"] == "MSGLDMPlans_cpu"


# --------------------------------------------------------------------------------------------------- training batches
def test_random_batches_have_a_valid_availability_pattern_per_row():
    import torch

    from benchmarks.stage_timing import random_batch
    from msgldm_auto.plans import ConfigurationPlan

    config = ConfigurationPlan(slice_axis=2, spacing=[1.0, 1.0], image_size=[16, 24], latent_scale=4, context_slices=3,
                               batch_size=5)
    batch = random_batch(config, 4, torch.device("cpu"))
    assert batch.images.shape == (5, 4, 3, 16, 24)
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    kept = batch.kept
    assert bool((kept.sum(1) >= 1).all()) and bool(((batch.present & ~kept).sum(1) >= 1).all())


def test_stage_timing_builds_every_stage_of_plans_whose_disentangler_corrects_the_prior(tiny_trained_demo):
    """bench_speed and bench_gpu time the planned plans; since the planner gives the disentangler a regression prior,
    timing must fit one (on random voxels) instead of refusing the plans."""
    import torch

    from benchmarks.stage_timing import STAGE_NAMES, random_prior, time_stage
    from msgldm_auto.plans import Plans

    plans = Plans.load(tiny_trained_demo / "plans.json")
    assert plans.configuration("2d").disentangler.regression_prior_degree > 0
    for stage in STAGE_NAMES:
        speed = time_stage(stage, plans, torch.device("cpu"), amp=False, iterations=1, warmup=1)
        assert speed.iterations_per_second > 0 and speed.stage == stage
    prior = random_prior(plans.modalities, 2)
    assert prior.modalities == plans.modalities and prior.polynomial
    assert random_prior(plans.modalities, 0) is None


def test_speed_section_keeps_the_sampling_figures_own_date_after_a_training_only_run(monkeypatch):
    from benchmarks import bench_speed

    monkeypatch.setattr(bench_speed, "fewest_steps", lambda: "")
    one_pass = {"seconds_per_volume": 2.0, "seconds_per_slice": 0.02, "targets": 1, "slices": 100}
    stage = {"iterations_per_second": 3.5, "slices_per_second": 28.0, "batch_size": 8, "amp": True}
    record = {"sampling": {"case": "c", "pattern": ["T1"], "rows": {"one-pass decoder": one_pass}, "grid": [8, 8]},
              "training": {"stages": {"structure": stage}, "loader": {"0": 200.0}},
              "machine": "new host", "date": "2026-12-01",
              "sampling_provenance": {"machine": "old host", "date": "2026-11-26"}}
    text = bench_speed.section(record)
    sampling_part, training_part = text.split("Training throughput")
    assert "old host" in sampling_part and "2026-11-26" in sampling_part and "2026-12-01" not in sampling_part
    assert "| structure | 3.50 | 28.0 | 8 | bf16 autocast |" in training_part and "--training-only" in training_part
    assert "new host" in training_part and "2026-12-01" in training_part


# --------------------------------------------------------------------------------------------------- GPU script
@pytest.mark.slow
def test_gpu_script_dry_run_writes_a_json_the_table_writer_reads(tmp_path):
    from benchmarks import bench_gpu, write_gpu_table

    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--dry-run", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["dry_run"] and set(record["sampling"]["steps"]) == {"1", "2"}
    assert record["sampling"]["timing"] == "predict_case" and record["sampling"]["slices"] > 0
    assert set(record["training"]["stages"]) == {"ae", "structure", "ldm"}
    assert all(s["iterations_per_second"] > 0 for s in record["training"]["stages"].values())
    text = write_gpu_table.section(record)
    assert "Dry run on CPU" in text and "DDIM 2" in text and "| ldm |" in text
    assert "End to end through `predict_case`" in text and "Networks only" not in text


def test_gpu_table_from_a_recorded_json():
    """A record of the earlier networks-only timing (the stored one) keeps its wording and its end-to-end line."""
    from benchmarks import write_gpu_table

    stage = {"iterations_per_second": 4.0, "slices_per_second": 64.0, "batch_size": 16, "peak_allocated_gb": 3.5}
    record = {"device": {"device": "cuda", "name": "NVIDIA H100", "memory_gb": 80.0, "torch": "2.11", "cuda": "12.8"},
              "plans": {"preset": "default", "image_size": [160, 192], "latent_scale": 8, "batch_size": 16,
                        "unet": [64, 128, 256]},
              "case_shape": [155, 240, 240], "dry_run": False, "date": "2026-01-01",
              "command": "bash benchmarks/run_gpu.sh",
              "total_seconds": 100.0,
              "sampling": {"preprocessing_seconds": 5.0, "slices": 140,
                           "one_pass": {"seconds": 0.7, "peak_allocated_gb": 1.0},
                           "steps": {"50": {"seconds": 14.0, "peak_allocated_gb": 2.0},
                                     "5": {"seconds": 1.4, "peak_allocated_gb": 2.0}},
                           "end_to_end_10_steps": {"seconds": 12.0, "peak_allocated_gb": 2.1}},
              "training": {"stages": {"ae": stage, "ldm": stage}}}
    text = write_gpu_table.section(record)
    assert "NVIDIA H100 (80 GB)" in text and "240 × 240 × 155" in text
    assert text.index("| DDIM 5 |") < text.index("| DDIM 50 |")
    assert "| DDIM 50 | 14.00 | 100.0 | 2.00 |" in text and "Dry run" not in text
    assert "Networks only" in text and "End to end (`predict_case`, 10 steps" in text


def _mode(name: str) -> dict:
    return {"name": name, "method": "msgldm", "one_pass": name == "one_pass", "num_samples": 1, "cost": 1}


def _mode_score(name: str, psnr: float, hf: float, grad: float = 1.0, rho=None, cover=None) -> dict:
    return {"mode": _mode(name), "num_volumes": 6, "psnr": psnr, "ssim": 0.8, "hf_ratio": hf,
            "gradient_ratio": grad, "std_error_spearman": rho, "coverage_2std": cover, "psnr_per_target": {}}


def test_modes_benchmark_states_each_diffusion_target_as_met_or_missed_by_how_much():
    from benchmarks.bench_modes import section, targets
    from msgldm_auto.evaluation.model_choice import ModelChoice

    choice = {"chosen": _mode("one_pass"), "reason": "best mean PSNR (20.00 dB)", "checkpoint": "final",
              "folds": ["0"], "scores": [_mode_score("one_pass", 20.0, 0.7, grad=1.3),
                                         _mode_score("diffusion", 17.0, 0.95),
                                         _mode_score("diffusion_mean8", 19.2, 0.8, rho=0.25, cover=0.9)]}
    lines = targets(ModelChoice.from_dict(choice))
    assert lines[0].startswith("diffusion_mean8 − one-pass decoder: -0.80 dB") and "missed" in lines[0]
    assert "HF ratio of one sample 0.950" in lines[1] and "met" in lines[1] and "one-pass decoder 0.700" in lines[1]
    assert "(one_pass) 1.300" in lines[2] and "missed" in lines[2]
    assert "0.250" in lines[3] and "missed" in lines[3]
    record = {"dataset": "Dataset902_X", "choice": choice, "iterations": {"ae": 10}, "machine": "m", "date": "d",
              "command": "c", "max_cases": 2}
    text = section([record])
    assert "chosen: one_pass (best mean PSNR (20.00 dB))" in text and "diffusion_mean8  6" in text
    choice["scores"][2]["std_error_spearman"] = None                               # NaN when measured: "not measured"
    assert "not measured" in targets(ModelChoice.from_dict(choice))[3]


def test_refine_benchmark_names_every_setting_and_marks_what_was_not_measured():
    from benchmarks.bench_refine import section, table

    metrics = dict(ssim=0.5, hf_ratio=1.0, gradient_ratio=1.0, std_error_spearman=None, coverage_2std=None, seconds=6)
    rows = [{"t0": None, "samples": 1, "psnr": 24.66, **metrics},
            {"t0": 0.05, "samples": 1, "psnr": 24.1, **metrics},
            {"t0": 0.05, "samples": 8, "psnr": 24.5, **{**metrics, "std_error_spearman": 0.41}}]
    lines = table({"rows": rows}).splitlines()
    assert lines[2].startswith("| one-pass decoder | 24.66 | 0.500 | 1.000 | 1.000 | – | – | 6 |")
    assert lines[3].startswith("| t0 0.05, one sample | 24.10 |") and lines[4].startswith("| t0 0.05, mean of 8 |")
    assert "| 0.410 |" in lines[4]
    record = {"dataset": "Dataset902_X", "tag": "sampled", "rows": rows, "iterations": {"ldm": 560},
              "training": {"t0": 0.25, "target": "residual", "train_timesteps": "sampled"}, "max_cases": 2,
              "machine": "m", "date": "d", "command": "c"}
    text = section([record])
    assert "### Dataset902_X (sampled)" in text and "timesteps `sampled`" in text and "ldm 560" in text


def test_error_sources_forgive_only_the_global_calibration():
    from benchmarks.bench_error_sources import _scores

    rng = np.random.default_rng(0)
    reference = rng.uniform(100, 1000, size=(12, 12, 12))
    mask = np.ones(reference.shape, dtype=bool)
    squeezed = np.sqrt(reference)                       # monotone but not affine: the percentiles no longer line up
    scores = _scores(reference, squeezed, mask, std=None, affine=True)
    assert scores["psnr_affine"] > scores["psnr"] + 1    # the best a·x + b recovers most of a smooth remapping
    noisy = reference + rng.normal(0, 100, size=reference.shape)   # an error no affine map can remove
    scores = _scores(reference, noisy, mask, std=None, affine=True)
    assert 0 <= scores["psnr_affine"] - scores["psnr"] < 1    # least squares can only help, and little here
    assert "std_error_spearman" not in scores
    spread = np.abs(noisy - reference)                   # a std map that is the error points at it; a random one not
    assert _scores(reference, noisy, mask, std=spread)["std_error_spearman"] > 0.3
    assert abs(_scores(reference, noisy, mask, std=rng.uniform(size=mask.shape))["std_error_spearman"]) < 0.1


def test_a_prediction_time_lever_scores_a_renamed_copy_of_the_model_with_its_edits(msgldm_roots):
    from test_inference import DATASET, write_fake_model

    from benchmarks.bench_levers import _copy_model, main
    from msgldm_auto.plans import Plans

    source = write_fake_model(msgldm_roots / "results")
    copy = _copy_model(source.parent, "MSGLDMPlans", "MSGLDMPlans_plain", ["head_aware_restore=false"])
    copied, original = Plans.load(copy / "plans.json"), Plans.load(source / "plans.json")
    assert copied.plans_name == "MSGLDMPlans_plain" and not copied.configuration("2d").head_aware_restore
    assert original.configuration("2d").head_aware_restore                      # the trained model is left alone
    assert (copy / "fold_0" / "structure" / "checkpoint_final.pth").is_file() and DATASET in str(copy)
    with pytest.raises(SystemExit):                                             # a score without any lever
        main(["score", "--home", str(msgldm_roots), "-d", "42", "--name", "nothing"])


def test_step_costs_section_shows_each_variants_ratio_and_both_ssim_losses():
    from benchmarks.bench_step_costs import section

    variant = {"name": "wide", "dataset": "Dataset902_X", "stage": "structure", "edits": ["a.b=1"],
               "base_iterations_per_second": 2.0, "variant_iterations_per_second": 1.0, "step_time_ratio": 2.0,
               "date": "d"}
    ssim = {"shape": [10, 1, 56, 64], "milliseconds": {"separable": 5.0, "MONAI": 50.0},
            "values": {"separable": 0.25, "MONAI": 0.25}, "date": "d"}
    precision = {**variant, "name": "bf16", "edits": [], "amp": True, "variant_iterations_per_second": 2.6,
                 "step_time_ratio": 2.0 / 2.6}
    rows = {**precision, "name": "rows", "base_every_row": True, "variant_iterations_per_second": 2.5,
            "step_time_ratio": 0.8}
    text = section({"variants": [variant, precision, rows], "ssim": ssim, "machine": "m", "date": "d"})
    assert "| wide | Dataset902_X | structure | a.b=1 | 2.00 | 1.00 | 2.000 | d |" in text
    assert "| rows | Dataset902_X | structure | (autocast) (base: every row encoded) | 2.00 | 2.50 | 0.800 |" in text
    assert "| bf16 | Dataset902_X | structure | (autocast) | 2.00 | 2.60 | 0.769 | d |" in text
    assert "| MONAI | 50.0 | 0.250000 |" in text and "10 × 1 × 56 × 64" in text


def test_the_every_row_base_encodes_every_row_and_restores_the_product_afterwards():
    import torch

    from benchmarks.bench_step_costs import every_row_encoded
    from msgldm_auto.networks import disentangler, structure

    seen = []

    def module(x):
        seen.append(len(x))
        return x * 2

    rows = torch.tensor([True, False, True])
    with every_row_encoded(True):
        every = structure.rows_only(module, torch.ones(3, 2), rows)[0]
        assert disentangler.rows_only is structure.rows_only
    assert seen == [3] and torch.equal(every, torch.full((3, 2), 2.0))
    assert structure.rows_only.__module__ == "msgldm_auto.networks.structure"
    assert disentangler.rows_only is structure.rows_only
    skipped = structure.rows_only(module, torch.ones(3, 2), rows)[0]
    assert seen == [3, 2] and torch.equal(skipped[1], torch.zeros(2))


def test_results_lock_is_exclusive_while_held():
    import fcntl
    import tempfile

    path = Path(tempfile.gettempdir()) / "msgldm_benchmarks_locktest.lock"
    with _common.results_lock("locktest"), open(path, "w") as other:
        with pytest.raises(BlockingIOError):                 # a second run waits here instead of saving over this one
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(path, "w") as other:                           # released afterwards
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_ssim_timing_compares_two_losses_of_the_same_value():
    import argparse

    from benchmarks.bench_step_costs import time_ssim

    record = time_ssim(argparse.Namespace(repeats=1, iterations=1, threads=1))
    values = list(record["values"].values())
    assert len(values) == 2 and abs(values[0] - values[1]) < 1e-4 and 0 < values[0] < 1
    assert all(ms > 0 for ms in record["milliseconds"].values())


def test_percentile_match_section_states_matched_minus_raw_per_method_and_target():
    from benchmarks.bench_percentile_match import section

    def means(t1: float, t2: float, ssim: float) -> dict:
        return {"per_modality": {target: {"psnr": {"mean": psnr}, "ssim": {"mean": ssim},
                                          "gradient_ratio": {"mean": ssim}}
                                 for target, psnr in (("T1", t1), ("T2", t2))}, "mean": {}}

    record = {"name": "n", "dataset": "Dataset902_X", "fold": "all", "iterations": {"structure": 10}, "date": "d",
              "machine": "m", "command": "c",
              "summaries": {"MSG-LDM, matched": means(25.0, 23.0, 0.9), "MSG-LDM, raw": means(24.0, 22.5, 0.8),
                            "regression floor": means(20.0, 20.0, 0.5)}}
    text = section({"n": record})
    assert ("MSG-LDM: matched − raw +0.75 dB (T1 +1.00, T2 +0.50), SSIM +0.100, through-plane gradient ratio "
            "+0.100.") in text
    assert "### Dataset902_X (fold all, n)" in text and "regression floor" in text
