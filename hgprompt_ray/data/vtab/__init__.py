"""VTAB-1k tasks over torchvision, plus small readers where torchvision has none (or unpickles).

Splits (see ``official``): the definitions of google-research/task_adaptation
(``task_adaptation/data/<file>``) over *parts*, the files that stand for each TFDS split:
train800 = ``train[:800]``; val200 = the 200 just past the cut of ``train`` at the given percent,
or the first 200 of a split of its own; train800val200 = train800 then val200; test as listed.
They are not seeded (``split_is_seeded`` is False). No part is in TFDS's order (TFDS sorts each
split by a hash of the example key), so the images differ from TFDS's; each task says how
(``order_note``) and logs it once.

| task | file | train800 | val200 | test | part order | reader |
| --- | --- | --- | --- | --- | --- | --- |
| cifar100 | cifar.py | train[:800] | train[90%:][:200] | test | file | own, CIFAR-100 *binary* (no pickle) |
| dtd | dtd.py | train1[:800] | val1[:200] | test1 | fixed permutation | torchvision ``DTD`` |
| flowers102 | oxford_flowers102.py | trnid[:800] | valid[:200] | tstid | fixed permutation | own (``setid.mat``, jpg) |
| pets | oxford_iiit_pet.py | trainval[:800] | trainval[80%:][:200] | test | fixed permutation | torchvision ``OxfordIIITPet`` |
| svhn | svhn.py | train[:800] | train[90%:][:200] | test | file | own (``{train,test}_32x32.mat``) |
| eurosat | eurosat.py | all[:800] | all[60%:][:200] | all[80%:] | fixed permutation | torchvision ``EuroSAT`` |
| caltech101 | caltech.py | train[:800] | train[90%:][:200] | test | fixed permutation | torchvision ``Caltech101``; train = 30 per class (default_rng(0), not TFDS's draw) |
| sun397 | sun397.py | train[:800] | validation[:200] | test | fixed permutation | torchvision ``SUN397``; TFDS's lists if present, else a fixed 70/10/20 partition |
| pcam | patch_camelyon.py | train[:800] | valid[:200] | test | fixed permutation | torchvision ``PCAM`` (h5py) |
| clevr-count | clevr.py | train[:800] | train[90%:][:200] | val (test has no labels) | file | torchvision ``CLEVRClassification``; label = objects - 3 |
| dsprites-loc / -ori | dsprites.py | all[:800] | all[80%:][:200] | all[90%:] | fixed permutation | own (npz, ``allow_pickle=False``); x // 2, orientation * 16 // 40 |
| smallnorb-azi / -ele | smallnorb.py | train[:800] | test[:200] | test[50%:] | fixed permutation | own (NORB binary ``.mat``), left camera |

A percent cut is task_adaptation's integer share (``p * n // 100``, shares added). "File" order is
the files' own; "fixed permutation" is ``default_rng(0)``'s permutation of it, used where the
files are grouped by class or factor or their order is not documented.

Data is looked for under ``data_root`` (default ``$HGPROMPT_DATA`` or ``~/data/vtab``) and
downloaded only when asked (``download=True``, ``--download``).

Modules: ``official`` (:class:`OfficialSplits`), ``task`` (:class:`VtabTask`, the data root),
``formats`` (own readers), ``torchvision_readers`` (readers over torchvision datasets),
``registry`` (the table above as code: :func:`vtab_task`, ``VTAB_TASKS``).
"""

from __future__ import annotations

from hgprompt_ray.data.base import TaskUnavailableError
from hgprompt_ray.data.vtab.formats import read_norb
from hgprompt_ray.data.vtab.official import OfficialSplits
from hgprompt_ray.data.vtab.registry import VTAB_TASKS, vtab_task
from hgprompt_ray.data.vtab.task import DATA_ENV, VtabTask, default_data_root

__all__ = [
    "DATA_ENV",
    "OfficialSplits",
    "VTAB_TASKS",
    "TaskUnavailableError",
    "VtabTask",
    "default_data_root",
    "read_norb",
    "vtab_task",
]
