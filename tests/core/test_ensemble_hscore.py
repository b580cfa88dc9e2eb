"""The exact ensemble H(alpha) equals the direct score of the weighted features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hgprompt_ray.core import (
    ensemble_h_score,
    ensemble_h_score_torch,
    ensemble_statistics,
    h_score,
    per_source_h_scores,
    regularized_h_score,
)
from hgprompt_ray.errors import InvalidValueError
from tests.core.references import class_structured_features, tllib_h_score, tllib_regularized_h_score


def _stack(seed=0, m=4, n=150, d=8, c=5):
    return class_structured_features(np.random.default_rng(seed), m, n, d, c)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), regularized=st.booleans(), off_simplex=st.booleans())
def test_equals_direct_computation(seed, m, regularized, off_simplex):
    features, labels = _stack(seed, m=m, n=90, d=6, c=4)
    rng = np.random.default_rng(seed + 1)
    alpha = rng.normal(size=m) if off_simplex else rng.dirichlet(np.ones(m))
    combined = np.tensordot(alpha, features, axes=1)
    reference = tllib_regularized_h_score if regularized else tllib_h_score
    expected = reference(combined, labels)
    got = ensemble_h_score(ensemble_statistics(features, labels), alpha, regularized=regularized)
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-12)


def test_rank_deficient_d_greater_than_n():
    features, labels = _stack(1, m=3, n=20, d=30, c=3)
    alpha = np.array([0.5, 0.3, 0.2])
    combined = np.tensordot(alpha, features, axes=1)
    stats = ensemble_statistics(features, labels)
    assert ensemble_h_score(stats, alpha) == pytest.approx(
        tllib_regularized_h_score(combined, labels), rel=1e-8
    )
    assert ensemble_h_score(stats, alpha, regularized=False) == pytest.approx(
        tllib_h_score(combined, labels), rel=1e-6
    )


def test_statistics_do_not_depend_on_n():
    small = ensemble_statistics(*_stack(2, m=3, n=40, d=5))
    large = ensemble_statistics(*_stack(2, m=3, n=400, d=5))
    for a, b in zip(small[:4], large[:4]):
        assert np.shape(a) == np.shape(b)
    assert small.second_moment.shape == (3, 3, 5, 5) and small.fourth_moment.shape == (3, 3, 3, 3)


def test_batched_equals_single_and_vertices_equal_per_source_scores():
    features, labels = _stack(3)
    stats = ensemble_statistics(features, labels)
    alphas = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(4), size=5))
    batched = ensemble_h_score_torch(stats, alphas)
    singles = torch.stack([ensemble_h_score_torch(stats, a) for a in alphas])
    torch.testing.assert_close(batched, singles, rtol=1e-12, atol=1e-12)
    expected = [regularized_h_score(features[k], labels) for k in range(4)]
    np.testing.assert_allclose(per_source_h_scores(stats), expected, rtol=1e-9)
    np.testing.assert_allclose(
        per_source_h_scores(stats, regularized=False),
        [h_score(features[k], labels) for k in range(4)],
        rtol=1e-9,
    )


@pytest.mark.parametrize("regularized", [True, False])
def test_gradient_matches_finite_differences(regularized):
    features, labels = _stack(4, m=3, n=60, d=5, c=3)
    stats = ensemble_statistics(features, labels)
    alpha = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a: ensemble_h_score_torch(stats, a, regularized=regularized), (alpha,), eps=1e-6, atol=1e-6
    )


def test_second_moments_are_exact_transposes_and_equal_the_direct_products():
    features, labels = _stack(8, m=3, n=70, d=5)
    stats = ensemble_statistics(features, labels)
    centred = features - features.mean(axis=1, keepdims=True)
    for k in range(3):
        for j in range(3):
            expected = centred[k].T @ centred[j] / 70
            np.testing.assert_allclose(stats.second_moment[k, j], expected, rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(stats.second_moment[j, k], stats.second_moment[k, j].T)
    grams = np.einsum("kni,lni->nkl", centred, centred)
    np.testing.assert_allclose(stats.fourth_moment, np.einsum("nkl,nmp->klmp", grams, grams), rtol=1e-12)
    sums = np.stack([[centred[k][labels == c].mean(axis=0) for c in range(5)] for k in range(3)])
    np.testing.assert_allclose(stats.deviations, sums, rtol=1e-10, atol=1e-12)


def test_subset_equals_statistics_of_the_subset():
    features, labels = _stack(5, m=5)
    stats = ensemble_statistics(features, labels)
    subset = stats.subset([3, 0, 4])
    direct = ensemble_statistics(features[[3, 0, 4]], labels)
    for got, expected in zip(subset, direct):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(InvalidValueError, match="must not repeat"):
        stats.subset([1, 1])
    with pytest.raises(InvalidValueError, match=r"in \[0, 5\)"):
        stats.subset([7])


def test_duplicated_prompts_split_weight_freely():
    features, labels = _stack(6, m=2)
    duplicated = np.stack([features[0], features[0], features[1]])
    stats = ensemble_statistics(duplicated, labels)
    a = ensemble_h_score(stats, [0.6, 0.0, 0.4])
    b = ensemble_h_score(stats, [0.1, 0.5, 0.4])
    assert a == pytest.approx(b, rel=1e-10)


def test_bad_inputs():
    features, labels = _stack(7, m=2)
    with pytest.raises(InvalidValueError, match=r"features.shape must be \(M, N, d\)"):
        ensemble_statistics(features[0], labels)
    with pytest.raises(InvalidValueError, match=r"features\[1\] must be finite"):
        bad = features.copy()
        bad[1, 0, 0] = np.nan
        ensemble_statistics(bad, labels)
    stats = ensemble_statistics(features, labels)
    with pytest.raises(InvalidValueError, match="alpha.shape must end in M=2"):
        ensemble_h_score(stats, [1.0, 0.0, 0.0])
