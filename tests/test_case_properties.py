"""CaseProperties: the typed record of one case's preprocessing, its CASE.json on disk, and old or broken files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from preprocessing_synthetic import PERMUTED_DIRECTION, head_case, label_image

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.preprocessing.pipeline import head_mask_original, preprocess_case, restore_original_image
from msgldm_auto.preprocessing.properties import CaseProperties
from msgldm_auto.preprocessing.storage import load_case, save_case

# CASE.json of a small case (head_case(shape_kji=(8, 10, 9), direction=PERMUTED_DIRECTION, channels=(0, 2)), axial
# slices at 1.5 mm into 16 x 16) as the version before CaseProperties wrote it, verbatim: folders preprocessed then
# must keep loading.
OLD_CASE_JSON = """{"case_id": "old_case", "original": {"shape": [8, 10, 9], "spacing": [1.2, 1.0, 2.0],
 "origin": [10.0, -20.0, 5.0], "direction": [0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0]},
 "reorientation": {"source_axes": [2, 0, 1], "flips": [true, false, true], "codes": "AIL"}, "ras_shape": [8, 9, 10],
 "ras_spacing": [2.0, 1.2, 1.0], "crop_box": [[1, 7], [2, 7], [2, 8]],
 "head_mask": {"shape": [6, 5, 6], "bits": "eNpjON7D+P7/3+f7/3+f9///ver//yuY5QwYAL1hDpg="}, "skull_stripped": false,
 "slice_axis": 2, "cropped_shape": [6, 6, 5], "resampled_shape": [6, 8, 4], "image_size": [16, 16],
 "in_plane_offset": [4, 6], "spacing": [1.0, 1.5, 1.5], "normalization": "p995",
 "percentiles": {"0": [4.501673970222473, 102.41664505004883, 138.54255439758302],
                 "2": [6.442809555530548, 118.13415145874023, 150.7092133331299]},
 "scale": {"0": 138.54255439758302, "2": 150.7092133331299}, "present": [0, 2], "resampled_channels": [],
 "foreground_slices": [0, 1, 2, 3, 4, 5]}"""


def axial_config(image_size=(16, 16)) -> ConfigurationPlan:
    return ConfigurationPlan(slice_axis=2, spacing=[1.5, 1.5], image_size=list(image_size), latent_scale=4,
                             context_slices=3, batch_size=2)


def old_case_images():
    return head_case(shape_kji=(8, 10, 9), direction=PERMUTED_DIRECTION, channels=(0, 2))


def json_layout(value):
    """The nested key structure of a JSON value (keys and nesting, not the numbers)."""
    if isinstance(value, dict):
        return {key: json_layout(item) for key, item in value.items()}
    return type(value).__name__


def stored_case_folder(tmp_path):
    """A preprocessed case where the real layout puts it: MSGLDM_PREPROCESSED/DatasetXXX_Name/CONFIGURATION/."""
    folder = tmp_path / "Dataset003_Old" / "MSGLDMPlans_2d"
    images, _ = old_case_images()
    data, present, _, properties = preprocess_case(images, axial_config(), case_id="c")
    save_case(folder, "c", data, present, None, properties)
    return folder


def test_properties_survive_the_disk_round_trip_unchanged(tmp_path):
    images, head = head_case(direction=PERMUTED_DIRECTION)
    data, present, seg, properties = preprocess_case(images, axial_config((32, 32)), label_image(head, images[0]),
                                                     case_id="c")
    save_case(tmp_path, "c", data, present, seg, properties)
    loaded = load_case(tmp_path, "c").properties
    assert isinstance(loaded, CaseProperties) and loaded == properties
    assert CaseProperties.from_dict(json.loads(json.dumps(properties.to_dict()))) == properties
    assert loaded.scale.keys() == {0, 1, 2} and loaded.original.shape == list(images[0].array.shape)


def test_the_inverse_from_a_stored_file_restores_the_input_grid_exactly(tmp_path):
    images, head = head_case(direction=PERMUTED_DIRECTION)
    data, present, _, properties = preprocess_case(images, axial_config((32, 32)), case_id="c")
    save_case(tmp_path, "c", data, present, None, properties)
    loaded = load_case(tmp_path, "c").properties
    for row, channel in enumerate(present):
        restored = restore_original_image(data[row], loaded)
        original = images[channel]
        assert restored.array.shape == original.array.shape and restored.spacing == original.spacing
        assert restored.origin == original.origin and restored.direction == original.direction
        assert np.array_equal(restored.array, restore_original_image(data[row], properties).array)
    assert np.array_equal(head_mask_original(loaded), head_mask_original(properties))


def test_a_file_written_before_case_properties_still_loads_and_inverts():
    old = json.loads(OLD_CASE_JSON)
    properties = CaseProperties.from_dict(old)
    assert properties.to_dict() == old                         # read and written back without a change
    images, _ = old_case_images()
    _, _, _, current = preprocess_case(images, axial_config(), case_id="old_case")
    assert json_layout(current.to_dict()) == json_layout(old)  # today's files have the same layout
    assert current.crop_box == properties.crop_box and current.head_mask == properties.head_mask
    volume = np.zeros((properties.resampled_shape[0], *properties.image_size), dtype=np.float32)
    restored = restore_original_image(volume, properties)
    assert restored.array.shape == images[0].array.shape and restored.direction == images[0].direction
    assert head_mask_original(properties).shape == images[0].array.shape


@pytest.mark.parametrize("damage, problem", [
    (lambda d: d.pop("foreground_slices"), "missing key(s) ['foreground_slices']"),
    (lambda d: d.update(version=2), "unknown key(s) ['version']"),
    (lambda d: d.update(crop_box=5), "malformed case properties"),
])
def test_an_unreadable_properties_file_names_itself_and_the_fix(tmp_path, damage, problem):
    folder = stored_case_folder(tmp_path)
    path = folder / "c.json"
    stored = json.loads(path.read_text())
    damage(stored)
    path.write_text(json.dumps(stored))
    with pytest.raises(MSGLDMError) as caught:
        load_case(folder, "c")
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message
    assert message.endswith("re-run msgldm_plan_and_preprocess -d Dataset003_Old --clean")


def test_a_damaged_json_file_names_itself_and_the_fix(tmp_path):
    folder = stored_case_folder(tmp_path)
    path = folder / "c.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(MSGLDMError, match="not valid JSON.*msgldm_plan_and_preprocess -d Dataset003_Old --clean"):
        load_case(folder, "c")
