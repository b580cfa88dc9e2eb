"""The solver's hand-written objective equals the reference formulas, batched or one start at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hgprompt_ray.core import (
    SolverSettings,
    alignment_loss_torch,
    empty_gradient_moments,
    ensemble_h_score_torch,
    ensemble_statistics,
    gradient_second_moment,
    minimize_on_simplex,
    update_gradient_moments,
)
from hgprompt_ray.core.ensemble_objective import EnsembleObjective
from hgprompt_ray.core.hscore import _shrink
from tests.core.references import class_structured_features, tllib_h_score, tllib_regularized_h_score


def _problem(seed, m=4, n=120, d=6, c=4, p=10):
    rng = np.random.default_rng(seed)
    features, labels = class_structured_features(rng, m, n, d, c)
    gradients = rng.normal(size=(1, m, p)) + rng.normal(size=(n, m, p)) * rng.uniform(
        0.3, 3.0, size=(1, m, 1)
    )
    moments = update_gradient_moments(empty_gradient_moments(m, p), gradients)
    return features, labels, ensemble_statistics(features, labels), gradient_second_moment(moments)


def _reference(stats, second_moment, lam, scale, h_weight, regularized, alpha):
    """Objective and gradient by autograd through ``ensemble_h_score_torch``/``alignment_loss_torch``."""
    point = alpha.clone().requires_grad_(True)
    value = -h_weight * ensemble_h_score_torch(stats, point, regularized=regularized)
    if second_moment is not None:
        value = value + (lam / scale) * alignment_loss_torch(torch.from_numpy(second_moment), point)
    (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 5),
    shape=st.sampled_from([(120, 6), (20, 30), (40, 1)]),  # N > d, d > N (rank-deficient), d = 1
    regularized=st.booleans(),
    lam=st.sampled_from([0.0, 0.7]),
    h_weight=st.sampled_from([1.0, 0.0]),
)
def test_values_and_gradients_equal_the_reference(seed, m, shape, regularized, lam, h_weight):
    if h_weight == 0 and lam == 0:
        return
    n, d = shape
    _, _, stats, second_moment = _problem(seed, m=m, n=n, d=d, c=3)
    matrix = second_moment if lam > 0 else None
    objective = EnsembleObjective(stats, matrix, lam, 3.0, h_weight, regularized)
    alpha = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.ones(m), size=3))
    values, grads = objective.value_and_grad(alpha)
    expected_values, expected_grads = _reference(stats, matrix, lam, 3.0, h_weight, regularized, alpha)
    scale = max(1.0, float(expected_values.abs().max()))
    torch.testing.assert_close(values, expected_values, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(
        grads, expected_grads, rtol=0, atol=1e-9 * max(1.0, float(expected_grads.abs().max()))
    )


def test_h_equals_the_scores_of_the_combined_features():
    features, labels, stats, _ = _problem(1, m=3, n=200, d=8)
    alpha = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    for regularized, reference in ((True, tllib_regularized_h_score), (False, tllib_h_score)):
        objective = EnsembleObjective(stats, None, 0.0, 1.0, 1.0, regularized)
        got = objective.h_score_and_grad(torch.from_numpy(alpha))[0]
        expected = [reference(np.tensordot(a, features, axes=1), labels) for a in alpha]
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)


def test_cholesky_with_a_shift_equals_a_general_solve_of_the_shrunk_matrix():
    """(1 - a) tr(((1 - a) S + a mu I)^-1 K) = tr((S + c I)^-1 K), c = a mu / (1 - a)."""
    _, _, stats, _ = _problem(2, m=3, n=60, d=25)  # d close to N: strong shrinkage
    alpha = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    second = torch.from_numpy(stats.second_moment)
    emp = torch.einsum("k,l,klij->ij", alpha, alpha, second)
    emp = (emp + emp.T) / 2
    products = torch.outer(alpha, alpha)
    fourth = torch.einsum("kl,klmp,mp->", products, torch.from_numpy(stats.fourth_moment), products)
    shrinkage, shrunk = _shrink(emp, torch.trace(emp), fourth, stats.num_samples)
    assert 0.05 < float(shrinkage) < 1.0
    deviations = torch.einsum("k,kcd->cd", alpha, torch.from_numpy(stats.deviations))
    weights = torch.from_numpy(stats.class_counts.astype(np.float64)) / (stats.num_samples - 1)
    general = torch.linalg.solve(shrunk, deviations.T)  # LU, no symmetry used
    expected = (1.0 - shrinkage) * ((deviations.T * general).sum(dim=0) * weights).sum()
    got = EnsembleObjective(stats, None, 0.0, 1.0).h_score_and_grad(alpha[None])[0][0]
    assert float(got) == pytest.approx(float(expected), rel=1e-10)


def test_batched_starts_equal_one_start_at_a_time():
    _, _, stats, second_moment = _problem(3, m=5, n=150, d=7, p=12)
    objective = EnsembleObjective(stats, second_moment, 0.8, 2.0)
    alpha = torch.from_numpy(np.random.default_rng(3).dirichlet(np.ones(5), size=6))
    values, grads = objective.value_and_grad(alpha)
    for s in range(6):
        value, grad = objective.value_and_grad(alpha[s : s + 1])
        torch.testing.assert_close(value, values[s : s + 1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, grads[s : s + 1], rtol=1e-10, atol=1e-12)


def test_batched_solve_follows_each_start_alone():
    """Every start's path in a batched multi-start solve is its path when solved alone."""
    _, _, stats, second_moment = _problem(4, m=4, n=150, d=6)
    objective = EnsembleObjective(stats, second_moment, 0.5, 1.0)
    starts = np.random.default_rng(4).dirichlet(np.ones(4), size=4)
    budget = SolverSettings(max_iterations=12, tolerance=1e-300)
    batched = minimize_on_simplex(objective, starts, budget)
    for s in range(4):
        alone = minimize_on_simplex(objective, starts[s : s + 1], budget)
        np.testing.assert_allclose(alone.points[0], batched.points[s], rtol=0, atol=1e-10)


def test_not_positive_definite_falls_back_to_the_pseudo_inverse():
    features, labels, stats, _ = _problem(5, m=2, n=15, d=20)  # d > N, no shrinkage: singular S
    objective = EnsembleObjective(stats, None, 0.0, 1.0, regularized=False)
    alpha = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    value = objective.h_score_and_grad(alpha)[0]
    expected = tllib_h_score(np.tensordot(alpha[0].numpy(), features, axes=1), labels)
    assert float(value[0]) == pytest.approx(expected, rel=1e-6)
    assert objective.fallbacks == 1


def test_cost_counts_the_cholesky_and_two_passes_over_the_blocks():
    _, _, stats, _ = _problem(6, m=3, n=100, d=8, c=4)
    cost = EnsembleObjective(stats, None, 0.0, 1.0).cost(num_starts=2)
    pairs, entries = 6, 36
    expected = 2 * (2 * 2.0 * pairs * entries) + 2 * (8**3 / 3 + 4 * 64 * 4 + 6 * entries)
    assert cost["flops"] == pytest.approx(expected)
    assert cost["bytes"] == 2 * 8 * pairs * entries
