"""Tune writes its state files in place; the backup callback and the repair survive a cut-off write."""

from __future__ import annotations

import json
import pickle

from hgprompt_ray.tuning.search import StateBackup, backup_path, repair_experiment_state


def _write_state(folder, trials):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment_state-s1.json").write_text(json.dumps({"trial_data": list(range(trials))}))
    # Tune writes this one as a pickle despite its .json name
    (folder / "search_gen_state-s1.json").write_bytes(pickle.dumps({"counter": trials}))
    (folder / "searcher-state-s1.pkl").write_bytes(pickle.dumps({"study": list(range(trials))}))


def test_backup_keeps_the_last_complete_set_and_repair_puts_it_back(tmp_path):
    experiment = tmp_path / "tune"
    backup = backup_path(experiment)
    callback = StateBackup(experiment, backup)
    _write_state(experiment, 3)
    callback.on_trial_complete(0, [], None)
    assert json.loads((backup / "experiment_state-s1.json").read_text())["trial_data"] == [0, 1, 2]
    _write_state(experiment, 5)
    state = experiment / "searcher-state-s1.pkl"
    state.write_bytes(state.read_bytes()[:-4])  # cut off mid-write, as a SIGKILL leaves it
    callback.on_trial_complete(0, [], None)  # an incomplete set is never backed up
    assert pickle.loads((backup / "search_gen_state-s1.json").read_bytes())["counter"] == 3
    assert repair_experiment_state(experiment, backup) == [
        "experiment_state-s1.json",
        "search_gen_state-s1.json",
        "searcher-state-s1.pkl",
    ]
    assert pickle.loads((experiment / "search_gen_state-s1.json").read_bytes())["counter"] == 3
    assert pickle.loads((experiment / "searcher-state-s1.pkl").read_bytes()) == {"study": [0, 1, 2]}
    assert repair_experiment_state(experiment, backup) == []  # complete files are left alone


def test_empty_state_file_counts_as_cut_off(tmp_path):
    experiment = tmp_path / "tune"
    _write_state(experiment, 2)
    StateBackup(experiment, backup_path(experiment)).on_trial_complete(0, [], None)
    (experiment / "experiment_state-s1.json").write_text("")
    assert "experiment_state-s1.json" in repair_experiment_state(experiment, backup_path(experiment))
    assert json.loads((experiment / "experiment_state-s1.json").read_text())["trial_data"] == [0, 1]


def test_trials_frame_skips_a_trial_that_never_reported():
    """Ray fills trial_id and timings even for a trial that errored before its first report."""
    from types import SimpleNamespace

    from hgprompt_ray.tuning.search import trials_frame

    reported = {"trial_id": "a1", "val_probe_accuracy": 0.5, "alpha_p": 0.25, "alpha_q": 0.75, "lambda": 1.0}
    errored = {"trial_id": "b2", "time_total_s": 0.1, "timestamp": 5}
    grid = [
        SimpleNamespace(metrics=errored, path="x_b2_00001_y"),
        SimpleNamespace(metrics=reported, path="x_a1_00000_y"),
    ]
    frame = trials_frame(grid, ["p", "q"])
    assert list(frame["trial_id"]) == ["a1"] and list(frame["alpha_q"]) == [0.75]


def test_a_state_cut_off_before_any_backup_is_refused_with_the_fix(tmp_path):
    """Killed mid-write before the backup held a complete set: a clear error, not a traceback."""
    import pytest

    from hgprompt_ray.errors import IntegrityError
    from hgprompt_ray.tuning.search import restore_tuner

    experiment = tmp_path / "tune"
    _write_state(experiment, 2)
    state = experiment / "experiment_state-s1.json"
    state.write_bytes(state.read_bytes()[:-3])
    with pytest.raises(IntegrityError, match=r"experiment_state-s1.json.*cut off by a kill.*another --output"):
        restore_tuner(experiment, statistics_ref=None, solver={}, stages=(1,), seed=0)
    assert state.read_bytes() and not backup_path(experiment).exists()  # nothing touched
