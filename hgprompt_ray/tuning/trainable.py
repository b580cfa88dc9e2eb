"""One search trial = one alpha solve on shared, precomputed statistics.

The driver computes, once per search, the ensemble H-score statistics of all K prompts on the
gradient split (train800) and on val200 and the per-coordinate uncentred gradient second moments
R_c (:func:`search_statistics`, a Ray task reading the feature tables zero-copy), and passes the
ObjectRef to every trial through ``tune.with_parameters``. A trial picks its subset from the
sampled config, takes the subset of the statistics (no feature is recomputed or re-sent),
solves for alpha in stages (the objective's terms per ``--objective``) and reports:

* ``val_probe_accuracy`` — val200 accuracy of a probe on the features of the combined prompt
  P0 = sum_i alpha_i P_i (:mod:`hgprompt_ray.tuning.probe_metric`; when the search uses it);
* ``val_h_score`` — the H-score of sum_i alpha_i f_i on the held-out val200 features (cheap;
  blind to the alignment term);
* ``objective``, ``h_score``, ``alignment`` (normalised), ``raw_alignment``, ``kkt_gap``;
* ``alpha_<prompt>`` for every prompt of the library (0 outside the subset), ``subset``,
  ``num_prompts``, ``lambda``, ``iterations``, ``converged``, ``solve_seconds``;
* ``torch_threads`` — torch's intra-op threads in the trial (its CPU allocation, see
  :mod:`hgprompt_ray.threads`).

The metric names and prefixes are defined once, in ``search_spaces/hgprompt.py``.

**Statistics linear in K.** The feature statistics come in two forms (:func:`choose_statistics`
picks one per run from K, the largest M, N, d and the number of trials, and the run logs it):
``all-pairs`` precomputes every pair block once (K^2 d^2 float64 per split: the exact form of a
small library), ``on-demand`` ships only the K prompts' features (K N d) and every trial builds
the pair blocks of its own M prompts, cached per worker process
(:class:`~hgprompt_ray.core.OnDemandHStatistics`). A trial sees the same statistics either way.
The gradient second moments R_c are (p, K, K) for the K prompts searched, i.e. after screening
(the search extracts the gradients of the screened prompts only).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from torch import get_num_threads as torch_threads

from hgprompt_ray.core import (
    EnsembleHStatistics,
    GradientMoments,
    OnDemandHStatistics,
    SimplexConvergenceWarning,
    SolverSettings,
    ensemble_h_score,
    ensemble_statistics,
    gradient_second_moment,
    per_source_h_scores,
    solve_weights,
)
from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.tuning.probe_metric import ProbeData, probe_accuracy
from hgprompt_ray.tuning.subsets import select_subset
from search_spaces.hgprompt import (
    ALPHA_PREFIX,
    OBJECTIVES,
    STATISTICS_BUDGET_GB,
    STATISTICS_MODES,
    TEST_PROBE,
    VAL_H,
    VAL_PROBE,
)

__all__ = [
    "DEFAULT_STATISTICS_BUDGET_GB",
    "STATISTICS_MODES",
    "SearchStatistics",
    "StatisticsChoice",
    "choose_statistics",
    "TrialInputs",
    "hgprompt_trial",
    "run_trial",
    "search_statistics",
    "select_subset",
]


DEFAULT_STATISTICS_BUDGET_GB = STATISTICS_BUDGET_GB


class StatisticsChoice(NamedTuple):
    """What :func:`choose_statistics` decided, and the numbers it decided on (logged, and kept
    in ``best.json``).

    Attributes:
        mode: ``all-pairs`` or ``on-demand``.
        reason: one sentence.
        all_pairs_bytes: memory of the all-pairs statistics of both splits.
        on_demand_bytes: memory of the on-demand features of both splits (without the cache).
        all_pairs_gflop: arithmetic of the all-pairs precompute.
        on_demand_gflop: arithmetic of every trial building its own blocks (an upper bound: no
            cache hit, every trial at the largest M).
    """

    mode: str
    reason: str
    all_pairs_bytes: int
    on_demand_bytes: int
    all_pairs_gflop: float
    on_demand_gflop: float

    def to_json(self) -> dict[str, Any]:
        return dict(self._asdict())


def choose_statistics(
    num_prompts: int,
    max_prompts: int,
    sample_counts: Sequence[int],
    dim: int,
    trials: int,
    requested: str = "auto",
    budget_gb: float = DEFAULT_STATISTICS_BUDGET_GB,
) -> StatisticsChoice:
    """All-pairs or on-demand feature statistics for K prompts, trials of at most M of them, the
    splits' sample counts N and feature width d.

    ``auto`` precomputes all pairs when they fit ``budget_gb`` and cost no more arithmetic than
    the trials building their own blocks would (small libraries: the results are then exactly
    the all-pairs ones); otherwise on demand, whose memory is linear in K.
    """
    if requested not in STATISTICS_MODES:
        raise InvalidValueError(
            invalid_value("--statistics", requested, f"must be one of {list(STATISTICS_MODES)}", "Pass auto.")
        )
    if not (np.isfinite(budget_gb) and budget_gb > 0):
        raise InvalidValueError(
            invalid_value("--statistics-budget-gb", budget_gb, "must be a positive number", "e.g. 2.")
        )
    k, m, d, n = int(num_prompts), min(int(max_prompts), int(num_prompts)), int(dim), int(sum(sample_counts))
    splits = len(sample_counts)
    all_pairs_bytes = splits * 8 * (k * k * d * d + k**4)
    on_demand_bytes = 8 * k * n * d
    all_pairs_gflop = k * (k + 1) / 2 * n * d * d * 2 / 1e9
    on_demand_gflop = trials * m * (m + 1) / 2 * n * d * d * 2 / 1e9
    fits = all_pairs_bytes <= budget_gb * 2**30
    cheaper = all_pairs_gflop <= on_demand_gflop
    if requested != "auto":
        mode, reason = requested, f"--statistics {requested} was asked for"
    elif fits and cheaper:
        mode = "all-pairs"
        reason = (
            f"all pairs of K={k} prompts fit the {budget_gb:g} GB budget ({all_pairs_bytes / 2**30:.2f} GB) "
            f"and cost no more than {trials} trials of M<={m} building their own blocks"
        )
    else:
        mode = "on-demand"
        why = (
            f"all pairs of K={k} prompts need {all_pairs_bytes / 2**30:.2f} GB > the {budget_gb:g} GB budget"
            if not fits
            else f"{trials} trials of M<={m} cost less ({on_demand_gflop:.1f} GFLOP) than all pairs "
            f"({all_pairs_gflop:.1f} GFLOP)"
        )
        reason = f"{why}; the on-demand features take {on_demand_bytes / 2**30:.2f} GB"
    return StatisticsChoice(mode, reason, all_pairs_bytes, on_demand_bytes, all_pairs_gflop, on_demand_gflop)


class SearchStatistics(NamedTuple):
    """Everything trials need, for all prompts of the search, in the prompts' order.

    Attributes:
        prompts: the M prompt names.
        train: ensemble H-score statistics on the gradient split's samples
            (:class:`EnsembleHStatistics`, all pairs, or :class:`OnDemandHStatistics`; both give
            a subset's statistics by ``.subset(indices)`` and all of them by ``.full()``).
        val: the same on val200 (the held-out metric).
        covariance: per-coordinate uncentred gradient second moments R_c, (p, M, M) (the name
            is historical; ``core.alignment.gradient_second_moment``).
        source_h_scores: each prompt's own H-score on train, (M,).
        choice: the :class:`StatisticsChoice` as a dict (None: all pairs, not chosen).
    """

    prompts: tuple[str, ...]
    train: EnsembleHStatistics | OnDemandHStatistics
    val: EnsembleHStatistics | OnDemandHStatistics
    covariance: np.ndarray
    source_h_scores: np.ndarray
    choice: dict[str, Any] | None = None


def search_statistics(
    prompts: Sequence[str],
    train_features: Sequence[np.ndarray],
    train_labels: np.ndarray,
    val_features: Sequence[np.ndarray],
    val_labels: np.ndarray,
    moments: GradientMoments,
    choice: StatisticsChoice | None = None,
) -> SearchStatistics:
    """Precompute :class:`SearchStatistics` (shapes: M x (N, d) features, moments of M prompts)
    in the form ``choice`` names (None: all pairs)."""
    if choice is not None and choice.mode == "on-demand":
        train: Any = OnDemandHStatistics(np.stack(train_features), train_labels)
        val: Any = OnDemandHStatistics(np.stack(val_features), val_labels)
        source = np.array([per_source_h_scores(train.subset([i]))[0] for i in range(train.num_prompts)])
    else:
        train = ensemble_statistics(np.stack(train_features), train_labels)
        val = ensemble_statistics(np.stack(val_features), val_labels)
        source = per_source_h_scores(train)
    return SearchStatistics(
        prompts=tuple(prompts),
        train=train,
        val=val,
        covariance=gradient_second_moment(moments),
        source_h_scores=source,
        choice=None if choice is None else choice.to_json(),
    )


@dataclass(frozen=True)
class TrialInputs:
    """What ``tune.with_parameters`` hands every trial (small: refs and settings).

    Attributes:
        statistics: ObjectRef of :class:`SearchStatistics` (or the object itself, outside Ray).
        solver: ``SolverSettings`` fields shared by every trial.
        stages: solver iterations per reported stage.
        seed: seeds the solver's random starts.
        report_stages: report after every stage (for an early-stopping scheduler such as ASHA);
            otherwise once, at the end (each report is a round trip to the Tune driver).
        objective: ``both``, ``h-only`` or ``align-only`` (:func:`objective_terms`).
        probe: ObjectRef of the :class:`ProbeData` for the ``val_probe_accuracy`` metric (None:
            the metric is not computed).
    """

    statistics: Any
    solver: Mapping[str, Any]
    stages: tuple[int, ...]
    seed: int = 0
    report_stages: bool = True
    objective: str = "both"
    probe: Any = None


_LOCAL: dict[str, Any] = {}


def _fetch(value: Any, kind: type) -> Any:
    """An object shipped by ObjectRef, fetched once per worker process (actors are reused)."""
    if value is None or isinstance(value, kind):
        return value
    import ray

    key = f"{kind.__name__}:{value.hex()}"
    if key not in _LOCAL:
        for old in [k for k in _LOCAL if k.startswith(f"{kind.__name__}:")]:
            del _LOCAL[old]
        _LOCAL[key] = ray.get(value)
    return _LOCAL[key]


def _statistics(inputs: TrialInputs) -> SearchStatistics:
    return _fetch(inputs.statistics, SearchStatistics)  # type: ignore[no-any-return]


def objective_terms(objective: str, lam: float) -> tuple[float, float]:
    """(lambda, h_weight) of the solve: ``both`` -H + lambda L_align as sampled; ``h-only``
    lambda = 0 (H-ensemble); ``align-only`` L_align alone (lambda then only scales it)."""
    if objective not in OBJECTIVES:
        raise InvalidValueError(
            invalid_value("--objective", objective, f"must be one of {list(OBJECTIVES)}", "Pass both.")
        )
    if objective == "h-only":
        return 0.0, 1.0
    if objective == "align-only":
        return 1.0, 0.0
    return lam, 1.0


def run_trial(config: Mapping[str, Any], inputs: TrialInputs, report: Any) -> dict[str, Any]:
    """Solve one trial, calling ``report(metrics)`` after each stage; returns the last metrics."""
    statistics = _statistics(inputs)
    probe = _fetch(inputs.probe, ProbeData)
    prompts = statistics.prompts
    if probe is not None and probe.names and tuple(probe.names) != tuple(prompts):
        raise ValueError(
            f"the probe metric's prompts {list(probe.names)} are not the searched prompts {list(prompts)} "
            "in their order. Fix: build the ProbeData from an ExtractionConfig with prompts=<the searched ones>."
        )
    subset = select_subset(config, prompts)
    lam = float(config["lambda"])
    if not np.isfinite(lam) or lam < 0:
        raise InvalidValueError(invalid_value("lambda", lam, "must be >= 0", "Use a positive lambda range."))
    solve_lambda, h_weight = objective_terms(inputs.objective, lam)
    train = statistics.train.subset(subset)
    val = statistics.val.subset(subset)
    covariance = np.ascontiguousarray(statistics.covariance[:, subset][:, :, subset])
    alpha: np.ndarray | None = None
    points: np.ndarray | None = None
    spent, elapsed = 0, 0.0
    metrics: dict[str, Any] = {}
    for stage, iterations in enumerate(inputs.stages):
        settings = SolverSettings(**{**inputs.solver, "max_iterations": iterations, "seed": inputs.seed})
        start = time.perf_counter()
        warm = None if points is None else np.maximum(points, 1e-12)  # every start continues
        with warnings.catch_warnings():
            if stage < len(inputs.stages) - 1:  # a stage is meant to stop early; only the last may warn
                warnings.simplefilter("ignore", SimplexConvergenceWarning)
            result = solve_weights(train, covariance, solve_lambda, settings, initial=warm, h_weight=h_weight)
        elapsed += time.perf_counter() - start
        alpha, points, spent = result.alpha, result.points, spent + result.iterations
        weights = EnsembleWeights.from_subset(prompts, subset, alpha)
        last = result.converged or stage == len(inputs.stages) - 1
        metrics = {
            VAL_H: ensemble_h_score(val, alpha),
            "objective": result.objective,
            "h_score": result.h_score,
            "alignment": result.alignment,
            "lambda": lam,
            "num_prompts": len(subset),
            "subset": ",".join(prompts[i] for i in subset),
            "iterations": spent,
            "converged": bool(result.converged),
            "kkt_gap": float(result.kkt_gap),
            "raw_alignment": float(result.raw_alignment),
            "stage": stage + 1,
            "solve_seconds": elapsed,
            "torch_threads": torch_threads(),
            **weights.to_metrics(ALPHA_PREFIX),
        }
        if inputs.report_stages or last:
            if probe is not None:
                start = time.perf_counter()
                if probe.test_images is None:
                    metrics[VAL_PROBE] = probe_accuracy(probe, subset, alpha)
                else:  # the --report-test diagnostic: the same probe scored on test, never a metric
                    metrics[VAL_PROBE], metrics[TEST_PROBE] = probe_accuracy(probe, subset, alpha, test=True)
                metrics["probe_seconds"] = time.perf_counter() - start
            report(metrics)
        if result.converged:
            break
    return metrics


def hgprompt_trial(config: dict[str, Any], inputs: TrialInputs) -> None:
    """The Tune function trainable (wrap with ``tune.with_parameters(hgprompt_trial, inputs=...)``)."""
    from ray import tune

    from hgprompt_ray.threads import use_allocated_threads

    use_allocated_threads()
    run_trial(config, inputs, tune.report)
