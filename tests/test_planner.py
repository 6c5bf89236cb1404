"""Planner heuristics on hand-made fingerprints, the fingerprint itself, plans files, and the CLI end to end."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from preprocessing_synthetic import LPS_DIRECTION, PERMUTED_DIRECTION, RAS_DIRECTION, head_case, write_raw_dataset

from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.model_loading import build_networks
from msgldm_auto.plans import Plans
from msgldm_auto.preprocessing.orientation import Reorientation, numpy_slice_axis
from planning.cost import activation_bytes_per_sample, usable_memory_bytes
from planning.fingerprint import CaseFingerprint, DatasetFingerprint, extract_fingerprint
from planning.planner import plan_experiment
from planning.presets import get_preset
from planning.workflow import save_plans_keeping_extras

MODALITIES = ["T1", "T1ce", "T2", "FLAIR"]


def dataset_json(modalities=MODALITIES, labels=None) -> DatasetJson:
    return DatasetJson({i: m for i, m in enumerate(modalities)}, ".nii.gz", 0, labels=labels)


def make_fingerprint(ras_shape, ras_spacing, cropped_ras, cases=40, direction=RAS_DIRECTION, jitter=0.05,
                     modalities=4) -> DatasetFingerprint:
    """Cases whose RAS geometry is given; stored in `direction`'s voxel order (so LPS/permuted copies are the same
    heads)."""
    reorientation = Reorientation.from_direction(direction)
    rng = np.random.default_rng(0)
    inverse = np.argsort(reorientation.source_axes)        # index axis a runs along RAS axis inverse[a]
    out = []
    for n in range(cases):
        scale = 1 + jitter * rng.uniform(-1, 1, 3)
        crop = [max(4, int(c * s)) for c, s in zip(cropped_ras, scale)]
        box = [[(full - c) // 2, (full - c) // 2 + c] for full, c in zip(ras_shape, crop)]
        shape_ijk = [ras_shape[inverse[a]] for a in range(3)]
        spacing_ijk = [ras_spacing[inverse[a]] for a in range(3)]
        percentiles = {str(m): [0.0, 100.0 * (m + 1), 400.0 * (m + 1)] for m in range(modalities)}
        out.append(CaseFingerprint(f"case_{n:03d}", list(reversed(shape_ijk)), spacing_ijk, list(direction),
                                   list(range(modalities)), box, percentiles))
    return DatasetFingerprint("Dataset001_Test", MODALITIES[:modalities], out)


BRATS = dict(ras_shape=(240, 240, 155), ras_spacing=(1.0, 1.0, 1.0), cropped_ras=(140, 172, 138), cases=300)


def plan(fingerprint, **kwargs) -> Plans:
    return plan_experiment(fingerprint, dataset_json(fingerprint.modalities), **kwargs)


def test_brats_like_plans_axial_slices_f8():
    plans = plan(make_fingerprint(**BRATS))
    config = plans.configuration("2d")
    assert config.slice_axis == 2
    assert config.latent_scale == 8
    assert config.spacing == [1.0, 1.0]
    assert config.context_slices == 3
    multiple = config.latent_scale * 2 ** (len(config.unet.channels) - 1)
    assert all(s % multiple == 0 for s in config.image_size)
    assert all(s >= 172 for s in config.image_size[1:]) and max(config.image_size) <= 256
    assert max(config.latent_size) <= 32 and min(config.latent_size) / 2 ** (len(config.unet.channels) - 1) >= 4
    assert len(config.autoencoder.channels) == 4 and len(config.disentangler.structure_channels) == 4
    assert config.diffusion.steps == 50
    assert config.data_identifier == "MSGLDMPlans_2d"
    for key in ("slice_axis", "spacing", "image_size", "latent_scale", "unet", "context_slices", "batch_size",
                "schedule", "diffusion", "ablations", "losses", "estimated_minutes"):
        assert config.rationale[key], key
    # the given modalities' reconstruction weighs 0.1 of the dropped ones' (measured: benchmarks, levers)
    assert config.losses.reconstruction_kept == 0.1 and "weighs 0.1 ×" in config.rationale["losses"]
    assert config.losses.reconstruction_image_ssim == 1.0 and "SSIM × 1" in config.rationale["losses"]
    # each decoder's last block sees the given modalities (measured: benchmarks, levers); plans written before the
    # field load without it, so their checkpoints keep loading
    assert config.disentangler.refine_sees_inputs and "refine_sees_inputs" in config.rationale["disentangler"]
    data = plans.to_dict()
    del data["configurations"]["2d"]["disentangler"]["refine_sees_inputs"]
    assert not Plans.from_dict(data).configuration("2d").disentangler.refine_sees_inputs


def test_anisotropic_slices_across_the_thick_axis_without_context():
    # 0.9 x 5 x 0.9 mm: the 5 mm axis is anterior-posterior (coronal acquisition), so it must be found, not assumed.
    fingerprint = make_fingerprint((200, 36, 200), (0.9, 5.0, 0.9), (160, 30, 180))
    config = plan(fingerprint).configuration("2d")
    assert config.slice_axis == 1
    assert config.context_slices == 1
    assert config.spacing == [0.9, 0.9]
    assert "5.00" in config.rationale["slice_axis"]


@pytest.mark.parametrize("ras_spacing, expected", [((0.9, 5.0, 0.9), 1), ((1.0, 1.0, 1.0), 2), ((3.0, 1.0, 1.0), 0),
                                                   ((1.05, 1.0, 1.0), 2), ((3.0, 1.0, 2.9), 2)])
@pytest.mark.parametrize("direction", [RAS_DIRECTION, LPS_DIRECTION, PERMUTED_DIRECTION])
def test_planner_and_evaluation_share_one_slice_axis_rule(ras_spacing, expected, direction):
    """The plans' RAS slice axis and the numpy axis evaluation measures through-plane are the same axis, with the
    same 10 % tie tolerance (so 1.05 x 1 x 1 mm counts as isotropic: axial)."""
    fingerprint = make_fingerprint((60, 60, 60), ras_spacing, (40, 40, 40), cases=3, direction=direction, jitter=0.0)
    assert plan(fingerprint).configuration("2d").slice_axis == expected
    case = fingerprint.cases[0]
    index_axis = Reorientation.from_direction(direction).source_axes[expected]
    assert numpy_slice_axis(case.spacing, direction) == 2 - index_axis


def test_large_images_get_coarser_spacing():
    fingerprint = make_fingerprint((512, 512, 300), (0.5, 0.5, 0.5), (400, 440, 300))
    config = plan(fingerprint).configuration("2d")
    assert config.slice_axis == 2
    assert min(config.spacing) > 0.5
    assert max(config.image_size) <= 256
    assert "coarsened" in config.rationale["spacing"]
    cpu = plan(fingerprint, preset="cpu").configuration("2d")
    assert max(cpu.image_size) <= 64 and min(cpu.spacing) > min(config.spacing)


def test_tiny_dataset_gets_f4_and_a_shallow_unet():
    tiny = plan(make_fingerprint((64, 64, 64), (3.0, 3.0, 3.0), (52, 58, 50))).configuration("2d")
    brats = plan(make_fingerprint(**BRATS)).configuration("2d")
    assert tiny.latent_scale == 4
    assert len(tiny.unet.channels) < len(brats.unet.channels)
    assert len(tiny.autoencoder.channels) == 3


def test_smaller_gpu_memory_gives_strictly_smaller_batch():
    fingerprint = make_fingerprint(**BRATS)
    small = plan(fingerprint, gpu_memory_target_gb=2).configuration("2d")
    large = plan(fingerprint, gpu_memory_target_gb=8).configuration("2d")
    assert 2 <= small.batch_size < large.batch_size


def test_batch_is_at_most_five_percent_of_the_slices_but_at_least_two():
    few = make_fingerprint((64, 64, 64), (3.0, 3.0, 3.0), (52, 58, 50), cases=3)
    config = plan(few, gpu_memory_target_gb=80).configuration("2d")
    assert config.batch_size == max(2, int(0.05 * 3 * 52))


@pytest.mark.parametrize("direction", [LPS_DIRECTION, PERMUTED_DIRECTION])
def test_lps_or_permuted_storage_plans_like_its_ras_copy(direction):
    geometry = dict(ras_shape=(200, 36, 200), ras_spacing=(0.9, 5.0, 0.9), cropped_ras=(160, 30, 180))
    ras = plan(make_fingerprint(**geometry)).configuration("2d")
    other = plan(make_fingerprint(**geometry, direction=direction)).configuration("2d")
    assert other.slice_axis == ras.slice_axis == 1
    assert other.spacing == ras.spacing and other.image_size == ras.image_size


DEMO_2MM = dict(ras_shape=(91, 109, 91), ras_spacing=(2.0, 2.0, 2.0), cropped_ras=(70, 86, 70), cases=20)
GEOMETRIES = {"brats": BRATS, "demo_2mm": DEMO_2MM,
              "coronal_5mm": dict(ras_shape=(200, 36, 200), ras_spacing=(0.9, 5.0, 0.9), cropped_ras=(160, 30, 180)),
              "fine_0.5mm": dict(ras_shape=(512, 512, 300), ras_spacing=(0.5, 0.5, 0.5), cropped_ras=(400, 440, 300))}


@pytest.mark.parametrize("preset", ["default", "cpu"])
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_planned_networks_fit_their_slices_their_norms_and_the_memory_budget(preset, geometry):
    config = plan(make_fingerprint(**GEOMETRIES[geometry]), preset=preset).configuration("2d")
    chosen = get_preset(preset)
    assert max(config.image_size) <= chosen.max_side
    assert all(s % config.size_multiple == 0 for s in config.image_size)
    assert config.size_multiple % 2 ** (len(config.control.channels) - 1) == 0     # the control's down-samplings fit
    assert all(w % config.autoencoder.norm_num_groups == 0 for w in config.autoencoder.channels)
    assert all(w % config.unet.norm_num_groups == 0 for w in config.unet.channels)
    attended = [w for w, a in zip(config.unet.channels, config.unet.attention_levels) if a]
    assert all(w % config.unet.num_head_channels == 0 for w in attended)
    assert config.disentangler.prior_channels % config.disentangler.msse_heads == 0
    budget = usable_memory_bytes("cpu" if preset == "cpu" else "cuda", 8.0, chosen.cpu_memory_budget_gb)
    assert 2 <= config.batch_size <= chosen.max_batch_size
    assert config.batch_size * activation_bytes_per_sample(config, 4) <= budget


def test_cpu_plans_are_time_boxed_and_give_the_control_the_same_budget():
    plans = plan(make_fingerprint(**DEMO_2MM), preset="cpu")
    config = plans.configuration("2d")
    assert plans.plans_name == "MSGLDMPlans_cpu" and config.data_identifier == "MSGLDMPlans_cpu_2d"
    assert not config.ablations.diffusion and config.trained_stages == ("structure",)   # one-pass plans: one stage
    budget = sum(config.schedule[s].max_minutes for s in config.trained_stages)
    assert set(config.estimated_minutes) == set(config.trained_stages)
    assert sum(config.estimated_minutes.values()) <= budget
    assert config.stage_schedule("unet").max_minutes == budget
    # a stage its minutes end cools down over the last 20 % (measured: benchmarks), and the control with it
    assert config.schedule["structure"].cooldown_fraction == 0.2 == config.stage_schedule("unet").cooldown_fraction
    assert "cooling down over its last 20%" in config.rationale["schedule"]
    config.schedule["structure"].cooldown_fraction = 0.1                 # a plans edit reaches the control too
    assert config.stage_schedule("unet").cooldown_fraction == 0.1
    data = plans.to_dict()
    del data["configurations"]["2d"]["schedule"]["structure"]["cooldown_fraction"]   # plans written before the field
    assert Plans.from_dict(data).configuration("2d").schedule["structure"].cooldown_fraction == 0.0
    data["configurations"]["2d"]["schedule"]["structure"]["cooldown_fraction"] = 1.5
    with pytest.raises(MSGLDMError, match="cooldown_fraction=1.5 is not in"):
        Plans.from_dict(data)
    # a disentangler its minutes end trains without the consistency terms (measured: benchmarks, levers)
    assert (config.losses.style_kl, config.losses.style_contrastive, config.losses.structure_invariance) == (0, 0, 0)
    assert "consistency terms (style KL, style-contrastive, structure invariance) are off" in config.rationale["losses"]
    assert config.rationale["ablations"].endswith("the style-consistency loss weighs 0 in these plans (see losses)")
    default = plan(make_fingerprint(**DEMO_2MM)).configuration("2d")
    assert config.batch_size <= default.batch_size
    # training that runs its epochs keeps MSG-LDM's published objective
    assert default.losses.style_kl > 0 and default.losses.style_contrastive > 0
    assert default.losses.structure_invariance > 0 and "structure invariance × 0.1" in default.rationale["losses"]
    assert "weighs 0" not in default.rationale["ablations"]
    # stages ended by their epochs decay by the poly schedule: no cool-down on top
    assert all(default.schedule[s].cooldown_fraction == 0.0 for s in default.schedule)
    assert sum(config.unet.channels) < sum(default.unet.channels)


def test_a_time_budget_given_at_training_cools_down_like_a_planned_one():
    from msgldm_auto.training.fold_training import TrainingRequest, trainer_settings

    default = plan(make_fingerprint(**DEMO_2MM)).configuration("2d")
    request = TrainingRequest("Dataset901_Demo", "2d", "0")
    assert trainer_settings(default, "structure", request).cooldown_fraction == 0.0     # ended by epochs: poly
    timed = replace(request, max_minutes=30.0)
    settings = trainer_settings(default, "structure", timed)
    assert settings.max_minutes == 30.0 and settings.cooldown_fraction == 0.2            # ended by --max-minutes
    assert trainer_settings(default, "unet", timed).cooldown_fraction == 0.2
    cpu = plan(make_fingerprint(**DEMO_2MM), preset="cpu").configuration("2d")
    cpu.schedule["structure"].cooldown_fraction = 0.0      # a plans edit that switched the planned one off: stays off
    assert trainer_settings(cpu, "structure", replace(request, max_minutes=5.0)).cooldown_fraction == 0.0


def test_a_small_memory_target_halves_the_widths_only_as_far_as_needed():
    fingerprint = make_fingerprint(**BRATS)
    full = plan(fingerprint, gpu_memory_target_gb=8).configuration("2d")
    previous = full
    for target, divisor in ((1.0, 2), (0.8, 4)):
        plans = plan(fingerprint, gpu_memory_target_gb=target)
        config, budget = plans.configuration("2d"), usable_memory_bytes("cuda", target, 0.0)
        assert config.unet.channels == [w // divisor for w in full.unet.channels]
        assert config.autoencoder.channels == [w // divisor for w in full.autoencoder.channels]
        assert config.disentangler.structure_channels == [w // divisor for w in full.disentangler.structure_channels]
        assert config.control.channels == [w // divisor for w in full.control.channels]
        assert config.batch_size == 2 and 2 * activation_bytes_per_sample(config, 4) <= budget       # the estimate fits
        assert 2 * activation_bytes_per_sample(previous, 4) > budget                # one halving fewer would not
        assert f"preset widths divided by {divisor}" in config.rationale["autoencoder"]
        networks = build_networks(plans, config, ("ae", "structure", "ldm", "unet"))   # the halved widths build
        assert set(networks) == {"ae", "structure", "ldm", "unet"}
        previous = config


def test_halving_stops_at_the_preset_floor_and_says_the_target_is_exceeded():
    config = plan(make_fingerprint(**BRATS), gpu_memory_target_gb=0.55).configuration("2d")
    assert min(config.autoencoder.channels + config.unet.channels) == get_preset("default").min_width
    assert config.batch_size == 2 and "over the memory target" in config.rationale["batch_size"]


def test_plans_round_trip_through_json_and_keep_extra_configurations(tmp_path):
    plans = plan(make_fingerprint(**BRATS), overwrite_target_spacing=[1.2, 1.2])
    assert plans.configuration("2d").spacing == [1.2, 1.2]
    path = tmp_path / "MSGLDMPlans.json"
    plans.save(path)
    assert Plans.load(path).to_dict() == plans.to_dict()
    data = json.loads(path.read_text())
    extra = dict(data["configurations"]["2d"], data_identifier="MSGLDMPlans_2d_fine", spacing=[0.8, 0.8])
    data["configurations"]["2d_fine"] = extra
    path.write_text(json.dumps(data))
    replanned = save_plans_keeping_extras(plan(make_fingerprint(**BRATS)), path)
    assert set(replanned.configurations) == {"2d", "2d_fine"}
    assert Plans.load(path).configuration("2d_fine").spacing == [0.8, 0.8]
    assert Plans.load(path).configuration("2d").spacing == [1.0, 1.0]


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(MSGLDMError, match="-pl"):
        plan(make_fingerprint(**BRATS), preset="huge")
    with pytest.raises(MSGLDMError, match="overwrite_target_spacing"):
        plan(make_fingerprint(**BRATS), overwrite_target_spacing=[1.0])


def test_fingerprint_measures_cases_in_ras(tmp_path):
    cases = {"a": head_case(direction=PERMUTED_DIRECTION, seed=1)[0],
             "b": head_case(direction=PERMUTED_DIRECTION, channels=(0, 2), seed=2)[0]}
    folder = write_raw_dataset(tmp_path, "Dataset002_Fp", cases)
    fingerprint = extract_fingerprint(folder)
    a, b = fingerprint.cases
    assert a.present == [0, 1, 2] and b.present == [0, 2]
    assert a.orientation_codes == "AIL"
    # (i, j, k) spacing (1.2, 1.0, 2.0) with k -> left, i -> anterior
    assert np.allclose(a.ras_spacing, [2.0, 1.2, 1.0])
    assert all(0 <= lo < hi <= n for (lo, hi), n in zip(a.crop_box,
                                                        Reorientation.from_direction(a.direction).ras_shape(a.shape)))
    assert a.cropped_shape[0] < 28   # the head box is smaller than the volume
    p05, p50, p995 = a.percentiles["0"]
    assert p05 < p50 < p995 and 90 < p50 < 130
    assert fingerprint.modality_counts() == {"T1": 2, "T2": 1, "FLAIR": 2}
    reloaded = DatasetFingerprint.from_dict(json.loads(json.dumps(fingerprint.to_dict())))
    assert reloaded.cases == fingerprint.cases


def test_cli_plans_and_preprocesses_demo_dataset(tiny_demo_dataset, capsys):
    from msgldm_auto.cli.plan_and_preprocess import main, plan_experiment_main, preprocess_main
    from msgldm_auto.paths import preprocessed_root
    from msgldm_auto.preprocessing.storage import list_cases, load_case

    assert main(["-d", "901", "-pl", "cpu", "-np", "1", "-gpu_memory_target", "4"]) == 0
    out = capsys.readouterr().out
    assert "per fold" in out and "five folds" in out
    assert "head_aware_restore: synthesized slices go back to the input grid" in out   # measured on the cases
    folder = preprocessed_root() / "Dataset901_Demo"
    for name in ("dataset.json", "dataset_fingerprint.json", "MSGLDMPlans_cpu.json"):
        assert (folder / name).is_file(), name
    plans = Plans.load(folder / "MSGLDMPlans_cpu.json")
    config = plans.configuration("2d")
    cases = list_cases(folder / "MSGLDMPlans_cpu_2d")
    assert len(cases) == 6
    case = load_case(folder / "MSGLDMPlans_cpu_2d", "demo_003")
    assert len(case.present) == 3 and case.data.shape == (3, case.data.shape[1], *config.image_size)
    assert case.seg is not None and case.properties.foreground_slices
    assert set(plans.intensity_p995) == {"T1", "T2", "FLAIR", "PD"}
    assert plan_experiment_main(["-d", "901", "--gpu-memory-target", "2"]) == 0
    assert (folder / "MSGLDMPlans.json").is_file()
    assert preprocess_main(["-d", "Dataset901_Demo", "-p", "MSGLDMPlans_cpu", "-np", "1"]) == 0
    assert "6 already done" in capsys.readouterr().out
    assert main(["-d", "999"]) == 2
