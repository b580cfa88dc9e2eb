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
* Convergence is a certificate, not a slowdown: the Frank-Wolfe (KKT) gap
  gap(alpha) = <grad, alpha> - min_i grad_i >= 0 is zero exactly at first-order stationary
  points of the simplex-constrained problem (and bounds f(alpha) - min f for convex f). A start
  has converged when gap <= ``tolerance * max(1, |f(alpha)|)``.
* A start whose step underflows (eta * max_i (grad_i - min grad) below 1e-14, after
  ``patience`` consecutive iterations without a strict decrease of f) stops, but has *not*
  converged unless its gap is small. A :class:`SimplexConvergenceWarning` is issued when the
  winning start did not converge (budget spent, or stalled).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.core.alignment import (
    GradientMoments,
    alignment_loss_torch,
    alignment_scale,
    gradient_second_moment,
)
from hgprompt_ray.core.ensemble_hscore import EnsembleHStatistics, TorchEnsembleH, ensemble_h_score_torch
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

_UNDERFLOW = 1e-14
"""A proposed log-weight change below this (eta * max shifted gradient) cannot move alpha."""
_TINY = 1e-300
"""Floor of a weight inside the solver: keeps log(alpha) finite and lets a weight regrow."""
_ROUNDING = 4e-16
"""Relative rounding allowance of the sufficient decrease test (a few float64 ulps)."""
_NOISE = 1e-12
"""Relative increase of f tolerated as evaluation noise when the gradients show no overshoot."""


class SimplexConvergenceWarning(UserWarning):
    """The weight solver stopped without a small KKT gap (budget spent or step underflow)."""


class SolverSettings(NamedTuple):
    """Settings of :func:`solve_weights` and :func:`minimize_on_simplex`.

    Attributes:
        max_iterations: batched objective-and-gradient evaluations at most.
        tolerance: converged when the KKT gap <= tolerance * max(1, |objective|).
        patience: consecutive iterations without a strict decrease of the objective, with an
            underflowing step, after which a start stops as stalled (not converged).
        initial_step: the first step's largest change of a log-weight.
        vertex_starts: start from every vertex too (standard; turn off only for single-start
            comparisons).
        vertex_weight: weight on its prompt when a vertex start that is not stationary moves
            inside.
        random_starts: extra Dirichlet(1) starts.
        seed: seed of the random starts.
        regularized: Ledoit-Wolf H-score (True) or the pinv form.
        normalize_alignment: divide L_align by the fixed scale of the module docstring, so
            lambda is in units of L_align / alignment_scale (False: raw L_align).
        alignment_scale: that divisor, fixed by the caller (e.g. ``alignment_scale`` of the
            whole library's R, so lambda means the same for every prompt subset); None computes
            it from the matrix passed to the solve. Ignored when ``normalize_alignment`` is off.
    """

    max_iterations: int = 1000
    tolerance: float = 1e-7
    patience: int = 3
    initial_step: float = 1.0
    vertex_starts: bool = True
    vertex_weight: float = 0.9
    random_starts: int = 0
    seed: int = 0
    regularized: bool = True
    normalize_alignment: bool = True
    alignment_scale: float | None = None


class SimplexMinimum(NamedTuple):
    """Outcome of :func:`minimize_on_simplex`.

    Attributes:
        alpha: the best point, (M,) float64 on the simplex.
        objective: the objective there.
        kkt_gap: <grad, alpha> - min_i grad_i there (>= 0; 0 at a stationary point).
        iterations: batched evaluations performed.
        converged: kkt_gap <= tolerance * max(1, |objective|).
        history: the winning start's objective after each accepted step.
        start: index of the winning start (a row of the starts passed).
    """

    alpha: np.ndarray
    objective: float
    kkt_gap: float
    iterations: int
    converged: bool
    history: list[float]
    start: int


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


