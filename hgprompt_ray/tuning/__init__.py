"""Ray Tune + Optuna search over lambda, M and the prompt subset.

``run``: :func:`run_search`, the one entry point (``SearchSpec`` in, ``SearchResult`` out);
``spec`` / ``plan``: the search's settings and their checks; ``trainable``: the trial (subset
choice, staged alpha solve, val200 H-score) and the search statistics it reads; ``search``: the
statistics task, ``Tuner`` / ``Tuner.restore`` and the results table; ``outputs``: best.json,
tables, plots; ``progress``: the console's progress lines.
"""

from hgprompt_ray.tuning.plan import SearchPlan, plan_search
from hgprompt_ray.tuning.run import SearchFailedError, SearchResult, run_search
from hgprompt_ray.tuning.spec import SearchSpec
from hgprompt_ray.tuning.trainable import (
    SearchStatistics,
    TrialInputs,
    hgprompt_trial,
    run_trial,
    search_statistics,
    select_subset,
)

__all__ = [
    "SearchFailedError",
    "SearchPlan",
    "SearchResult",
    "SearchSpec",
    "SearchStatistics",
    "TrialInputs",
    "hgprompt_trial",
    "plan_search",
    "run_search",
    "run_trial",
    "search_statistics",
    "select_subset",
]
