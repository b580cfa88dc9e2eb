"""Ensemble weights on the simplex: min_alpha  -H(alpha) + lambda * L_align(alpha) / scale.

Objective. H is the exact ensemble H-score (``ensemble_hscore``), regularised (Ledoit-Wolf) by
default; L_align is the paper's uncentred gradient alignment (``alignment``). lambda is used as
given, with one fixed, documented normalisation (``SolverSettings.normalize_alignment``, on by
default): L_align is divided by ``scale = alignment_scale(R) = sum_c (tr(R_c) / M)^2``, computed
once per solve from the same uncentred second-moment matrix R the loss uses (or fixed by the
caller with ``SolverSettings.alignment_scale``, e.g. from the whole prompt library so that lambda
means the same for every subset). The ratio is invariant to rescaling the gradients, whose scale
varies by orders of magnitude between backbones, so lambda's search range is stated in units of
"L_align per squared mean gradient second moment" and transfers between targets. The raw
L_align and the divisor are reported next to the normalised value (:class:`SimplexResult`).
With ``normalize_alignment=False`` the divisor is 1 and lambda multiplies the raw L_align.

Evaluation. The objective and its gradient come from ``ensemble_objective.EnsembleObjective``:
the same numbers as ``ensemble_h_score_torch`` and ``alignment_loss_torch`` (the tests compare
them), computed for all starts at once with the gradient written out, near their FLOP count.

Method (deterministic; all starts run in lockstep as one batched evaluation):

* Starts: the uniform point and every vertex e_i (always, unless ``vertex_starts=False``, which
  only single-start comparisons such as the solver bench should use), then ``random_starts``
  Dirichlet(1) points drawn from ``seed``. A vertex whose KKT gap is already small is a
  stationary point and converged as it is; any other vertex is moved inside, to weight
  ``vertex_weight`` on its prompt and the rest spread evenly (mirror descent cannot leave a
  face of the simplex). The lowest final objective wins (ties: the smallest KKT gap).
* Mirror descent with the entropy mirror map (exponentiated gradient):
  alpha <- alpha * exp(-eta * grad) / Z keeps alpha on the simplex without projections.
  eta starts at ``initial_step / max_i (grad_i - min grad)`` (so the first step moves
  log-weights by at most ``initial_step``, whatever the objective's scale) and is adapted per
  start by backtracking: a step is accepted when the Bregman sufficient decrease condition
  f(new) <= f(alpha) + <grad, new - alpha> + KL(new || alpha) / eta holds (up to a few ulps of
  |f|), or, where f changes less than its rounding noise (within 1e-12 |f|), when the gradient
  at the new point shows the step overshot the minimum along its direction by less than half
  (<grad(new), d> <= -<grad, d> / 2, d = new - alpha; function values alone cannot resolve a
  KKT gap below ~sqrt(eps)). After an accepted step eta grows to the larger of 1.5 eta and a
  Barzilai-Borwein step in log-weight space (capped at 1000 eta), which long flat valleys
  (near-duplicate prompts) need; after a rejected one it shrinks by 0.3.
* Frank-Wolfe steps where mirror descent is slow. Mirror descent regrows a weight only by a
  factor exp(eta * gap) per step, so a long early step that leaves a prompt of the optimum's
  support at 1e-30 costs hundreds of iterations (issue #19: one vertex start at M = 11 ran 285
  iterations, the others about 100). When a start's least-gradient prompt i (its Frank-Wolfe
  vertex) weighs below 1e-4, the step is alpha + gamma (e_i - alpha) instead, whose slope is
  minus the KKT gap; accepted by the Armijo test with constant 1/2 (or the rounding-noise test
  above), gamma from the secant of the slopes at both ends of the step (starting at 1 / M).
  A start whose Frank-Wolfe vertex keeps a real weight never takes one, so its path is unchanged.
* Merging (``SolverSettings.merge_distance``, 1e-4 by default): a running start within that
  max-norm distance of a running or converged start with a lower objective stops, as multi-level
  single linkage skips a local search near a better point: the two are in one basin and the
  better one carries on. The best start of each cluster is never stopped; 0 turns it off.
* Convergence is a certificate, not a slowdown: the Frank-Wolfe (KKT) gap
  gap(alpha) = <grad, alpha> - min_i grad_i >= 0 is zero exactly at first-order stationary
  points of the simplex-constrained problem (and bounds f(alpha) - min f for convex f). A start
  has converged when gap <= ``tolerance * max(1, |f(alpha)|)``.
* A start whose step underflows (eta * max_i (grad_i - min grad), or gamma, below 1e-14, after
  ``patience`` consecutive iterations without a strict decrease of f) stops, but has *not*
  converged unless its gap is small. A :class:`SimplexConvergenceWarning` is issued when the
  winning start did not converge (budget spent, or stalled).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.core.alignment import GradientMoments, alignment_scale, gradient_second_moment
from hgprompt_ray.core.ensemble_hscore import EnsembleHStatistics
from hgprompt_ray.core.ensemble_objective import EnsembleObjective
from hgprompt_ray.core.simplex_minimize import (
    SimplexConvergenceWarning,
    SimplexMinimum,
    SolverSettings,
    _check_settings,
    kkt_gap,
    minimize_on_simplex,
    solver_starts,
    uniform_weights,
)
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "SimplexConvergenceWarning",
    "SimplexMinimum",
    "SimplexResult",
    "SolverSettings",
    "h_score_weights",
    "kkt_gap",
    "minimize_on_simplex",
    "solver_starts",
    "solve_weights",
    "uniform_weights",
]


class SimplexResult(NamedTuple):
    """Outcome of :func:`solve_weights`.

    Attributes:
        alpha: the weights, (M,) float64 on the simplex.
        objective: -h_weight * H + lambda * alignment at alpha.
        h_score: H(alpha).
        alignment: L_align(alpha) as used in the objective: raw_alignment / alignment_scale.
        iterations: batched evaluations performed.
        converged: whether the winning start's KKT gap is small (``SolverSettings.tolerance``).
        history: the winning start's objective after each accepted step.
        start: index of the winning start (:func:`solver_starts` order: 0 = uniform, 1..M =
            vertices, then random; 0 for a warm start).
        kkt_gap: the Frank-Wolfe gap <grad f, alpha> - min_i (grad f)_i at alpha.
        raw_alignment: L_align(alpha) by the paper's formula, not normalised.
        alignment_scale: the divisor of the objective's alignment term (1.0 when not normalised).
        points: every start's final point, (S, M): pass them as ``initial`` to continue every
            start in a later stage, not only the winner.
    """

    alpha: np.ndarray
    objective: float
    h_score: float
    alignment: float
    iterations: int
    converged: bool
    history: list[float]
    start: int
    kkt_gap: float
    raw_alignment: float
    alignment_scale: float
    points: np.ndarray | None = None


def h_score_weights(scores: Any) -> np.ndarray:
    """Per-source H-scores normalised to the simplex (H-ensemble-style weights).

    Negative scores (possible only through numerical noise) count as 0; if every score is 0
    the weights are uniform.

    Shape:
        scores: (M,); returns (M,).
    """
    values = to_numpy(scores, "scores").astype(np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise InvalidValueError(invalid_value("scores", values.tolist(), "must be a finite (M,) vector", ""))
    clipped = np.clip(values, 0.0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else uniform_weights(values.size)


def _check(stats: EnsembleHStatistics, covariance: Any, lam: float, settings: SolverSettings) -> None:
    if (
        isinstance(lam, bool)
        or not isinstance(lam, (int, float, np.floating))
        or not np.isfinite(lam)
        or lam < 0
    ):
        raise InvalidValueError(
            invalid_value("lam", lam, "must be a finite number >= 0", "Use 0 for the H-score alone.")
        )
    if lam > 0 and covariance is None:
        raise InvalidValueError(
            invalid_value(
                "covariance",
                None,
                "is required when lam > 0",
                "Pass the gradient moments or gradient_second_moment(moments).",
            )
        )
    if covariance is not None:
        shape = (
            (covariance.num_coordinates, covariance.num_prompts, covariance.num_prompts)
            if isinstance(covariance, GradientMoments)
            else tuple(np.shape(covariance))
        )
        expected = (stats.num_prompts, stats.num_prompts)
        if len(shape) != 3 or shape[1:] != expected:
            raise InvalidValueError(
                invalid_value("covariance.shape", shape, f"must be (p, {expected[0]}, {expected[1]})", "")
            )
    _check_settings(settings)


def solve_weights(
    stats: EnsembleHStatistics,
    covariance: Any | None = None,
    lam: float = 0.0,
    settings: SolverSettings | None = None,
    initial: Any | None = None,
    h_weight: float = 1.0,
) -> SimplexResult:
    """Minimise -h_weight * H(alpha) + lambda * L_align(alpha) / scale over the simplex.

    Args:
        stats: ensemble H-score statistics of the M prompts (``ensemble_statistics``).
        covariance: the gradient statistics of L_align: the streamed ``GradientMoments`` of
            the M prompts, or their precomputed uncentred second moments R
            (``gradient_second_moment``; a prompt subset of it is fine). The name is historical:
            it is R, not the covariance. May be None when ``lam == 0``.
        lam: lambda >= 0, in the units of the module docstring's normalisation.
        settings: solver settings (defaults: ``SolverSettings()``).
        initial: warm starts with positive entries, (M,) or (S, M); when given they are the only
            starts (e.g. a previous stage's ``points``, so a staged solve continues every start,
            as the search's trials do).
        h_weight: weight of the H-score term; 1 in HGPrompt, 0 for the alignment-only ablation
            (then lambda must be positive).

    Shape:
        covariance: (p, M, M) (or moments of M prompts); initial: (M,) or (S, M).

    Returns:
        The weights, the objective's terms (normalised and raw), the KKT gap and convergence.
    """
    settings = SolverSettings() if settings is None else settings
    _check(stats, covariance, lam, settings)
    if isinstance(h_weight, bool) or not isinstance(h_weight, (int, float)) or not h_weight >= 0:
        raise InvalidValueError(invalid_value("h_weight", h_weight, "must be a number >= 0", "Use 1 or 0."))
    if h_weight == 0 and not lam > 0:
        raise InvalidValueError(
            invalid_value("lam", lam, "must be positive when h_weight is 0 (the objective would be 0)", "")
        )
    num_prompts = stats.num_prompts
    matrix = None
    scale = 1.0
    if covariance is not None and lam > 0:
        if isinstance(covariance, GradientMoments):
            matrix = gradient_second_moment(covariance)
        else:  # a copy: Ray's zero-copy arrays are read-only
            matrix = np.array(to_numpy(covariance, "covariance"), dtype=np.float64)
        if settings.normalize_alignment:
            fixed = settings.alignment_scale
            scale = float(fixed) if fixed is not None else (alignment_scale(matrix) or 1.0)
    objective = EnsembleObjective(stats, matrix, lam, scale, h_weight, settings.regularized)
    if initial is None:
        starts = solver_starts(num_prompts, settings)
    else:
        start = to_numpy(initial, "initial").astype(np.float64)
        start = start[None, :] if start.ndim == 1 else start
        if (
            start.ndim != 2
            or start.shape[1] != num_prompts
            or not np.all(np.isfinite(start))
            or np.any(start <= 0)
        ):
            raise InvalidValueError(
                invalid_value(
                    "initial",
                    np.round(start, 4).tolist(),
                    f"must be {num_prompts} positive weights per row",
                    "Pass a previous result's alpha or points (floored above 0).",
                )
            )
        starts = start / start.sum(axis=1, keepdims=True)
    minimum = minimize_on_simplex(objective, starts, settings)
    with torch.no_grad():
        value, h, raw = objective.terms(torch.from_numpy(minimum.alpha[None, :].copy()))
    if not minimum.converged:
        warnings.warn(
            f"solve_weights: the best start stopped with KKT gap {minimum.kkt_gap:.3g} above "
            f"tolerance={settings.tolerance} x max(1, |objective|) after {minimum.iterations} of "
            f"max_iterations={settings.max_iterations} evaluations. Raise max_iterations, or loosen "
            "tolerance if the step underflowed (objective at its numerical floor).",
            SimplexConvergenceWarning,
            stacklevel=2,
        )
    return SimplexResult(
        alpha=minimum.alpha,
        objective=float(value[0]),
        h_score=float(h[0]),
        alignment=float(raw[0]) / scale,
        iterations=minimum.iterations,
        converged=minimum.converged,
        history=minimum.history,
        start=minimum.start,
        kkt_gap=minimum.kkt_gap,
        raw_alignment=float(raw[0]),
        alignment_scale=scale,
        points=minimum.points,
    )
