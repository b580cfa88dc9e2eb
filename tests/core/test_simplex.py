"""The simplex solver: optimality, determinism, edge cases and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hgprompt_ray.core import (
    SimplexConvergenceWarning,
    SolverSettings,
    alignment_loss,
    alignment_scale,
    empty_gradient_moments,
    ensemble_h_score,
    ensemble_h_score_torch,
    ensemble_statistics,
    gradient_covariance,
    h_score_weights,
    solve_weights,
    uniform_weights,
    update_gradient_moments,
)
from hgprompt_ray.errors import InvalidValueError
from tests.core.references import class_structured_features


def _problem(seed=0, m=4, n=120, d=6, c=4, p=10):
    rng = np.random.default_rng(seed)
    features, labels = class_structured_features(rng, m, n, d, c)
    gradients = rng.normal(size=(n, m, p)) * rng.uniform(0.3, 3.0, size=(1, m, 1))
    moments = update_gradient_moments(empty_gradient_moments(m, p), gradients)
    return ensemble_statistics(features, labels), gradient_covariance(moments)


def _objective(stats, covariance, lam, alpha):
    return -ensemble_h_score(stats, alpha) + lam * alignment_loss(covariance, alpha) / alignment_scale(
        covariance
    )


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.sampled_from([0.0, 0.5, 5.0]))
def test_weights_on_simplex_and_no_worse_than_any_sampled_point(seed, lam):
    stats, covariance = _problem(seed)
    result = solve_weights(stats, covariance, lam)
    assert result.alpha.shape == (4,)
    assert np.all(result.alpha >= 0) and result.alpha.sum() == pytest.approx(1.0, abs=1e-12)
    assert result.converged
    assert result.objective == pytest.approx(_objective(stats, covariance, lam, result.alpha), rel=1e-10)
    candidates = np.random.default_rng(seed).dirichlet(np.ones(4), size=150)
    best_sampled = min(_objective(stats, covariance, lam, a) for a in candidates)
    assert result.objective <= best_sampled + 1e-9


def test_kkt_conditions_at_the_h_score_optimum():
    stats, _ = _problem(3, m=5)
    result = solve_weights(stats, None, 0.0, SolverSettings(tolerance=1e-12, max_iterations=2000))
    alpha = torch.tensor(result.alpha, requires_grad=True)
    (grad,) = torch.autograd.grad(-ensemble_h_score_torch(stats, alpha), alpha)
    support = result.alpha > 1e-4
    level = grad[support].mean()
    # On the support the gradient is constant; off it, it is not lower (no descent direction).
    assert torch.allclose(
        grad[support], level.expand(int(support.sum())), atol=1e-4 * max(1.0, abs(float(level)))
    )
    assert bool(torch.all(grad[~support] >= level - 1e-6))


def test_history_decreases_and_result_is_deterministic():
    stats, covariance = _problem(4)
    first = solve_weights(stats, covariance, 1.0, SolverSettings(random_starts=3, seed=7))
    second = solve_weights(stats, covariance, 1.0, SolverSettings(random_starts=3, seed=7))
    np.testing.assert_array_equal(first.alpha, second.alpha)
    assert first.history == second.history and first.iterations == second.iterations
    assert all(b <= a + 1e-12 for a, b in zip(first.history, first.history[1:]))


def test_lambda_zero_ignores_gradients_and_m_one_works():
    stats, covariance = _problem(5)
    np.testing.assert_allclose(
        solve_weights(stats, None, 0.0).alpha, solve_weights(stats, covariance, 0.0).alpha
    )
    single = solve_weights(stats.subset([2]), covariance[:, [2]][:, :, [2]], 3.0)
    assert single.alpha.tolist() == [1.0] and single.alignment == 0.0 and single.converged
    assert single.h_score == pytest.approx(ensemble_h_score(stats.subset([2]), [1.0]))


def test_large_lambda_favours_alignment():
    stats, covariance = _problem(6)
    loose = solve_weights(stats, covariance, 0.0)
    tight = solve_weights(stats, covariance, 1e4, SolverSettings(max_iterations=3000))
    assert alignment_loss(covariance, tight.alpha) <= alignment_loss(covariance, loose.alpha) + 1e-15
    assert tight.h_score <= loose.h_score + 1e-12


def test_non_convergence_warns():
    stats, covariance = _problem(7)
    with pytest.warns(SimplexConvergenceWarning, match="max_iterations=2"):
        result = solve_weights(stats, covariance, 1.0, SolverSettings(max_iterations=2))
    assert not result.converged and result.iterations == 2


def test_converged_run_does_not_warn():
    stats, _ = _problem(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SimplexConvergenceWarning)
        solve_weights(stats, None, 0.0)


@pytest.mark.parametrize(
    ("lam", "covariance", "settings_", "match"),
    [
        (-1.0, "ok", SolverSettings(), r"lam must be a finite number >= 0, but got -1.0"),
        (float("nan"), "ok", SolverSettings(), r"lam must be a finite number"),
        (1.0, None, SolverSettings(), r"covariance is required when lam > 0"),
        (1.0, "wrong", SolverSettings(), r"covariance.shape must be \(p, 4, 4\)"),
        (0.0, "ok", SolverSettings(vertex_weight=1.0), r"vertex_weight must be in \(0, 1\)"),
        (0.0, "ok", SolverSettings(max_iterations=0), r"max_iterations must be >= 1"),
    ],
)
def test_bad_inputs(lam, covariance, settings_, match):
    stats, good = _problem(9)
    chosen = {"ok": good, "wrong": good[:, :2, :2], None: None}[covariance]
    with pytest.raises(InvalidValueError, match=match):
        solve_weights(stats, chosen, lam, settings_)


def test_baseline_weightings():
    np.testing.assert_allclose(uniform_weights(4), [0.25] * 4)
    np.testing.assert_allclose(h_score_weights([1.0, 3.0, 0.0, -1e-12]), [0.25, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(h_score_weights([0.0, 0.0]), [0.5, 0.5])
    with pytest.raises(InvalidValueError, match="scores must be a finite"):
        h_score_weights([np.nan, 1.0])
    with pytest.raises(InvalidValueError, match="num_prompts"):
        uniform_weights(0)


def test_h_weight_zero_minimises_alignment_alone():
    stats, covariance = _problem(7)
    alone = solve_weights(stats, covariance, 1.0, SolverSettings(max_iterations=3000), h_weight=0.0)
    rng = np.random.default_rng(0)
    for alpha in rng.dirichlet(np.ones(stats.num_prompts), size=200):
        assert alignment_loss(covariance, alone.alpha) <= alignment_loss(covariance, alpha) + 1e-12
    assert np.isclose(alone.objective, alone.alignment)  # no H term in the objective
    with pytest.raises(InvalidValueError, match="h_weight is 0"):
        solve_weights(stats, covariance, 0.0, h_weight=0.0)
    with pytest.raises(InvalidValueError, match="h_weight"):
        solve_weights(stats, covariance, 1.0, h_weight=-1.0)
