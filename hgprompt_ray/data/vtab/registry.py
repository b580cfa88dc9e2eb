"""The VTAB-1k registry: each task's classes, size, description, source, reader, and official split
definition (:class:`~hgprompt_ray.data.vtab.official.OfficialSplits`), each citing the
google-research/task_adaptation file it comes from (``task_adaptation/data/<dataset>.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hgprompt_ray.data.base import TaskInfo
from hgprompt_ray.data.vtab.formats import (
    _DSPRITES_FILE,
    _cifar_fetch,
    _cifar_read,
    _dsprites_fetch,
    _dsprites_reader,
    _flowers_fetch,
    _flowers_read,
    _norb_fetch,
    _norb_file,
    _norb_reader,
    _svhn_fetch,
    _svhn_read,
)
from hgprompt_ray.data.vtab.official import OfficialSplits
from hgprompt_ray.data.vtab.task import VtabTask, default_data_root
from hgprompt_ray.data.vtab.torchvision_readers import (
    _caltech_read,
    _clevr_fetch,
    _clevr_read,
    _dtd_read,
    _eurosat_read,
    _pcam_fetch,
    _pcam_read,
    _pets_read,
    _sun_read,
    _torchvision_fetch,
)

__all__ = ["VTAB_TASKS", "vtab_task"]


def _names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


_NOT_TFDS = (
    "TFDS stores each split sorted by an MD5 hash of the example key, so the slices are not TFDS's images"
)
_FILE = f"served in file order, which is not grouped by class; {_NOT_TFDS}"
_PERMUTED = f"served in a fixed permutation (default_rng(0)) of file order; {_NOT_TFDS}"


_DSPRITES = OfficialSplits(
    source="task_adaptation/data/dsprites.py",
    tfds_name="dsprites:2.*.*",
    val="train",
    val_cut=(80,),
    test="train",
    test_cut=(80, 10),
    order="fixed-permutation",
    order_note=f"the npz stores the images in latent-factor order (shape, scale, orientation, x, y); {_PERMUTED}",
)
_SMALLNORB = OfficialSplits(
    source="task_adaptation/data/smallnorb.py",
    tfds_name="smallnorb:2.*.*",
    val="test",
    test="test",
    test_cut=(50,),
    order="fixed-permutation",
    order_note=f"the order of the NORB files is not documented; {_PERMUTED}",
)


_SPECS: dict[str, dict[str, Any]] = {
    "cifar100": dict(
        classes=100,
        size=(32, 32),
        what="object class",
        source="cs.toronto.edu (CIFAR-100 binary)",
        exists=lambda r: (r / "cifar-100-binary" / "train.bin").is_file(),
        read=_cifar_read,
        fetch=_cifar_fetch,
        official=OfficialSplits(
            source="task_adaptation/data/cifar.py",
            tfds_name="cifar100:3.*.*",
            val="train",
            val_cut=(90,),
            test="test",
            order="file",
            order_note=f"train.bin / test.bin {_FILE}",
        ),
    ),
    "dtd": dict(
        classes=47,
        size=(300, 300),
        what="texture",
        source="torchvision DTD",
        exists=lambda r: (r / "dtd" / "dtd" / "labels").is_dir(),
        read=_dtd_read,
        fetch=_torchvision_fetch("DTD"),
        official=OfficialSplits(
            source="task_adaptation/data/dtd.py",
            tfds_name="dtd:3.*.*",
            val="validation",
            test="test",
            order="fixed-permutation",
            order_note=f"labels/train1.txt, val1.txt and test1.txt list the images class by class; {_PERMUTED}",
        ),
    ),
    "flowers102": dict(
        classes=102,
        size=(500, 500),
        what="flower species",
        source="torchvision Flowers102",
        exists=lambda r: (r / "flowers-102" / "setid.mat").is_file(),
        read=_flowers_read,
        fetch=_flowers_fetch,
        official=OfficialSplits(
            source="task_adaptation/data/oxford_flowers102.py",
            tfds_name="oxford_flowers102:2.*.*",
            val="validation",
            test="test",
            order="fixed-permutation",
            order_note=(
                "setid.mat's trnid / valid / tstid lists (TFDS's train / validation / test) could not be "
                f"shown free of class structure; {_PERMUTED}"
            ),
        ),
    ),
    "pets": dict(
        classes=37,
        size=(400, 400),
        what="cat or dog breed",
        source="torchvision OxfordIIITPet",
        exists=lambda r: (r / "oxford-iiit-pet" / "annotations").is_dir(),
        read=_pets_read,
        fetch=_torchvision_fetch("OxfordIIITPet"),
        official=OfficialSplits(
            source="task_adaptation/data/oxford_iiit_pet.py",
            tfds_name="oxford_iiit_pet:3.*.*",
            val="train",
            val_cut=(80,),
            test="test",
            order="fixed-permutation",
            order_note=f"annotations/trainval.txt and test.txt are sorted by file name, so by breed; {_PERMUTED}",
        ),
    ),
    "svhn": dict(
        classes=10,
        size=(32, 32),
        what="house-number digit",
        source="torchvision SVHN",
        exists=lambda r: (r / "train_32x32.mat").is_file() and (r / "test_32x32.mat").is_file(),
        read=_svhn_read,
        fetch=_svhn_fetch,
        official=OfficialSplits(
            source="task_adaptation/data/svhn.py",
            tfds_name="svhn_cropped:3.*.*",
            val="train",
            val_cut=(90,),
            test="test",
            order="file",
            order_note=f"train_32x32.mat / test_32x32.mat (digits in the order of their photos) {_FILE}",
        ),
    ),
    "eurosat": dict(
        classes=10,
        size=(64, 64),
        what="land use from satellite",
        source="torchvision EuroSAT",
        exists=lambda r: (r / "eurosat" / "2750").is_dir(),
        read=_eurosat_read,
        fetch=_torchvision_fetch("EuroSAT"),
        official=OfficialSplits(
            source="task_adaptation/data/eurosat.py",
            tfds_name="eurosat/rgb:2.*.*",
            val="train",
            val_cut=(60,),
            test="train",
            test_cut=(60, 20),
            order="fixed-permutation",
            order_note=f"torchvision lists EuroSAT class folder by class folder; {_PERMUTED}",
        ),
    ),
    "caltech101": dict(
        classes=101,
        size=(300, 300),
        what="object category",
        source="torchvision Caltech101",
        exists=lambda r: (r / "caltech101" / "101_ObjectCategories").is_dir(),
        read=_caltech_read,
        fetch=_torchvision_fetch("Caltech101", target_type="category"),
        official=OfficialSplits(
            source="task_adaptation/data/caltech.py",
            tfds_name="caltech101:3.*.*",
            val="train",
            val_cut=(90,),
            test="test",
            order="fixed-permutation",
            order_note=f"torchvision lists Caltech101 class folder by class folder; {_PERMUTED}",
            parts_note=(
                "TFDS's train split is 30 images per class drawn with NumPy seed 1234 in a directory "
                "listing's order (not reproducible here), BACKGROUND_Google included (102 classes); "
                "here: 30 per class of torchvision's 101 classes drawn with default_rng(0), the rest is test"
            ),
        ),
    ),
    "sun397": dict(
        classes=397,
        size=(300, 300),
        what="scene category",
        source="torchvision SUN397",
        exists=lambda r: (r / "SUN397" / "ClassName.txt").is_file(),
        read=_sun_read,
        fetch=_torchvision_fetch("SUN397"),
        official=OfficialSplits(
            source="task_adaptation/data/sun397.py",
            tfds_name="sun397/tfds:4.*.*",
            val="validation",
            test="test",
            order="fixed-permutation",
            order_note=f"torchvision lists SUN397 in the file system's order, sorted here by path (so by class); {_PERMUTED}",
            parts_note=(
                "TFDS's partition is the lists sun397_tfds_{tr,va,te}.txt of tensorflow_datasets "
                "(image_classification/), used when they are in the SUN397 folder; without them a "
                "fixed 70/10/20 partition (default_rng(0)) stands in; TFDS's images are also resized "
                "to at most 120,000 pixels"
            ),
        ),
    ),
    "pcam": dict(
        classes=2,
        size=(96, 96),
        what="metastatic tissue in a patch",
        source="torchvision PCAM",
        exists=lambda r: all(
            (r / "pcam" / f"camelyonpatch_level_2_split_{part}_y.h5").is_file() for part in ("valid", "test")
        ),
        read=_pcam_read,
        fetch=_pcam_fetch,
        official=OfficialSplits(
            source="task_adaptation/data/patch_camelyon.py",
            tfds_name="patch_camelyon:2.*.*",
            val="validation",
            test="test",
            order="fixed-permutation",
            order_note=f"the order of the PCam .h5 files is not documented; {_PERMUTED}",
        ),
    ),
    "clevr-count": dict(
        classes=8,
        size=(320, 480),
        what="number of objects (3-10)",
        source="torchvision CLEVR",
        exists=lambda r: (r / "clevr" / "CLEVR_v1.0" / "scenes").is_dir(),
        read=_clevr_read,
        fetch=_clevr_fetch,
        official=OfficialSplits(
            source="task_adaptation/data/clevr.py",
            tfds_name="clevr:3.*.*",
            val="train",
            val_cut=(90,),
            test="validation",
            order="file",
            order_note=f"CLEVR images by file name (each scene rendered independently) {_FILE}",
        ),
    ),
    "dsprites-loc": dict(
        classes=16,
        size=(64, 64),
        what="sprite x position (16 bins)",
        source="deepmind dsprites",
        exists=lambda r: (r / "dsprites" / _DSPRITES_FILE).is_file(),
        read=_dsprites_reader("location"),
        fetch=_dsprites_fetch,
        official=_DSPRITES,
    ),
    "dsprites-ori": dict(
        classes=16,
        size=(64, 64),
        what="sprite orientation (16 bins)",
        source="deepmind dsprites",
        exists=lambda r: (r / "dsprites" / _DSPRITES_FILE).is_file(),
        read=_dsprites_reader("orientation"),
        fetch=_dsprites_fetch,
        official=_DSPRITES,
    ),
    "smallnorb-azi": dict(
        classes=18,
        size=(96, 96),
        what="toy azimuth (18 values)",
        source="cs.nyu.edu smallNORB",
        exists=lambda r: _norb_file(r, "test", "info").is_file(),
        read=_norb_reader("azimuth"),
        fetch=_norb_fetch,
        official=_SMALLNORB,
    ),
    "smallnorb-ele": dict(
        classes=9,
        size=(96, 96),
        what="camera elevation (9 values)",
        source="cs.nyu.edu smallNORB",
        exists=lambda r: _norb_file(r, "test", "info").is_file(),
        read=_norb_reader("elevation"),
        fetch=_norb_fetch,
        official=_SMALLNORB,
    ),
}

VTAB_TASKS = tuple(_SPECS)


def vtab_task(name: str, data_root: str | Path | None = None, download: bool = False) -> VtabTask:
    """Build the VTAB-1k task ``name`` reading from ``data_root`` (see the module table).

    Its ``info.extra`` holds ``official_splits`` (the definition, one line, with its source file),
    ``order_matches_tfds`` and ``order_note``.
    """
    spec = _SPECS[name]
    info = TaskInfo(
        name=name,
        suite="vtab",
        num_classes=spec["classes"],
        class_names=_names("c", spec["classes"]),
        native_size=spec["size"],
        description=spec["what"],
        source=spec["source"],
        extra={
            "official_splits": spec["official"].describe(),
            "order_matches_tfds": spec["official"].order_matches_tfds,
            "order_note": spec["official"].order_note,
            "parts_note": spec["official"].parts_note,
        },
    )
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return VtabTask(
        info,
        root,
        official=spec["official"],
        exists=spec["exists"],
        read=spec["read"],
        fetch=spec["fetch"],
        download=download,
    )
