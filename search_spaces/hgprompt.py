"""The HGPrompt search space: lambda, the number of prompts M and which M prompts.

Data only: domains, constants and the objects that read them (searcher, scheduler); nothing is
computed here. ``hgprompt_ray.tuning`` turns a sampled config into a subset and a solve.

* ``lambda``: log-uniform on ``LAMBDA_RANGE``, in the solver's one fixed normalisation: L_align
  divided by ``alignment_scale(R) = sum_c (tr(R_c) / M)^2`` (the squared mean per-coordinate
  gradient second moment of the trial's prompts; ``core/alignment.py``), which makes L_align
  scale-free while the H-score is of order 0.1-10 (at most the number of classes - 1): lambda
  from 1e-3 (alignment ignored) to 1e2 (alignment dominates) spans both regimes.
* ``--objective`` (``OBJECTIVES``): ``both`` solves -H + lambda L_align; ``h-only`` sets lambda
  to 0 (the H-ensemble); ``align-only`` drops H. The space is the same for all three.
* ``--metric`` (``METRICS``): what the search maximises, on val200: ``val-probe`` (a probe on
  the combined prompt's features, the default) or ``val-h`` (the ensemble's val H-score).
* ``num_prompts``: M, an integer in [``MIN_PROMPTS``, number of prompts in the library].
* The subset, in one of two encodings (``--subset-space``; ``SUBSET_SPACES``). Both keep every
  domain fixed for the whole search, which Optuna requires (a categorical whose choices change
  between trials is rejected):

  - ``scores``: ``score_<prompt>``, one uniform(0, 1) score per prompt. The subset is the M
    prompts with the highest scores (ties broken by name), and TPE can learn which prompts
    help through their scores. K + 2 dimensions: right for a few dozen prompts.
  - ``ranked-slots``: ``slot_0`` ... ``slot_<max M - 1>``, each an integer rank in [1, K],
    log-uniform (so the sources that rank best on screening are drawn most often), over the
    prompts ordered best first by the screening score. Slot j takes the prompt of rank
    ``slot_j`` or, when an earlier slot took it, the nearest free rank (ties: the better one);
    only the first M slots count. max M + 2 dimensions whatever K is, a subset never repeats a
    prompt and never is empty: the space for hundreds of prompts.
  - ``auto`` (default): ``scores`` up to ``SCORES_MAX_PROMPTS`` searched prompts, else
    ``ranked-slots``.
* Solver settings of every trial: ``SOLVER`` (fixed, not searched; starts: the uniform point,
  every vertex and random ones; convergence: a Frank-Wolfe gap below ``tolerance``), solved in
  ``STAGES``: the first stage runs the multi-start solver, later ones continue from its alpha;
  each stage reports, so the optional ASHA scheduler can stop weak trials early.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ALPHA_PREFIX",
    "LAMBDA_RANGE",
    "DEFAULT_METRIC",
    "METRIC",
    "METRICS",
    "OBJECTIVES",
    "TEST_PROBE",
    "VAL_H",
    "VAL_PROBE",
    "MIN_PROMPTS",
    "MODE",
    "SAMPLERS",
    "SCORES_MAX_PROMPTS",
    "SCORE_PREFIX",
    "SLOT_PREFIX",
    "SUBSET_SPACES",
    "SOLVER",
    "STAGES",
    "TRIAL_COLUMNS",
    "asha_scheduler",
    "hgprompt_space",
    "optuna_searcher",
    "ranked_slots_space",
    "subset_search_space",
    "tpe_sampler",
]

LAMBDA_RANGE: tuple[float, float] = (1e-3, 1e2)
MIN_PROMPTS = 2
SCORE_PREFIX = "score_"
"""Config key prefix of the per-prompt subset scores: ``score_<prompt>``."""
SLOT_PREFIX = "slot_"
"""Config key prefix of the ranked slots: ``slot_<j>`` (the rank of slot j's prompt, from 1)."""
SUBSET_SPACES: tuple[str, ...] = ("auto", "scores", "ranked-slots")
"""``--subset-space``: how a trial's config encodes its subset (module docstring)."""
SCORES_MAX_PROMPTS = 24
"""``auto`` uses ``scores`` up to this many searched prompts and ``ranked-slots`` above."""
ALPHA_PREFIX = "alpha_"
"""Metric prefix of the solved weights: ``alpha_<prompt>`` (0 outside the trial's subset)."""
VAL_H = "val_h_score"
"""The H-score of the learned ensemble on held-out val200 features (cheap; blind to L_align)."""
VAL_PROBE = "val_probe_accuracy"
"""val200 accuracy of a probe on the combined prompt's features: transfer, on held-out data."""
TEST_PROBE = "test_probe_accuracy"
"""The same probe scored on test images: a diagnostic (``--report-test``), never maximised."""
METRICS: dict[str, str] = {"val-probe": VAL_PROBE, "val-h": VAL_H}
"""``--metric`` choice -> the reported metric the search maximises."""
DEFAULT_METRIC = "val-probe"
METRIC = METRICS[DEFAULT_METRIC]
OBJECTIVES: tuple[str, ...] = ("both", "h-only", "align-only")
STATISTICS_MODES: tuple[str, ...] = ("auto", "all-pairs", "on-demand")
"""How the feature statistics are held (``tuning.trainable.choose_statistics``)."""
STATISTICS_BUDGET_GB = 2.0
"""Largest all-pairs statistics (both splits) that ``auto`` precomputes."""
"""``--objective``: the terms of the solve (the ablation runs the same search with each)."""
MODE = "max"
TRIAL_COLUMNS: tuple[str, ...] = (
    VAL_PROBE,
    VAL_H,
    "objective",
    "h_score",
    "alignment",
    "lambda",
    "num_prompts",
    "subset",
    "iterations",
    "converged",
    "kkt_gap",
    "raw_alignment",
    "probe_seconds",
    TEST_PROBE,
    "stage",
    "solve_seconds",
    "torch_threads",
    "time_total_s",
    "timestamp",
)
"""The columns of the trial table besides the trial number, its id and ``alpha_<prompt>``."""
SOLVER: dict[str, Any] = {
    "tolerance": 1e-6,
    "patience": 3,
    "random_starts": 2,
    "regularized": True,
    "normalize_alignment": True,
}
STAGES: tuple[int, ...] = (20, 40, 80, 160)
"""Solver iterations per stage (cumulative 300; every trial of the shipped-zoo searches converged within it)."""


def hgprompt_space(
    prompts: Sequence[str],
    lambda_range: tuple[float, float] = LAMBDA_RANGE,
    min_prompts: int = MIN_PROMPTS,
    max_prompts: int | None = None,
) -> dict[str, Any]:
    """The Tune ``param_space`` over lambda, M and one score per prompt.

    Args:
        prompts: the library's prompt names (the scores are keyed by them).
        lambda_range: (low, high), both > 0.
        min_prompts: smallest M.
        max_prompts: largest M (default: all prompts).
    """
    from ray import tune

    top = len(prompts) if max_prompts is None else max_prompts
    space: dict[str, Any] = {
        "lambda": tune.loguniform(*lambda_range),
        "num_prompts": tune.randint(min_prompts, top + 1),  # upper bound exclusive
    }
    space.update({f"{SCORE_PREFIX}{name}": tune.uniform(0.0, 1.0) for name in prompts})
    return space


def ranked_slots_space(
    num_ranked: int,
    lambda_range: tuple[float, float] = LAMBDA_RANGE,
    min_prompts: int = MIN_PROMPTS,
    max_prompts: int | None = None,
) -> dict[str, Any]:
    """The Tune ``param_space`` over lambda, M and ``max_prompts`` ranked slots.

    Args:
        num_ranked: K, the number of searched prompts (ordered best first by screening).
        lambda_range: (low, high), both > 0.
        min_prompts: smallest M.
        max_prompts: largest M, and the number of slots (default: all prompts).
    """
    from ray import tune

    top = num_ranked if max_prompts is None else max_prompts
    space: dict[str, Any] = {
        "lambda": tune.loguniform(*lambda_range),
        "num_prompts": tune.randint(min_prompts, top + 1),  # upper bound exclusive
    }
    space.update({f"{SLOT_PREFIX}{j}": tune.lograndint(1, num_ranked + 1) for j in range(top)})
    return space


def subset_search_space(
    kind: str,
    prompts: Sequence[str],
    lambda_range: tuple[float, float] = LAMBDA_RANGE,
    min_prompts: int = MIN_PROMPTS,
    max_prompts: int | None = None,
) -> dict[str, Any]:
    """The space of ``kind`` (``scores`` or ``ranked-slots``; ``auto`` resolved by the caller)
    over ``prompts`` (for ``ranked-slots``: ordered best first)."""
    if kind == "ranked-slots":
        return ranked_slots_space(len(prompts), lambda_range, min_prompts, max_prompts)
    if kind == "scores":
        return hgprompt_space(prompts, lambda_range, min_prompts, max_prompts)
    raise ValueError(f"subset space {kind!r} is not 'scores' or 'ranked-slots'. Fix: resolve 'auto' first.")


def tpe_sampler(seed: int) -> Any:
    """Optuna's TPE, seeded (multivariate: the scores interact through M)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


SAMPLERS: tuple[str, ...] = ("tpe", "random")
"""``--sampler``: Optuna's TPE (the product) or its RandomSampler (the random-search baseline)."""


def optuna_searcher(seed: int, sampler: str = "tpe") -> Any:
    """Optuna through Ray Tune (metric and mode come from ``TuneConfig``): :func:`tpe_sampler`, or
    ``optuna.samplers.RandomSampler`` for ``sampler="random"``, both seeded."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    chosen = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else tpe_sampler(seed)
    return OptunaSearch(sampler=chosen)


def asha_scheduler() -> Any:
    """Optional early stopping over the solver stages (one Tune iteration per stage)."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=len(STAGES),
        grace_period=1,
        reduction_factor=2,
    )
