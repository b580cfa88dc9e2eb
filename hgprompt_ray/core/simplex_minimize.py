"""The simplex minimiser behind ``solve_weights``: batched multi-start mirror descent with a
KKT (Frank-Wolfe gap) certificate. ``core/simplex.py`` documents the method and the objective;
this module holds the settings, the starts, the gap and the minimiser, which know nothing of
H-scores or alignment (an objective is any batched differentiable function of alpha).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "SimplexConvergenceWarning",
    "SimplexMinimum",
    "SolverSettings",
    "kkt_gap",
    "minimize_on_simplex",
    "solver_starts",
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
_STARVED = 1e-4
"""A start whose least-gradient prompt weighs less than this takes a Frank-Wolfe step toward it
(mirror descent regrows a weight only geometrically: from 1e-30 that took ~200 iterations)."""


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
        merge_distance: a running start stops (merged) once it is within this distance (max
            |alpha_s - alpha_t|) of a start with a lower or equal objective; 0 turns it off.
            Multi-level single linkage's rule (Rinnooy Kan and Timmer 1987) applied to running
            starts: the two have entered one basin and the better one carries on.
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
    merge_distance: float = 1e-4
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
        points: every start's final point, (S, M) (a staged solve continues all of them); a
            merged start's is where it stopped.
    """

    alpha: np.ndarray
    objective: float
    kkt_gap: float
    iterations: int
    converged: bool
    history: list[float]
    start: int
    points: np.ndarray | None = None


