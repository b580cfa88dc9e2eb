"""VTAB-1k tasks over torchvision, plus small readers where torchvision has none (or unpickles).

Split protocol (see ``base``): train800 / val200 are drawn by a seeded permutation from the
task's *training pool*; test is the task's *test set*. Pools and test sets per task:

| task | training pool | test set | reader |
| --- | --- | --- | --- |
| cifar100 | official train (50k) | official test (10k) | own, CIFAR-100 *binary* version (no pickle) |
| dtd | official train1 + val1 | official test1 | torchvision ``DTD`` |
| flowers102 | official train + val | official test | own (``imagelabels.mat``, ``setid.mat``, jpg) |
| pets | official trainval | official test | torchvision ``OxfordIIITPet`` |
| svhn | official train | official test | own (``{train,test}_32x32.mat``) |
| eurosat | first 80% of a seed-0 permutation | last 20% | torchvision ``EuroSAT`` |
| caltech101 | 30 images per class (seed-0 permutation) | the rest | torchvision ``Caltech101`` |
| sun397 | first 80% of a seed-0 permutation | last 20% | torchvision ``SUN397`` |
| pcam | official train | official test | torchvision ``PCAM`` (h5py) |
| clevr-count | official train | official val (test has no labels); label = objects - 3 | torchvision ``CLEVRClassification`` |
| dsprites-location / -orientation | first 80% of a seed-0 permutation | last 20% | own (official npz, ``allow_pickle=False``); x // 2, orientation * 16 // 40 |
| smallnorb-azimuth / -elevation | official training set | official test set | own (NORB binary ``.mat``), left camera |

Data is looked for under ``data_root`` (default ``$HGPROMPT_DATA`` or ``~/data/vtab``) and
downloaded only when asked (``download=True``, ``--download``).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hgprompt_ray.data.base import (
    ArraySplit,
    ImageSplit,
    Task,
    TaskInfo,
    TaskUnavailableError,
    vtab_split_indices,
)

__all__ = ["DATA_ENV", "VTAB_TASKS", "default_data_root", "read_norb", "vtab_task"]

DATA_ENV = "HGPROMPT_DATA"
_SEEDED_TEST_FRACTION = 0.2


def default_data_root() -> Path:
    """``$HGPROMPT_DATA`` or ``~/data/vtab``."""
    return Path(os.environ.get(DATA_ENV, Path.home() / "data" / "vtab")).expanduser()


Pool = tuple[Callable[[int], Image.Image], np.ndarray]


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


# ------------------------------------------------------------------------------------------- CIFAR-100
def _cifar_read(root: Path, part: str) -> Pool:
    folder = root / "cifar-100-binary"
    raw = np.fromfile(folder / ("train.bin" if part == "pool" else "test.bin"), dtype=np.uint8)
    record = 2 + 3 * 32 * 32
    if raw.size % record:
        raise ValueError(f"{folder}: file size is not a multiple of the {record}-byte CIFAR-100 record")
    rows = raw.reshape(-1, record)
    images = rows[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    split = ArraySplit(images, rows[:, 1].astype(np.int64))
    return split.image, split.labels


def _cifar_fetch(root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", str(root))


# ------------------------------------------------------------------------------------------- SVHN
def _svhn_read(root: Path, part: str) -> Pool:
    from scipy.io import loadmat

    mat = loadmat(root / ("train_32x32.mat" if part == "pool" else "test_32x32.mat"))
    images = np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2))
    labels = mat["y"].reshape(-1).astype(np.int64) % 10  # SVHN stores the digit 0 as 10
    split = ArraySplit(images, labels)
    return split.image, split.labels


def _svhn_fetch(root: Path) -> None:
    from torchvision.datasets import SVHN

    for split in ("train", "test"):
        SVHN(str(root), split=split, download=True)


# ------------------------------------------------------------------------------------------- Flowers102
def _flowers_read(root: Path, part: str) -> Pool:
    from scipy.io import loadmat

    folder = root / "flowers-102"
    labels = loadmat(folder / "imagelabels.mat")["labels"].reshape(-1).astype(np.int64) - 1
    setid = loadmat(folder / "setid.mat")
    ids = (
        np.concatenate([setid["trnid"].reshape(-1), setid["valid"].reshape(-1)])
        if part == "pool"
        else (setid["tstid"].reshape(-1))
    )
    ids = ids.astype(np.int64)
    return (lambda i: Image.open(folder / "jpg" / f"image_{ids[i]:05d}.jpg")), labels[ids - 1]


def _flowers_fetch(root: Path) -> None:
    from torchvision.datasets import Flowers102

    Flowers102(str(root), download=True)


# ------------------------------------------------------------------------------------------- torchvision
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


# ------------------------------------------------------------------------------------------- dSprites
_DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def _dsprites_reader(factor: str) -> Callable[[Path, str], Pool]:
    def read(root: Path, part: str) -> Pool:
        with np.load(root / "dsprites" / _DSPRITES_FILE, allow_pickle=False) as archive:
            classes = archive["latents_classes"]  # (N, 6): color, shape, scale, orientation, x, y
            index = _seeded_partition(len(classes), part)
            images = archive["imgs"][index]
        if factor == "location":
            labels = classes[index, 4] // 2
        else:
            labels = (classes[index, 3] * 16) // 40
        split = ArraySplit((images * 255).astype(np.uint8), labels.astype(np.int64))
        return split.image, split.labels

    return read


def _dsprites_fetch(root: Path) -> None:
    from torchvision.datasets.utils import download_url

    download_url(
        f"https://github.com/deepmind/dsprites-dataset/raw/master/{_DSPRITES_FILE}", str(root / "dsprites")
    )


# ------------------------------------------------------------------------------------------- smallNORB
_NORB_MAGIC = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32}
_NORB_STEM = {
    "pool": "smallnorb-5x46789x9x18x6x2x96x96-training",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing",
}


def read_norb(path: Path) -> np.ndarray:
    """Read a NORB binary matrix (``.mat``, optionally gzipped): magic, ndim, dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic, ndim = struct.unpack("<ii", data[:8])
    magic &= 0xFFFFFFFF
    if magic not in _NORB_MAGIC:
        raise ValueError(f"{path} is not a NORB byte or integer matrix (magic {magic:#x})")
    dims = struct.unpack("<" + "i" * max(3, ndim), data[8 : 8 + 4 * max(3, ndim)])[:ndim]
    array = np.frombuffer(data, dtype=_NORB_MAGIC[magic], offset=8 + 4 * max(3, ndim))
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {array.size} values")
    return array.reshape(dims)