def uniform_weights(num_prompts: int) -> np.ndarray:
    """alpha_i = 1 / M (the Average baseline)."""
    if not isinstance(num_prompts, (int, np.integer)) or num_prompts < 1:
        raise InvalidValueError(invalid_value("num_prompts", num_prompts, "must be a positive integer", ""))
    return np.full(num_prompts, 1.0 / num_prompts)


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


def solver_starts(num_prompts: int, settings: SolverSettings) -> np.ndarray:
    """The standard starts: uniform, every vertex (unless turned off), then random points.

    Shape:
        returns: (1 + M + random_starts, M) rows on the simplex (1 + random_starts rows
        without vertex starts; one row when M = 1).
    """
    starts = [uniform_weights(num_prompts)]
    if settings.vertex_starts and num_prompts > 1:
        starts.extend(np.eye(num_prompts))
    if settings.random_starts and num_prompts > 1:
        rng = np.random.default_rng(settings.seed)
        starts.extend(rng.dirichlet(np.ones(num_prompts), size=settings.random_starts))
    return np.stack(starts)


def kkt_gap(alpha: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Frank-Wolfe gap <grad, alpha> - min_i grad_i of minimisation on the simplex (clamped >= 0).

    Shape:
        alpha, grad: (S, M); returns (S,).
    """
    return ((grad * alpha).sum(dim=1) - grad.min(dim=1).values).clamp_min(0.0)


def _check_settings(settings: SolverSettings) -> None:
    if not isinstance(settings, SolverSettings):
        raise TypeError(
            invalid_value("settings", type(settings).__name__, "must be SolverSettings", "Build one.")
        )
    if not 0.0 < settings.vertex_weight < 1.0:
        raise InvalidValueError(
            invalid_value("settings.vertex_weight", settings.vertex_weight, "must be in (0, 1)", "")
        )
    for name in ("max_iterations", "patience"):
        if getattr(settings, name) < 1:
            raise InvalidValueError(
                invalid_value(f"settings.{name}", getattr(settings, name), "must be >= 1", "")
            )
    if settings.random_starts < 0:
        raise InvalidValueError(
            invalid_value("settings.random_starts", settings.random_starts, "must be >= 0", "")
        )
    for name in ("tolerance", "initial_step"):
        value = getattr(settings, name)
        if not (np.isfinite(value) and value > 0):
            raise InvalidValueError(invalid_value(f"settings.{name}", value, "must be positive", ""))
    scale = settings.alignment_scale
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        raise InvalidValueError(
            invalid_value(
                "settings.alignment_scale",
                scale,
                "must be positive or None",
                "Use None to compute it from the gradient statistics.",
            )
        )


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
        initial: a warm start (M,) with positive entries; when given it is the only start
            (e.g. to continue a previous solve in stages, as the search's trials do).
        h_weight: weight of the H-score term; 1 in HGPrompt, 0 for the alignment-only ablation
            (then lambda must be positive).

    Shape:
        covariance: (p, M, M) (or moments of M prompts); initial: (M,).

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
    tensors = TorchEnsembleH.from_statistics(stats)
    second_moment = None
    scale = 1.0
    if covariance is not None and lam > 0:
        if isinstance(covariance, GradientMoments):
            matrix = gradient_second_moment(covariance)
        else:  # a copy: Ray's zero-copy arrays are read-only
            matrix = np.array(to_numpy(covariance, "covariance"), dtype=np.float64)
        second_moment = torch.from_numpy(matrix)
        if settings.normalize_alignment:
            fixed = settings.alignment_scale
            scale = float(fixed) if fixed is not None else (alignment_scale(matrix) or 1.0)

    def terms(alpha: torch.Tensor, with_h: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, H, raw L_align) for a batch (S, M)."""
        if with_h:
            h = ensemble_h_score_torch(tensors, alpha, regularized=settings.regularized)
        else:
            h = torch.zeros(alpha.shape[0], dtype=torch.float64)
        if second_moment is None:
            raw = torch.zeros_like(h)
        else:
            raw = alignment_loss_torch(second_moment, alpha)
        return -h_weight * h + (lam / scale) * raw, h, raw

    if initial is None:
        starts = solver_starts(num_prompts, settings)
    else:
        start = to_numpy(initial, "initial").astype(np.float64)
        if start.shape != (num_prompts,) or not np.all(np.isfinite(start)) or np.any(start <= 0):
            raise InvalidValueError(
                invalid_value(
                    "initial",
                    np.round(start, 4).tolist(),
                    f"must be {num_prompts} positive weights",
                    "Pass a previous result's alpha (floored above 0).",
                )
            )
        starts = (start / start.sum())[None, :]
    minimum = minimize_on_simplex(lambda a: terms(a, h_weight != 0)[0], starts, settings)
    with torch.no_grad():
        objective, h, raw = terms(torch.from_numpy(minimum.alpha[None, :].copy()), True)
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
        objective=float(objective[0]),
        h_score=float(h[0]),
        alignment=float(raw[0]) / scale,
        iterations=minimum.iterations,
        converged=minimum.converged,
        history=minimum.history,
        start=minimum.start,
        kkt_gap=minimum.kkt_gap,
        raw_alignment=float(raw[0]),
        alignment_scale=scale,
    )


