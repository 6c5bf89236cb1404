"""Preprocessing: reorientation, head mask, the preprocess -> restore round trip, storage, the parallel driver."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from preprocessing_synthetic import (
    LPS_DIRECTION,
    PERMUTED_DIRECTION,
    RAS_DIRECTION,
    head_case,
    label_image,
    write_raw_dataset,
)

from msgldm_auto.dataset.image_io import Image
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import ConfigurationPlan
from msgldm_auto.preprocessing.head_mask import compute_head_mask
from msgldm_auto.preprocessing.normalization import get_scheme
from msgldm_auto.preprocessing.orientation import Reorientation, from_slices, to_slices
from msgldm_auto.preprocessing.pipeline import (
    head_mask_original,
    preprocess_case,
    restore_original,
    restore_original_image,
)
from msgldm_auto.preprocessing.properties import PackedMask
from msgldm_auto.preprocessing.run import preprocess_dataset
from msgldm_auto.preprocessing.storage import list_cases, load_case, save_case


def make_config(slice_axis=2, spacing=(1.5, 1.5), image_size=(32, 32)) -> ConfigurationPlan:
    return ConfigurationPlan(slice_axis=slice_axis, spacing=list(spacing), image_size=list(image_size), latent_scale=4,
                             context_slices=3, batch_size=2)


def world_ras_coordinates(image: Image) -> np.ndarray:
    """(3, k, j, i) RAS world coordinates of every voxel centre."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in image.array.shape], indexing="ij")
    index = np.stack([i, j, k]).reshape(3, -1).astype(float)
    lps = np.asarray(image.origin)[:, None] + image.direction_matrix @ (np.asarray(image.spacing)[:, None] * index)
    return (np.diag([-1.0, -1.0, 1.0]) @ lps).reshape(3, *image.array.shape)


@pytest.mark.parametrize("direction", [RAS_DIRECTION, LPS_DIRECTION, PERMUTED_DIRECTION])
def test_reorientation_gives_ras_axes_and_inverts_exactly(direction):
    image = Image(np.random.default_rng(0).random((4, 5, 6)).astype(np.float32), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0),
                  direction)
    reorientation = Reorientation.from_direction(direction)
    coordinates = world_ras_coordinates(image)
    for r in range(3):
        along = reorientation.to_ras(coordinates[r])
        steps = np.diff(along, axis=r)
        assert np.all(steps > 0), f"RAS axis {r} must increase towards {'RAS'[r]}"
        assert np.allclose(np.diff(along, axis=(r + 1) % 3), 0) and np.allclose(np.diff(along, axis=(r + 2) % 3), 0)
        assert np.allclose(steps, reorientation.ras_spacing(image.spacing)[r])
    assert np.array_equal(reorientation.from_ras(reorientation.to_ras(image.array)), image.array)
    assert list(reorientation.to_ras(image.array).shape) == reorientation.ras_shape(image.array.shape)


def test_orientation_codes_and_slices():
    assert Reorientation.from_direction(RAS_DIRECTION).axis_codes() == "RAS"
    assert Reorientation.from_direction(LPS_DIRECTION).axis_codes() == "LPS"
    assert Reorientation.from_direction(PERMUTED_DIRECTION).axis_codes() == "AIL"
    volume = np.arange(24).reshape(2, 3, 4)
    for axis in range(3):
        stack = to_slices(volume, axis)
        assert stack.shape[0] == volume.shape[axis]
        assert np.array_equal(from_slices(stack, axis), volume)


