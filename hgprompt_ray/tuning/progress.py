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

    The count and the best are taken over Tune's own trial list, so a resumed search (which
    ``Tuner.restore`` gives this callback as it was at the start) counts the trials it restored
    as finished, and trials that finish in the same step are counted once each.

    Args:
        total: the number of trials of the search.
        metric: the metric to report.
        mode: ``max`` or ``min``.
    """

    def __init__(self, total: int, metric: str, mode: str = "max") -> None:
        self.total, self.metric, self.mode = total, metric, mode
        self.done = 0
        self.best: float | None = None
        self.best_trial: str | None = None
        self.every = max(1, math.ceil(total / 8))
        self._counted: set[str] = set()

    def _consider(self, trial: Any) -> bool:
        """Take ``trial``'s metric into the best so far; whether it improved it."""
        value = (trial.last_result or {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return False
        if self.best is not None and (float(value) <= self.best if self.mode == "max" else float(value) >= self.best):
            return False
        self.best, self.best_trial = float(value), str(trial.trial_id)
        return True

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        improved = False
        for finished in [*(t for t in trials if t.status in ("TERMINATED", "ERROR")), trial]:
            if str(finished.trial_id) not in self._counted:
                self._counted.add(str(finished.trial_id))
                improved = self._consider(finished) or improved
        self.done = len(self._counted)
        if (
            self.done % self.every == 0
            or self.done == self.total
            or (improved and self.done > self.total // 2)
        ):
            best = "none yet" if self.best is None else f"{self.best:.4f} (trial {self.best_trial})"
            progress_logger().info(
                "trials %d/%d, best %s so far: %s", self.done, self.total, self.metric, best
            )
