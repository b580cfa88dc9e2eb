"""H-score and regularised H-score against tllib's formulas and scikit-learn's Ledoit-Wolf."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from hgprompt_ray.core import (
    h_score,
    ledoit_wolf_shrinkage,
    regularized_h_score,
    regularized_h_score_torch,
)
from hgprompt_ray.errors import InvalidValueError
from tests.core.references import class_structured_features, tllib_h_score, tllib_regularized_h_score

SCORES = [
    (h_score, tllib_h_score),
    (regularized_h_score, tllib_regularized_h_score),
    (lambda f, y: float(regularized_h_score_torch(f, y)), tllib_regularized_h_score),
]


def _data(seed=0, n=120, d=6, c=4):
    features, labels = class_structured_features(np.random.default_rng(seed), 1, n, d, c)
    return features[0], labels


@pytest.mark.parametrize(("score", "reference"), SCORES)
@pytest.mark.parametrize("shape", [(120, 6, 4), (60, 20, 3), (15, 40, 3)])  # last: d > N, rank-deficient
def test_matches_tllib_reference(score, reference, shape):
    n, d, c = shape
    f, y = _data(1, n, d, c)
    expected = reference(f, y)
    assert score(f, y) == pytest.approx(expected, rel=1e-9, abs=1e-10)


@pytest.mark.parametrize(("score", "reference"), SCORES)
def test_arbitrary_integer_labels_make_no_empty_classes(score, reference):
    f, y = _data(2)
    sparse = np.array([-5, 3, 17, 1000])[y]  # values absent in between must not become classes
    assert score(f, sparse) == pytest.approx(score(f, y), rel=1e-12)
    assert score(f, sparse) == pytest.approx(reference(f, sparse), rel=1e-9)


def test_accepts_torch_and_float32_inputs():
    f, y = _data(3)
    expected = h_score(f, y)
    assert h_score(torch.from_numpy(f).float(), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-5)


def test_ledoit_wolf_matches_scikit_learn():
    f, _ = _data(4, 80, 12)
    centered = f - f.mean(axis=0)
    shrinkage, shrunk = ledoit_wolf_shrinkage(centered)
    estimator = LedoitWolf().fit(centered)
    assert shrinkage == pytest.approx(estimator.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(shrunk, estimator.covariance_, rtol=1e-10, atol=1e-13)


def test_torch_gradients_match_finite_differences():
    f, y = _data(5, 40, 4, 3)
    x = torch.from_numpy(f).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: regularized_h_score_torch(t, y), (x,), eps=1e-6, atol=1e-5)


def test_constant_features_score_zero():
    f = np.ones((30, 5))
    y = np.arange(30) % 3
    assert h_score(f, y) == 0.0
    assert regularized_h_score(f, y) == 0.0


def test_duplicated_columns_are_handled_by_the_pseudo_inverse():
    f, y = _data(6, 100, 4)
    doubled = np.concatenate([f, f], axis=1)  # singular covariance
    assert h_score(doubled, y) == pytest.approx(tllib_h_score(doubled, y), rel=1e-8)


@pytest.mark.parametrize(
    ("features", "labels", "match"),
    [
        (np.zeros((10, 3)), np.zeros(10, dtype=int), r"at least 2 classes"),
        (np.zeros((1, 3)), np.zeros(1, dtype=int), r"N must be at least 2, but got 1"),
        (np.full((10, 3), np.nan), np.arange(10) % 2, r"must be finite"),
        (np.zeros((10, 3)), np.arange(9) % 2, r"labels.shape must be \(10,\)"),
        (np.zeros((10,)), np.arange(10) % 2, r"features.shape must be \(N, d\)"),
        (np.zeros((10, 3)), np.arange(10) * 0.5, r"labels must be integers"),
        (np.zeros((10, 3)), np.array(["a", "b"] * 5), r"labels.dtype must be an integer dtype"),
    ],
)
@pytest.mark.parametrize("score", [h_score, regularized_h_score, regularized_h_score_torch])
def test_bad_inputs_name_the_field(score, features, labels, match):
    with pytest.raises(InvalidValueError, match=match):
        score(features, labels)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), permutation_seed=st.integers(0, 10_000))
def test_invariant_to_permuting_label_values(seed, permutation_seed):
    f, y = _data(seed, 60, 5, 4)
    mapping = np.random.default_rng(permutation_seed).permutation(4) * 7 + 2
    for score in (h_score, regularized_h_score):
        assert score(f, mapping[y]) == pytest.approx(score(f, y), rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_pinv_form_invariant_to_invertible_linear_map(seed):
    rng = np.random.default_rng(seed)
    f, y = _data(seed, 80, 5, 3)
    transform = rng.normal(size=(5, 5)) + 3 * np.eye(5)  # well conditioned, invertible
    shift = rng.normal(size=5)
    assert h_score(f @ transform + shift, y) == pytest.approx(h_score(f, y), rel=1e-7)