def uniform_weights(num_prompts: int) -> np.ndarray:
    """alpha_i = 1 / M (the Average baseline)."""
    if not isinstance(num_prompts, (int, np.integer)) or num_prompts < 1:
        raise InvalidValueError(invalid_value("num_prompts", num_prompts, "must be a positive integer", ""))
    return np.full(num_prompts, 1.0 / num_prompts)


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
    merge = settings.merge_distance
    if not (np.isfinite(merge) and merge >= 0):
        raise InvalidValueError(
            invalid_value(
                "settings.merge_distance", merge, "must be a finite number >= 0", "Use 0 to turn it off."
            )
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


def _value_and_grad(
    objective: Callable[[torch.Tensor], torch.Tensor], alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    point = alpha.detach().clone().requires_grad_(True)
    value = objective(point)
    if not value.requires_grad:  # an objective that does not depend on alpha
        return value.detach(), torch.zeros_like(point)
    (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad


def _starved(alpha: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Whether each point's least-gradient prompt (its Frank-Wolfe vertex) weighs below
    ``_STARVED``: mirror descent would regrow it only by a factor exp(eta * gap) per step.

    Shape:
        alpha, grad: (S, M); returns (S,) bool.
    """
    vertex = grad.argmin(dim=1, keepdim=True)
    return alpha.gather(1, vertex).squeeze(1) < _STARVED


def _toward_vertex(alpha: torch.Tensor, grad: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """The Frank-Wolfe step alpha + reach * (e_i - alpha), e_i the least-gradient vertex; its
    directional derivative is minus the KKT gap. Floored at the solver's tiny weight.

    Shape:
        alpha, grad: (S, M); reach: (S,) in (0, 1]; returns (S, M).
    """
    vertex = torch.zeros_like(alpha).scatter_(1, grad.argmin(dim=1, keepdim=True), 1.0)
    return (alpha + reach[:, None] * (vertex - alpha)).clamp_min(_TINY)


def _merged(
    alpha: torch.Tensor, value: torch.Tensor, running: torch.Tensor, stopped: torch.Tensor, distance: float
) -> torch.Tensor:
    """Running starts within ``distance`` (max norm) of another running or converged (not
    ``stopped``) start with a lower objective (ties: the lower index), which carries on; the
    best start of any cluster is never merged.

    Shape:
        alpha: (S, M); value, running, stopped: (S,); returns (S,) bool.
    """
    close = (alpha[:, None, :] - alpha[None, :, :]).abs().amax(dim=2) <= distance  # (S, S)
    order = torch.arange(value.shape[0])
    better = (value[None, :] < value[:, None]) | (
        (value[None, :] == value[:, None]) & (order[None, :] < order[:, None])
    )  # better[s, t]: t is better than s
    return running & (close & better & ~stopped[None, :]).any(dim=1)


def minimize_on_simplex(
    objective: Callable[[torch.Tensor], torch.Tensor],
    starts: Any,
    settings: SolverSettings | None = None,
) -> SimplexMinimum:
    """Minimise a differentiable batched objective over the simplex from several starts.

    The method of ``core/simplex.py``'s docstring: starts on a face that are not stationary
    move inside, then batched mirror descent with backtracking (a Frank-Wolfe step instead
    where the least-gradient prompt's weight is below ``_STARVED``) until each start's KKT gap
    is small, its step underflows, it merges into a better start, or
    ``settings.max_iterations`` evaluations are spent. Issues no warning
    (the caller decides); check ``converged``.

    Args:
        objective: maps a batch of weight vectors to their objective values, differentiably
            (float64 torch).
        starts: the starting points, rows on the simplex (non-negative, summing to 1).
        settings: ``max_iterations``, ``tolerance``, ``patience``, ``initial_step``,
            ``vertex_weight`` and ``merge_distance`` are used.

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
    toward_step = torch.full((num_starts,), 1.0 / alpha.shape[1], dtype=torch.float64)
    idle = torch.zeros(num_starts, dtype=torch.int64)
    stalled = torch.zeros(num_starts, dtype=torch.bool)  # stalled or merged: stopped, not converged
    history: list[list[float]] = [[float(v)] for v in value]
    while iterations < settings.max_iterations and not bool((converged | stalled).all()):
        active = torch.nonzero(~(converged | stalled)).flatten()  # only running starts are evaluated
        a, g, v, step, reach = alpha[active], grad[active], value[active], eta[active], toward_step[active]
        shifted = g - g.min(dim=1, keepdim=True).values
        mirror = (a * torch.exp(-step[:, None] * shifted)).clamp_min(_TINY)
        starved = _starved(a, g)
        candidate = torch.where(starved[:, None], _toward_vertex(a, g, reach), mirror)
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
        # Mirror step: the Bregman sufficient decrease. Frank-Wolfe step: Armijo with constant
        # 1/2, which on a quadratic accepts exactly the steps that do not pass its minimum.
        bound = torch.where(starved, 0.5 * slope, slope + kl / step)
        sufficient = cand_value <= v + bound + _ROUNDING * scale
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
        eta[active] = torch.where(starved, step, torch.where(accept, grown, step * 0.3))
        # Frank-Wolfe reach: the minimiser of the quadratic through the slopes at both ends of
        # the step (secant), kept within [1, 10] x reach after an acceptance and [0.1, 0.5] x
        # after a rejection; without positive curvature, doubled or cut to 0.3.
        curved = end_slope > slope
        secant = reach * slope / (slope - end_slope).clamp_max(-_TINY)
        longer = torch.where(curved, torch.minimum(torch.maximum(secant, reach), 10.0 * reach), 2.0 * reach)
        shorter = torch.where(
            curved, torch.minimum(torch.maximum(secant, 0.1 * reach), 0.5 * reach), 0.3 * reach
        )
        new_reach = torch.where(accept, longer.clamp_max(1.0), shorter)
        toward_step[active] = torch.where(starved, new_reach, reach)
        new_gap = kkt_gap(alpha[active], grad[active])
        gap[active] = new_gap
        converged[active] = new_gap <= threshold(value[active])
        new_spread = (grad[active] - grad[active].min(dim=1, keepdim=True).values).max(dim=1).values
        underflow = torch.where(
            _starved(alpha[active], grad[active]),
            toward_step[active] < _UNDERFLOW,
            eta[active] * new_spread < _UNDERFLOW,
        )
        stalled[active] = ~converged[active] & underflow & (idle[active] >= settings.patience)
        if settings.merge_distance > 0:
            stalled |= _merged(alpha, value, ~(converged | stalled), stalled, settings.merge_distance)
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
        points=alpha.numpy().copy(),
    )
