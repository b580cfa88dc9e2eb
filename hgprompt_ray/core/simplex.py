"""Ensemble weights on the simplex: min_alpha  -H(alpha) + lambda * L_align(alpha).

Method (deterministic; several starts run in lockstep as one batch):

* Mirror descent with the entropy mirror map (exponentiated gradient):
  alpha <- alpha * exp(-eta * grad) / Z keeps alpha on the simplex without projections.
* Per-start step size eta with backtracking: a step is accepted when the Bregman sufficient
  decrease condition f(new) <= f(alpha) + <grad, new - alpha> + KL(new || alpha) / eta holds;
  then eta grows by 1.5, otherwise it shrinks by 0.3 and the start retries.
* Starts: the uniform weights, a point near each vertex (weight ``vertex_weight`` on one
  prompt), and optional Dirichlet(1) random starts drawn from ``seed``. The best final
  objective wins.
* Stopping: a start has converged when its accepted steps changed the objective by at most
  ``tolerance * max(1, |f|)`` for ``patience`` consecutive accepted steps. A
  :class:`SimplexConvergenceWarning` is issued if the winning start did not converge within
  ``max_iterations``.

H is the exact ensemble H-score (``ensemble_hscore``), regularised (Ledoit-Wolf) by default;
L_align is the gradient-variance alignment (``alignment``), divided by
``alignment_scale(S)`` when ``normalize_alignment`` is on so lambda is scale-free.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.core.alignment import alignment_loss_torch, alignment_scale
from hgprompt_ray.core.ensemble_hscore import EnsembleHStatistics, TorchEnsembleH, ensemble_h_score_torch
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "SimplexConvergenceWarning",
    "SimplexResult",
    "SolverSettings",
    "h_score_weights",
    "solve_weights",
    "uniform_weights",
]


class SimplexConvergenceWarning(UserWarning):
    """The weight solver stopped at ``max_iterations`` before meeting its tolerance."""


class SolverSettings(NamedTuple):
    """Settings of :func:`solve_weights`.

    Attributes:
        max_iterations: batched gradient evaluations at most.
        tolerance: relative objective change that counts as converged.
        patience: consecutive converged accepted steps required.
        initial_step: eta at the start.
        vertex_starts: also start near each vertex.
        vertex_weight: weight on the chosen prompt at a vertex start.
        random_starts: extra Dirichlet(1) starts.
        seed: seed of the random starts.
        regularized: Ledoit-Wolf H-score (True) or the pinv form.
        normalize_alignment: divide L_align by ``alignment_scale`` (scale-free lambda).
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


class SimplexResult(NamedTuple):
    """Outcome of :func:`solve_weights`.

    Attributes:
        alpha: the weights, (M,) float64 on the simplex.
        objective: -H + lambda * L_align at alpha (L_align normalised if configured).
        h_score: H(alpha).
        alignment: L_align(alpha) as used in the objective.
        iterations: batched evaluations performed.
        converged: whether the winning start met the tolerance.
        history: the winning start's objective after each accepted step.
        start: index of the winning start (0 = uniform, 1..M = vertices, then random).
    """

    alpha: np.ndarray
    objective: float
    h_score: float
    alignment: float
    iterations: int
    converged: bool
    history: list[float]
    start: int


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


