"""The per-voxel regression prior that the disentangler's decoders and the control correct: the regression floor's
polynomial, carried as buffers, fitted on training cases only, with no influence from absent modalities."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from msgldm_auto.inference.baselines import fit_floors, predict_regression
from msgldm_auto.networks.decoder import StyleDecoder
from msgldm_auto.networks.disentangler import StructureStyleDisentangler
from msgldm_auto.networks.plain_unet import PlainUNet
from msgldm_auto.networks.regression_prior import RegressionPrior
from msgldm_auto.plans import ConfigurationPlan, ControlPlan, DisentanglerPlan, Plans
from msgldm_auto.training.regression_prior import fit_regression_prior
from msgldm_auto.training.stages.common import load_regression_prior

NAMES = ["A", "B", "C"]


def contrasts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C as a known nonlinear voxelwise function of A and B (what a degree-2 polynomial can represent)."""
    return 0.4 * a**2 - 0.5 * a * b + 0.3 * b - 0.1


def voxel_samples(seed: int = 0, size: int = 4000) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(3):
        a, b = rng.uniform(-0.9, 0.9, size), rng.uniform(-0.9, 0.9, size)
        sample = {"A": a, "B": b, "C": contrasts(a, b) + 0.01 * rng.normal(size=size)}
        if index == 2:
            del sample["B"]                           # one training case lacks B, as real datasets do
        samples.append(sample)
    return samples


def fitted_prior():
    floors = fit_floors(voxel_samples(), NAMES, degree=2)
    prior = RegressionPrior(len(NAMES), degree=2)
    prior.load_fits(floors)
    return floors, prior


