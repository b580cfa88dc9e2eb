"""Readers (and downloaders) of the VTAB datasets torchvision has no reader for, or one that
unpickles: CIFAR-100 (binary version), SVHN, Flowers102, dSprites and smallNORB.

Each ``*_read(root, part)`` returns the :data:`Pool` of ``part``, the files standing for one TFDS
split (``"train"``, ``"validation"`` or ``"test"``), in file order; each ``*_fetch(root)``
downloads the files into ``root``.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from hgprompt_ray.data.base import ArraySplit
from hgprompt_ray.data.vtab.task import Pool

__all__ = ["read_norb"]


# ------------------------------------------------------------------------------------------- CIFAR-100
def _cifar_read(root: Path, part: str) -> Pool:
    folder = root / "cifar-100-binary"
    raw = np.fromfile(folder / {"train": "train.bin", "test": "test.bin"}[part], dtype=np.uint8)
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

    mat = loadmat(root / {"train": "train_32x32.mat", "test": "test_32x32.mat"}[part])
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
    # TFDS's train / validation / test are setid.mat's trnid / valid / tstid (TFDS oxford_flowers102).
    key = {"train": "trnid", "validation": "valid", "test": "tstid"}[part]
    ids = loadmat(folder / "setid.mat")[key].reshape(-1).astype(np.int64)
    return (lambda i: Image.open(folder / "jpg" / f"image_{ids[i]:05d}.jpg")), labels[ids - 1]


def _flowers_fetch(root: Path) -> None:
    from torchvision.datasets import Flowers102

    Flowers102(str(root), download=True)


# ------------------------------------------------------------------------------------------- dSprites
_DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def _dsprites_reader(factor: str) -> Callable[[Path, str], Pool]:
    def read(root: Path, part: str) -> Pool:
        if part != "train":  # TFDS dsprites has one split, "train": all 737,280 images
            raise KeyError(part)
        with np.load(root / "dsprites" / _DSPRITES_FILE, allow_pickle=False) as archive:
            classes = archive["latents_classes"]  # (N, 6): color, shape, scale, orientation, x, y
            images = archive["imgs"]  # (N, 64, 64) of 0/1, kept as is (3 GB for the real file)
        if factor == "location":
            labels = classes[:, 4] // 2
        else:
            labels = (classes[:, 3] * 16) // 40
        return (lambda i: Image.fromarray(images[i] * np.uint8(255))), labels.astype(np.int64)

    return read


def _dsprites_fetch(root: Path) -> None:
    from torchvision.datasets.utils import download_url

    download_url(
        f"https://github.com/deepmind/dsprites-dataset/raw/master/{_DSPRITES_FILE}", str(root / "dsprites")
    )


# ------------------------------------------------------------------------------------------- smallNORB
_NORB_MAGIC = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32}
_NORB_STEM = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training",
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