def _value_and_grad(
    objective: Callable[[torch.Tensor], torch.Tensor], alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    point = alpha.detach().clone().requires_grad_(True)
    value = objective(point)
    if not value.requires_grad:  # an objective that does not depend on alpha
        return value.detach(), torch.zeros_like(point)
    (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad


def minimize_on_simplex(
    objective: Callable[[torch.Tensor], torch.Tensor],
    starts: Any,
    settings: SolverSettings | None = None,
) -> SimplexMinimum:
    """Minimise a differentiable batched objective over the simplex from several starts.

    The method of the module docstring: starts on a face that are not stationary move inside,
    then batched mirror descent with backtracking until each start's KKT gap is small, its
    step underflows, or ``settings.max_iterations`` evaluations are spent. Issues no warning
    (the caller decides); check ``converged``.

    Args:
        objective: maps a batch of weight vectors to their objective values, differentiably
            (float64 torch).
        starts: the starting points, rows on the simplex (non-negative, summing to 1).
        settings: ``max_iterations``, ``tolerance``, ``patience``, ``initial_step`` and
            ``vertex_weight`` are used.

    Shape:
        objective: (S, M) -> (S,); starts: (K, M).
    """
    settings = SolverSettings() if settings is None else settings
    _check_settings(settings)
    points = np.array(to_numpy(starts, "starts"), dtype=np.float64)
    if (
        points.ndim != 2
        or points.shape[0] < 1
        or not np.all(np.isfinite(points))
        or np.any(points < 0)
        or not np.allclose(points.sum(axis=1), 1.0, rtol=0.0, atol=1e-9)
    ):
        raise InvalidValueError(
            invalid_value(
                "starts",
                f"array of shape {points.shape}",
                "must be (K, M) rows of non-negative weights summing to 1",
                "Use solver_starts(M, settings).",
            )
        )
    alpha = torch.from_numpy(points / points.sum(axis=1, keepdims=True))
    num_starts = alpha.shape[0]

    def threshold(value: torch.Tensor) -> torch.Tensor:
        return settings.tolerance * value.abs().clamp_min(1.0)

    value, grad = _value_and_grad(objective, alpha)
    iterations = 1
    gap = kkt_gap(alpha, grad)
    converged = gap <= threshold(value)
    on_face = (alpha <= 0).any(dim=1) & ~converged
    if bool(on_face.any()) and iterations < settings.max_iterations:
        moved = torch.nonzero(on_face).flatten()
        empty = (alpha[moved] <= 0).to(torch.float64)
        fill = empty / empty.sum(dim=1, keepdim=True)
        alpha[moved] = settings.vertex_weight * alpha[moved] + (1.0 - settings.vertex_weight) * fill
        value[moved], grad[moved] = _value_and_grad(objective, alpha[moved])
        iterations += 1
        gap[moved] = kkt_gap(alpha[moved], grad[moved])
        converged[moved] = gap[moved] <= threshold(value[moved])
    spread = (grad - grad.min(dim=1, keepdim=True).values).max(dim=1).values
    eta = settings.initial_step / spread.clamp_min(_TINY)
    idle = torch.zeros(num_starts, dtype=torch.int64)
    stalled = torch.zeros(num_starts, dtype=torch.bool)
    history: list[list[float]] = [[float(v)] for v in value]
    while iterations < settings.max_iterations and not bool((converged | stalled).all()):
        active = torch.nonzero(~(converged | stalled)).flatten()  # only running starts are evaluated
        a, g, v, step = alpha[active], grad[active], value[active], eta[active]
        shifted = g - g.min(dim=1, keepdim=True).values
        candidate = (a * torch.exp(-step[:, None] * shifted)).clamp_min(_TINY)
        candidate = candidate / candidate.sum(dim=1, keepdim=True)
        cand_value, cand_grad = _value_and_grad(objective, candidate)
        iterations += 1
        kl = (candidate * (torch.log(candidate) - torch.log(a.clamp_min(_TINY)))).sum(dim=1)
        # Directional derivatives of the step at a (<= 0) and at the candidate. Both points sum
        # to 1 only up to rounding, so each gradient is centred first (exact in real arithmetic).
        step_vector = candidate - a
        slope = ((g - (g * a).sum(dim=1, keepdim=True)) * step_vector).sum(dim=1)
        centred_grad = cand_grad - (cand_grad * candidate).sum(dim=1, keepdim=True)
        end_slope = (centred_grad * step_vector).sum(dim=1)
        scale = v.abs()  # rounding is relative to the value itself
        sufficient = cand_value <= v + slope + kl / step + _ROUNDING * scale
        # Near a minimiser f changes less than its rounding noise; there the gradients decide:
        # the step has not overshot the minimum along its direction by more than half.
        not_overshot = (cand_value <= v + _NOISE * scale) & (end_slope <= -0.5 * slope)
        accept = torch.isfinite(cand_value) & (sufficient | not_overshot)
        decreased = accept & (cand_value < v)
        idle[active] = torch.where(decreased, 0, idle[active] + 1)
        alpha[active] = torch.where(accept[:, None], candidate, a)
        value[active] = torch.where(accept, cand_value, v)
        grad[active] = torch.where(accept[:, None], cand_grad, g)
        # Barzilai-Borwein in the mirror (log-weight) space: a step matched to the curvature seen
        # along the last accepted move, which long, flat valleys need; the test above guards it.
        moved_log = torch.log(candidate) - torch.log(a.clamp_min(_TINY))
        moved_log = moved_log - (moved_log * a).sum(dim=1, keepdim=True)
        curvature = (moved_log * (cand_grad - g) * candidate).sum(dim=1)
        length = (moved_log * moved_log * candidate).sum(dim=1)
        spectral = torch.where(curvature > 0, length / curvature.clamp_min(_TINY), step * 1.5)
        grown = torch.maximum(step * 1.5, torch.minimum(spectral, step * 1e3))
        eta[active] = torch.where(accept, grown, step * 0.3)
        new_gap = kkt_gap(alpha[active], grad[active])
        gap[active] = new_gap
        converged[active] = new_gap <= threshold(value[active])
        new_spread = (grad[active] - grad[active].min(dim=1, keepdim=True).values).max(dim=1).values
        underflow = eta[active] * new_spread < _UNDERFLOW
        stalled[active] = ~converged[active] & underflow & (idle[active] >= settings.patience)
        for s in active[accept].tolist():
            history[s].append(float(value[s]))
    lowest = value.min()
    near = value <= lowest + 1e-12 * lowest.abs()  # the same optimum up to rounding
    best = int(torch.argmin(torch.where(near, gap, torch.full_like(gap, float("inf")))))
    return SimplexMinimum(
        alpha=alpha[best].numpy().copy(),
        objective=float(value[best]),
        kkt_gap=float(gap[best]),
        iterations=iterations,
        converged=bool(converged[best]),
        history=history[best],
        start=best,
    )
