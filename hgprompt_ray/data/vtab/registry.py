"""The VTAB-1k registry: each task's classes, size, description, source and reader."""

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
