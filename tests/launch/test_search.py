"""launch/search.py end to end on a tiny backbone: outputs, bad input, and resume after SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.workers._trainer import PLACEMENT_GROUP_CLEANER_LOGGER
from launch.search import main
from tests.launch.conftest import shared_cluster

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


def _argv(config, out, *extra):
    return [
        "--target", config.target,
        "--prompts", config.library,
        "--output", str(out),
        "--samples", "48",
        "--gradient-samples", "12",
        "--num-samples", "6",
        "--no-dashboard",
        "--num-cpus", "2",
        "--cache-dir", config.cache_dir,
        *extra,
    ]  # fmt: skip


def _cleaner_level() -> int:
    return logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).level


@ray.remote(num_cpus=0)
class _Detached:
    """Like Ray Train's placement-group cleaner: a detached actor that the job starts."""

    def level(self) -> int:
        return _cleaner_level()


def test_search_writes_every_output(extraction_setup, tmp_path, capsys):
    shared_cluster()
    out = tmp_path / "search"
    assert main(_argv(extraction_setup, out)) == 0
    # --no-dashboard: no State API, so every worker quiets Ray Train's cleaner (it would warn each second)
    task_level = ray.get(ray.remote(num_cpus=0)(_cleaner_level).remote())
    actor = _Detached.options(name="cleaner-like", namespace="test-search", lifetime="detached").remote()
    actor_level = ray.get(actor.level.remote())
    ray.kill(actor)
    assert task_level == actor_level == logging.ERROR
    assert _cleaner_level() == logging.NOTSET  # the driver's own logging is left alone
    printed = capsys.readouterr().out
    assert "Best ensemble for data after 6 trials" in printed
    best = json.loads((out / "best.json").read_text())
    frame = pd.read_parquet(out / "trials.parquet")
    assert len(frame) == 6 and list(frame["trial"]) == list(range(1, 7))
    assert frame["trial_id"].is_unique
    pd.testing.assert_frame_equal(pd.read_csv(out / "trials.csv"), frame, check_dtype=False)
    assert best["metric"] == "val_probe_accuracy" and best["objective_terms"] == "both"  # the defaults
    assert best["val_probe_accuracy"] == pytest.approx(frame["val_probe_accuracy"].max())
    assert frame["val_probe_accuracy"].between(0, 1).all() and frame["val_h_score"].notna().all()
    assert frame["kkt_gap"].notna().all()
    assert (frame["torch_threads"] == 1).all()  # each trial holds 1 CPU and set torch to it, from inside
    alpha = best["alpha"]
    assert set(alpha) == {"p0", "p1", "p2"} and sum(alpha.values()) == pytest.approx(1.0)
    assert {p for p, w in alpha.items() if w > 0} <= set(best["subset"])
    assert 2 <= best["num_prompts"] == len(best["subset"]) <= 3
    assert 1e-3 <= best["lambda"] <= 1e2
    alphas = frame[["alpha_p0", "alpha_p1", "alpha_p2"]].to_numpy()  # every trial's alpha: on the simplex
    assert alphas.min() >= 0 and abs(alphas.sum(axis=1) - 1).max() < 1e-9
    for image in ("alpha.png", "search_curve.png"):
        with Image.open(out / image) as png:
            assert png.format == "PNG" and png.width > 100
    state = json.loads((out / "search.json").read_text())
    assert state["prompts"] == ["p0", "p1", "p2"] and state["target"] == extraction_setup.target
    splits = json.loads((out / "splits.json").read_text())  # a folder target: its split is recorded
    assert set(splits["splits"]) == {"train800", "val200", "test"}
    assert best["extraction"]["gradient_samples"] == 12


def _bad_cases(config, tmp_path):
    empty = PromptLibrary(tmp_path / "empty", create=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "search.json").write_text(json.dumps({"target": "x", "prompts": []}))
    return {
        "unknown target": (["--target", "no-such-task"], r"target must be a registered task"),
        "missing folder": (["--target", str(tmp_path / "nope") + "/"], r"does not exist"),
        "empty library": (["--prompts", str(empty.root)], r"has 0 usable prompt\(s\)"),
        "not a library": (["--prompts", str(tmp_path)], r"is not a prompt library"),
        "backbone mismatch": (["--backbone", "vit_small_patch16_224"], r"0 prompt\(s\) for backbone"),
        "M too large": (["--max-prompts", "5"], r"--max-prompts must be in \[2, 3\]"),
        "negative lambda": (
            ["--lambda-range", "-1", "10"],
            r"--lambda-range must be two numbers 0 < LOW < HIGH",
        ),
        "unreachable address": (["--address", "127.0.0.1:9"], r"--address 127.0.0.1:9 is unreachable"),
        "output holds a search": (["--output", str(other)], r"already holds another search"),
        "nothing to resume": (
            ["--output", str(tmp_path / "fresh"), "--resume"],
            r"holds no search to resume",
        ),
        "zero trials": (["--num-samples", "0"], r"--num-samples must be a positive integer"),
        "unknown source": (["--sources", "p0", "zz"], r"--sources \['zz'\] are not in prompt library"),
        "one source": (["--sources", "p1"], r"has 1 usable prompt\(s\)"),
        "unknown metric": (["--metric", "val-acc"], r"--metric must be one of \['val-probe', 'val-h'\]"),
        "unknown objective": (["--objective", "h"], r"--objective must be one of \['both', 'h-only', 'align-only'\]"),
        "M below 1": (["--min-prompts", "0"], r"--min-prompts must be in \[1, 3\]"),
    }


