"""Readers (and downloaders) of the VTAB datasets read through torchvision: DTD, Oxford-IIIT
Pets, EuroSAT, Caltech101, SUN397, PCAM and CLEVR (count).

Each ``*_read(root, part)`` returns the :data:`Pool` of ``part`` (``"pool"`` or ``"test"``);
torchvision is imported only when a reader or downloader runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hgprompt_ray.data.vtab.task import Pool, _seeded_partition, _subset

__all__: list[str] = []


def _dtd_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import DTD

    if part == "test":
        dataset = DTD(str(root), split="test", partition=1)
        return _subset(dataset, np.asarray(dataset._labels), np.arange(len(dataset)))
    train, val = DTD(str(root), split="train", partition=1), DTD(str(root), split="val", partition=1)
    labels = np.asarray(train._labels + val._labels, dtype=np.int64)
    return (lambda i: train[i][0] if i < len(train) else val[i - len(train)][0]), labels


def _pets_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import OxfordIIITPet

    dataset = OxfordIIITPet(str(root), split="trainval" if part == "pool" else "test")
    return _subset(dataset, np.asarray(dataset._labels, dtype=np.int64), np.arange(len(dataset)))


def _eurosat_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import EuroSAT

    dataset = EuroSAT(str(root))
    labels = np.asarray(dataset.targets, dtype=np.int64)
    return _subset(dataset, labels, _seeded_partition(len(labels), part))


def _caltech_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import Caltech101

    dataset = Caltech101(str(root), target_type="category")
    labels = np.asarray(dataset.y, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    in_pool = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        in_pool[order[labels[order] == cls][:30]] = True
    index = np.flatnonzero(in_pool if part == "pool" else ~in_pool)
    return _subset(dataset, labels, index)


def _sun_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import SUN397

    dataset = SUN397(str(root))
    labels = np.asarray(dataset._labels, dtype=np.int64)
    return _subset(dataset, labels, _seeded_partition(len(labels), part))


def _pcam_read(root: Path, part: str) -> Pool:
    import h5py
    from torchvision.datasets import PCAM

    split = "train" if part == "pool" else "test"
    dataset = PCAM(str(root), split=split)
    targets = dataset._base_folder / dataset._FILES[split]["targets"][0]
    with h5py.File(targets, "r") as handle:
        labels = np.asarray(handle["y"]).reshape(-1).astype(np.int64)
    return _subset(dataset, labels, np.arange(len(labels)))


def _clevr_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import CLEVRClassification

    dataset = CLEVRClassification(str(root), split="train" if part == "pool" else "val")
    labels = np.asarray(dataset._labels, dtype=np.int64) - 3
    if labels.size and (labels.min() < 0 or labels.max() > 7):
        raise ValueError(
            f"{root}: CLEVR scenes must hold 3-10 objects, found {labels.min() + 3}-{labels.max() + 3}"
        )
    return _subset(dataset, labels, np.arange(len(labels)))


def _torchvision_fetch(name: str, **kwargs: Any) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        import torchvision.datasets as datasets

        getattr(datasets, name)(str(root), download=True, **kwargs)

    return fetch


def _pcam_fetch(root: Path) -> None:
    from torchvision.datasets import PCAM

    for split in ("train", "test"):
        PCAM(str(root), split=split, download=True)


def _clevr_fetch(root: Path) -> None:
    from torchvision.datasets import CLEVRClassification

    CLEVRClassification(str(root), split="train", download=True)
