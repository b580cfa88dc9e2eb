"""The VTAB-1k task: a training pool and a test set read from a data folder, and where that
folder is by default."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hgprompt_ray.data.base import ImageSplit, Task, TaskInfo, vtab_split_indices

__all__ = ["DATA_ENV", "Pool", "VtabTask", "default_data_root"]

DATA_ENV = "HGPROMPT_DATA"
_SEEDED_TEST_FRACTION = 0.2


def default_data_root() -> Path:
    """``$HGPROMPT_DATA`` or ``~/data/vtab``."""
    return Path(os.environ.get(DATA_ENV, Path.home() / "data" / "vtab")).expanduser()


Pool = tuple[Callable[[int], Image.Image], np.ndarray]
"""A split's reader: image loader by index, and the (N,) labels."""


class VtabTask(Task):
    """A VTAB-1k task: a training pool and a test set, read from ``root``."""

    def __init__(
        self,
        info: TaskInfo,
        root: Path,
        *,
        exists: Callable[[Path], bool],
        read: Callable[[Path, str], Pool],
        fetch: Callable[[Path], None],
        download: bool = False,
    ) -> None:
        self.info = info
        self.root = Path(root)
        self._exists, self._read, self._fetch = exists, read, fetch
        self.download = download
        self._cache: dict[str, Pool] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the loaded pools (a memo of decoded images); they reload on demand."""
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def availability(self) -> tuple[bool, str]:
        if self._exists(self.root):
            return True, ""
        if self.download:
            try:
                self._fetch(self.root)
            except (OSError, RuntimeError) as error:
                return False, f"the download into {self.root} failed ({error}). Fix: check the network."
            if self._exists(self.root):
                return True, ""
        return False, (
            f"no {self.info.name} data under {self.root}. Fix: pass --download (download=True) to fetch it "
            f"from {self.info.source}, or point --data-root / ${DATA_ENV} at a folder that has it."
        )

    def _part(self, part: str) -> Pool:
        if part not in self._cache:
            self._cache[part] = self._read(self.root, part)
        return self._cache[part]

    def _split(self, split: str, seed: int) -> ImageSplit:
        if split == "test":
            load, labels = self._part("test")
            return ImageSplit(load, labels)
        load, labels = self._part("pool")
        index = vtab_split_indices(len(labels), split, seed)
        return ImageSplit(lambda i: load(int(index[i])), labels[index])


def _seeded_partition(count: int, part: str) -> np.ndarray:
    """Fixed (seed 0) 80/20 partition of a dataset without an official test split."""
    order = np.random.default_rng(0).permutation(count)
    cut = int(round(count * (1 - _SEEDED_TEST_FRACTION)))
    return np.sort(order[:cut] if part == "pool" else order[cut:])


def _subset(dataset: Any, labels: np.ndarray, index: np.ndarray) -> Pool:
    return (lambda i: dataset[int(index[i])][0]), labels[index]
