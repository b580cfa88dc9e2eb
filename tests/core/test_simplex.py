"""The simplex solver: known optima, KKT certificates, starts, determinism, edge cases and errors."""

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
    gradient_second_moment,
    h_score_weights,
    minimize_on_simplex,
    solve_weights,
    solver_starts,
    uniform_weights,
    update_gradient_moments,
)
from hgprompt_ray.errors import InvalidValueError
from tests.core.references import class_structured_features, tllib_regularized_h_score


def _moments(seed=0, m=4, n=120, p=10):
    rng = np.random.default_rng([seed, 1])
    gradients = rng.normal(size=(1, m, p)) + rng.normal(size=(n, m, p)) * rng.uniform(0.3, 3.0, size=(1, m, 1))
    return update_gradient_moments(empty_gradient_moments(m, p), gradients)


def _problem(seed=0, m=4, n=120, d=6, c=4, p=10):
    rng = np.random.default_rng(seed)
    features, labels = class_structured_features(rng, m, n, d, c)
    return ensemble_statistics(features, labels), gradient_second_moment(_moments(seed, m, n, p))


def _objective(stats, second_moment, lam, alpha):
    return -ensemble_h_score(stats, alpha) + lam * alignment_loss(second_moment, alpha) / alignment_scale(
        second_moment
    )


def _gap(stats, second_moment, lam, alpha):
    """Frank-Wolfe gap from an independent autograd of the objective."""
    point = torch.tensor(alpha, requires_grad=True)
    scale = alignment_scale(second_moment)
    r = torch.from_numpy(second_moment)
    v = torch.einsum("ij,pjk,ik->pi", torch.eye(len(alpha)) - point, r, torch.eye(len(alpha)) - point)
    vbar = v @ point
    align = ((v - vbar[:, None]) ** 2).sum() / len(alpha)
    value = -ensemble_h_score_torch(stats, point) + lam * align / scale
    (grad,) = torch.autograd.grad(value, point)
    return float((grad @ point.detach() - grad.min()).clamp_min(0.0))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.sampled_from([0.0, 0.5, 5.0]))
def test_weights_on_simplex_kkt_certified_and_no_worse_than_any_sampled_point(seed, lam):
    stats, second_moment = _problem(seed)
    result = solve_weights(stats, second_moment, lam)
    assert result.alpha.shape == (4,)
    assert np.all(result.alpha >= 0) and result.alpha.sum() == pytest.approx(1.0, abs=1e-12)
    assert result.converged
    assert result.kkt_gap <= 1e-7 * max(1.0, abs(result.objective))
    assert result.kkt_gap == pytest.approx(_gap(stats, second_moment, lam, result.alpha), abs=1e-9)
    assert result.objective == pytest.approx(_objective(stats, second_moment, lam, result.alpha), rel=1e-10)
    candidates = np.random.default_rng(seed).dirichlet(np.ones(4), size=150)
    best_sampled = min(_objective(stats, second_moment, lam, a) for a in candidates)
    assert result.objective <= best_sampled + 1e-9


def test_result_reports_raw_and_normalised_alignment():
    stats, _ = _problem(1)
    moments = _moments(1)
    second_moment = gradient_second_moment(moments)
    result = solve_weights(stats, second_moment, 2.0)
    scale = alignment_scale(second_moment)
    assert result.alignment_scale == pytest.approx(scale, rel=1e-12)
    assert result.raw_alignment == pytest.approx(alignment_loss(moments, result.alpha), rel=1e-10)
    assert result.alignment == pytest.approx(result.raw_alignment / scale, rel=1e-12)
    assert result.objective == pytest.approx(-result.h_score + 2.0 * result.alignment, rel=1e-12)
    from_moments = solve_weights(stats, moments, 2.0)  # the moments are accepted as they are
    np.testing.assert_allclose(from_moments.alpha, result.alpha, rtol=0, atol=1e-12)
    raw = solve_weights(stats, second_moment, 2.0, SolverSettings(normalize_alignment=False))
    assert raw.alignment_scale == 1.0 and raw.alignment == raw.raw_alignment
    fixed = solve_weights(stats, second_moment, 2.0, SolverSettings(alignment_scale=3.0 * scale))
    assert fixed.alignment_scale == 3.0 * scale
    assert fixed.alignment == pytest.approx(fixed.raw_alignment / (3.0 * scale), rel=1e-12)