CASES = [
    "unknown target", "missing folder", "empty library", "not a library", "backbone mismatch", "M too large",
    "negative lambda", "unreachable address", "output holds a search", "nothing to resume", "zero trials",
    "unknown source", "one source", "unknown metric", "unknown objective", "M below 1",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, extraction_setup, tmp_path, capsys):
    import re

    ray.shutdown()  # a bad input fails before Ray starts: begin without the directory's cluster
    out = tmp_path / "out"
    argv_extra, pattern = _bad_cases(extraction_setup, tmp_path)[case]
    argv = _argv(extraction_setup, out)
    for flag in argv_extra:  # an overridden flag replaces the default one
        if flag.startswith("--") and flag in argv:
            position = argv.index(flag)
            del argv[position : position + 2]
    assert main(argv + argv_extra) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and re.search(pattern, error[0]), error
    assert not out.exists()  # nothing written
    assert not ray.is_initialized()


def _completed_trials(folder: Path) -> int:
    return sum(1 for r in folder.glob("*/result.json") if r.stat().st_size > 0)


def _run_until_killed(command: list[str], env: dict[str, str], folder: Path, completed: int) -> int:
    """Start ``command``, SIGKILL it once ``completed`` trials have finished and the state backup
    holds a complete set (before that, a state cut off mid-write has nothing to be restored
    from: ``tests/tuning/test_state_backup.py`` checks that refusal); the count at the kill."""
    from hgprompt_ray.tuning.search import backup_path

    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and driver.poll() is None:
        backed_up = any(backup_path(folder).glob("experiment_state-*.json"))
        if _completed_trials(folder) >= completed and backed_up:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the search ended before it could be killed"
    done_at_kill = _completed_trials(folder)
    driver.send_signal(signal.SIGKILL)  # a real kill of the driver, mid-search
    driver.wait()
    return done_at_kill


def test_resume_after_sigkill_finishes_exactly_the_requested_trials(extraction_setup, tmp_path):
    """The driver SIGKILLed mid-search with Tune's state cut off mid-write, then resumed.

    The resume repairs the truncated state from its backup and then restores it, so it runs the
    clean-resume path too. It runs with the dashboard on and its console is checked: progress
    lines, the dashboard line and the table; the rest is logged (one test, because every driver
    start costs a Python and a Ray start-up)."""
    out = tmp_path / "search"
    argv = _argv(extraction_setup, out)
    argv[argv.index("--num-samples") + 1] = "24"
    argv += ["--max-concurrent", "1"]
    command = [sys.executable, str(ROOT / "launch" / "search.py"), *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tune = out / "ray" / "tune"
    killed_at = _run_until_killed(command, env, tune, 3)
    assert 3 <= killed_at < 24 and not (out / "best.json").exists()
    # Tune writes its state in place: a kill mid-write leaves it truncated
    states = list(tune.glob("experiment_state-*.json"))
    assert states, "Tune wrote no experiment state before the kill"
    for state in states:
        state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])
    resume = [part for part in command if part != "--no-dashboard"] + ["--resume"]
    resumed = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    frame = pd.read_parquet(out / "trials.parquet")
    assert len(frame) == 24 and frame["trial_id"].is_unique  # none lost, none duplicated
    # TPE is seeded: had the searcher restarted from scratch, the resumed trials would repeat the
    # first trials' configurations. Restored, every configuration is new.
    configs = frame[["lambda", "num_prompts"]].round(12).apply(tuple, axis=1)
    assert configs.is_unique
    # the console of the resumed run (20 or so trials): short, whatever the number of trials
    console = (resumed.stdout + resumed.stderr).strip().splitlines()
    assert len(console) < 60, "\n".join(console)
    text = "\n".join(console)
    assert "Traceback" not in text and "== Status ==" not in text and "Trial status" not in text
    assert any(line.startswith("Ray dashboard: http://127.0.0.1:") for line in console)
    assert any("trials 24/24, best val_probe_accuracy so far" in line for line in console)
    assert "Best ensemble for data after 24 trials" in resumed.stdout
    log = (out / "search.log").read_text()
    assert "hgprompt_ray.progress" in log and "extraction:" in log  # the full output stays in the run folder


def test_asha_scheduler_runs_the_staged_trials(extraction_setup, tmp_path):
    shared_cluster()
    out = tmp_path / "asha"
    assert main(_argv(extraction_setup, out, "--scheduler", "asha")) == 0
    frame = pd.read_parquet(out / "trials.parquet")
    assert len(frame) == 6 and frame["stage"].between(1, 4).all()
    progress = [pd.read_csv(p) for p in (out / "ray" / "tune").glob("*/progress.csv")]
    assert len(progress) == 6
    # every stage is reported (one Tune iteration each) until the solve converged or ASHA stopped it
    assert all(list(p["training_iteration"]) == list(range(1, len(p) + 1)) for p in progress)
    assert all(list(p["stage"]) == list(range(1, len(p) + 1)) for p in progress)
