"""What every task provides: metadata, the VTAB-1k split names, and labelled image splits.

Split protocol. Offline suite and user folders: ``train800`` and ``val200`` are 800 and 200
images drawn without overlap from the task's training pool by a permutation seeded with
``split_seed``; ``train800val200`` is their union (800 + 200, in that order); ``test`` is the
official test split or the held-out remainder. The same seed always gives the same images.
VTAB-1k: the official definitions of google-research/task_adaptation (``data.vtab.official``),
which are not seeded: every seed gives the same images (:attr:`Task.split_is_seeded` is False).

Images are served as PIL RGB images at their native size; :func:`backbone_transform` resizes
them to the backbone's square input size (bicubic, no crop, no augmentation) and normalises with
the backbone's mean and std.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "SPLITS",
    "ArraySplit",
    "ImageSplit",
    "Task",
    "TaskInfo",
    "TaskUnavailableError",
    "backbone_transform",
    "check_split",
    "pool_split_indices",
    "vtab_split_indices",
]

SPLITS = ("train800", "val200", "train800val200", "test")
TRAIN_SIZE, VAL_SIZE = 800, 200


class TaskUnavailableError(FileNotFoundError):
    """A task's data is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class TaskInfo:
    """Static description of a task.

    Attributes:
        name: registry name.
        suite: ``"offline"`` or ``"vtab"``.
        num_classes: number of classes.
        class_names: one name per class index.
        native_size: typical native image size (H, W) before resizing.
        description: one line: what is predicted from what.
        source: where the data comes from (package, generator, or URL).
    """

    name: str
    suite: str
    num_classes: int
    class_names: tuple[str, ...]
    native_size: tuple[int, int]
    description: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def check_split(split: str) -> str:
    """Validate a split name."""
    if split not in SPLITS:
        raise InvalidValueError(invalid_value("split", split, f"must be one of {list(SPLITS)}", ""))
    return split


def vtab_split_indices(pool_size: int, split: str, seed: int) -> np.ndarray:
    """Indices into a training pool for ``train800``, ``val200`` or ``train800val200``.

    Args:
        pool_size: images in the training pool (at least 1000).
        split: one of the three training splits.
        seed: permutation seed.
    """
    check_split(split)
    if split == "test":
        raise InvalidValueError(invalid_value("split", split, "is not drawn from the training pool", ""))
    if pool_size < TRAIN_SIZE + VAL_SIZE:
        raise InvalidValueError(
            invalid_value("pool_size", pool_size, "must be at least 1000 for the VTAB-1k splits", "")
        )
    order = np.random.default_rng(seed).permutation(pool_size)
    if split == "train800":
        return order[:TRAIN_SIZE]
    if split == "val200":
        return order[TRAIN_SIZE : TRAIN_SIZE + VAL_SIZE]
    return order[: TRAIN_SIZE + VAL_SIZE]


def backbone_transform(
    img_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to img_size x img_size (bicubic), to tensor, normalise. No augmentation."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(
                (img_size, img_size), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
            ),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def pool_split_indices(pool_size: int, split: str, seed: int) -> np.ndarray:
    """Like :func:`vtab_split_indices`, and ``test`` = the pool minus train800val200 (sorted)."""
    if split == "test":
        return np.setdiff1d(np.arange(pool_size), vtab_split_indices(pool_size, "train800val200", seed))
    return vtab_split_indices(pool_size, split, seed)


class ImageSplit(torch.utils.data.Dataset):
    """A labelled image split: ``(image, label)`` pairs, with the labels known without loading.

    Args:
        load: returns the i-th image as a PIL image (any mode; converted to RGB).
        labels: (N,) integer labels.
        transform: applied to each RGB image (e.g. :func:`backbone_transform`), or None.
    """

    def __init__(
        self,
        load: Callable[[int], Image.Image],
        labels: np.ndarray,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self._load = load
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, index: int) -> Image.Image:
        """The raw RGB image at ``index``."""
        return self._load(int(index)).convert("RGB")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        return (self.transform(image) if self.transform else image), int(self.labels[index])

    def with_transform(self, transform: Callable[[Image.Image], Any] | None) -> ImageSplit:
        """The same split with another transform."""
        return type(self)._from(self, transform)

    @classmethod
    def _from(cls, other: ImageSplit, transform: Callable[[Image.Image], Any] | None) -> ImageSplit:
        return ImageSplit(other._load, other.labels, transform)


class ArraySplit(ImageSplit):
    """A split held in memory as a uint8 array (N, H, W) or (N, H, W, 3)."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], Any] | None = None
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] != len(labels):
            raise InvalidValueError(
                invalid_value(
                    "images", (images.dtype, images.shape), "must be uint8 (N, H, W[, 3]) matching labels", ""
                )
            )
        self.images = images
        super().__init__(lambda i: Image.fromarray(self.images[i]), labels, transform)

    @classmethod
    def _from(cls, other: ImageSplit, transform: Callable[[Image.Image], Any] | None) -> ImageSplit:
        if isinstance(other, ArraySplit):
            return ArraySplit(other.images, other.labels, transform)
        return ImageSplit(other._load, other.labels, transform)


class Task(abc.ABC):
    """A classification task with the four VTAB-1k splits."""

    info: TaskInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def split_is_seeded(self) -> bool:
        """Whether ``seed`` changes which images the splits hold (False: every seed repeats the
        same draw, e.g. VTAB-1k's official splits)."""
        return True

    def availability(self) -> tuple[bool, str]:
        """(True, "") when the data is here, else (False, how to get it)."""
        return True, ""

    @abc.abstractmethod
    def _split(self, split: str, seed: int) -> ImageSplit:
        """Build a split (name already validated, data available)."""

    def require_available(self, split: str) -> None:
        """Check ``split``'s name and that the data is here.

        Raises:
            InvalidValueError: an unknown split name.
            TaskUnavailableError: the data is not on this machine (the message says how to get it).
        """
        check_split(split)
        available, reason = self.availability()
        if not available:
            raise TaskUnavailableError(f"Task {self.name!r} is not available here: {reason}")

    def split(
        self, split: str, *, seed: int = 0, transform: Callable[[Image.Image], Any] | None = None
    ) -> ImageSplit:
        """One of ``train800``, ``val200``, ``train800val200``, ``test``.

        Args:
            split: the split name.
            seed: seed of the train800/val200 draw (recorded with every result); ignored by
                tasks whose splits are fixed (:attr:`split_is_seeded` False).
            transform: per-image transform, e.g. :func:`backbone_transform`.

        Raises:
            TaskUnavailableError: the data is not on this machine (the message says how to get it).
        """
        self.require_available(split)
        result = self._split(split, seed)
        return result.with_transform(transform) if transform is not None else result