def test_standard_starts_are_uniform_and_every_vertex():
    starts = solver_starts(3, SolverSettings())
    np.testing.assert_array_equal(starts, np.vstack([np.full(3, 1 / 3), np.eye(3)]))
    with_random = solver_starts(3, SolverSettings(random_starts=2, seed=5))
    assert with_random.shape == (6, 3)
    np.testing.assert_allclose(with_random[4:], np.random.default_rng(5).dirichlet(np.ones(3), size=2))
    assert solver_starts(3, SolverSettings(vertex_starts=False)).shape == (1, 3)


def _vertex_problem(seed=0, n=150, d=5, c=3):
    """Prompt 1 = prompt 0 with its class means inverted past zero: H is largest at e_0.

    Along the edge, f = f_0 - 1.5 t m(y) (m(y) the class mean of f_0), so the class signal
    scales by (1 - 1.5 t): H falls from e_0, is ~0 at t = 2/3 and rises again to a *local*
    optimum at e_1 with a quarter of the signal. The global optimum is the vertex e_0.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    f0 = rng.normal(size=(c, d))[labels] * 1.5 + rng.normal(size=(n, d))
    class_means = np.stack([f0[labels == k].mean(axis=0) for k in range(c)])[labels] - f0.mean(axis=0)
    f1 = f0 - 1.5 * class_means
    return ensemble_statistics(np.stack([f0, f1]), labels), f0, labels


def test_reaches_a_vertex_optimum_exactly_and_not_the_local_one():
    stats, f0, labels = _vertex_problem()
    result = solve_weights(stats, None, 0.0)
    expected = -tllib_regularized_h_score(f0, labels)
    assert result.objective == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(result.alpha, [1.0, 0.0], atol=1e-6)
    assert result.converged and result.kkt_gap <= 1e-7 * abs(expected)
    # from e_1 alone (a local optimum) mirror descent cannot find it: the vertex starts matter
    local = solve_weights(stats, None, 0.0, initial=[1e-9, 1.0])
    assert local.objective > expected + 0.1


def test_reaches_the_interior_optimum_of_two_prompts_alignment_alone():
    """M = 2: L_align vanishes only at (1/2, 1/2) (alignment module docstring)."""
    _, second_moment = _problem(2, m=2)
    stats, _ = _problem(2, m=2)
    result = solve_weights(stats, second_moment, 1.0, SolverSettings(tolerance=1e-12), h_weight=0.0)
    assert result.objective == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(result.alpha, [0.5, 0.5], atol=1e-3)
    assert result.converged


def test_reaches_the_interior_optimum_of_a_symmetric_alignment():
    """R_c = a_c I + b_c 11^T: v_i = a_c ||e_i - alpha||^2 is equal for all i only at uniform."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.5, 2.0, size=7), rng.uniform(0.0, 1.0, size=7)
    second_moment = a[:, None, None] * np.eye(5) + b[:, None, None] * np.ones((5, 5))
    features, labels = class_structured_features(rng, 5, 60, 4, 3)
    stats = ensemble_statistics(features, labels)
    result = solve_weights(stats, second_moment, 1.0, SolverSettings(tolerance=1e-12), h_weight=0.0)
    assert result.objective == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(result.alpha, np.full(5, 0.2), atol=1e-3)


def _quadratic(q, c):
    q_t, c_t = torch.from_numpy(q), torch.from_numpy(c)

    def objective(alpha):
        diff = alpha - c_t
        return 0.5 * torch.einsum("si,ij,sj->s", diff, q_t, diff)

    def value(alpha):
        diff = np.asarray(alpha) - c
        return 0.5 * float(diff @ q @ diff)

    return objective, value


