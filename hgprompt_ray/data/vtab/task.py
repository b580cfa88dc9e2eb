"""The VTAB-1k task: the official splits (see ``official``) of parts read from a data folder, and
where that folder is by default."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hgprompt_ray.data.base import ImageSplit, Task, TaskInfo
from hgprompt_ray.data.vtab.official import OfficialSplits, part_order

__all__ = ["DATA_ENV", "Pool", "VtabTask", "default_data_root"]

DATA_ENV = "HGPROMPT_DATA"
_LOG = logging.getLogger(__name__)
_WARNED: set[str] = set()
"""Tasks whose order warning this process has logged (once per task name)."""


def default_data_root() -> Path:
    """``$HGPROMPT_DATA`` or ``~/data/vtab``."""
    return Path(os.environ.get(DATA_ENV, Path.home() / "data" / "vtab")).expanduser()


Pool = tuple[Callable[[int], Image.Image], np.ndarray]
"""A part's reader: image loader by index (in file order), and the (N,) labels."""


class VtabTask(Task):
    """A VTAB-1k task: the official split definitions over parts read from ``root``.

    The parts stand for the TFDS splits that task_adaptation slices (``"train"``,
    ``"validation"``, ``"test"``); ``read(root, part)`` returns one in file order.
    :attr:`official` says which part each split comes from and where it is cut. The splits are not
    seeded: ``seed`` is accepted (the :class:`Task` API) and ignored, every seed gives the same
    images (:attr:`split_is_seeded` is False). Where the served order is not TFDS's
    (:attr:`order_matches_tfds`), the first split built logs a warning with :attr:`order_note`.

    Args:
        info: the task's metadata.
        root: the data folder.
        official: the task's split definition and part order.
        exists: whether the data is under a root.
        read: ``read(root, part)``, the :data:`Pool` of one of ``official.parts``.
        fetch: downloads the data into a root.
        download: fetch the data when it is missing.
    """

    SPLIT_PROTOCOL = "task_adaptation-1"
    """The split definitions' version, part of the extraction cache key (the seeded splits before
    it had none): bump it when :mod:`hgprompt_ray.data.vtab.official` changes what a split holds."""

    def __init__(
        self,
        info: TaskInfo,
        root: Path,
        *,
        official: OfficialSplits,
        exists: Callable[[Path], bool],
        read: Callable[[Path, str], Pool],
        fetch: Callable[[Path], None],
        download: bool = False,
    ) -> None:
        self.info = info
        self.root = Path(root)
        self.official = official
        self._exists, self._read, self._fetch = exists, read, fetch
        self.download = download
        self._cache: dict[str, Pool] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the loaded parts (a memo of decoded images); they reload on demand."""
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    @property
    def split_is_seeded(self) -> bool:
        """False: the official splits are fixed, so every seed gives the same images."""
        return False

    @property
    def order_matches_tfds(self) -> bool:
        """Whether the parts are served in TFDS's order (so the splits are TFDS's images)."""
        return self.official.order_matches_tfds

    @property
    def order_note(self) -> str:
        """One line: how the served order relates to TFDS's."""
        return self.official.order_note

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

    def part(self, name: str) -> Pool:
        """The part ``name`` (one of ``official.parts``) in file order, read once and kept."""
        if name not in self._cache:
            self._cache[name] = self._read(self.root, name)
        return self._cache[name]

    def sources(self, split: str) -> tuple[tuple[str, np.ndarray], ...]:
        """Where the images of ``split`` come from, in split order: (part, indices in file order).

        Raises:
            TaskUnavailableError: the data is not on this machine (the message says how to get it).
        """
        self.require_available(split)
        return self._sources(split)

    def _sources(self, split: str) -> tuple[tuple[str, np.ndarray], ...]:
        segments = self.official.segments(split, lambda part: len(self.part(part)[1]))
        return tuple(
            (part, part_order(self.official.order, len(self.part(part)[1]))[start:stop])
            for part, start, stop in segments
        )

    def _split(self, split: str, seed: int) -> ImageSplit:
        del seed  # the official splits are fixed (split_is_seeded is False)
        self._warn_order()
        sources = self._sources(split)
        loads = [self.part(part)[0] for part, _ in sources]
        which = np.concatenate([np.full(len(index), k) for k, (_, index) in enumerate(sources)])
        where = np.concatenate([index for _, index in sources])
        labels = np.concatenate([self.part(part)[1][index] for part, index in sources])
        return ImageSplit(lambda i: loads[which[i]](int(where[i])), labels)

    def _warn_order(self) -> None:
        if self.official.order_matches_tfds or self.name in _WARNED:
            return
        _WARNED.add(self.name)
        parts = f" Parts: {self.official.parts_note}." if self.official.parts_note else ""
        _LOG.warning(
            "%s: the VTAB-1k splits follow %s, but the images are not TFDS's: %s.%s",
            self.name,
            self.official.source,
            self.official.order_note,
            parts,
        )


def _subset(dataset: Any, labels: np.ndarray, index: np.ndarray) -> Pool:
    return (lambda i: dataset[int(index[i])][0]), labels[index]
