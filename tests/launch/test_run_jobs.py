"""evaluate.py --prepare-only writes the runs to go; launch/run_jobs.py runs them without Ray."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.transfer.runner import JOBS_FILE, _seed_major, read_job_file, run_here, unfinished
from launch.evaluate import main as evaluate
from launch.run_jobs import main as run_jobs
from tests.launch.conftest import shared_cluster
from tests.launch.test_evaluate import _argv

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]
WITHOUT_RAY = "import sys\nfor name in ('ray', 'optuna', 'cmaes'):\n    sys.modules[name] = None\n"
"""Prepended to the child's program: any import of Ray or Optuna fails there."""


def _run_jobs_without_ray(*argv: str) -> subprocess.CompletedProcess:
    program = WITHOUT_RAY + f"from launch.run_jobs import main\nsys.exit(main({list(argv)!r}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def prepared(extraction_setup, tmp_path_factory):
    shared_cluster()
    out = tmp_path_factory.mktemp("prepared") / "report"
    argv = _argv(extraction_setup, out, "--methods", "vpt", "average", "hgprompt", "--no-ablation", "--scaling-sizes",
                 "--prepare-only")  # fmt: skip
    assert evaluate(argv) == 0
    return out


def test_prepare_only_writes_the_runs_and_runs_none(prepared):
    record = json.loads((prepared / JOBS_FILE).read_text())
    assert sorted((j["method"], j["seed"]) for j in record["jobs"]) == [
        (m, s) for m in ("average", "hgprompt", "vpt") for s in (0, 1)]  # fmt: skip
    assert not (prepared / "runs").exists()
    weights = json.loads((prepared / "weights" / "data.json").read_text())
    jobs, transfer, library = read_job_file(prepared)
    by_key = {job.key: job for job in jobs}
    assert list(by_key["data/hgprompt/seed1"].weights) == weights["methods"]["hgprompt"]
    assert by_key["data/vpt/seed0"].weights is None and transfer.max_steps == 3 and Path(library).is_dir()
    chunk = json.loads((prepared / "evaluate.json").read_text())["chunks"][-1]
    assert chunk["prepared"] == 6 and chunk["seconds"] > 0