def _project_to_simplex(point):
    """Euclidean projection onto the simplex (sort-based, Held et al. 1974)."""
    ordered = np.sort(point)[::-1]
    cumulative = np.cumsum(ordered) - 1.0
    rho = np.nonzero(ordered - cumulative / np.arange(1, point.size + 1) > 0)[0][-1]
    return np.maximum(point - cumulative[rho] / (rho + 1), 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_convex_quadratic_with_an_interior_minimiser(seed):
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(6, 6))
    q = root @ root.T + 0.05 * np.eye(6)  # positive definite, ill-conditioned
    centre = rng.dirichlet(np.full(6, 3.0))  # interior: the minimiser, objective 0
    objective, value = _quadratic(q, centre)
    result = minimize_on_simplex(objective, solver_starts(6, SolverSettings()), SolverSettings(tolerance=1e-8))
    assert result.converged and result.kkt_gap <= 1e-8
    assert value(result.alpha) <= 1e-6 and result.objective == pytest.approx(value(result.alpha), abs=1e-15)
    np.testing.assert_allclose(result.alpha, centre, atol=1e-3)


@pytest.mark.parametrize(
    "point", [np.array([0.9, 0.6, -0.2, -0.3]), np.array([2.0, -1.0, 0.5, -1.0]), np.array([0.2, 0.1, 0.5, 0.1])]
)
def test_projection_quadratic_reaches_the_face_optimum(point):
    """min ||alpha - c||^2 / 2 is the projection of c: an edge, a vertex, or an interior point."""
    objective, value = _quadratic(np.eye(4), point)
    expected = _project_to_simplex(point)
    result = minimize_on_simplex(objective, solver_starts(4, SolverSettings()), SolverSettings(tolerance=1e-8))
    assert result.converged
    assert value(result.alpha) - value(expected) <= 1e-6
    np.testing.assert_allclose(result.alpha, expected, atol=1e-4)


def _kkt_on_face(objective, alpha, tolerance):
    """Independent KKT check at alpha: the gradient is level on the support and not lower off it."""
    point = torch.tensor(alpha[None, :], requires_grad=True)
    (grad,) = torch.autograd.grad(objective(point).sum(), point)
    grad = grad[0]
    support = alpha > 1e-8
    level = float(grad[support].mean())
    np.testing.assert_allclose(grad[support].numpy(), level, atol=tolerance)
    assert bool(torch.all(grad[~support] - level >= -tolerance))  # a zero weight: shifted gradient >= 0


@pytest.mark.parametrize("crushed", [1e-30, 1e-80])
def test_a_start_with_a_crushed_support_weight_converges_quickly(crushed):
    """Mirror descent regrows a weight only by exp(eta * gap) a step: from 1e-30 or 1e-80 that
    took hundreds of iterations (issue #19). The Frank-Wolfe step toward the least-gradient
    vertex gives it back its share at once; the face optimum is then reached and certified."""
    objective, value = _quadratic(np.diag([1.0, 3.0, 0.5, 2.0, 1.0]), np.array([0.05, 0.45, 0.4, -0.3, -0.2]))
    start = np.array([[1.0 - 4 * crushed, crushed, crushed, crushed, crushed]])
    result = minimize_on_simplex(objective, start, SolverSettings(tolerance=1e-10, max_iterations=400))
    assert result.converged and result.kkt_gap <= 1e-10
    assert result.iterations <= 100  # mirror descent alone: 125 (1e-30), 165 (1e-80); now 75 both
    solution = minimize_on_simplex(
        objective, solver_starts(5, SolverSettings()), SolverSettings(tolerance=1e-12, max_iterations=2000)
    )
    np.testing.assert_allclose(result.alpha, solution.alpha, atol=1e-6)
    np.testing.assert_allclose(result.alpha, [0.08, 0.46, 0.46, 0.0, 0.0], atol=1e-6)  # a face optimum
    assert value(result.alpha) <= value(solution.alpha) + 1e-9
    _kkt_on_face(objective, result.alpha, 1e-8)


def test_frank_wolfe_steps_leave_a_start_with_large_weights_alone():
    """A start whose least-gradient prompt keeps a real weight takes mirror steps only: its path
    is the same whether or not another start in the batch needs Frank-Wolfe steps."""
    objective, _ = _quadratic(np.diag([1.0, 3.0, 0.5, 2.0, 1.0]), np.array([0.05, 0.45, 0.4, -0.3, -0.2]))
    plain = np.array([[0.2, 0.2, 0.2, 0.2, 0.2]])
    crushed = np.array([[1.0 - 4e-30, 1e-30, 1e-30, 1e-30, 1e-30]])
    settings_ = SolverSettings(tolerance=1e-10, merge_distance=0.0)
    alone = minimize_on_simplex(objective, plain, settings_)
    together = minimize_on_simplex(objective, np.concatenate([plain, crushed]), settings_)
    assert together.points is not None
    np.testing.assert_array_equal(together.points[0], alone.alpha)