def _norb_file(root: Path, part: str, kind: str) -> Path:
    base = root / "smallnorb" / f"{_NORB_STEM[part]}-{kind}.mat"
    return base if base.is_file() else base.with_suffix(".mat.gz")


def _norb_reader(factor: str) -> Callable[[Path, str], Pool]:
    def read(root: Path, part: str) -> Pool:
        images = read_norb(_norb_file(root, part, "dat"))[:, 0]  # left camera, (N, 96, 96)
        info = read_norb(_norb_file(root, part, "info"))  # (N, 4): instance, elevation, azimuth, lighting
        labels = info[:, 1] if factor == "elevation" else info[:, 2] // 2
        split = ArraySplit(np.ascontiguousarray(images), labels.astype(np.int64))
        return split.image, split.labels

    return read


def _norb_fetch(root: Path) -> None:
    from torchvision.datasets.utils import download_url

    for stem in _NORB_STEM.values():
        for kind in ("dat", "cat", "info"):
            download_url(
                f"https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/{stem}-{kind}.mat.gz",
                str(root / "smallnorb"),
            )


# ------------------------------------------------------------------------------------------- registry
def _names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


_SPECS: dict[str, dict[str, Any]] = {
    "cifar100": dict(
        classes=100,
        size=(32, 32),
        what="object class",
        source="cs.toronto.edu (CIFAR-100 binary)",
        exists=lambda r: (r / "cifar-100-binary" / "train.bin").is_file(),
        read=_cifar_read,
        fetch=_cifar_fetch,
    ),
    "dtd": dict(
        classes=47,
        size=(300, 300),
        what="texture",
        source="torchvision DTD",
        exists=lambda r: (r / "dtd" / "dtd" / "labels").is_dir(),
        read=_dtd_read,
        fetch=_torchvision_fetch("DTD"),
    ),
    "flowers102": dict(
        classes=102,
        size=(500, 500),
        what="flower species",
        source="torchvision Flowers102",
        exists=lambda r: (r / "flowers-102" / "setid.mat").is_file(),
        read=_flowers_read,
        fetch=_flowers_fetch,
    ),
    "pets": dict(
        classes=37,
        size=(400, 400),
        what="cat or dog breed",
        source="torchvision OxfordIIITPet",
        exists=lambda r: (r / "oxford-iiit-pet" / "annotations").is_dir(),
        read=_pets_read,
        fetch=_torchvision_fetch("OxfordIIITPet"),
    ),
    "svhn": dict(
        classes=10,
        size=(32, 32),
        what="house-number digit",
        source="torchvision SVHN",
        exists=lambda r: (r / "train_32x32.mat").is_file() and (r / "test_32x32.mat").is_file(),
        read=_svhn_read,
        fetch=_svhn_fetch,
    ),
    "eurosat": dict(
        classes=10,
        size=(64, 64),
        what="land use from satellite",
        source="torchvision EuroSAT",
        exists=lambda r: (r / "eurosat" / "2750").is_dir(),
        read=_eurosat_read,
        fetch=_torchvision_fetch("EuroSAT"),
    ),
    "caltech101": dict(
        classes=101,
        size=(300, 300),
        what="object category",
        source="torchvision Caltech101",
        exists=lambda r: (r / "caltech101" / "101_ObjectCategories").is_dir(),
        read=_caltech_read,
        fetch=_torchvision_fetch("Caltech101", target_type="category"),
    ),
    "sun397": dict(
        classes=397,
        size=(300, 300),
        what="scene category",
        source="torchvision SUN397",
        exists=lambda r: (r / "SUN397" / "ClassName.txt").is_file(),
        read=_sun_read,
        fetch=_torchvision_fetch("SUN397"),
    ),
    "pcam": dict(
        classes=2,
        size=(96, 96),
        what="metastatic tissue in a patch",
        source="torchvision PCAM",
        exists=lambda r: (r / "pcam" / "camelyonpatch_level_2_split_test_y.h5").is_file(),
        read=_pcam_read,
        fetch=_pcam_fetch,
    ),
    "clevr-count": dict(
        classes=8,
        size=(320, 480),
        what="number of objects (3-10)",
        source="torchvision CLEVR",
        exists=lambda r: (r / "clevr" / "CLEVR_v1.0" / "scenes").is_dir(),
        read=_clevr_read,
        fetch=_clevr_fetch,
    ),
    "dsprites-loc": dict(
        classes=16,
        size=(64, 64),
        what="sprite x position (16 bins)",
        source="deepmind dsprites",
        exists=lambda r: (r / "dsprites" / _DSPRITES_FILE).is_file(),
        read=_dsprites_reader("location"),
        fetch=_dsprites_fetch,
    ),
    "dsprites-ori": dict(
        classes=16,
        size=(64, 64),
        what="sprite orientation (16 bins)",
        source="deepmind dsprites",
        exists=lambda r: (r / "dsprites" / _DSPRITES_FILE).is_file(),
        read=_dsprites_reader("orientation"),
        fetch=_dsprites_fetch,
    ),
    "smallnorb-azi": dict(
        classes=18,
        size=(96, 96),
        what="toy azimuth (18 values)",
        source="cs.nyu.edu smallNORB",
        exists=lambda r: _norb_file(r, "test", "info").is_file(),
        read=_norb_reader("azimuth"),
        fetch=_norb_fetch,
    ),
    "smallnorb-ele": dict(
        classes=9,
        size=(96, 96),
        what="camera elevation (9 values)",
        source="cs.nyu.edu smallNORB",
        exists=lambda r: _norb_file(r, "test", "info").is_file(),
        read=_norb_reader("elevation"),
        fetch=_norb_fetch,
    ),
}

VTAB_TASKS = tuple(_SPECS)


def vtab_task(name: str, data_root: str | Path | None = None, download: bool = False) -> VtabTask:
    """Build the VTAB-1k task ``name`` reading from ``data_root`` (see the module table)."""
    spec = _SPECS[name]
    info = TaskInfo(
        name=name,
        suite="vtab",
        num_classes=spec["classes"],
        class_names=_names("c", spec["classes"]),
        native_size=spec["size"],
        description=spec["what"],
        source=spec["source"],
    )
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return VtabTask(
        info, root, exists=spec["exists"], read=spec["read"], fetch=spec["fetch"], download=download
    )


__all__ += ["TaskUnavailableError"]
