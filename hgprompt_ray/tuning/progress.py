"""A readable progress line for a search, in place of Tune's repeated status table.

The search logs its stages to the ``hgprompt_ray.progress`` logger: extraction, statistics, and
"trials n/N, best <metric> so far" about eight times per search (and whenever the best
improves after half of the trials). ``launch/`` sends that logger to the console and everything
else — Tune's and Ray's own output included — to the run folder's log.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray import tune

__all__ = ["PROGRESS_LOGGER", "TrialProgress", "progress_logger"]

PROGRESS_LOGGER = "hgprompt_ray.progress"


def progress_logger() -> logging.Logger:
    """The logger of the search's progress lines."""
    return logging.getLogger(PROGRESS_LOGGER)


class TrialProgress(tune.Callback):
    """Logs ``trials n/N`` with the best metric so far as trials complete.

    Args:
        total: the number of trials of the search.
        metric: the metric to report.
        mode: ``max`` or ``min``.
        done: trials finished before (a resumed search).
    """

    def __init__(self, total: int, metric: str, mode: str = "max", done: int = 0) -> None:
        self.total, self.metric, self.mode = total, metric, mode
        self.done = done
        self.best: float | None = None
        self.best_trial: str | None = None
        self.every = max(1, math.ceil(total / 8))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        improved = False
        if value is not None and math.isfinite(float(value)):
            better = self.best is None or (
                float(value) > self.best if self.mode == "max" else float(value) < self.best
            )
            if better:
                self.best, self.best_trial, improved = float(value), str(trial.trial_id), True
        if (
            self.done % self.every == 0
            or self.done == self.total
            or (improved and self.done > self.total // 2)
        ):
            best = "none yet" if self.best is None else f"{self.best:.4f} (trial {self.best_trial})"
            progress_logger().info(
                "trials %d/%d, best %s so far: %s", self.done, self.total, self.metric, best
            )