def test_run_jobs_without_ray_then_report(prepared):
    first = _run_jobs_without_ray(str(prepared), "--methods", "hgprompt")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 of 2 runs to go, 1 worker(s)" in first.stdout
    assert sorted(p.name for p in (prepared / "runs" / "data").iterdir()) == ["hgprompt"]
    done = _run_jobs_without_ray(str(prepared), "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 of 6 runs to go, 2 worker(s)" in done.stdout and "4 runs done now, 0 left" in done.stdout
    jobs, _, _ = read_job_file(prepared)
    for job in jobs:
        record = json.loads((prepared / "runs" / f"{job.key}.json").read_text())
        assert record["job"]["weights"] == (None if job.weights is None else list(job.weights))
        assert record["device"] in ("cpu", "cuda") and 0 <= record["test_accuracy"] <= 1
    state = json.loads((prepared / "evaluate.json").read_text())
    assert (
        "no Ray" in state["chunks"][-1]["machine"] and state["chunks"][-1]["ran"] == 4 and state["runs"] == 6
    )
    assert [c["ran"] for c in state["chunks"] if "ran" in c] == [2, 4]
    assert all(c["finished"] is True for c in state["chunks"] if "ran" in c)  # both ended on their own
    again = _run_jobs_without_ray(str(prepared))
    assert again.returncode == 0 and "0 of 6 runs to go" in again.stdout, again.stderr[-3000:]
    assert evaluate(["--report-only", "--output", str(prepared)]) == 0
    results = pd.read_csv(prepared / "results.csv")
    assert sorted(results["method"].unique()) == ["average", "hgprompt", "vpt"] and len(results) == 6


def test_deadline_shards_and_bad_input(prepared, tmp_path, capsys):
    jobs, transfer, library = read_job_file(prepared)
    empty = tmp_path / "empty"
    assert [(j.seed, j.method) for j in _seed_major(jobs)] == [
        (s, m) for s in (0, 1) for m in ("vpt", "average", "hgprompt")]  # fmt: skip
    # past the deadline nothing starts
    assert run_here(empty, jobs, transfer, library, deadline=1.0, clock=lambda: 2.0) == []
    with pytest.raises(InvalidValueError, match="shard"):
        run_here(empty, jobs, transfer, library, shard=(2, 2))
    with pytest.raises(FileNotFoundError, match="--prepare-only"):
        read_job_file(empty)
    assert run_jobs([str(prepared), "--prompts", str(tmp_path / "nowhere")]) == 2
    assert "--prompts PATH" in capsys.readouterr().err
    assert run_jobs([str(prepared), "--methods", "panda"]) == 2
    assert "--methods panda: not in" in capsys.readouterr().err
    assert run_jobs([str(prepared), "--workers", "0"]) == 2
    assert "--workers 0: must be at least 1" in capsys.readouterr().err


def test_a_rerun_may_add_seeds_but_not_change_the_budget(prepared, extraction_setup, capsys):
    shared_cluster()
    base = _argv(extraction_setup, prepared, "--methods", "vpt", "average", "hgprompt", "--no-ablation", "--scaling-sizes",
                 "--prepare-only")  # fmt: skip
    assert evaluate([*base, "--seeds", "3"]) == 0  # the weights are cached: only seed 2's runs are new
    assert evaluate([*base, "--max-test", "30"]) == 2
    assert "holds an evaluation with another budget" in capsys.readouterr().err
    jobs, _, _ = read_job_file(prepared)
    assert sorted((j.method, j.seed) for j in jobs) == [("average", 2), ("hgprompt", 2), ("vpt", 2)]
    state = json.loads((prepared / "evaluate.json").read_text())
    assert state["seeds"] == 3 and state["budget"]["tuned_seeds"] == 3 and state["budget"]["max_test"] == 60


def test_a_call_cut_off_midway_keeps_its_time_and_runs(prepared, tmp_path):
    """A lease's limit kills run_jobs.py midway: its chunk, saved while it ran, keeps the seconds
    and the runs finished so far, and the report says it was interrupted."""
    folder = tmp_path / "copy"
    shutil.copytree(prepared, folder)
    to_go = len(unfinished(folder, read_job_file(folder)[0]))
    assert to_go >= 2  # seed 2's runs, added by the rerun test above
    program = WITHOUT_RAY + f"from launch.run_jobs import main\nsys.exit(main({[str(folder), '--checkpoint-seconds', '0.2']!r}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", program], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    chunk: dict = {}
    try:
        limit = time.monotonic() + 300
        while time.monotonic() < limit and chunk.get("ran", 0) < 1:
            assert child.poll() is None, child.stderr.read()[-3000:] if child.stderr else ""
            chunk = json.loads((folder / "evaluate.json").read_text())["chunks"][-1]
            chunk = chunk if "--checkpoint-seconds" in chunk["command"] else {}
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    state = json.loads((folder / "evaluate.json").read_text())
    chunk = state["chunks"][-1]
    assert "--checkpoint-seconds" in chunk["command"] and chunk["finished"] is False
    assert 1 <= chunk["ran"] < to_go and chunk["seconds"] > 0 and state["seconds"] >= chunk["seconds"]
    assert evaluate(["--report-only", "--output", str(folder)]) == 0
    assert "1 invocation interrupted" in (folder / "report.md").read_text()


def test_shards_started_at_different_times_run_every_job(prepared, tmp_path):
    # shard 0 runs all its share before shard 1 reads the folder (a late process start): slicing
    # the unfinished list would give shard 1 a shorter list's odd positions and skip runs
    jobs, transfer, library = read_job_file(prepared)
    out = tmp_path / "late"
    progress = logging.getLogger("hgprompt_ray.transfer")
    saved = (list(progress.handlers), progress.level, progress.propagate)
    try:
        first = run_here(out, jobs, transfer, library, shard=(0, 2))
        second = run_here(out, jobs, transfer, library, shard=(1, 2))
        # in-process runs leave the caller's logging alone (only the Ray task body sets a handler)
        assert (list(progress.handlers), progress.level, progress.propagate) == saved
    finally:
        progress.handlers[:], progress.level, progress.propagate = saved
    assert not set(first) & set(second) and sorted(first + second) == sorted(j.key for j in jobs)
    assert unfinished(out, jobs) == []
