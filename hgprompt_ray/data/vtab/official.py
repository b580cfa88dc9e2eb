"""The official VTAB-1k split definitions, and the slices of a task's parts they select.

google-research/task_adaptation (``task_adaptation/data/<dataset>.py``) defines every VTAB-1k
split as a TFDS slice of one of the dataset's TFDS splits: ``train800`` is ``train[:800]``;
``val200`` is the 200 examples just past the train/val cut of ``train`` (the cut at, e.g., 90 %
of it) or the first 200 of a validation split of the dataset's own; ``train800val200`` is the two
concatenated; ``test`` is a whole TFDS split or its tail. :class:`OfficialSplits` records one
task's definition; :meth:`OfficialSplits.segments` turns it into index ranges over the task's
*parts* (what this package reads in place of each TFDS split).

The slices are those of the official definition, but the order they slice is not TFDS's: TFDS
writes each split sorted by an MD5 hash of the example's key salted with the split name
(``tensorflow_datasets/core/hashing.py``, ``shuffle.py``), an order the raw files and torchvision
do not have. A part is therefore served in one of two fixed orders (:data:`ORDERS`), neither
seeded by the caller: the files' own (``"file"``), or, where the files are grouped by class or
factor, or their order is not documented, a fixed permutation of it (``"fixed-permutation"``,
``numpy.random.default_rng(0)``), so that the first 800 are not a handful of classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hgprompt_ray.data.base import TRAIN_SIZE, VAL_SIZE, check_split
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["ORDERS", "OfficialSplits", "cut", "part_order"]

ORDERS = ("file", "fixed-permutation")
"""How a part's examples are ordered before the official slices are taken."""

_PERMUTATION_SEED = 0

Segment = tuple[str, int, int]
"""(part, start, stop): the examples ``start:stop`` of a part in its served order."""


def cut(count: int, percents: tuple[int, ...]) -> int:
    """Where task_adaptation cuts a split of ``count`` examples: ``sum(p * count // 100)``.

    task_adaptation computes each share with integer division and adds them (e.g. EuroSAT's test
    starts at ``count * 60 // 100 + count * 20 // 100``); an empty tuple is the start (0).
    """
    return sum(p * count // 100 for p in percents)


def part_order(order: str, count: int) -> np.ndarray:
    """The served order of a part of ``count`` examples: indices into its file order."""
    if order == "file":
        return np.arange(count, dtype=np.int64)
    if order == "fixed-permutation":
        return np.random.default_rng(_PERMUTATION_SEED).permutation(count).astype(np.int64)
    raise InvalidValueError(invalid_value("order", order, f"must be one of {list(ORDERS)}", ""))


@dataclass(frozen=True)
class OfficialSplits:
    """One task's VTAB-1k splits as task_adaptation defines them, over the task's parts.

    With ``n(part)`` the size of a part: train800 = ``train[0:800]``; val200 =
    ``val[s:s + 200]`` with ``s = cut(n(val), val_cut)``; train800val200 = train800 then val200;
    test = ``test[t:]`` with ``t = cut(n(test), test_cut)``.

    Attributes:
        source: the task_adaptation file that defines the splits.
        tfds_name: the TFDS builder (and version pattern) that file loads.
        val: the part val200 is sliced from (``"train"`` at the cut, or a split of its own).
        test: the part test comes from.
        order: how a part is ordered before slicing, one of :data:`ORDERS`.
        order_note: one line: how that order relates to TFDS's, and why it was chosen.
        train: the part train800 is the head of.
        val_cut: percents whose shares sum to val200's start in ``val`` (empty: its first 200).
        test_cut: percents whose shares sum to test's start in ``test`` (empty: all of it).
        order_matches_tfds: whether the served order is TFDS's, so the slices are TFDS's images.
        parts_note: how the parts are made when they are not the TFDS splits' own files, or "".
    """

    source: str
    tfds_name: str
    val: str
    test: str
    order: str
    order_note: str
    train: str = "train"
    val_cut: tuple[int, ...] = ()
    test_cut: tuple[int, ...] = ()
    order_matches_tfds: bool = False
    parts_note: str = ""

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise InvalidValueError(invalid_value("order", self.order, f"must be one of {list(ORDERS)}", ""))
        for name in ("val_cut", "test_cut"):
            percents = getattr(self, name)
            if not all(isinstance(p, int) and 0 < p < 100 for p in percents) or sum(percents) >= 100:
                raise InvalidValueError(
                    invalid_value(name, percents, "must be percents in 1..99 summing below 100", "")
                )

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts the four splits read, each once, train first."""
        return tuple(dict.fromkeys((self.train, self.val, self.test)))

    def describe(self) -> str:
        """One line, e.g. ``train800 = train[:800], val200 = train[90%:][:200], test = test``."""

        def at(part: str, percents: tuple[int, ...]) -> str:
            return f"{part}[{'+'.join(f'{p}%' for p in percents)}:]" if percents else part

        return (
            f"train800 = {self.train}[:800], val200 = {at(self.val, self.val_cut)}[:200], "
            f"train800val200 = train800 + val200, test = {at(self.test, self.test_cut)} "
            f"({self.tfds_name}, {self.source})"
        )

    def segments(self, split: str, size: Callable[[str], int]) -> tuple[Segment, ...]:
        """The slices of the parts (in their served order) that make up ``split``.

        Args:
            split: one of :data:`~hgprompt_ray.data.base.SPLITS`.
            size: the number of examples in a part; asked only for the parts ``split`` reads.

        Raises:
            InvalidValueError: a part is too small for the definition (a slice would run past its
                end, or overlap another split's slice of the same part); the message names the
                part, its size and the slice.
        """
        check_split(split)
        wanted = _WANTED[split]
        parts = {self._part_of(name) for name in wanted}
        named = {
            name: self._segment(name, size)
            for name in ("train800", "val200", "test")
            if self._part_of(name) in parts
        }
        self._check(size, named)
        return tuple(named[name] for name in wanted)

    def _part_of(self, name: str) -> str:
        return {"train800": self.train, "val200": self.val, "test": self.test}[name]

    def _segment(self, name: str, size: Callable[[str], int]) -> Segment:
        if name == "train800":
            return self.train, 0, TRAIN_SIZE
        if name == "val200":
            start = cut(size(self.val), self.val_cut)
            return self.val, start, start + VAL_SIZE
        return self.test, cut(size(self.test), self.test_cut), size(self.test)

    def _check(self, size: Callable[[str], int], named: dict[str, Segment]) -> None:
        fix = "Fix: the data on disk is incomplete; delete it and fetch it again with --download (download=True)."
        for name, (part, start, stop) in named.items():
            if stop > size(part) or start >= stop:
                raise InvalidValueError(
                    invalid_value(
                        f"the size of the {part!r} part",
                        size(part),
                        f"must hold {name} = {part}[{start}:{stop}]",
                        fix,
                    )
                )
        items = list(named.items())
        for i, (name_a, (part_a, start_a, stop_a)) in enumerate(items):
            for name_b, (part_b, start_b, stop_b) in items[i + 1 :]:
                if part_a == part_b and start_a < stop_b and start_b < stop_a:
                    raise InvalidValueError(
                        invalid_value(
                            f"the size of the {part_a!r} part",
                            size(part_a),
                            f"must keep {name_a} = {part_a}[{start_a}:{stop_a}] and "
                            f"{name_b} = {part_b}[{start_b}:{stop_b}] apart",
                            fix,
                        )
                    )


_WANTED = {
    "train800": ("train800",),
    "val200": ("val200",),
    "train800val200": ("train800", "val200"),
    "test": ("test",),
}
