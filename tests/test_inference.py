"""Prediction, export to the input grid, model zips and fold validation, with tiny randomly initialised networks.

The networks, preprocessing and the sampler are the real ones; the networks are built from a tiny ConfigurationPlan
and saved untrained as fake checkpoints in a temporary results folder. What is checked is inference's own behaviour:
geometry, files, records, failure isolation, reproducibility.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.dataset.image_io import Image, read_image, write_image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import (
    AutoencoderPlan,
    ConfigurationPlan,
    ControlPlan,
    DiffusionPlan,
    DisentanglerPlan,
    Plans,
    StageSchedule,
    UNetPlan,
)

MODALITIES = ["T1", "T2", "FLAIR"]
DATASET = "Dataset042_Tiny"
P995 = {"T1": 900.0, "T2": 1200.0, "FLAIR": 700.0}
SHAPE_KJI = (6, 18, 17)                  # slices, rows, columns of the synthetic inputs
RAS_DIRECTION = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
LPS_DIRECTION = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)


# ------------------------------------------------------------------------------------------------ tiny model
def tiny_configuration(diffusion: bool = True) -> ConfigurationPlan:
    config = ConfigurationPlan(
        slice_axis=2, spacing=[1.5, 1.5], image_size=[16, 16], latent_scale=4, context_slices=3, batch_size=4,
        autoencoder=AutoencoderPlan(channels=[8, 8, 8], latent_channels=2, attention_levels=[False] * 3,
                                    norm_num_groups=4),
        disentangler=DisentanglerPlan(structure_channels=[4, 4, 8], style_dim=4, style_channels=4, decoder_channels=4,
                                      prior_channels=4, msse_heads=2),
        unet=UNetPlan(channels=[8, 8], attention_levels=[False, False], num_head_channels=8, norm_num_groups=4),
        diffusion=DiffusionPlan(steps=3),
        control=ControlPlan(channels=[4, 8, 8], num_res_units=1),
        schedule={s: StageSchedule(epochs=1) for s in ("ae", "structure", "ldm")},
        data_identifier="MSGLDMPlans_2d",
    )
    config.ablations.diffusion = diffusion
    return config


def tiny_plans(diffusion: bool = True) -> Plans:
    return Plans(dataset_name=DATASET, plans_name="MSGLDMPlans", preset="cpu", modalities=list(MODALITIES),
                 intensity_p995=dict(P995), configurations={"2d": tiny_configuration(diffusion)})


def write_fake_model(results: Path, folds=("0",), diffusion: bool = True,
                     stages: tuple[str, ...] = ("ae", "structure", "ldm")) -> Path:
    """A results model folder whose checkpoints hold randomly initialised networks (seeded, so reproducible)."""
    from msgldm_auto.inference.model_loading import build_networks

    plans = tiny_plans(diffusion)
    folder = results / DATASET / "MSGLDMPlans__2d"
    plans.save(folder / "plans.json")
    DatasetJson({i: n for i, n in enumerate(MODALITIES)}, ".nii.gz", 4).save(folder / "dataset.json")
    (folder / "dataset_fingerprint.json").write_text("{}")
    for index, fold in enumerate(folds):
        torch.manual_seed(100 + index)
        networks = build_networks(plans, plans.configurations["2d"], stages)
        for stage, network in networks.items():
            if stage == "ae":
                network.scale_factor.fill_(0.7)   # a non-default buffer must travel with the weights
            state = network.state_dict()
            payload = {"stage": stage, "epoch": 1, "inference_weights": state, "network_weights": state,
                       "optimizer_state": {"lr": torch.tensor(1e-4)}, "plans_name": "MSGLDMPlans",
                       "configuration": "2d", "fold": fold}
            (folder / f"fold_{fold}" / stage).mkdir(parents=True, exist_ok=True)
            torch.save(payload, folder / f"fold_{fold}" / stage / "checkpoint_final.pth")
    return folder


# ------------------------------------------------------------------------------------------------ synthetic cases
def head_volume(shape=SHAPE_KJI) -> np.ndarray:
    """An ellipsoidal 'head' (1 inside, with a brighter core) on a zero background, in (k, j, i) order."""
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt((k / 1.3) ** 2 + (j / 0.75) ** 2 + (i / 0.7) ** 2)
    return np.where(radius < 1, 1.0 + (radius < 0.5), 0.0)


def case_images(direction=LPS_DIRECTION, origin=(10.0, -20.0, 5.0), spacing=(1.4, 1.6, 3.0)) -> dict[int, Image]:
    head = head_volume()
    contrasts = {0: (300.0, 800.0), 1: (900.0, 400.0), 2: (500.0, 600.0)}
    images = {}
    for channel, (outer, core) in contrasts.items():
        array = np.where(head == 2, core, np.where(head == 1, outer, 0.0)).astype(np.float32)
        images[channel] = Image(array, spacing, origin, direction)
    return images


def write_case(folder: Path, case_id: str, channels, **geometry) -> dict[int, Path]:
    images = case_images(**geometry)
    paths = {}
    for channel in channels:
        paths[channel] = folder / f"{case_id}_{channel:04d}.nii.gz"
        write_image(images[channel], paths[channel])
    return paths


@pytest.fixture
def model_folder(msgldm_roots) -> Path:
    return write_fake_model(msgldm_roots / "results")


def predict(args: list[str]) -> int:
    from msgldm_auto.cli.predict import main

    return main(args)


def outputs_of(folder: Path) -> dict[str, Image]:
    return {p.name: read_image(p) for p in sorted(folder.glob("*.nii.gz"))}


# ------------------------------------------------------------------------------------------------ unit tests
def test_context_indices_clamp_at_the_volume_ends():
    from msgldm_auto.inference.synthesis import context_indices

    assert context_indices(torch.tensor([0, 2, 4]), 3, 5).tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]
    assert context_indices(torch.tensor([3]), 1, 5).tolist() == [[3]]


def test_shared_noise_repeats_over_slices_and_independent_noise_does_not():
    from msgldm_auto.inference.synthesis import make_noise

    shared = make_noise((2, 3, 4, 4), 5, "shared", seed=7)
    independent = make_noise((2, 3, 4, 4), 5, "independent", seed=7)
    assert shared.shape == independent.shape == (5, 2, 3, 4, 4)
    assert all(torch.equal(shared[0], shared[z]) for z in range(5))
    assert not torch.allclose(independent[0], independent[1])
    assert torch.equal(make_noise((2, 3, 4, 4), 5, "independent", seed=7), independent)


def test_intensity_export_maps_background_to_zero_and_top_to_p995():
    from msgldm_auto.inference.export import to_dataset_intensity

    assert to_dataset_intensity(np.array([-1.0, 0.0, 1.0, 3.0]), 800.0).tolist() == [0.0, 400.0, 800.0, 800.0]


def test_percentile_match_puts_the_head_p995_at_the_scale_and_keeps_the_bulk():
    from msgldm_auto.inference.export import STRETCH_FROM_PERCENTILE, match_head_percentile

    rng = np.random.default_rng(0)
    volume = rng.gamma(4.0, 100.0, size=(20, 30, 30)).astype(np.float32)       # a smooth synthesis's narrow top
    head = np.zeros(volume.shape, bool)
    head[2:18, 3:27, 3:27] = True
    start = np.percentile(volume[head], STRETCH_FROM_PERCENTILE)
    scale = 1.3 * float(np.percentile(volume[head], 99.5))

    stretch = match_head_percentile(volume, head, scale)
    matched = stretch.apply(volume)

    assert stretch.start == pytest.approx(start) and stretch.factor > 1
    assert np.percentile(matched[head], 99.5) == pytest.approx(scale, rel=1e-5)
    bulk = volume <= start
    np.testing.assert_array_equal(matched[bulk], volume[bulk])                  # 95 % of the head untouched
    order = np.argsort(volume[head], kind="stable")
    assert np.all(np.diff(matched[head][order]) >= 0)                           # monotone: no voxel changes rank
    std = np.ones_like(volume)
    np.testing.assert_allclose(stretch.apply_to_std(std, volume), np.where(bulk, 1.0, stretch.factor))
    # too bright a top is pulled down the same way
    assert match_head_percentile(volume, head, 0.9 * scale / 1.3).factor < 1


def test_percentile_match_leaves_a_flat_or_empty_volume_and_caps_a_near_flat_top():
    from msgldm_auto.inference.export import MAX_STRETCH, match_head_percentile

    flat = np.full((4, 5, 5), 200.0, np.float32)
    head = np.ones(flat.shape, bool)
    np.testing.assert_array_equal(match_head_percentile(flat, head, 800.0).apply(flat), flat)
    assert match_head_percentile(flat, np.zeros_like(head), 800.0).factor == 1.0
    near_flat = flat.copy()
    near_flat.flat[0] = 200.001
    near_flat.flat[1:40] = 200.0001
    assert match_head_percentile(near_flat, head, 800.0).factor == MAX_STRETCH
    assert match_head_percentile(near_flat, head, 150.0).factor == 1.0      # a scale below the bulk: left alone


# ------------------------------------------------------------------------------------------------ prediction
def test_predict_writes_missing_modalities_on_the_exact_input_grid(model_folder, tmp_path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "lps", [0], direction=LPS_DIRECTION)
    write_case(inputs, "ras", [0, 2], direction=RAS_DIRECTION, origin=(-3.0, 7.5, -12.0), spacing=(1.2, 1.2, 2.5))
    before = {p: p.read_bytes() for p in inputs.iterdir()}

    assert predict(["-i", str(inputs), "-o", str(output), "-d", "42", "-f", "0", "--seed", "3"]) == 0

    written = outputs_of(output)
    assert sorted(written) == ["lps_0001.nii.gz", "lps_0002.nii.gz", "ras_0001.nii.gz"]   # present ones not written
    for name, image in written.items():
        case_id = name.split("_")[0]
        reference = read_image(inputs / f"{case_id}_0000.nii.gz")
        assert image.array.shape == reference.array.shape
        assert image.spacing == pytest.approx(reference.spacing)
        assert image.origin == pytest.approx(reference.origin)
        assert image.direction == pytest.approx(reference.direction)
        assert image.array.dtype == np.float32
        assert np.isfinite(image.array).all()
        assert np.all(image.array[head_volume() == 0] == 0)                # zero outside the head
        channel = int(name[-11:-7])
        # on the dataset's intensity scale: p99.5 inside the head at the modality's scale (percentile matching)
        assert np.percentile(image.array[head_volume() > 0], 99.5) == pytest.approx(P995[MODALITIES[channel]],
                                                                                    rel=1e-3)
        assert image.array[head_volume() > 0].max() > 0
    assert {p: p.read_bytes() for p in inputs.iterdir()} == before         # the inputs are untouched

    record = json.loads((output / "predictions.json").read_text())
    assert record["channel_names"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
    ras = record["cases"]["ras"]
    assert ras["present"] == ["T1", "FLAIR"] and ras["synthesized"] == ["T2"]
    assert (ras["folds"], ras["steps"], ras["samples"], ras["seed"], ras["mode"]) == (["0"], 3, 1, 3, "diffusion")
    assert record["failed"] == {}


def test_failing_case_is_reported_and_the_others_complete(model_folder, tmp_path, capsys):
    inputs, output = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "good", [0, 1])
    write_case(inputs, "shifted", [0])
    write_case(inputs, "shifted", [1], origin=(13.0, -20.0, 5.0))            # a real grid mismatch (3 mm)
    (inputs / "alien_0007.nii.gz").write_bytes((inputs / "good_0000.nii.gz").read_bytes())   # unknown channel only

    assert predict(["-i", str(inputs), "-o", str(output), "-d", DATASET, "--one-pass"]) == 1

    assert sorted(outputs_of(output)) == ["good_0002.nii.gz"]
    record = json.loads((output / "predictions.json").read_text())
    assert set(record["failed"]) == {"shifted", "alien"}
    assert "--resample-mismatched" in record["failed"]["shifted"]
    assert "no modality the model knows" in record["failed"]["alien"]
    assert record["cases"]["good"]["mode"] == "one_pass" and record["cases"]["good"]["steps"] == 0
    assert "FAILED shifted" in capsys.readouterr().err

    # the flag resamples the mismatched channel onto the first one, and the case now succeeds
    with pytest.warns(UserWarning, match="resampled"):
        assert predict(["-i", str(inputs), "-o", str(output), "-d", DATASET, "--one-pass",
                        "--resample_mismatched"]) == 1
    assert "shifted_0002.nii.gz" in outputs_of(output)
    assert set(json.loads((output / "predictions.json").read_text())["failed"]) == {"alien"}


def test_continue_prediction_does_nothing_on_rerun(model_folder, tmp_path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "a", [0])
    write_case(inputs, "b", [1, 2])
    args = ["-i", str(inputs), "-o", str(output), "-d", "42", "--steps", "2", "--save-std", "--num-samples", "2"]
    assert predict(args) == 0
    stamps = {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}
    record = (output / "predictions.json").read_text()

    assert predict(args + ["--continue_prediction"]) == 0
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file() and p.name != "predictions.json"} == \
        {p: t for p, t in stamps.items() if p.name != "predictions.json"}
    assert json.loads((output / "predictions.json").read_text())["cases"] == json.loads(record)["cases"]

    # a deleted output makes exactly that case unfinished
    (output / "b_0000.nii.gz").unlink()
    assert predict(args + ["--continue-prediction"]) == 0
    assert (output / "b_0000.nii.gz").is_file()
    assert (output / "a_0001.nii.gz").stat().st_mtime_ns == stamps[output / "a_0001.nii.gz"]


def test_std_maps_go_to_uncertainty_and_complete_copies_inputs_verbatim(model_folder, tmp_path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "c", [1])
    assert predict(["-i", str(inputs / "c_0001.nii.gz"), "-o", str(output), "-d", "42", "--steps", "2",
                    "--num-samples", "2", "--save-std", "--complete", "--targets", "T1", "--preview"]) == 0
    assert (output / "previews" / "c.png").stat().st_size > 0
    assert sorted(p.name for p in output.glob("*.nii.gz")) == ["c_0000.nii.gz", "c_0001.nii.gz"]   # FLAIR not asked
    assert (output / "c_0001.nii.gz").read_bytes() == (inputs / "c_0001.nii.gz").read_bytes()
    std = read_image(output / "uncertainty" / "c_0000_std.nii.gz")
    assert std.array.shape == SHAPE_KJI and np.all(std.array >= 0)
    assert np.all(std.array[head_volume() == 0] == 0)
    assert std.array.max() > 0                                            # two different samples disagree somewhere
    assert json.loads((output / "predictions.json").read_text())["cases"]["c"]["samples"] == 2


def test_python_api_is_reproducible_per_seed_and_the_seed_matters(model_folder):
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    images = {0: case_images()[0]}
    first = MSGLDMPredictor.from_trained_folder(model_folder, [0],
                                                options=PredictionOptions(seed=1)).predict_case(images, ["FLAIR"])
    again = MSGLDMPredictor.from_trained_folder(model_folder, [0],
                                                options=PredictionOptions(seed=1)).predict_case(images, [2])
    other = MSGLDMPredictor.from_trained_folder(model_folder, [0],
                                                options=PredictionOptions(seed=2)).predict_case(images, [2])
    one_at_a_time = MSGLDMPredictor.from_trained_folder(model_folder, [0],
                                                        options=PredictionOptions(seed=1, batch_size=1))
    assert list(first) == [2]
    np.testing.assert_array_equal(first[2].array, again[2].array)
    assert not np.array_equal(first[2].array, other[2].array)
    np.testing.assert_allclose(one_at_a_time.predict_case(images, [2])[2].array, first[2].array, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("one_pass", [False, True])
def test_a_head_wider_than_the_planned_canvas_is_synthesized_to_its_rim(model_folder, one_pass):
    """The plans' 16 x 16 canvas is cropped for training; prediction grows it, so no head row comes back as a flat
    fill."""
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    head = head_volume((6, 44, 40))                     # at 1.5 mm the head box is ~33 x 28 px
    images = {0: Image((300.0 * head).astype(np.float32), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), LPS_DIRECTION)}
    predictor = MSGLDMPredictor.from_trained_folder(model_folder, [0], options=PredictionOptions(one_pass=one_pass))
    output = predictor.predict_case(images, [1])[1].array
    assert output.shape == head.shape and np.isfinite(output).all()
    rim = (head > 0) & (np.abs(np.arange(44) - 21.5)[None, :, None] > 12)   # rows a 16-px canvas would have cut away
    assert rim.sum() > 50
    values, counts = np.unique(output[rim], return_counts=True)
    # A cut canvas fills every rim voxel with one value; this untrained model's diffusion output, decoded as a change
    # to its one-pass image, clamps some voxels to the background (about 10 %).
    assert counts.max() < 0.25 * rim.sum(), (f"{counts.max()} of {rim.sum()} rim voxels share the value "
                                             f"{values[counts.argmax()]}")


def test_independent_noise_differs_from_shared_noise(model_folder):
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    images = {0: case_images()[0]}
    shared = MSGLDMPredictor.from_trained_folder(model_folder,
                                                 options=PredictionOptions(noise="shared")).predict_case(images)
    independent = MSGLDMPredictor.from_trained_folder(model_folder,
                                                      options=PredictionOptions(noise="independent")).predict_case(images)
    assert sorted(shared) == [1, 2]
    assert not np.array_equal(shared[1].array, independent[1].array)


def test_fold_ensemble_is_the_image_space_mean_of_the_folds(msgldm_roots):
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    folder = write_fake_model(msgldm_roots / "results", folds=("0", "1"))
    # the mean is taken before percentile matching, which is not linear
    images, options = {1: case_images()[1]}, PredictionOptions(one_pass=True, match_percentile=False)
    per_fold = [MSGLDMPredictor.from_trained_folder(folder, [f], options=options).predict_case(images)[0].array
                for f in (0, 1)]
    both = MSGLDMPredictor.from_trained_folder(folder, options=options)
    assert both.folds == ["0", "1"]
    np.testing.assert_allclose(both.predict_case(images)[0].array, (per_fold[0] + per_fold[1]) / 2, rtol=1e-5,
                               atol=1e-3)


def test_no_percentile_match_keeps_the_network_top_and_matching_stretches_only_the_top(model_folder, tmp_path):
    inputs = tmp_path / "in"
    write_case(inputs, "c", [0])
    common = ["-i", str(inputs), "-d", "42", "--targets", "FLAIR"]
    assert predict([*common, "-o", str(tmp_path / "matched")]) == 0
    assert predict([*common, "-o", str(tmp_path / "raw"), "--no_percentile_match"]) == 0

    head = head_volume() > 0
    matched = read_image(tmp_path / "matched" / "c_0002.nii.gz").array[head]
    raw = read_image(tmp_path / "raw" / "c_0002.nii.gz").array[head]
    assert raw.max() <= P995["FLAIR"] + 1e-3                                            # the network's top ...
    assert np.percentile(raw, 99.5) < 0.99 * P995["FLAIR"]                              # ... below the scale
    assert np.percentile(matched, 99.5) == pytest.approx(P995["FLAIR"], rel=1e-3)
    assert 0.9 < np.mean(matched == raw) < 0.97                                         # the bulk is the same
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(matched[order]) >= 0)                                         # and no voxel changes rank
    cases = {name: json.loads((tmp_path / name / "predictions.json").read_text())["cases"]["c"]
             for name in ("matched", "raw")}
    assert cases["matched"]["percentile_matched"] and not cases["raw"]["percentile_matched"]


def test_matching_stretches_the_averaged_synthesis_and_scales_its_std_map_by_the_same_slope(model_folder):
    from msgldm_auto.inference.export import match_head_percentile
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    images, head = {0: case_images()[0]}, head_volume() > 0

    def predict_flair(match: bool):
        options = PredictionOptions(num_samples=2, steps=2, match_percentile=match)
        result = MSGLDMPredictor.from_trained_folder(model_folder, [0], options=options).predict_case_full(
            images, [2], with_std=True)
        return result.synthesized[2].array, result.std[2].array

    (mean, std), (raw_mean, raw_std) = predict_flair(True), predict_flair(False)
    stretch = match_head_percentile(raw_mean, head, P995["FLAIR"])
    assert stretch.factor > 1 and (raw_std[head] > 0).any()
    np.testing.assert_allclose(mean[head], stretch.apply(raw_mean)[head], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(std[head], stretch.apply_to_std(raw_std, raw_mean)[head], rtol=1e-5, atol=1e-3)


def test_user_errors_are_one_clear_line(model_folder, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_case(inputs, "a", [0])
    assert predict(["-i", str(inputs), "-o", str(inputs), "-d", "42"]) == 2
    assert "must not be the input folder" in capsys.readouterr().err
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "o"), "-d", "42", "-f", "3"]) == 2
    error = capsys.readouterr().err
    assert "fold_3" in error and "checkpoint missing" in error and len(error.strip().splitlines()) == 1
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "o"), "-d", "42", "--targets", "PD"]) == 1
    assert "PD" in json.loads((tmp_path / "o" / "predictions.json").read_text())["failed"]["a"]
    capsys.readouterr()
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "o"), "-d", "42", "-c", "3d"]) == 2
    error = capsys.readouterr().err
    assert "no trained model" in error and "pick with -p/-c): MSGLDMPlans__2d;" in error
    assert len(error.strip().splitlines()) == 1


def test_missing_checkpoint_names_the_file(model_folder):
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    with pytest.raises(MSGLDMError, match=r"fold_3.ae.checkpoint_final\.pth: checkpoint missing"):
        MSGLDMPredictor.from_trained_folder(model_folder, [3])
    (model_folder / "fold_0" / "ldm" / "checkpoint_final.pth").unlink()
    with pytest.raises(MSGLDMError, match="ldm"):
        MSGLDMPredictor.from_trained_folder(model_folder, [0])
    # the one-pass decoder needs only the first two stages
    assert MSGLDMPredictor.from_trained_folder(model_folder, [0],
                                               options=PredictionOptions(one_pass=True)).folds == ["0"]


def test_plans_without_diffusion_need_neither_the_autoencoder_nor_the_ldm(msgldm_roots):
    from msgldm_auto.inference.predictor import MSGLDMPredictor

    folder = write_fake_model(msgldm_roots / "results", diffusion=False)
    for stage in ("ae", "ldm"):
        for path in (folder / "fold_0" / stage).iterdir():
            path.unlink()
    predictor = MSGLDMPredictor.from_trained_folder(folder)
    assert (predictor.uses_diffusion, predictor.steps, predictor.samples, predictor.folds) == (False, 0, 1, ["0"])
    assert predictor.mode == "one_pass" and predictor.networks[0].autoencoder is None


def test_plans_without_diffusion_still_sample_when_the_ldm_was_trained_anyway(msgldm_roots):
    from msgldm_auto.inference.predictor import MSGLDMPredictor

    folder = write_fake_model(msgldm_roots / "results", folds=("0", "1"), diffusion=False)
    assert MSGLDMPredictor.from_trained_folder(folder).mode == "diffusion"          # --stage ae, --stage ldm ran
    (folder / "fold_1" / "ldm" / "checkpoint_final.pth").unlink()
    assert MSGLDMPredictor.from_trained_folder(folder, [0]).mode == "diffusion"
    assert MSGLDMPredictor.from_trained_folder(folder, [0, 1]).mode == "one_pass"   # not every fold has it


def test_the_python_api_expands_a_home_path(model_folder, monkeypatch):
    from msgldm_auto.inference.predictor import MSGLDMPredictor

    monkeypatch.setenv("HOME", str(model_folder.parents[2]))
    tilde = "~/" + str(model_folder.relative_to(model_folder.parents[2]))
    predictor = MSGLDMPredictor.from_trained_folder(tilde, [0])
    assert predictor.model.folder == model_folder


# ------------------------------------------------------------------------------------------------ model zips
def test_a_control_only_model_exports_and_installs_and_predicts_with_it(msgldm_roots, tmp_path, monkeypatch):
    from msgldm_auto.cli.model_zip import export_main, install_main
    from msgldm_auto.evaluation.model_choice import ModelChoice, ModeScore, PredictionMode

    folder = write_fake_model(msgldm_roots / "results", stages=("unet",))
    control = PredictionMode.control()
    ModelChoice(control, "the only mode", "final", ["0"], [ModeScore(control, 1, 20.0, 0.8, 0.9, 1.0)]).write(folder)
    inputs = tmp_path / "in"
    write_case(inputs, "z", [0, 2], direction=RAS_DIRECTION)
    archive = tmp_path / "model.zip"
    assert export_main(["-d", "42", "-o", str(archive)]) == 0
    with zipfile.ZipFile(archive) as zipped:
        assert [n for n in zipped.namelist() if n.endswith(".pth")] == [
            f"{DATASET}/MSGLDMPlans__2d/fold_0/unet/checkpoint_final.pth"]
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "here"), "-d", "42", "-m", "unet"]) == 0
    monkeypatch.setenv("MSGLDM_RESULTS", str(tmp_path / "elsewhere"))
    assert install_main([str(archive)]) == 0
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "there"), "-d", "42"]) == 0     # the zip's chosen mode
    here, there = outputs_of(tmp_path / "here"), outputs_of(tmp_path / "there")
    assert list(here) == list(there) == ["z_0001.nii.gz"]
    assert np.array_equal(here["z_0001.nii.gz"].array, there["z_0001.nii.gz"].array)
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "x"), "-d", "42", "-m", "unet", "--steps", "3"]) == 2



def test_export_then_install_predicts_identically(model_folder, msgldm_roots, tmp_path, monkeypatch):
    from msgldm_auto.cli.model_zip import export_main, install_main

    inputs = tmp_path / "in"
    write_case(inputs, "z", [0, 2], direction=RAS_DIRECTION)
    archive = tmp_path / "model.zip"
    assert export_main(["-d", "42", "-o", str(archive), "-f", "0"]) == 0
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        checkpoint = torch.load(zipped.open(f"{DATASET}/MSGLDMPlans__2d/fold_0/ldm/checkpoint_final.pth"),
                                weights_only=True)
    assert f"{DATASET}/MSGLDMPlans__2d/dataset_fingerprint.json" in names
    assert sorted(n for n in names if n.endswith(".pth")) == [
        f"{DATASET}/MSGLDMPlans__2d/fold_0/{s}/checkpoint_final.pth" for s in ("ae", "ldm", "structure")]
    assert ("inference_weights" in checkpoint and "optimizer_state" not in checkpoint
            and "network_weights" not in checkpoint)

    assert predict(["-i", str(inputs), "-o", str(tmp_path / "here"), "-d", "42", "--seed", "5"]) == 0
    monkeypatch.setenv("MSGLDM_RESULTS", str(tmp_path / "elsewhere"))
    assert install_main([str(archive)]) == 0
    assert (tmp_path / "elsewhere" / DATASET / "MSGLDMPlans__2d" / "fold_0" / "ae" / "checkpoint_final.pth").is_file()
    assert install_main([str(archive)]) == 2                                       # no silent overwrite
    assert install_main([str(archive), "--overwrite"]) == 0
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "there"), "-d", "42", "--seed", "5"]) == 0
    here, there = outputs_of(tmp_path / "here"), outputs_of(tmp_path / "there")
    assert list(here) == list(there) == ["z_0001.nii.gz"]
    np.testing.assert_array_equal(here["z_0001.nii.gz"].array, there["z_0001.nii.gz"].array)


def test_install_refuses_entries_outside_a_model_folder(msgldm_roots, tmp_path):
    from msgldm_auto.inference.model_zip import install_model_zip

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(f"{DATASET}/MSGLDMPlans__2d/plans.json", "{}")
        archive.writestr(f"{DATASET}/MSGLDMPlans__2d/../../../escaped.txt", "x")
    with pytest.raises(MSGLDMError, match="not an msgldm model zip"):
        install_model_zip(evil)
    assert not (msgldm_roots / "results").exists() or not any((msgldm_roots / "results").rglob("escaped.txt"))


def test_an_interrupted_install_leaves_the_installed_model_untouched(msgldm_roots, tmp_path, monkeypatch):
    from msgldm_auto.inference import model_zip

    def make_zip(path: Path, plans: str) -> Path:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"{DATASET}/MSGLDMPlans__2d/plans.json", plans)
            archive.writestr(f"{DATASET}/MSGLDMPlans__2d/fold_0/ae/checkpoint_final.pth", "weights")
        return path

    installed = model_zip.install_model_zip(make_zip(tmp_path / "old.zip", "old"))[0]
    assert installed == msgldm_roots / "results" / DATASET / "MSGLDMPlans__2d"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(model_zip.shutil, "copyfileobj", fail)
        model_zip.install_model_zip(make_zip(tmp_path / "new.zip", "new"), overwrite=True)
    assert (installed / "plans.json").read_text() == "old"
    assert sorted(p.name for p in installed.parent.iterdir()) == ["MSGLDMPlans__2d"]    # no staging folder left
    model_zip.install_model_zip(make_zip(tmp_path / "new.zip", "new"), overwrite=True)
    assert (installed / "plans.json").read_text() == "new" and (installed / "fold_0/ae/checkpoint_final.pth").is_file()


# ------------------------------------------------------------------------------------------------ fold validation
def test_validation_patterns_hold_out_each_modality_and_keep_each_alone():
    from msgldm_auto.training.validation import Pattern, validation_patterns

    assert validation_patterns([0, 2]) == [Pattern((2,), (0,)), Pattern((0,), (2,))]   # the two kinds coincide
    patterns = validation_patterns([0, 1, 2])
    assert len(patterns) == 6 and Pattern((0, 2), (1,)) in patterns and Pattern((1,), (0, 2)) in patterns
    assert validation_patterns([1]) == []


def test_mode_comparison_says_when_the_one_pass_decoder_wins():
    from msgldm_auto.training.validation import mode_comparison

    def summary(diffusion, one_pass, mode="diffusion"):
        return {"mode": mode, "mean": {"psnr": {"mean": diffusion}}, "one_pass": {"mean": {"psnr": {"mean": one_pass}}}}

    worse = mode_comparison(summary(16.7, 21.9))
    assert "diffusion 16.70 dB, one-pass decoder 21.90 dB" in worse and "msgldm_find_best_configuration" in worse
    assert "msgldm_find_best_configuration" not in mode_comparison(summary(22.0, 21.9))
    assert mode_comparison(summary(20.0, 20.0, mode="one_pass")) is None
    assert mode_comparison({"mode": "diffusion", "mean": {}}) is None


def test_validate_fold_writes_summary_and_previews(model_folder, tmp_path):
    from msgldm_auto.dataset.cases import Case
    from msgldm_auto.inference.predictor import PredictionOptions
    from msgldm_auto.training.validation import validate_fold

    full = write_case(tmp_path / "val", "v1", [0, 1, 2])
    single = write_case(tmp_path / "val", "v2", [1])
    cases = [Case("v1", full, []), Case("v2", single, [0, 2])]
    summary = validate_fold(model_folder, 0, cases, options=PredictionOptions(steps=2), num_previews=1)

    written = json.loads((model_folder / "fold_0" / "validation" / "summary.json").read_text())
    assert written == summary and written["num_cases"] == 1                  # v2 has nothing to hold out
    patterns = {v["pattern"] for v in written["per_volume"]}
    assert patterns == {"T2+FLAIR", "T1+FLAIR", "T1+T2", "T1", "T2", "FLAIR"}
    assert {v["modality"] for v in written["per_volume"] if v["pattern"] == "T1"} == {"T2", "FLAIR"}
    assert written["mean"]["psnr"]["n"] == 9 and written["one_pass"]["mean"]["psnr"]["n"] == 9
    assert {"psnr", "ssim", "mae", "gradient_ratio"} <= set(written["per_modality"]["T1"])
    previews = sorted(p.name for p in (model_folder / "fold_0" / "validation" / "previews").glob("*.png"))
    assert previews == ["v1__FLAIR.png", "v1__T1.png", "v1__T2.png"]
