"""Lint and type checks are part of the suite (CONTRIBUTING.md, "Tests")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "hgprompt_ray", "launch", "search_spaces", "bench", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_on_core_and_config():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "hgprompt_ray/core",
            "hgprompt_ray/config.py",
            "hgprompt_ray/errors.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
