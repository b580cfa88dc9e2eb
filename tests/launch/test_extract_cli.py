"""launch/extract.py: fills the cache, serves every table, and a rerun computes nothing."""

from __future__ import annotations

import pytest

from launch.extract import main
from tests.launch.conftest import shared_cluster

ray = pytest.importorskip("ray")


def test_extracts_then_serves_from_the_cache(extraction_setup, tmp_path, capsys):
    shared_cluster()
    config = extraction_setup
    argv = [
        "--targets", config.target, "--prompts", config.library, "--samples", "24",
        "--gradient-samples", "8", "--cache-dir", str(tmp_path / "cache"), "--num-cpus", "2",
    ]  # fmt: skip  (a cache of its own: the first run must compute every table)
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out
    row = next(line for line in first.splitlines() if line.startswith("data "))
    assert row.split()[1:5] == ["3", "7", str(3 * (24 + 24)), "8"]  # prompts, tables, forwards, grad N
    again = next(line for line in second.splitlines() if line.startswith("data "))
    assert again.split()[3] == "0"  # the rerun computed nothing
    assert "every table served from the FeatureStore for 1 target(s)" in second


def test_bad_target_exits_2(capsys):
    assert main(["--targets", "no-such-task"]) == 2
    assert "target must be a registered task" in capsys.readouterr().err
