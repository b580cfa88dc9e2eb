"""Offline tasks read from installed packages: simulated textiles (PyPI ``conformal-clip-data``)
and Fashion-MNIST (Debian ``dataset-fashion-mnist``). Registered in :mod:`hgprompt_ray.data.offline`."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from hgprompt_ray.data.base import (
    ArraySplit,
    ImageSplit,
    Task,
    TaskInfo,
    pool_split_indices,
    vtab_split_indices,
)

__all__ = ["FASHION_MNIST_ENV", "FashionTask", "TextileTask", "fashion_mnist_dir", "read_idx"]

FASHION_MNIST_ENV = "HGPROMPT_FASHION_MNIST_DIR"
_FASHION_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
_FASHION_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
_FASHION_COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])



class TextileTask(Task):
    """Simulated textile images: nominal, local or global defect (``coarse``: nominal or defective)."""

    def __init__(self, name: str, coarse: bool) -> None:
        self.coarse = coarse
        names = ("nominal", "defect") if coarse else ("nominal", "local", "global")
        self.info = TaskInfo(
            name=name,
            suite="offline",
            num_classes=len(names),
            class_names=names,
            native_size=(250, 250),
            description="simulated textile: "
            + ("nominal or defective" if coarse else "nominal, local or global defect"),
            source="PyPI conformal-clip-data (Megahed et al., 2025)",
        )

    def availability(self) -> tuple[bool, str]:
        try:
            import conformal_clip_data  # noqa: F401
        except ModuleNotFoundError:
            return False, "pip install conformal-clip-data"
        return True, ""

    def _files(self) -> tuple[list[Path], np.ndarray]:
        import conformal_clip_data as textiles

        paths: list[Path] = []
        labels: list[int] = []
        for label, folder in enumerate((textiles.nominal_dir(), textiles.local_dir(), textiles.global_dir())):
            files = sorted(Path(folder).glob("*.jpg"))
            paths.extend(files)
            labels.extend([min(label, 1) if self.coarse else label] * len(files))
        return paths, np.asarray(labels, dtype=np.int64)

    def _split(self, split: str, seed: int) -> ImageSplit:
        paths, labels = self._files()
        index = pool_split_indices(len(labels), split, seed)
        chosen = [paths[i] for i in index]
        return ImageSplit(lambda i: Image.open(chosen[i]), labels[index])


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST idx files are read from (``$HGPROMPT_FASHION_MNIST_DIR`` overrides)."""
    return Path(os.environ.get(FASHION_MNIST_ENV, _FASHION_DEFAULT))


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) idx file, the MNIST family's format: magic, dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file (magic {data[:4]!r})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} bytes")
    return array.reshape(shape)


class FashionTask(Task):
    """Fashion-MNIST articles (``coarse``: four article groups), from the Debian package's idx files."""

    def __init__(self, name: str, coarse: bool) -> None:
        self.coarse = coarse
        names = ("tops", "trousers-dresses", "footwear", "bags") if coarse else _FASHION_NAMES
        self.info = TaskInfo(
            name=name,
            suite="offline",
            num_classes=len(names),
            class_names=names,
            native_size=(28, 28),
            description="Fashion-MNIST article" + (" group" if coarse else ""),
            source="Debian dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
        )

    def _file(self, stem: str) -> Path:
        return fashion_mnist_dir() / f"{stem}.gz"

    def availability(self) -> tuple[bool, str]:
        missing = [
            p
            for p in map(self._file, ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
            if not p.is_file()
        ]
        if missing:
            return False, (
                f"{missing[0]} is missing. Fix: sudo apt-get install dataset-fashion-mnist "
                f"(or set {FASHION_MNIST_ENV} to a folder with the four idx .gz files)"
            )
        return True, ""

    def _split(self, split: str, seed: int) -> ImageSplit:
        part = "t10k" if split == "test" else "train"
        images = read_idx(self._file(f"{part}-images-idx3-ubyte"))
        labels = read_idx(self._file(f"{part}-labels-idx1-ubyte")).astype(np.int64)
        if self.coarse:
            labels = _FASHION_COARSE[labels]
        if split == "test":
            return ArraySplit(images, labels)
        index = vtab_split_indices(len(labels), split, seed)
        return ArraySplit(images[index], labels[index])
