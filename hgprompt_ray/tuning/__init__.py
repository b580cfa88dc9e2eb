"""Ray Tune + Optuna search over lambda, M and the prompt subset.

``trainable``: the trial (subset choice, staged alpha solve, val200 H-score) and the search
statistics it reads; ``search``: the statistics task, ``Tuner`` / ``Tuner.restore`` and the
results table. Importing this package does not import Ray (the Ray calls import it lazily).
"""

from hgprompt_ray.tuning.trainable import (
    SearchStatistics,
    TrialInputs,
    hgprompt_trial,
    run_trial,
    search_statistics,
    select_subset,
)

__all__ = [
    "SearchStatistics",
    "TrialInputs",
    "hgprompt_trial",
    "run_trial",
    "search_statistics",
    "select_subset",
]