def test_head_mask_finds_noisy_head_and_fills_cavity():
    images, head = head_case(shape_kji=(30, 36, 34))
    result = compute_head_mask([im.array for im in images.values()])
    assert not result.skull_stripped
    dice = 2 * (result.mask & head).sum() / (result.mask.sum() + head.sum())
    assert dice > 0.9
    centre = tuple(n // 2 for n in head.shape)
    assert result.mask[centre], "the dark cavity inside the head must be filled"
    assert np.array_equal(PackedMask.pack(result.mask).unpack(), result.mask)


def test_head_mask_of_skull_stripped_data_is_the_nonzero_region():
    images, head = head_case(skull_stripped=True)
    result = compute_head_mask([im.array for im in images.values()])
    assert result.skull_stripped
    assert np.array_equal(result.mask, head)


@pytest.mark.parametrize("direction, slice_axis, factor, min_correlation",
                         [(PERMUTED_DIRECTION, 2, 0.8, 0.99), (LPS_DIRECTION, 1, 0.8, 0.99),
                          (RAS_DIRECTION, 0, 1.0, 0.999),
                          (LPS_DIRECTION, 2, 1.25, 0.95)])
def test_round_trip_restores_exact_grid_and_intensities(direction, slice_axis, factor, min_correlation):
    """Finer target spacing loses nothing (> 0.99); coarser loses detail by design, but not the rim of the head."""
    spacing = (1.2, 1.0, 2.0)
    images, head = head_case(shape_kji=(24, 30, 28), spacing=spacing, direction=direction)
    ras_spacing = Reorientation.from_direction(direction).ras_spacing(spacing)
    in_plane = [ras_spacing[a] * factor for a in range(3) if a != slice_axis]
    config = make_config(slice_axis=slice_axis, spacing=in_plane, image_size=(48, 48))
    data, present, seg, properties = preprocess_case(images, config, case_id="c")
    assert data.dtype == np.float32 and data.shape[0] == 3 and data.shape[2:] == (48, 48)
    assert seg is None and present == [0, 1, 2]
    json.dumps(properties.to_dict())  # everything needed for the inverse is plain JSON
    mask = head_mask_original(properties)
    assert mask.shape == head.shape and 2 * (mask & head).sum() / (mask.sum() + head.sum()) > 0.95
    scheme = get_scheme(properties.normalization)
    for row, channel in enumerate(present):
        restored = restore_original_image(data[row], properties)
        original = images[channel]
        assert restored.array.shape == original.array.shape
        assert restored.spacing == original.spacing and restored.origin == original.origin
        assert restored.direction == original.direction
        intensity = scheme.invert(restored.array, properties.scale[channel])
        assert np.corrcoef(intensity[mask], original.array[mask])[0, 1] > min_correlation


def test_prediction_canvas_grows_to_hold_a_head_wider_than_image_size():
    """Training crops a too-wide head to image_size; prediction (`whole_head`) must keep every head row."""
    images, head = head_case(shape_kji=(24, 30, 28), spacing=(1.2, 1.0, 2.0))
    config = make_config(slice_axis=2, spacing=(1.0, 1.0), image_size=(16, 16))   # the head box is ~28 x 30 px
    cropped, _, _, cropped_props = preprocess_case(images, config)
    assert cropped.shape[2:] == (16, 16)
    data, present, _, properties = preprocess_case(images, config, whole_head=True)
    multiple = config.size_multiple
    resampled = properties.resampled_shape[1:]
    assert all(n % multiple == 0 and n >= r and n - r < multiple for n, r in zip(data.shape[2:], resampled))
    assert list(data.shape[2:]) == properties.image_size
    mask = head_mask_original(properties)
    scheme = get_scheme(properties.normalization)
    for row, channel in enumerate(present):
        intensity = scheme.invert(restore_original(data[row], properties), properties.scale[channel])
        assert np.corrcoef(intensity[mask], images[channel].array[mask])[0, 1] > 0.99
        # the centre-cropped training canvas loses the rim: its restore is far worse there
        lossy = scheme.invert(restore_original(cropped[row], cropped_props), cropped_props.scale[channel])
        assert (np.abs(lossy - images[channel].array)[mask].mean()
                > 3 * np.abs(intensity - images[channel].array)[mask].mean())


def test_background_is_exactly_minus_one_and_head_inside_range():
    images, _ = head_case()
    data, _, _, properties = preprocess_case(images, make_config(image_size=(40, 40)))
    assert data.min() == -1.0 and data.max() <= 1.0
    corner = data[:, :, 0, 0]
    assert np.all(corner == -1.0), "padding and background must be exactly -1"
    assert all((data[:, z] > -1).any() for z in properties.foreground_slices)
    empty = sorted(set(range(data.shape[1])) - set(properties.foreground_slices))
    assert all(np.all(data[:, z] == -1.0) for z in empty)


def test_restore_fills_outside_crop_box_with_zero():
    images, _ = head_case()
    data, _, _, properties = preprocess_case(images, make_config(image_size=(40, 40)))
    restored = restore_original(np.zeros_like(data[0]) + 0.5, properties)
    outside = ~np.zeros(restored.shape, dtype=bool)
    box = properties.crop_box
    inside_ras = np.zeros(properties.ras_shape, dtype=bool)
    inside_ras[tuple(slice(a, b) for a, b in box)] = True
    inside = properties.reorientation.from_ras(inside_ras)
    assert np.all(restored[~inside] == 0.0) and np.allclose(restored[inside], 0.5, atol=1e-5)
    assert (outside & ~inside).any()


def test_missing_modality_is_flagged_not_zero_filled(tmp_path):
    images, _ = head_case(channels=(0, 2))
    data, present, _, properties = preprocess_case(images, make_config())
    assert present == [0, 2] and data.shape[0] == 2
    save_case(tmp_path, "c", data, present, None, properties)
    case = load_case(tmp_path, "c")
    assert case.present == [0, 2] and case.data.shape[0] == 2 and case.seg is None
    assert set(case.properties.percentiles) == {0, 2}


def test_label_is_resampled_nearest_and_stored_uint8(tmp_path):
    images, head = head_case(channels=(0, 1))
    label = label_image(head, images[0])
    data, present, seg, properties = preprocess_case(images, make_config(), seg=label)
    assert seg.dtype == np.uint8 and seg.shape == data.shape[1:]
    assert set(np.unique(seg)) == {0, 1, 2}
    restored = restore_original(seg.astype(np.float32), properties, order=0)
    assert (restored == label.array).mean() > 0.97


def test_grid_mismatch_is_an_error_unless_resampling(tmp_path):
    images, _ = head_case(channels=(0, 1))
    shifted = images[1]
    images[1] = Image(shifted.array, shifted.spacing, (shifted.origin[0] + 3.0, *shifted.origin[1:]), shifted.direction)
    with pytest.raises(MSGLDMError, match="--resample-mismatched"):
        preprocess_case(images, make_config(), case_id="bad")
    with pytest.warns(UserWarning, match="resampled"):
        data, _, _, properties = preprocess_case(images, make_config(), resample_mismatched=True, case_id="bad")
    assert properties.resampled_channels == [1] and data.shape[0] == 2


def test_storage_is_chunked_per_slice_and_lazy(tmp_path):
    data = np.random.default_rng(0).random((2, 7, 8, 9)).astype(np.float32)
    seg = np.arange(7 * 8 * 9, dtype=np.uint8).reshape(7, 8, 9)
    _, _, _, properties = preprocess_case(head_case(channels=(0, 3))[0], make_config())
    properties = dataclasses.replace(properties, foreground_slices=[1, 2])
    save_case(tmp_path, "a", data, [0, 3], seg, properties)
    case = load_case(tmp_path, "a")
    assert case.data.chunks == (2, 1, 8, 9)
    assert np.array_equal(case.data[:, 2:5], data[:, 2:5]) and np.array_equal(case.seg[3], seg[3])
    assert case.properties.foreground_slices == [1, 2] and case.present == [0, 3]
    (tmp_path / "b.b2nd").write_bytes(b"half-written")   # no JSON: not a finished case
    assert list_cases(tmp_path) == ["a"]
    with pytest.raises(ValueError):
        save_case(tmp_path, "c", data, [0], None, properties)


def test_dataset_driver_reports_failing_case_and_resumes(msgldm_roots, tmp_path, capsys):
    cases = {f"case_{n}": head_case(seed=n)[0] for n in range(3)}
    folder = write_raw_dataset(tmp_path / "raw", "Dataset010_Synth", cases)
    (folder / "imagesTr" / "case_1_0001.nii.gz").write_bytes(b"not an image")
    output = tmp_path / "pp"
    with pytest.raises(MSGLDMError, match="case_1"):
        preprocess_dataset(folder, output, make_config(), num_processes=2)
    assert "case case_1 failed" in capsys.readouterr().out
    assert list_cases(output) == ["case_0", "case_2"]
    stamp = (output / "case_0.json").stat().st_mtime_ns
    report = preprocess_dataset(folder, output, make_config(), raise_on_failure=False)
    assert report.skipped == ["case_0", "case_2"] and list(report.failed) == ["case_1"]
    assert (output / "case_0.json").stat().st_mtime_ns == stamp
    (folder / "imagesTr" / "case_1_0001.nii.gz").unlink()
    report = preprocess_dataset(folder, output, make_config(), clean=True)
    assert report.done == ["case_0", "case_1", "case_2"] and not report.skipped
    assert load_case(output, "case_1").present == [0, 2]


def test_acvl_bounding_box_is_the_head_mask_box_we_crop_to():
    """acvl-utils' get_bbox_from_mask (used by preprocessing and the fingerprint) gives exactly the [start, stop) box
    of the True voxels, as plain ints (the box is stored in JSON), like the hand-written helper it replaced."""
    from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask

    rng = np.random.default_rng(0)
    masks = [rng.random(tuple(rng.integers(1, 12, 3))) > rng.uniform(0.5, 0.999) for _ in range(200)]
    masks += [np.ones((3, 4, 5), bool), np.pad(np.ones((1, 1, 1), bool), ((2, 0), (0, 3), (1, 1)))]
    for mask in (m for m in masks if m.any()):
        expected = [[int(hits.min()), int(hits.max()) + 1] for hits in np.nonzero(mask)]
        box = get_bbox_from_mask(mask)
        assert box == expected and all(type(v) is int for pair in box for v in pair)
        assert mask[bounding_box_to_slice(box)].sum() == mask.sum()
