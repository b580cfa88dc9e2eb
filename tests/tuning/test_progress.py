"""The search's progress line counts finished trials by Tune's own trial list: once each, and,
in a resumed search, the trials restored as finished too."""

from __future__ import annotations

import logging

import pytest

tune = pytest.importorskip("ray.tune")
from ray.tune.experiment import Trial  # noqa: E402

from hgprompt_ray.tuning.progress import PROGRESS_LOGGER, TrialProgress  # noqa: E402


@pytest.fixture(autouse=True)
def _registered():
    """Tune's trainable registry is per Ray session: register right before the trials are made
    (an earlier test's ``ray.shutdown`` forgets what was registered at import)."""
    tune.register_trainable("progress_line_trials", lambda config: None)


def _trial(trial_id: str, value: float | None = None, status: str = Trial.PENDING) -> Trial:
    trial = Trial("progress_line_trials", config={}, trial_id=trial_id)
    if value is not None:
        trial.update_last_result({"score": value})
    trial.set_status(status)
    return trial


def _finish(trial: Trial, value: float) -> Trial:
    trial.update_last_result({"score": value})
    trial.set_status(Trial.TERMINATED)
    return trial


def test_a_resumed_search_counts_the_restored_trials_and_their_best(caplog):
    # restored from a killed search: three trials finished before the kill, two still to run
    trials = [_trial("a", 0.5, Trial.TERMINATED), _trial("b", 0.9, Trial.TERMINATED),
              _trial("c", 0.7, Trial.TERMINATED), _trial("d"), _trial("e")]  # fmt: skip
    progress = TrialProgress(total=5, metric="score", mode="max")
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        progress.on_trial_complete(0, trials, _finish(trials[3], 0.6))
        assert (progress.done, progress.best, progress.best_trial) == (4, 0.9, "b")
        progress.on_trial_complete(0, trials, _finish(trials[4], 0.95))
    assert (progress.done, progress.best, progress.best_trial) == (5, 0.95, "e")
    assert "trials 5/5, best score so far: 0.9500 (trial e)" in caplog.text


def test_trials_that_finish_in_one_step_are_counted_once_each():
    trials = [_trial("a"), _trial("b"), _trial("c")]
    progress = TrialProgress(total=3, metric="score", mode="min")
    _finish(trials[0], 2.0), _finish(trials[1], 1.0)  # both marked finished before either callback
    progress.on_trial_complete(0, trials, trials[0])
    progress.on_trial_complete(0, trials, trials[1])
    assert (progress.done, progress.best, progress.best_trial) == (2, 1.0, "b")
    progress.on_trial_complete(0, trials, _finish(trials[2], float("nan")))  # a NaN never becomes the best
    assert (progress.done, progress.best) == (3, 1.0)
