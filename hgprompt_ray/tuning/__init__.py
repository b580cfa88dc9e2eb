"""Ray Tune + Optuna search over lambda, M and the prompt subset.

``run``: :func:`run_search`, the one entry point (``SearchSpec`` in, ``SearchResult`` out);
``spec`` / ``plan``: the search's settings and their checks; ``trainable``: the trial (subset
choice, staged alpha solve, val200 H-score) and the search statistics it reads; ``search``: the
statistics task, ``Tuner`` / ``Tuner.restore`` and the results table; ``outputs``: best.json,
tables, plots; ``progress``: the console's progress lines.
"""

from typing import TYPE_CHECKING

from hgprompt_ray.lazy import lazy_exports

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

_EXPORTS = {  # submodule: the names it exports (imported when one is first read)
    "plan": (
        "SearchPlan",
        "plan_search",
    ),
    "run": (
        "SearchFailedError",
        "SearchResult",
        "run_search",
    ),
    "spec": ("SearchSpec",),
    "trainable": (
        "SearchStatistics",
        "TrialInputs",
        "hgprompt_trial",
        "run_trial",
        "search_statistics",
        "select_subset",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
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