def image_batch(patterns: list[list[bool]], seed: int = 1, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ab = torch.rand(len(patterns), 2, size, size, generator=generator) * 1.8 - 0.9
    c = torch.from_numpy(contrasts(ab[:, 0].numpy(), ab[:, 1].numpy()))[:, None]
    return torch.cat([ab, c.float()], dim=1), torch.tensor(patterns)


def every_pattern(modalities: int) -> list[list[bool]]:
    return [[bool(p >> m & 1) for m in range(modalities)] for p in range(1, 2**modalities)]


def test_prior_equals_the_regression_floor_for_every_pattern_and_target():
    floors, prior = fitted_prior()
    images, present = image_batch(every_pattern(3))
    estimate = prior(images, present)
    for row, pattern in enumerate(present.tolist()):
        for target_index, target in enumerate(NAMES):
            given = {n: images[row, i].numpy() for i, n in enumerate(NAMES) if pattern[i] and n != target}
            if not given:                                 # only the target itself is given: no prior
                assert torch.all(estimate[row, target_index] == 0)
                continue
            expected = np.clip(predict_regression(floors, given, target), -0.999, 0.999)
            np.testing.assert_allclose(estimate[row, target_index].numpy(), expected, atol=1e-5)
    # C from A and B is the known function: the prior recovers it where the floor can
    both = [i for i, p in enumerate(present.tolist()) if p[:2] == [True, True]]
    truth = torch.from_numpy(contrasts(images[both, 0].numpy(), images[both, 1].numpy()))
    torch.testing.assert_close(estimate[both, 2], truth.float(), atol=0.01, rtol=0)


def test_prior_of_an_absent_modality_input_has_no_influence():
    _, prior = fitted_prior()
    images, present = image_batch(every_pattern(3))
    changed = images.clone()
    changed[~present] = torch.nan
    changed = torch.where(present[:, :, None, None], changed, torch.zeros_like(changed))   # as networks clean them
    assert torch.equal(prior(changed, present), prior(images, present))


def test_an_unfitted_target_pattern_gives_no_prior():
    """No training case holds C: its estimate stays 0 (no prior) instead of a clipped constant, while B from A,
    which was fitted, is estimated."""
    floors = fit_floors([{"A": np.linspace(-1, 1, 50), "B": np.linspace(-1, 1, 50) ** 2}], NAMES, degree=2)
    prior = RegressionPrior(3, degree=2)
    prior.load_fits(floors)
    images, present = image_batch([[True, True, False], [True, False, True]])
    estimate = prior(images, present)
    assert torch.all(estimate[:, 2] == 0) and torch.all(estimate[1, 1] != 0)


def test_decoder_sees_the_prior_and_adds_its_trusted_logits_before_the_tanh():
    torch.manual_seed(0)
    decoder = StyleDecoder([4, 8], prior_channels=8, width=8, style_dim=4, corrects_prior=True)
    prior, fused = torch.randn(2, 8, 4, 4), [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    style, logits = torch.randn(2, 4), torch.randn(2, 1, 8, 8)
    untrusted = decoder(prior, fused, style, (logits, torch.zeros(2, 1, 1, 1)))
    trust = torch.tensor([0.5, 2.0])[:, None, None, None]
    trusted = decoder(prior, fused, style, (logits, trust))
    torch.testing.assert_close(trusted, torch.tanh(torch.atanh(untrusted) + trust * logits), atol=1e-5, rtol=1e-4)
    other = decoder(prior, fused, style, (logits + 1, torch.zeros(2, 1, 1, 1)))
    assert not torch.allclose(other, untrusted)                 # the decoder sees the prior, not only adds it
    with pytest.raises(ValueError, match="needs one"):
        decoder(prior, fused, style)
    with pytest.raises(ValueError, match="needs one"):
        StyleDecoder([4, 8], prior_channels=8, width=8, style_dim=4)(prior, fused, style, (logits, trust))


def test_a_decoder_that_sees_the_inputs_takes_exactly_its_input_channels():
    torch.manual_seed(0)
    decoder = StyleDecoder([4, 8], prior_channels=8, width=8, style_dim=4, corrects_prior=True, input_channels=3)
    prior, fused = torch.randn(2, 8, 4, 4), [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    style, regression = torch.randn(2, 4), (torch.randn(2, 1, 8, 8), torch.ones(2, 1, 1, 1))
    inputs = torch.randn(2, 3, 8, 8)
    first = decoder(prior, fused, style, regression, inputs)
    assert first.shape == (2, 1, 8, 8)
    assert not torch.equal(first, decoder(prior, fused, style, regression, inputs + 0.5))   # the inputs are seen
    for wrong in (None, inputs[:, :2]):
        with pytest.raises(ValueError, match="takes 3 input channel"):
            decoder(prior, fused, style, regression, wrong)


def small_config(degree: int) -> ConfigurationPlan:
    return ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=[12, 12], latent_scale=4, context_slices=1, batch_size=2,
        disentangler=DisentanglerPlan(structure_channels=[4, 8, 8], style_dim=4, style_channels=4,
                                      decoder_channels=8, prior_channels=8, msse_heads=2,
                                      regression_prior_degree=degree),
        control=ControlPlan(channels=[4, 8, 8], num_res_units=1, regression_prior_degree=degree),
    )


@pytest.mark.parametrize("network_class", [StructureStyleDisentangler, PlainUNet])
def test_networks_correct_the_prior_and_ignore_absent_modalities(network_class):
    floors, _ = fitted_prior()
    torch.manual_seed(0)
    network = network_class(small_config(degree=2), 3).eval()
    load_regression_prior(network, floors)
    images, present = image_batch(every_pattern(3))
    images = images[:, :, None]                                             # (B, M, C=1, H, W)

    def synthesis(x: torch.Tensor) -> torch.Tensor:
        out = network(x, present)
        return out if isinstance(out, torch.Tensor) else out.synthesis

    with_prior = synthesis(images)
    changed = images.clone()
    changed[~present] = torch.nan
    assert torch.equal(synthesis(changed), with_prior)
    logits = network.regression_prior.logits(images[:, :, 0], present)
    with torch.no_grad():
        network.regression_prior.gain.zero_()                                # same network, prior seen, not added
    untrusted = synthesis(images)
    inside = (with_prior.abs() < 0.99) & (untrusted.abs() < 0.99)
    torch.testing.assert_close((torch.atanh(with_prior) - torch.atanh(untrusted))[inside], logits[inside],
                               atol=1e-3, rtol=1e-3)


def test_the_trust_in_each_prior_is_learned_per_target_and_pattern():
    floors, _ = fitted_prior()
    torch.manual_seed(0)
    network = StructureStyleDisentangler(small_config(degree=2), 3).eval()
    load_regression_prior(network, floors)
    images, present = image_batch(every_pattern(3))
    images = images[:, :, None]
    network(images, present).synthesis[:, 2].sum().backward()
    gain = network.regression_prior.gain
    patterns = (present.long() << torch.arange(3)).sum(dim=1)
    fitted = [p for p, row in zip(patterns.tolist(), present.tolist()) if row[0] or row[1]]   # C has a prior
    assert torch.all(gain.grad[2, fitted] != 0) and torch.all(gain.grad[:2] == 0)   # only the target C was scored
    assert any(p is gain for p in network.parameters())                               # so the optimiser learns it


def test_a_network_that_wants_a_prior_refuses_to_train_without_one():
    network = PlainUNet(small_config(degree=2), 3)
    with pytest.raises(ValueError, match="none was fitted"):
        load_regression_prior(network, None)
    load_regression_prior(PlainUNet(small_config(degree=0), 3), None)      # no prior asked: nothing to load


class ArrayReader:
    """Cases held in memory, laid out like preprocessed storage: (P, Z, H, W) with foreground slices."""

    def __init__(self, cases: dict[str, np.ndarray]):
        self.cases, self.opened = cases, []

    def open(self, case_id: str) -> SimpleNamespace:
        self.opened.append(case_id)
        data = self.cases[case_id]
        return SimpleNamespace(data=data, present=[0, 1, 2], foreground_slices=list(range(1, data.shape[1] - 1)))


def test_fit_reads_only_the_given_training_cases_and_recovers_the_map():
    rng = np.random.default_rng(0)

    def case(mapping) -> np.ndarray:
        a, b = rng.uniform(-0.9, 0.9, (2, 6, 10, 10))
        volume = np.stack([a, b, mapping(a, b)]).astype(np.float32)
        volume[:, :, :2] = -1.0                                             # background rows, not fitted
        return volume

    cases = {f"train_{i}": case(contrasts) for i in range(3)}
    cases["held_out"] = case(lambda a, b: -a)                               # a different map: must not leak in
    reader = ArrayReader(cases)
    floors = fit_regression_prior(reader, ["train_0", "train_1", "train_2"], NAMES, degree=2)
    assert sorted(reader.opened) == ["train_0", "train_1", "train_2"]
    a, b = np.meshgrid(np.linspace(-0.8, 0.8, 9), np.linspace(-0.8, 0.8, 9))
    np.testing.assert_allclose(predict_regression(floors, {"A": a, "B": b}, "C"), contrasts(a, b), atol=1e-4)


def test_plans_without_the_field_keep_the_networks_they_were_trained_with(tiny_trained_demo):
    """The planner's choice (both networks correct the degree-2 prior: measured), with its reason; plans written
    before the field existed load with degree 0 (their checkpoints have no prior)."""
    data = json.loads((tiny_trained_demo / "plans.json").read_text())
    config = data["configurations"]["2d"]
    assert (config["control"]["regression_prior_degree"], config["disentangler"]["regression_prior_degree"]) == (2, 2)
    assert "regression_prior_degree" in config["rationale"]
    del config["control"]["regression_prior_degree"], config["disentangler"]["regression_prior_degree"]
    loaded = Plans.from_dict(data).configuration("2d")
    assert (loaded.control.regression_prior_degree, loaded.disentangler.regression_prior_degree) == (0, 0)


def test_training_fits_the_prior_on_the_fold_training_cases_and_checkpoints_it(tiny_trained_demo):
    from conftest import TINY_TRAINING

    from msgldm_auto.cli import train
    from msgldm_auto.preprocessing.storage import list_cases
    from msgldm_auto.training.checkpoint import load_checkpoint
    from msgldm_auto.training.data_loader import StorageReader

    assert train.main(["901", "2d", "0", "-m", "unet", *TINY_TRAINING]) == 0
    plans = Plans.load(tiny_trained_demo / "plans.json")
    config = plans.configuration("2d")
    weights = load_checkpoint(tiny_trained_demo / "fold_0" / "unet" / "checkpoint_final.pth")["inference_weights"]
    log = (tiny_trained_demo / "fold_0" / "unet" / "training_log.txt").read_text()
    assert "correcting the per-voxel regression prior (degree 2" in log
    preprocessed = tiny_trained_demo.parents[2] / "preprocessed" / "Dataset901_Demo"
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    folder = preprocessed / config.data_identifier
    assert set(splits[0]["train"]) < set(list_cases(folder))
    expected = RegressionPrior(plans.num_modalities, config.control.regression_prior_degree)
    expected.load_fits(fit_regression_prior(StorageReader(folder), splits[0]["train"], plans.modalities,
                                            config.control.regression_prior_degree))
    for name, buffer in expected.named_buffers():                      # the fit; the trust (`gain`) was trained
        torch.testing.assert_close(weights[f"regression_prior.{name}"], buffer)
    assert weights["regression_prior.gain"].shape == expected.gain.shape
    assert weights["regression_prior.coefficients"].abs().sum() > 0
