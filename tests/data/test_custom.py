"""Bring-your-own targets: ImageFolder directories and path,label CSVs, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hgprompt_ray.data import CsvTask, FolderTask, TargetError, resolve_target
from hgprompt_ray.errors import InvalidValueError


def _write_folder(root, counts=None, mode="RGB", size=(20, 16)):
    counts = counts or {"cat": 12, "dog": 9, "bird": 7}
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            colour = (c * 80, i * 10, 50) if mode in ("RGB", "RGBA") else c * 80
            if mode == "RGBA":
                colour = (*colour, 128)
            Image.new(mode, size, colour).save(root / name / f"{name}_{i:03d}.png")
    return root


def test_folder_target_small_stratified_split(tmp_path):
    task = resolve_target(_write_folder(tmp_path / "pets"))
    assert isinstance(task, FolderTask) and task.info.class_names == ("bird", "cat", "dog")
    train, val, test = (task.split(s, seed=1) for s in ("train800", "val200", "test"))
    assert len(train) + len(val) + len(test) == 28
    assert set(train.labels) == {0, 1, 2}  # every class is trained on
    for cls, count in enumerate((7, 12, 9)):
        assert (train.labels == cls).sum() == round(count * 0.6)
    joined = task.split("train800val200", seed=1)
    np.testing.assert_array_equal(joined.labels, np.concatenate([train.labels, val.labels]))
    record = task.describe_splits(seed=1)
    files = [p for split in record["splits"].values() for p, _ in split]
    assert len(files) == len(set(files)) == 28 and record["rule"].startswith("stratified")
    json.dumps(record)
    np.testing.assert_array_equal(task.split("test", seed=1).labels, test.labels)
    reseeded = task.describe_splits(seed=2)["splits"]["test"]
    assert reseeded != record["splits"]["test"] and len(reseeded) == len(record["splits"]["test"])


def test_large_folder_uses_the_vtab_sizes(tmp_path):
    task = resolve_target(_write_folder(tmp_path / "big", {"a": 800, "b": 760}, size=(4, 4)), validate=False)
    assert [len(task.split(s)) for s in ("train800", "val200", "test")] == [800, 200, 560]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_mixed_image_modes_are_served_as_rgb(tmp_path, mode):
    root = _write_folder(tmp_path / "modes", mode="RGB")
    Image.new(mode, (20, 16)).save(root / "cat" / "odd.png")
    task = resolve_target(root)
    modes = {task.split(s).image(i).mode for s in ("train800", "test") for i in range(len(task.split(s)))}
    assert modes == {"RGB"}


def test_csv_target_with_relative_paths_and_split_column(tmp_path):
    root = _write_folder(tmp_path / "imgs")
    rows = ["path,label,split"]
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        rows.append(
            f"imgs/{path.parent.name}/{path.name},{path.parent.name},{('train', 'val', 'test')[i % 3]}"
        )
    (tmp_path / "target.csv").write_text("\n".join(rows) + "\n")
    task = resolve_target(tmp_path / "target.csv")
    assert isinstance(task, CsvTask)
    sizes = [len(task.split(s)) for s in ("train800", "val200", "test")]
    assert sizes == [10, 9, 9]
    assert task.describe_splits(0)["rule"] == "split column"


def test_csv_without_split_column_uses_the_rule(tmp_path):
    root = _write_folder(tmp_path / "imgs")
    lines = ["label,path"] + [f"{p.parent.name},{p}" for p in sorted(root.rglob("*.png"))]  # absolute paths
    (tmp_path / "t.csv").write_text("\n".join(lines))
    task = resolve_target(str(tmp_path / "t.csv"))
    assert sum(len(task.split(s)) for s in ("train800", "val200", "test")) == 28


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "absent", r"target .*absent does not exist"),
        (lambda p: p / "absent.csv", r"target CSV .*absent.csv does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", r"has no class sub-folders"),
        (lambda p: _write_folder(p / "one", {"only": 4}), r"target classes must be at least 2"),
        (
            lambda p: (_write_folder(p / "hole"), (p / "hole" / "void").mkdir())[0],
            r"class folder .*void holds no images",
        ),
        (lambda p: ((p / "x.txt").write_text("hi"), p / "x.txt")[1], r"is a file but not a .csv"),
    ],
)
def test_bad_folders_and_paths(tmp_path, make, match):
    with pytest.raises(TargetError, match=match):
        resolve_target(make(tmp_path))


def test_truncated_and_unreadable_images_are_named(tmp_path):
    root = _write_folder(tmp_path / "broken")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(root / "cat" / "big.jpg", quality=95)
    data = (root / "cat" / "big.jpg").read_bytes()
    (root / "cat" / "big.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(TargetError, match=r"image .*big.jpg is unreadable or truncated"):
        resolve_target(root)
    (root / "cat" / "big.jpg").write_bytes(b"not an image")
    with pytest.raises(TargetError, match=r"big.jpg is unreadable"):
        resolve_target(root)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("file,label\na.png,x\n", r"lacks the column\(s\) \['path'\]"),
        ("path,label\n", r"has no rows"),
        ("path,label\nimgs/cat/cat_000.png,\n", r"line 2: empty path or label"),
        (
            "path,label\nimgs/cat/missing.png,cat\n",
            r"line 2: label 'cat' points at .*missing.png, which does not exist",
        ),
        ("path,label,split\nimgs/cat/cat_000.png,cat,holdout\n", r"split 'holdout' must be one of"),
        (
            "path,label,split\nimgs/cat/cat_000.png,cat,val\nimgs/dog/dog_000.png,dog,test\n",
            r"names no 'train' rows",
        ),
    ],
)
def test_bad_csv_files(tmp_path, content, match):
    _write_folder(tmp_path / "imgs")
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(TargetError, match=match):
        resolve_target(tmp_path / "bad.csv")


def test_unknown_name_suggests_paths_and_tasks():
    with pytest.raises(
        InvalidValueError, match=r"registered task, an ImageFolder directory, or a path,label CSV"
    ):
        resolve_target("imagenet")


def test_preview_command_accepts_a_folder_and_exits_2_on_bad_targets(tmp_path):
    root = _write_folder(tmp_path / "mine")
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "hgprompt_ray.data",
            "preview",
            str(root),
            "--out",
            str(tmp_path / "g.png"),
            "--rows",
            "1",
            "--cols",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and (tmp_path / "g.png").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "hgprompt_ray.data",
            "preview",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