def test_starts_that_meet_are_merged_into_the_better_one():
    """Starts in one basin stop once within merge_distance of a better start: fewer evaluations,
    the same optimum, and the merged starts stopped near it."""
    stats, second_moment = _problem(4, m=5)
    settings_ = SolverSettings(random_starts=6, seed=1, tolerance=1e-9)
    merged = solve_weights(stats, second_moment, 1.0, settings_)
    separate = solve_weights(stats, second_moment, 1.0, settings_._replace(merge_distance=0.0))
    assert merged.converged and separate.converged
    assert merged.objective <= separate.objective + 1e-9 * abs(separate.objective)
    np.testing.assert_allclose(merged.alpha, separate.alpha, atol=1e-4)
    assert merged.iterations <= separate.iterations
    assert merged.points is not None and separate.points is not None
    moved = np.abs(merged.points - separate.points).max(axis=1) > 0
    assert moved.any()  # some start stopped early, near the optimum the better one reached
    assert np.abs(merged.points[moved] - merged.alpha).max() <= 1e-3


def test_linear_objective_converges_at_its_vertex_start():
    cost = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    result = minimize_on_simplex(lambda a: a @ cost, solver_starts(3, SolverSettings()), SolverSettings())
    assert result.start == 2 and result.alpha.tolist() == [0.0, 1.0, 0.0]
    assert result.converged and result.kkt_gap == 0.0 and result.objective == pytest.approx(-0.2)


def test_a_step_that_underflows_is_not_convergence():
    """A gradient that never gives descent: every step is rejected until the step underflows."""
    value_weights = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    gradient_weights = -value_weights  # the gradient points the wrong way

    def objective(alpha):
        shown = alpha @ gradient_weights
        return (alpha @ value_weights).detach() + shown - shown.detach()

    result = minimize_on_simplex(objective, np.array([[0.3, 0.3, 0.4]]), SolverSettings(max_iterations=500))
    assert not result.converged and result.kkt_gap > 0.1
    assert result.iterations < 500  # it stopped because the step underflowed, not at the budget
    np.testing.assert_allclose(result.alpha, [0.3, 0.3, 0.4], atol=1e-12)


def test_kkt_conditions_at_the_h_score_optimum():
    stats, _ = _problem(3, m=5)
    result = solve_weights(stats, None, 0.0, SolverSettings(tolerance=1e-12, max_iterations=3000))
    alpha = torch.tensor(result.alpha, requires_grad=True)
    (grad,) = torch.autograd.grad(-ensemble_h_score_torch(stats, alpha), alpha)
    support = result.alpha > 1e-4
    level = grad[support].mean()
    # On the support the gradient is constant; off it, it is not lower (no descent direction).
    assert torch.allclose(
        grad[support], level.expand(int(support.sum())), atol=1e-4 * max(1.0, abs(float(level)))
    )
    assert bool(torch.all(grad[~support] >= level - 1e-6))
    assert result.converged
    assert result.kkt_gap == pytest.approx(float(grad @ alpha.detach() - grad.min()), abs=1e-12)


def test_history_decreases_and_result_is_deterministic():
    stats, second_moment = _problem(4)
    first = solve_weights(stats, second_moment, 1.0, SolverSettings(random_starts=3, seed=7))
    second = solve_weights(stats, second_moment, 1.0, SolverSettings(random_starts=3, seed=7))
    np.testing.assert_array_equal(first.alpha, second.alpha)
    assert first.history == second.history and first.iterations == second.iterations
    assert all(b <= a + 1e-12 * max(1.0, abs(a)) for a, b in zip(first.history, first.history[1:]))


