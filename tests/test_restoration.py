"""How synthesized slices go back to the input grid: the planner's round trip picks head-aware interpolation for a head
whose intensities stop sharply at its edge and plain interpolation for one that fades out, and prediction follows the
plans."""
from __future__ import annotations

import json

import numpy as np
import pytest
from preprocessing_synthetic import head_case, write_raw_dataset
from scipy.ndimage import binary_erosion

from msgldm_auto.dataset.image_io import Image
from msgldm_auto.plans import ConfigurationPlan, Plans
from planning.restoration import TIE_DB, RoundTrip, measure_round_trip, plan_restoration


def config() -> ConfigurationPlan:
    return ConfigurationPlan(slice_axis=2, spacing=[2.5, 2.5], image_size=[32, 32], latent_scale=4, context_slices=3,
                             batch_size=2)


def faded(image: Image) -> Image:
    """The synthetic head with its intensities falling off linearly over the outer 30 % of its radius."""
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in image.array.shape], indexing="ij")
    radius = np.sqrt((k / 0.8) ** 2 + (j / 0.75) ** 2 + (i / 0.7) ** 2)
    return image.with_array((image.array * np.clip((1 - radius) / 0.3, 0, 1)).astype(np.float32))


@pytest.mark.parametrize("edge", ["sharp", "fading"])
def test_the_round_trip_plans_head_aware_for_a_sharp_edge_and_plain_for_a_fading_one(tmp_path, edge):
    cases = {}
    for seed in range(2):
        images, _ = head_case(shape_kji=(40, 48, 44), spacing=(1.0, 1.0, 1.0), seed=seed)
        cases[f"case{seed}"] = {c: faded(image) if edge == "fading" else image for c, image in images.items()}
    raw = write_raw_dataset(tmp_path, "Dataset001_Heads", cases)
    planned = config()
    trip = measure_round_trip(raw, planned)
    assert trip.volumes == 6                                         # 2 cases x 3 modalities
    plan_restoration(planned, trip)
    if edge == "sharp":
        assert trip.head_aware_psnr > trip.plain_psnr + 1.0 and planned.head_aware_restore
    else:
        assert trip.plain_psnr > trip.head_aware_psnr + 0.5 and not planned.head_aware_restore
    assert f"{trip.plain_psnr:.2f} dB plain" in planned.rationale["head_aware_restore"]


def test_a_modality_on_another_grid_is_left_out_of_the_round_trip(tmp_path):
    """Planning does not refuse what preprocessing may resample (`--resample-mismatched`): the round trip scores the
    modalities on the case's own grid and skips the other."""
    images, _ = head_case(shape_kji=(40, 48, 44), spacing=(1.0, 1.0, 1.0))
    images[2] = Image(images[2].array, (1.0, 1.0, 1.2), images[2].origin, images[2].direction)
    trip = measure_round_trip(write_raw_dataset(tmp_path, "Dataset001_Heads", {"case0": images}), config())
    assert trip.volumes == 2 and np.isfinite(trip.head_aware_psnr)


def test_a_tie_or_nothing_measured_keeps_head_aware():
    assert RoundTrip(25.0, 25.0 + TIE_DB / 2, 4).head_aware_wins
    assert not RoundTrip(25.0, 25.0 + 2 * TIE_DB, 4).head_aware_wins
    assert RoundTrip(float("nan"), float("nan"), 0).head_aware_wins


def test_plans_written_before_the_field_restore_head_aware(tmp_path):
    from test_inference import tiny_plans

    data = tiny_plans().to_dict()
    del data["configurations"]["2d"]["head_aware_restore"]
    assert Plans.from_dict(data).configuration("2d").head_aware_restore


def synthetic_head() -> tuple[np.ndarray, dict[int, Image]]:
    from test_inference import LPS_DIRECTION, head_volume

    head = head_volume((6, 44, 40)) > 0               # at 1 mm, resampled to the tiny plans' 1.5 mm and back
    return head, {0: Image((300.0 * head).astype(np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), LPS_DIRECTION)}


def rim_and_inside(head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The head's outermost in-plane voxel ring, and the head less its 3 outer rings."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True
    return head & ~binary_erosion(head, in_plane), binary_erosion(head, in_plane, iterations=3)


def test_plain_restore_blends_the_rim_with_the_background():
    """A synthesis of 0.5 on the head's pixels and the -1 background outside, as a trained model gives: head-aware
    restores 0.5 up to the rim, plain darkens the rim; inside the head the two agree."""
    from test_inference import tiny_configuration

    from msgldm_auto.inference.export import restore_to_input_grid
    from msgldm_auto.preprocessing.pipeline import preprocess_case

    head, images = synthetic_head()
    data, _, _, properties = preprocess_case(images, tiny_configuration(), whole_head=True)
    synthesis = np.where(data[0] > -1, 0.5, -1.0).astype(np.float32)
    ways = {way: restore_to_input_grid(synthesis, properties, images[0], way) for way in (True, False)}
    rim, inside = rim_and_inside(head)
    assert abs(ways[True][rim].mean() - 0.5) < 0.05
    assert ways[False][rim].mean() < 0.3
    np.testing.assert_allclose(ways[False][inside], ways[True][inside], atol=0.05)   # the cubic spline reaches in


def test_prediction_follows_the_plans_restore_way(msgldm_roots):
    from test_inference import write_fake_model

    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions

    folder = write_fake_model(msgldm_roots / "results")
    head, images = synthetic_head()
    outputs = {}
    for head_aware in (True, False):
        plans = json.loads((folder / "plans.json").read_text())
        plans["configurations"]["2d"]["head_aware_restore"] = head_aware
        (folder / "plans.json").write_text(json.dumps(plans))
        predictor = MSGLDMPredictor.from_trained_folder(folder, [0], options=PredictionOptions(one_pass=True))
        outputs[head_aware] = predictor.predict_case(images, [1])[1].array
    rim, inside = rim_and_inside(head)
    assert np.abs(outputs[False][rim] - outputs[True][rim]).mean() > 1.0
    np.testing.assert_allclose(outputs[False][inside].mean(), outputs[True][inside].mean(), rtol=0.01)
