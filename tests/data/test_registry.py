"""The task registry and the ``python -m hgprompt_ray.data`` CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from hgprompt_ray.data import get_task, list_tasks
from hgprompt_ray.data.__main__ import main
from hgprompt_ray.errors import InvalidValueError


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(
        InvalidValueError, match=r"task must be a registered task, but got 'mnist'.*digits.*svhn"
    ):
        get_task("mnist")


def test_both_suites_are_registered():
    assert {"digits", "count", "textures"} <= set(list_tasks("offline"))
    assert {"svhn", "cifar100", "smallnorb-azi"} <= set(list_tasks("vtab"))
    assert list_tasks() == list_tasks("offline") + list_tasks("vtab")
    with pytest.raises(InvalidValueError, match="suite"):
        list_tasks("imagenet")


def test_bad_split_name():
    with pytest.raises(InvalidValueError, match=r"split must be one of \['train800', 'val200'"):
        get_task("digits").split("train")


def test_list_command_prints_every_task(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hgprompt_ray.data", "--data-root", str(tmp_path), "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in list_tasks():
        assert name in out
    digits = next(line for line in out.splitlines() if line.startswith("digits "))
    assert digits.split()[2:7] == ["10", "8x8", "800", "200", "797"]
    assert "no: no svhn data under" in out


def test_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["preview", "textures", "--out", str(out), "--rows", "2", "--cols", "3"]) == 0
    assert Image.open(out).size[0] > 100
    assert main(["preview", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "registered task" in capsys.readouterr().err
