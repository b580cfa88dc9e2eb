"""Bring-your-own targets: an ImageFolder directory or a CSV of ``path,label`` rows.

* **Folder**: torchvision ``ImageFolder`` layout, one sub-folder per class (class names are the
  sub-folder names, sorted); images are files with a common image suffix.
* **CSV**: a header with at least ``path`` and ``label``; paths are relative to the CSV's folder
  (absolute paths allowed); labels are any strings (sorted to class indices). An optional
  ``split`` column (``train``, ``val``, ``test``) fixes each row's split and wins over the rule
  below.

Split rule (without a ``split`` column), seeded: with at least 1,500 images, train800 and val200
are drawn like VTAB-1k (a seeded permutation) and test is the rest; with fewer, every class is
split 60 / 15 / 25 % into train / val / test (stratified, at least one training image per class).
``describe_splits`` returns the exact file lists so a run can record them next to its results.

Every image is opened and decoded once up front, so a truncated or unreadable file fails early
with its name; grayscale, palette and RGBA images are converted to RGB when served.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from hgprompt_ray.data.base import ImageSplit, Task, TaskInfo
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["CsvTask", "FolderTask", "IMAGE_SUFFIXES", "TargetError"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_LARGE = 1500
_FRACTIONS = (0.60, 0.15, 0.25)
_SPLIT_NAMES = {"train": "train800", "val": "val200", "test": "test"}


class TargetError(InvalidValueError):
    """A user-supplied target (folder or CSV) is unusable; the message names the file and fix."""


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError as error:
        raise TargetError(f"image {path} does not exist. Fix: correct the path or remove the row.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise TargetError(
            f"image {path} is unreadable or truncated ({error}). Fix: re-export or remove that file."
        ) from error


class _FileTask(Task):
    """A task over image files with string class names and a seeded split rule."""

    def __init__(
        self,
        name: str,
        source: str,
        paths: Sequence[Path],
        class_of: Sequence[str],
        fixed_split: Sequence[str] | None,
        validate: bool,
    ) -> None:
        names = sorted(set(class_of))
        if len(names) < 2:
            raise TargetError(
                invalid_value("target classes", names, "must be at least 2", "Add images of a second class.")
            )
        if validate:
            for path in paths:
                _check_image(path)
        index = {n: i for i, n in enumerate(names)}
        self.paths = list(paths)
        self.labels = np.array([index[c] for c in class_of], dtype=np.int64)
        self.fixed_split = None if fixed_split is None else np.array([_SPLIT_NAMES[s] for s in fixed_split])
        with Image.open(self.paths[0]) as first:
            size = (first.height, first.width)
        self.info = TaskInfo(
            name=name,
            suite="custom",
            num_classes=len(names),
            class_names=tuple(names),
            native_size=size,
            description=f"user target from {source}",
            source=source,
        )

    def split_indices(self, split: str, seed: int) -> np.ndarray:
        """Row indices of ``split`` under the rule in the module docstring."""
        if split == "train800val200":
            return np.concatenate([self.split_indices("train800", seed), self.split_indices("val200", seed)])
        if self.fixed_split is not None:
            return np.flatnonzero(self.fixed_split == split)
        count = len(self.labels)
        if count >= _LARGE:
            order = np.random.default_rng(seed).permutation(count)
            parts = {"train800": order[:800], "val200": order[800:1000], "test": order[1000:]}
            return parts[split]
        rng = np.random.default_rng(seed)
        chosen: dict[str, list[np.ndarray]] = {"train800": [], "val200": [], "test": []}
        for cls in range(self.info.num_classes):
            members = rng.permutation(np.flatnonzero(self.labels == cls))
            n_train = max(1, int(round(len(members) * _FRACTIONS[0])))
            n_val = int(round(len(members) * _FRACTIONS[1]))
            chosen["train800"].append(members[:n_train])
            chosen["val200"].append(members[n_train : n_train + n_val])
            chosen["test"].append(members[n_train + n_val :])
        return np.sort(np.concatenate(chosen[split]))

    def _split(self, split: str, seed: int) -> ImageSplit:
        index = self.split_indices(split, seed)
        paths = [self.paths[i] for i in index]
        return ImageSplit(lambda i: Image.open(paths[i]), self.labels[index])

    def describe_splits(self, seed: int) -> dict[str, Any]:
        """The exact split, to be written next to a run's results (JSON-serialisable)."""
        rule = (
            "split column"
            if self.fixed_split is not None
            else (
                "VTAB-1k: seeded permutation, 800 / 200 / rest"
                if len(self.labels) >= _LARGE
                else "stratified 60/15/25 % per class, seeded"
            )
        )
        return {
            "target": self.info.source,
            "seed": seed,
            "rule": rule,
            "classes": list(self.info.class_names),
            "splits": {
                split: [[str(self.paths[i]), int(self.labels[i])] for i in self.split_indices(split, seed)]
                for split in ("train800", "val200", "test")
            },
        }


class FolderTask(_FileTask):
    """An ImageFolder directory as a target (see the module docstring)."""

    def __init__(self, root: str | Path, *, validate: bool = True) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise TargetError(
                f"target folder {root} does not exist. Fix: pass an existing folder, a CSV, or a task name."
            )
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise TargetError(
                f"target folder {root} has no class sub-folders. Fix: arrange it as {root}/<class>/<image> "
                "(torchvision ImageFolder layout)."
            )
        paths: list[Path] = []
        class_of: list[str] = []
        for folder in classes:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise TargetError(
                    f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                    "Fix: add images or remove the folder."
                )
            paths.extend(files)
            class_of.extend([folder.name] * len(files))
        super().__init__(root.name, str(root), paths, class_of, None, validate)


class CsvTask(_FileTask):
    """A CSV of ``path,label[,split]`` rows as a target (see the module docstring)."""

    def __init__(self, csv_path: str | Path, *, validate: bool = True) -> None:
        csv_path = Path(csv_path).expanduser()
        if not csv_path.is_file():
            raise TargetError(
                f"target CSV {csv_path} does not exist. Fix: pass an existing file, a folder, or a task name."
            )
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise TargetError(
                    f"target CSV {csv_path} lacks the column(s) {missing} (found {columns}). "
                    "Fix: add a header line 'path,label' (optionally ',split')."
                )
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
        if not rows:
            raise TargetError(f"target CSV {csv_path} has no rows. Fix: add 'path,label' rows.")
        paths, class_of, splits = [], [], []
        for number, row in enumerate(rows, start=2):
            if not row.get("path") or not row.get("label"):
                raise TargetError(
                    f"{csv_path} line {number}: empty path or label ({row}). Fix: every row needs both."
                )
            path = Path(row["path"])
            path = path if path.is_absolute() else csv_path.parent / path
            if not path.is_file():
                raise TargetError(
                    f"{csv_path} line {number}: label {row['label']!r} points at {path}, which does not exist. "
                    "Fix: correct the path (relative to the CSV) or remove the row."
                )
            paths.append(path)
            class_of.append(row["label"])
            if "split" in columns:
                value = row.get("split", "")
                if value not in _SPLIT_NAMES:
                    raise TargetError(
                        f"{csv_path} line {number}: split {value!r} must be one of {list(_SPLIT_NAMES)}. "
                        "Fix: correct it or drop the split column."
                    )
                splits.append(value)
        fixed = splits if "split" in columns else None
        if fixed is not None and "train" not in fixed:
            raise TargetError(f"{csv_path}: the split column names no 'train' rows. Fix: mark training rows.")
        super().__init__(csv_path.stem, str(csv_path), paths, class_of, fixed, validate)
