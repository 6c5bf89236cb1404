"""Quality floors: the regression recovers a known polynomial, the copy floor picks the correlated modality."""
from __future__ import annotations

import json

import numpy as np
import pytest

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.baselines import (
    FloorModels,
    fit_floors,
    monomial_exponents,
    predict_copy,
    predict_regression,
    voxel_sample,
)


def relation(a, b):
    """A degree-2 relation with a cross term, like contrasts that are functions of tissue."""
    return 0.4 * a ** 2 - 0.3 * a * b + 0.2 * b - 0.1


def make_samples(n_samples=3, n_voxels=4000, seed=0, drop_b_in_first=False):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_samples):
        a, b = rng.uniform(-1, 1, n_voxels), rng.uniform(-1, 1, n_voxels)
        sample = {"A": a, "B": b, "C": relation(a, b), "N": rng.normal(0, 1, n_voxels)}
        if drop_b_in_first and i == 0:
            del sample["B"]
        samples.append(sample)
    return samples


def test_monomials_include_cross_terms():
    exps = monomial_exponents(2, 2)
    assert sorted(map(tuple, exps)) == sorted([(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)])
    assert len(monomial_exponents(3, 3)) == 20                       # C(3 + 3, 3)


def test_regression_recovers_known_polynomial_on_unseen_voxels():
    models = fit_floors(make_samples(), degree=2)
    rng = np.random.default_rng(99)
    a, b = rng.uniform(-1, 1, (4, 5)), rng.uniform(-1, 1, (4, 5))
    prediction = predict_regression(models, {"A": a, "B": b}, "C")
    assert prediction.shape == (4, 5)
    np.testing.assert_allclose(prediction, relation(a, b), atol=1e-5)


def test_degree_three_relation_needs_degree_three():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, 5000)
    samples = [{"A": a, "C": a ** 3 - 0.5 * a}]
    grid = np.linspace(-0.9, 0.9, 7)
    cubic = predict_regression(fit_floors(samples, degree=3), {"A": grid}, "C")
    quadratic = predict_regression(fit_floors(samples, degree=2), {"A": grid}, "C")
    np.testing.assert_allclose(cubic, grid ** 3 - 0.5 * grid, atol=1e-5)
    assert np.abs(quadratic - (grid ** 3 - 0.5 * grid)).max() > 0.01


def test_copy_floor_picks_most_correlated_and_matches_intensity():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, 3000)
    samples = [{"A": a, "B": rng.uniform(0, 1, 3000), "T": 3.0 * a + 5.0 + rng.normal(0, 0.01, 3000)}]
    models = fit_floors(samples)
    assert models.copy_source("T", ["A", "B"]) == "A"
    assert models.copy_source("T", ["B"]) == "B"                    # only B present: B, however poor
    np.testing.assert_allclose(predict_copy(models, {"A": np.array([0.2, 0.7]), "B": np.zeros(2)}, "T"),
                               [5.6, 7.1], atol=0.01)


def test_copy_floor_inverts_anticorrelated_source():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, 2000)
    samples = [{"A": a, "B": a + rng.normal(0, 0.3, 2000), "T": 1.0 - a}]
    models = fit_floors(samples)
    assert models.copy_source("T", ["A", "B"]) == "A"                # |r| = 1 beats the noisy positive one
    np.testing.assert_allclose(predict_copy(models, {"A": np.array([0.25])}, "T"), [0.75], atol=1e-5)


def test_missing_modalities_and_pattern_fallback():
    samples = make_samples(drop_b_in_first=True)
    models = fit_floors(samples)
    assert models.polynomial["C"]["A+B"].num_voxels == 2 * 4000      # only samples holding A, B and C
    assert models.polynomial["C"]["A"].num_voxels == 3 * 4000
    # A pattern never fitted (an unknown modality present) falls back to the largest fitted subset.
    a, b = np.array([0.5]), np.array([-0.5])
    assert predict_regression(models, {"A": a, "B": b, "X": a}, "C") == pytest.approx(relation(a, b), abs=1e-5)
    lonely = fit_floors([{"A": np.ones(3), "B": np.ones(3)}, {"C": np.ones(3)}])
    with pytest.raises(MSGLDMError, match="no training case had 'C'"):
        predict_regression(lonely, {"A": np.ones(2)}, "C")
    with pytest.raises(MSGLDMError, match="no training case had 'C'"):
        predict_copy(lonely, {"A": np.ones(2)}, "C")


def test_predictions_clipped_to_training_range_of_target():
    a = np.linspace(0, 1, 100)
    models = fit_floors([{"A": a, "C": a}])
    assert predict_regression(models, {"A": np.array([5.0, -5.0])}, "C").tolist() == [1.0, 0.0]
    assert predict_copy(models, {"A": np.array([5.0])}, "C").tolist() == [1.0]


def test_json_roundtrip_predicts_the_same(tmp_path):
    models = fit_floors(make_samples(), degree=3)
    models.save(tmp_path / "floors.json")
    json.loads((tmp_path / "floors.json").read_text())
    loaded = FloorModels.load(tmp_path / "floors.json")
    x = {"A": np.array([0.1, 0.9]), "B": np.array([-0.4, 0.3]), "N": np.array([0.0, 1.0])}
    np.testing.assert_array_equal(predict_regression(loaded, x, "C"), predict_regression(models, x, "C"))
    np.testing.assert_array_equal(predict_copy(loaded, x, "C"), predict_copy(models, x, "C"))


def test_voxels_per_sample_are_bounded_and_seeded():
    models = fit_floors(make_samples(n_voxels=5000), max_voxels_per_sample=500, seed=4)
    assert models.polynomial["C"]["A+B"].num_voxels == 3 * 500
    again = fit_floors(make_samples(n_voxels=5000), max_voxels_per_sample=500, seed=4)
    assert again.to_dict() == models.to_dict()


def test_unaligned_sample_is_rejected():
    with pytest.raises(ValueError, match="one length"):
        fit_floors([{"A": np.zeros(3), "C": np.zeros(4)}])


def test_voxel_sample_uses_head_mask():
    t1 = np.full((2, 3, 3), -1.0)
    t1[1, 1, 1] = 0.5                                                 # the only head voxel (background is −1)
    t2 = np.full((2, 3, 3), -1.0)
    t2[1, 1, 1] = 0.2
    sample = voxel_sample({"T1": t1, "T2": t2})
    assert sample["T1"].tolist() == [0.5] and sample["T2"].tolist() == [0.2]
