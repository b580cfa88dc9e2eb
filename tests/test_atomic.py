"""Atomic writes leave the old file intact when writing fails."""

from __future__ import annotations

import pytest

from hgprompt_ray.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_write_replaces_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_old_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "trunc')
            raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    target = tmp_path / "shared.json"
    atomic_write_json(target, {})
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
