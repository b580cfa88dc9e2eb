"""Readers (and downloaders) of the VTAB datasets read through torchvision: DTD, Oxford-IIIT
Pets, EuroSAT, Caltech101, SUN397, PCAM and CLEVR (count).

Each ``*_read(root, part)`` returns the :data:`Pool` of ``part``, the files standing for one TFDS
split (``"train"``, ``"validation"`` or ``"test"``), in file order (torchvision's, or for SUN397
the files sorted by path, torchvision's own listing being the file system's); torchvision is
imported only when a reader or downloader runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hgprompt_ray.data.vtab.task import Pool, _subset

__all__: list[str] = []

_FIXED_SEED = 0
"""Seed of the fixed partitions drawn where TFDS's cannot be reproduced (Caltech101, SUN397)."""
_SUN397_TFDS_LISTS = {
    "train": "sun397_tfds_tr.txt",
    "validation": "sun397_tfds_va.txt",
    "test": "sun397_tfds_te.txt",
}
_SUN397_TFDS_SKIPS = frozenset(
    {"/c/church/outdoor/sun_bhenjvsvrtumjuri.jpg", "/t/track/outdoor/sun_aophkoiosslinihb.jpg"}
)
"""Images TFDS's sun397 builder leaves out (badly encoded), whatever the lists say."""
_SUN397_SHARES = (70, 10)
"""TFDS sun397/tfds's train and validation shares (76,128 / 10,875 / 21,750 images: 70/10/20 %)."""


def _dtd_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import DTD

    # TFDS dtd's train / validation / test are the first fold's train1 / val1 / test1 lists.
    dataset = DTD(str(root), split={"train": "train", "validation": "val", "test": "test"}[part], partition=1)
    return _subset(dataset, np.asarray(dataset._labels, dtype=np.int64), np.arange(len(dataset)))


def _pets_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import OxfordIIITPet

    # TFDS oxford_iiit_pet's train / test are annotations/trainval.txt / test.txt.
    dataset = OxfordIIITPet(str(root), split={"train": "trainval", "test": "test"}[part])
    return _subset(dataset, np.asarray(dataset._labels, dtype=np.int64), np.arange(len(dataset)))


def _eurosat_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import EuroSAT

    if part != "train":  # TFDS eurosat/rgb has one split, "train": all 27,000 images
        raise KeyError(part)
    dataset = EuroSAT(str(root))
    labels = np.asarray(dataset.targets, dtype=np.int64)
    return _subset(dataset, labels, np.arange(len(labels)))


def _caltech_read(root: Path, part: str) -> Pool:
    """TFDS caltech101's train split is 30 images per class drawn with NumPy's seed 1234 in the
    order of a directory listing (so not reproducible here), the rest is test; this draws 30 per
    class of torchvision's 101 classes with ``default_rng(0)`` and keeps file order in each part."""
    from torchvision.datasets import Caltech101

    dataset = Caltech101(str(root), target_type="category")
    labels = np.asarray(dataset.y, dtype=np.int64)
    order = np.random.default_rng(_FIXED_SEED).permutation(len(labels))
    in_train = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        in_train[order[labels[order] == cls][:30]] = True
    index = np.flatnonzero({"train": in_train, "test": ~in_train}[part])
    return _subset(dataset, labels, index)


def _sun_read(root: Path, part: str) -> Pool:
    """TFDS sun397/tfds's partition is fixed by the lists ``sun397_tfds_{tr,va,te}.txt`` that ship
    with tensorflow_datasets (``image_classification/``): when the three are in the ``SUN397``
    folder they are used; otherwise a fixed 70/10/20 partition (``default_rng(0)``) of the images
    sorted by path stands in for it."""
    from torchvision.datasets import SUN397

    dataset = SUN397(str(root))
    # torchvision lists the files in the file system's order: sort them by path.
    names = ["/" + path.relative_to(dataset._data_dir).as_posix() for path in dataset._image_files]
    by_path = np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)
    labels = np.asarray(dataset._labels, dtype=np.int64)
    lists = {name: dataset._data_dir / file for name, file in _SUN397_TFDS_LISTS.items()}
    if all(path.is_file() for path in lists.values()):
        wanted = {line.strip() for line in lists[part].read_text().splitlines() if line.strip()}
        wanted -= _SUN397_TFDS_SKIPS
        index = np.array([i for i in by_path if names[i] in wanted], dtype=np.int64)
        if len(index) != len(wanted):
            raise ValueError(
                f"{lists[part]} names {len(wanted)} images, {len(wanted) - len(index)} of them not under "
                f"{dataset._data_dir}: the SUN397 folder is incomplete; fetch it again with --download"
            )
        return _subset(dataset, labels, index)
    count = len(names)
    order = np.random.default_rng(_FIXED_SEED).permutation(count)
    train_end = _SUN397_SHARES[0] * count // 100
    val_end = train_end + _SUN397_SHARES[1] * count // 100
    parts = {"train": order[:train_end], "validation": order[train_end:val_end], "test": order[val_end:]}
    return _subset(dataset, labels, by_path[np.sort(parts[part])])


def _pcam_read(root: Path, part: str) -> Pool:
    import h5py
    from torchvision.datasets import PCAM

    # TFDS patch_camelyon's train / validation / test are the train / valid / test .h5 files.
    split = {"train": "train", "validation": "val", "test": "test"}[part]
    dataset = PCAM(str(root), split=split)
    targets = dataset._base_folder / dataset._FILES[split]["targets"][0]
    with h5py.File(targets, "r") as handle:
        labels = np.asarray(handle["y"]).reshape(-1).astype(np.int64)
    return _subset(dataset, labels, np.arange(len(labels)))


def _clevr_read(root: Path, part: str) -> Pool:
    from torchvision.datasets import CLEVRClassification

    # TFDS clevr's train / validation are CLEVR_v1.0's train / val images (its test has no scenes).
    dataset = CLEVRClassification(str(root), split={"train": "train", "validation": "val"}[part])
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

    for split in ("train", "val", "test"):
        PCAM(str(root), split=split, download=True)


def _clevr_fetch(root: Path) -> None:
    from torchvision.datasets import CLEVRClassification

    CLEVRClassification(str(root), split="train", download=True)