def test_lambda_zero_ignores_gradients_and_m_one_works():
    stats, second_moment = _problem(5)
    np.testing.assert_allclose(
        solve_weights(stats, None, 0.0).alpha, solve_weights(stats, second_moment, 0.0).alpha
    )
    single = solve_weights(stats.subset([2]), second_moment[:, [2]][:, :, [2]], 3.0)
    assert single.alpha.tolist() == [1.0] and single.alignment == 0.0 and single.converged
    assert single.kkt_gap == 0.0
    assert single.h_score == pytest.approx(ensemble_h_score(stats.subset([2]), [1.0]))


def test_large_lambda_favours_alignment():
    stats, second_moment = _problem(6)
    loose = solve_weights(stats, second_moment, 0.0)
    tight = solve_weights(stats, second_moment, 1e4, SolverSettings(max_iterations=3000))
    assert alignment_loss(second_moment, tight.alpha) <= alignment_loss(second_moment, loose.alpha) + 1e-15
    assert tight.h_score <= loose.h_score + 1e-12


def test_non_convergence_warns():
    stats, second_moment = _problem(7)
    with pytest.warns(SimplexConvergenceWarning, match="max_iterations=2"):
        result = solve_weights(stats, second_moment, 1.0, SolverSettings(max_iterations=2))
    assert not result.converged and result.iterations == 2 and result.kkt_gap > 0


def test_converged_run_does_not_warn():
    stats, _ = _problem(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SimplexConvergenceWarning)
        solve_weights(stats, None, 0.0)


@pytest.mark.parametrize(
    ("lam", "matrix", "settings_", "match"),
    [
        (-1.0, "ok", SolverSettings(), r"lam must be a finite number >= 0, but got -1.0"),
        (float("nan"), "ok", SolverSettings(), r"lam must be a finite number"),
        (1.0, None, SolverSettings(), r"covariance is required when lam > 0"),
        (1.0, "wrong", SolverSettings(), r"covariance.shape must be \(p, 4, 4\)"),
        (0.0, "ok", SolverSettings(vertex_weight=1.0), r"vertex_weight must be in \(0, 1\)"),
        (0.0, "ok", SolverSettings(max_iterations=0), r"max_iterations must be >= 1"),
        (0.0, "ok", SolverSettings(tolerance=0.0), r"settings.tolerance must be positive"),
        (1.0, "ok", SolverSettings(alignment_scale=-1.0), r"settings.alignment_scale must be positive"),
        (0.0, "ok", SolverSettings(merge_distance=-1.0), r"settings.merge_distance must be a finite"),
    ],
)
def test_bad_inputs(lam, matrix, settings_, match):
    stats, good = _problem(9)
    chosen = {"ok": good, "wrong": good[:, :2, :2], None: None}[matrix]
    with pytest.raises(InvalidValueError, match=match):
        solve_weights(stats, chosen, lam, settings_)


def test_bad_starts():
    with pytest.raises(InvalidValueError, match="starts must be"):
        minimize_on_simplex(lambda a: a.sum(dim=1), np.array([[0.5, 0.6]]))


def test_baseline_weightings():
    np.testing.assert_allclose(uniform_weights(4), [0.25] * 4)
    np.testing.assert_allclose(h_score_weights([1.0, 3.0, 0.0, -1e-12]), [0.25, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(h_score_weights([0.0, 0.0]), [0.5, 0.5])
    with pytest.raises(InvalidValueError, match="scores must be a finite"):
        h_score_weights([np.nan, 1.0])
    with pytest.raises(InvalidValueError, match="num_prompts"):
        uniform_weights(0)


def test_h_weight_zero_minimises_alignment_alone():
    stats, second_moment = _problem(7)
    alone = solve_weights(stats, second_moment, 1.0, SolverSettings(max_iterations=3000), h_weight=0.0)
    rng = np.random.default_rng(0)
    for alpha in rng.dirichlet(np.ones(stats.num_prompts), size=200):
        assert alignment_loss(second_moment, alone.alpha) <= alignment_loss(second_moment, alpha) + 1e-12
    assert np.isclose(alone.objective, alone.alignment)  # no H term in the objective
    with pytest.raises(InvalidValueError, match="h_weight is 0"):
        solve_weights(stats, second_moment, 0.0, h_weight=0.0)
    with pytest.raises(InvalidValueError, match="h_weight"):
        solve_weights(stats, second_moment, 1.0, h_weight=-1.0)