def _starts(num_prompts: int, settings: SolverSettings) -> np.ndarray:
    starts = [uniform_weights(num_prompts)]
    if settings.vertex_starts and num_prompts > 1:
        rest = (1.0 - settings.vertex_weight) / (num_prompts - 1)
        for i in range(num_prompts):
            point = np.full(num_prompts, rest)
            point[i] = settings.vertex_weight
            starts.append(point)
    if settings.random_starts:
        rng = np.random.default_rng(settings.seed)
        starts.extend(rng.dirichlet(np.ones(num_prompts), size=settings.random_starts))
    return np.stack(starts)


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
            invalid_value("covariance", None, "is required when lam > 0", "Pass gradient_covariance(...).")
        )
    if covariance is not None:
        shape = tuple(np.shape(covariance))
        expected = (stats.num_prompts, stats.num_prompts)
        if len(shape) != 3 or shape[1:] != expected:
            raise InvalidValueError(
                invalid_value("covariance.shape", shape, f"must be (p, {expected[0]}, {expected[1]})", "")
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
    if not settings.tolerance > 0 or not settings.initial_step > 0:
        raise InvalidValueError(
            invalid_value("settings.tolerance/initial_step", settings[1::2], "must both be positive", "")
        )


def solve_weights(
    stats: EnsembleHStatistics,
    covariance: Any | None = None,
    lam: float = 0.0,
    settings: SolverSettings | None = None,
    initial: Any | None = None,
    h_weight: float = 1.0,
) -> SimplexResult:
    """Minimise -h_weight * H(alpha) + lambda * L_align(alpha) over the simplex.

    Args:
        stats: ensemble H-score statistics of the M prompts (``ensemble_statistics``).
        covariance: per-coordinate gradient covariances S_c (``gradient_covariance``); may be
            None when ``lam == 0``.
        lam: lambda >= 0.
        settings: solver settings (defaults: ``SolverSettings()``).
        initial: a warm start (M,) with positive entries; when given it is the only start
            (e.g. to continue a previous solve in stages, as the search's trials do).
        h_weight: weight of the H-score term; 1 in HGPrompt, 0 for the alignment-only ablation
            (then lambda must be positive).

    Shape:
        covariance: (p, M, M).
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
    cov_t = None
    scale = 1.0
    if covariance is not None and lam > 0:
        cov_np = to_numpy(covariance, "covariance")
        cov_t = torch.from_numpy(np.array(cov_np, dtype=np.float64))  # a copy: Ray views are read-only
        if settings.normalize_alignment:
            scale = alignment_scale(cov_np) or 1.0

    def evaluate(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = ensemble_h_score_torch(tensors, alpha, regularized=settings.regularized)
        if cov_t is None:
            align = torch.zeros_like(h)
        else:
            align = alignment_loss_torch(cov_t, alpha) / scale
        return -h_weight * h + lam * align, h, align

    if num_prompts == 1:
        alpha = torch.ones(1, 1, dtype=torch.float64)
        with torch.no_grad():
            objective, h, align = evaluate(alpha)
        return SimplexResult(np.ones(1), float(objective[0]), float(h[0]), float(align[0]), 0, True, [], 0)
    if initial is None:
        starts = _starts(num_prompts, settings)
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
    return _mirror_descent(evaluate, starts, settings)


def _value_and_grad(
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    point = alpha.detach().clone().requires_grad_(True)
    objective = evaluate(point)[0]
    (grad,) = torch.autograd.grad(objective.sum(), point)
    return objective.detach(), grad


def _mirror_descent(
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    starts: np.ndarray,
    settings: SolverSettings,
) -> SimplexResult:
    alpha = torch.from_numpy(starts).clone()
    value, grad = _value_and_grad(evaluate, alpha)
    num_starts = alpha.shape[0]
    eta = torch.full((num_starts,), float(settings.initial_step), dtype=torch.float64)
    calm = torch.zeros(num_starts, dtype=torch.int64)
    converged = torch.zeros(num_starts, dtype=torch.bool)
    history: list[list[float]] = [[float(v)] for v in value]
    iterations = 1
    tiny = 1e-300
    while iterations < settings.max_iterations and not bool(converged.all()):
        active = torch.nonzero(~converged).flatten()  # only unfinished starts are evaluated
        a, g, v, step = alpha[active], grad[active], value[active], eta[active]
        shifted = g - g.min(dim=1, keepdim=True).values
        candidate = a * torch.exp(-step[:, None] * shifted)
        candidate = candidate / candidate.sum(dim=1, keepdim=True)
        cand_value, cand_grad = _value_and_grad(evaluate, candidate)
        iterations += 1
        kl = (candidate * (torch.log(candidate.clamp_min(tiny)) - torch.log(a.clamp_min(tiny)))).sum(dim=1)
        bound = v + (g * (candidate - a)).sum(dim=1) + kl / step
        accept = torch.isfinite(cand_value) & (cand_value <= bound + 1e-12 * v.abs().clamp_min(1.0))
        small = (v - cand_value).abs() <= settings.tolerance * v.abs().clamp_min(1.0)
        calm[active] = torch.where(accept, torch.where(small, calm[active] + 1, 0), calm[active])
        alpha[active] = torch.where(accept[:, None], candidate, a)
        value[active] = torch.where(accept, cand_value, v)
        grad[active] = torch.where(accept[:, None], cand_grad, g)
        eta[active] = torch.where(accept, step * 1.5, step * 0.3)
        # A step size that underflows means no descent direction is left: treat as converged.
        converged = converged | (calm >= settings.patience) | (eta < 1e-12)
        for s in active[accept].tolist():
            history[s].append(float(value[s]))
    best = int(torch.argmin(value))
    with torch.no_grad():
        objective, h, align = evaluate(alpha[best : best + 1])
    if not bool(converged[best]):
        warnings.warn(
            f"solve_weights: the best start did not converge within max_iterations="
            f"{settings.max_iterations} (last relative change above tolerance={settings.tolerance}). "
            "Raise max_iterations or loosen tolerance.",
            SimplexConvergenceWarning,
            stacklevel=3,
        )
    return SimplexResult(
        alpha=alpha[best].numpy().copy(),
        objective=float(objective[0]),
        h_score=float(h[0]),
        alignment=float(align[0]),
        iterations=iterations,
        converged=bool(converged[best]),
        history=history[best],
        start=best,
    )
