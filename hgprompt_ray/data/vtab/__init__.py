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

Modules: ``task`` (:class:`VtabTask`, the data root), ``formats`` (own readers),
``torchvision_readers`` (readers over torchvision datasets), ``registry`` (the table above as
code: :func:`vtab_task`, ``VTAB_TASKS``).
"""

from __future__ import annotations

from hgprompt_ray.data.base import TaskUnavailableError
from hgprompt_ray.data.vtab.formats import read_norb
from hgprompt_ray.data.vtab.registry import VTAB_TASKS, vtab_task
from hgprompt_ray.data.vtab.task import DATA_ENV, VtabTask, default_data_root

__all__ = [
    "DATA_ENV",
    "VTAB_TASKS",
    "TaskUnavailableError",
    "VtabTask",
    "default_data_root",
    "read_norb",
    "vtab_task",
]
