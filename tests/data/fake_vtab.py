"""Write small fake datasets in each VTAB dataset's real on-disk format.

Every image is a constant colour that encodes its label (:func:`colour_of`), so a test can check
that a loader pairs each image with the right label. The writers that know their files' order
return ``{part: labels in file order}`` (parts as in ``OfficialSplits``); each writes enough
images for the official slices (800 before the cut, 200 after it).
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

STEP = 25


def colour_of(label: int) -> tuple[int, int, int]:
    return (label % 10) * STEP, (label // 10 % 10) * STEP, 128


def label_of(image: Image.Image) -> int:
    red, green, _ = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return int(round(red / STEP)) + 10 * int(round(green / STEP))


def _image(label: int, size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), colour_of(label))


def _array(labels: np.ndarray, size: int) -> np.ndarray:
    colours = np.array([colour_of(int(y)) for y in labels], dtype=np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (len(labels), size, size, 3)).copy()


def _labels(count: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, count)


def write_cifar100(root: Path, train: int = 2000, test: int = 60) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    written = {}
    for name, count, seed in (("train.bin", train, 0), ("test.bin", test, 1)):
        labels = _labels(count, 100, seed)
        pixels = _array(labels, 32).transpose(0, 3, 1, 2).reshape(count, -1)
        coarse = (labels // 5).astype(np.uint8)
        records = np.concatenate([coarse[:, None], labels.astype(np.uint8)[:, None], pixels], axis=1)
        records.astype(np.uint8).tofile(folder / name)
        written[name.split(".")[0]] = labels
    return written


def write_svhn(root: Path, train: int = 2000, test: int = 40) -> dict[str, np.ndarray]:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, count, seed in (("train", train, 0), ("test", test, 1)):
        labels = _labels(count, 10, seed)
        stored = np.where(labels == 0, 10, labels)  # SVHN stores 0 as 10
        savemat(
            root / f"{part}_32x32.mat", {"X": _array(labels, 32).transpose(1, 2, 3, 0), "y": stored[:, None]}
        )
        written[part] = labels
    return written


def write_flowers102(
    root: Path, total: int = 1100, train: int = 820, val: int = 220
) -> dict[str, np.ndarray]:
    from scipy.io import savemat

    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    labels = _labels(total, 102, 0)
    for i, label in enumerate(labels, start=1):
        _image(int(label)).save(folder / "jpg" / f"image_{i:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": (labels + 1)[None, :]})
    ids = np.random.default_rng(2).permutation(np.arange(1, total + 1))  # the lists are not sorted by id
    lists = {"train": ids[:train], "validation": ids[train : train + val], "test": ids[train + val :]}
    savemat(
        folder / "setid.mat",
        {"trnid": lists["train"][None], "valid": lists["validation"][None], "tstid": lists["test"][None]},
    )
    return {part: labels[chosen - 1] for part, chosen in lists.items()}


def write_dtd(
    root: Path, classes: int = 47, train: int = 18, val: int = 12, test: int = 10
) -> dict[str, np.ndarray]:
    """Per class: ``train`` images in train1.txt, ``val`` in val1.txt, ``test`` in test1.txt; each
    list class by class, like the real one."""
    folder = root / "dtd" / "dtd"
    names = [f"texture{c:02d}" for c in range(classes)]
    files = {"train": "train1.txt", "validation": "val1.txt", "test": "test1.txt"}
    lines: dict[str, list[str]] = {part: [] for part in files}
    written: dict[str, list[int]] = {part: [] for part in files}
    for c, name in enumerate(names):
        (folder / "images" / name).mkdir(parents=True)
        for i in range(train + val + test):
            file = f"{name}/{name}_{i:04d}.jpg"
            _image(c).save(folder / "images" / file)
            part = "train" if i < train else "validation" if i < train + val else "test"
            lines[part].append(file)
            written[part].append(c)
    (folder / "labels").mkdir()
    for part, entries in lines.items():
        (folder / "labels" / files[part]).write_text("\n".join(entries) + "\n")
    return {part: np.array(labels) for part, labels in written.items()}


def write_pets(root: Path, trainval: int = 1050, test: int = 40) -> dict[str, np.ndarray]:
    folder = root / "oxford-iiit-pet"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    breeds = [f"Breed{c:02d}" for c in range(37)]
    written = {}
    for name, count, seed in (("trainval.txt", trainval, 0), ("test.txt", test, 1)):
        rows = []
        written["train" if seed == 0 else "test"] = _labels(count, 37, seed)
        for i, label in enumerate(_labels(count, 37, seed)):
            image_id = f"{breeds[label]}_{seed}{i}"
            _image(int(label)).save(folder / "images" / f"{image_id}.jpg")
            rows.append(f"{image_id} {label + 1} 1 1")
        (folder / "annotations" / name).write_text("\n".join(rows) + "\n")
    return written


def write_image_folder(folder: Path, names: list[str], per_class: int, prefix: str = "img") -> None:
    for c, name in enumerate(names):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _image(c).save(folder / name / f"{prefix}_{i:04d}.jpg")


def write_eurosat(root: Path, per_class: int = 140) -> dict[str, np.ndarray]:
    names = [
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    ]
    write_image_folder(root / "eurosat" / "2750", names, per_class=per_class)
    return {"train": np.repeat(np.arange(len(names)), per_class)}  # torchvision: class folder by folder


def write_caltech101(root: Path, classes: int = 68, per_class: int = 31) -> dict[str, np.ndarray]:
    folder = root / "caltech101" / "101_ObjectCategories"
    (folder / "BACKGROUND_Google").mkdir(parents=True)  # present in the real archive, not a class
    _image(99).save(folder / "BACKGROUND_Google" / "image_0001.jpg")
    for c in range(classes):
        (folder / f"cat{c:03d}").mkdir(parents=True)
        for i in range(1, per_class + 1):
            _image(c).save(folder / f"cat{c:03d}" / f"image_{i:04d}.jpg")
    return {}  # the parts are a drawn partition: checked by the test itself


def write_sun397(root: Path, classes: int = 25, per_class: int = 80) -> dict[str, np.ndarray]:
    folder = root / "SUN397"
    names = [f"/{chr(97 + c % 26)}/scene{c:02d}" for c in range(classes)]
    folder.mkdir(parents=True)
    (folder / "ClassName.txt").write_text("\n".join(names) + "\n")
    for c, name in enumerate(names):
        (folder / name[1:]).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _image(c).save(folder / name[1:] / f"sun_{c:02d}{i:04d}.jpg")
    return {}  # the parts are a partition (TFDS's lists or a drawn one): checked by the tests


def write_pcam(root: Path, train: int = 900, val: int = 210, test: int = 30) -> dict[str, np.ndarray]:
    import h5py

    folder = root / "pcam"
    folder.mkdir(parents=True)
    written = {}
    for split, count, seed in (("train", train, 0), ("valid", val, 2), ("test", test, 1)):
        labels = _labels(count, 2, seed)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as handle:
            handle.create_dataset("x", data=_array(labels, 96), compression="gzip")
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as handle:
            handle.create_dataset("y", data=labels.astype(np.uint8).reshape(-1, 1, 1, 1))
        written["validation" if split == "valid" else split] = labels
    return written


def write_clevr(root: Path, train: int = 2000, val: int = 30) -> dict[str, np.ndarray]:
    base = root / "clevr" / "CLEVR_v1.0"
    written = {}
    for split, count, seed in (("train", train, 0), ("val", val, 1)):
        (base / "images" / split).mkdir(parents=True)
        scenes = []
        written["validation" if split == "val" else split] = _labels(count, 8, seed)
        for i, label in enumerate(_labels(count, 8, seed)):
            name = f"CLEVR_{split}_{i:06d}.png"
            _image(int(label)).save(base / "images" / split / name)
            scenes.append({"image_filename": name, "objects": [{"shape": "cube"}] * int(label + 3)})
        (base / "scenes").mkdir(exist_ok=True)
        (base / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"scenes": scenes}))
    (base / "images" / "test").mkdir()
    return written


def write_dsprites(root: Path, count: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(0)
    classes = np.stack(
        [
            np.zeros(count, int),
            rng.integers(0, 3, count),
            rng.integers(0, 6, count),
            rng.integers(0, 40, count),
            rng.integers(0, 32, count),
            rng.integers(0, 32, count),
        ],
        axis=1,
    )
    images = np.zeros((count, 64, 64), dtype=np.uint8)
    images[np.arange(count), classes[:, 5] * 2, classes[:, 4] * 2] = 1  # one lit pixel at (y, x)
    (root / "dsprites").mkdir(parents=True)
    np.savez_compressed(
        root / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        imgs=images,
        latents_classes=classes,
    )
    return classes


def _norb_bytes(array: np.ndarray) -> bytes:
    magic = 0x1E3D4C55 if array.dtype == np.uint8 else 0x1E3D4C54
    dims = list(array.shape) + [1] * (3 - array.ndim)
    return (
        struct.pack("<ii", magic - (1 << 32) if magic >= 1 << 31 else magic, array.ndim)
        + struct.pack("<" + "i" * len(dims), *dims)
        + array.tobytes()
    )


def write_smallnorb(
    root: Path, train: int = 1000, test: int = 400, gzipped: bool = False
) -> dict[str, np.ndarray]:
    folder = root / "smallnorb"
    folder.mkdir(parents=True)
    stems = {
        "train": "smallnorb-5x46789x9x18x6x2x96x96-training",
        "test": "smallnorb-5x01235x9x18x6x2x96x96-testing",
    }
    infos = {}
    for split, count, seed in (("train", train, 0), ("test", test, 1)):
        rng = np.random.default_rng(seed)
        info = np.stack(
            [
                rng.integers(0, 10, count),
                rng.integers(0, 9, count),
                rng.integers(0, 18, count) * 2,
                rng.integers(0, 6, count),
            ],
            axis=1,
        ).astype(np.int32)
        images = np.zeros((count, 2, 96, 96), dtype=np.uint8)
        images[:, 0, 0, 0] = info[:, 1]  # the left camera's first pixels encode elevation and azimuth
        images[:, 0, 0, 1] = info[:, 2]
        for kind, array in (
            ("dat", images),
            ("info", info),
            ("cat", rng.integers(0, 5, count).astype(np.int32)),
        ):
            data = _norb_bytes(array)
            path = folder / f"{stems[split]}-{kind}.mat"
            if gzipped:
                with gzip.open(str(path) + ".gz", "wb") as handle:
                    handle.write(data)
            else:
                path.write_bytes(data)
        infos[split] = info
    return infos
