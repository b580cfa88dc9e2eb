"""One registry for both suites: ``get_task(name)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hgprompt_ray.data.base import Task
from hgprompt_ray.data.custom import CsvTask, FolderTask, TargetError
from hgprompt_ray.data.offline import OFFLINE_TASKS, offline_task
from hgprompt_ray.data.vtab import VTAB_TASKS, vtab_task
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["IMAGE_SETS", "eligible_sources", "get_task", "image_set", "list_tasks", "readable_here", "related_tasks", "resolve_target"]

IMAGE_SETS: dict[str, str] = {
    # offline suite
    "digits": "sklearn-digits",
    "digits-parity": "sklearn-digits",
    "digits-high": "sklearn-digits",
    "textile": "conformal-clip-textile",
    "textile-defect": "conformal-clip-textile",
    "textures": "skimage-textures",
    "dsprites-location": "dsprites",
    "dsprites-orientation": "dsprites",
    "dsprites-shape": "dsprites",
    "dsprites-scale": "dsprites",
    "count": "clevr-style-count",
    "closest-distance": "clevr-style-closest",
    "shape-azimuth": "smallnorb-style-shapes",
    "shape-elevation": "smallnorb-style-shapes",
    "digits-mirror": "sklearn-digits",  # the digits images, half of them mirrored
    "texture-blur": "skimage-textures",  # new patches of the textures task's images
    "texture-contrast": "skimage-textures",
    "sprites-count": "multi-sprites",  # new images in the dsprites tasks' style
    "sprites-distance": "sprite-pairs",
    "shape-lighting": "smallnorb-style-lighting",  # new renders, not the shape-azimuth images
    "scene-size": "clevr-style-sizes",
    "scene-spheres": "clevr-style-shapes",  # new scenes: how many spheres
    "scene-red": "clevr-style-colours",  # new scenes: how many red objects
    "fashion-mnist": "fashion-mnist",
    "fashion-coarse": "fashion-mnist",
    # VTAB-1k
    "cifar100": "cifar100",
    "dtd": "dtd",
    "flowers102": "flowers102",
    "pets": "oxford-iiit-pet",
    "svhn": "svhn",
    "eurosat": "eurosat",
    "caltech101": "caltech101",
    "sun397": "sun397",
    "pcam": "pcam",
    "clevr-count": "clevr",
    "dsprites-loc": "dsprites",
    "dsprites-ori": "dsprites",
    "smallnorb-azi": "smallnorb",
    "smallnorb-ele": "smallnorb",
}
"""The image set every registered task draws its images from. Tasks that share one are the same
images under other labels (digits / digits-parity / digits-high; every dsprites task, offline or
VTAB; ...) or derived from them (digits-mirror flips half the digits; texture-blur and
texture-contrast re-cut and degrade the textures images): a prompt trained on one has seen a
target's images, so it is never a source of another (``related_tasks``; ``prompts.select_sources`` leaves them out). A test checks every
registered task has an entry."""


def image_set(name: str) -> str | None:
    """The image set of registered task ``name``; None for a user's folder or CSV (unknown)."""
    return IMAGE_SETS.get(name)


def related_tasks(name: str) -> tuple[str, ...]:
    """Registered tasks other than ``name`` that draw on the same images (sorted)."""
    shared = image_set(name)
    if shared is None:
        return ()
    return tuple(sorted(task for task, images in IMAGE_SETS.items() if images == shared and task != name))


def eligible_sources(target: str, source_tasks: Mapping[str, str]) -> list[str]:
    """The prompts that may be a source of registered or user task ``target``: every prompt of
    ``source_tasks`` (prompt name -> the task it was trained on, in the library's order, which is
    kept) but those trained on ``target`` itself or on its images under another labelling."""
    excluded = {target, *related_tasks(target)}
    return [name for name, task in source_tasks.items() if task not in excluded]


def list_tasks(suite: str | None = None) -> list[str]:
    """Registered task names (``suite``: ``"offline"``, ``"vtab"`` or None for both)."""
    names: list[str] = []
    if suite in (None, "offline"):
        names += list(OFFLINE_TASKS)
    if suite in (None, "vtab"):
        names += list(VTAB_TASKS)
    if suite not in (None, "offline", "vtab"):
        raise InvalidValueError(invalid_value("suite", suite, "must be 'offline', 'vtab' or None", ""))
    return names


def get_task(name: str, *, data_root: str | Path | None = None, download: bool = False) -> Task:
    """The task registered as ``name``.

    Args:
        name: an offline task (``digits``, ``count``, ...) or a VTAB-1k task (``svhn``, ...).
        data_root: where VTAB data lives (default ``$HGPROMPT_DATA`` or ``~/data/vtab``).
        download: let VTAB tasks download missing data.

    Raises:
        InvalidValueError: unknown name (the message lists the known ones).
    """
    if name in OFFLINE_TASKS:
        return offline_task(name)
    if name in VTAB_TASKS:
        return vtab_task(name, data_root=data_root, download=download)
    raise InvalidValueError(
        invalid_value(
            "task",
            name,
            "must be a registered task",
            f"Known offline tasks: {', '.join(OFFLINE_TASKS)}. Known VTAB-1k tasks: {', '.join(VTAB_TASKS)}.",
        )
    )


def resolve_target(
    target: str | Path, *, data_root: str | Path | None = None, download: bool = False, validate: bool = True
) -> Task:
    """A target given as a task name, an ImageFolder directory, or a ``path,label`` CSV.

    Every command's ``--target`` goes through here.

    Raises:
        TargetError: a folder or CSV that is missing or unusable (message names the file).
        InvalidValueError: neither a registered task nor an existing path.
    """
    text = str(target)
    if text in OFFLINE_TASKS or text in VTAB_TASKS:
        return get_task(text, data_root=data_root, download=download)
    path = Path(text).expanduser()
    if path.is_dir():
        return FolderTask(path, validate=validate)
    if path.suffix.lower() == ".csv":
        return CsvTask(path, validate=validate)
    if path.exists():
        raise TargetError(
            f"target {path} is a file but not a .csv. Fix: pass a folder of class sub-folders, a "
            "'path,label' CSV, or a task name."
        )
    if "/" in text or text.startswith("."):
        raise TargetError(f"target {path} does not exist. Fix: check the path.")
    raise InvalidValueError(
        invalid_value(
            "target",
            text,
            "must be a registered task, an ImageFolder directory, or a path,label CSV",
            f"Known tasks: {', '.join(list_tasks())}.",
        )
    )


def readable_here(names: Sequence[str], *, data_root: str | Path | None = None) -> tuple[list[str], dict[str, str]]:
    """Split a library's source tasks into those whose data this machine can read and the rest.

    For commands whose default targets are every task of a library (``--leave-one-out``, the
    zero-shot matrix): a prompt trained elsewhere on data missing here (Fashion-MNIST without its
    Debian package, an unmounted VTAB folder) stays a source but cannot be a target. A target the
    user names is never skipped: it goes through ``resolve_target`` and fails with the fix.

    A name that does not resolve here at all (a folder or CSV on the machine the prompt was trained
    on, a task this version does not register) is unreadable too, with the resolver's message.

    Returns:
        The readable names in the given order, and unreadable name -> the reason (with its fix).
    """
    readable, unreadable = [], {}
    for name in names:
        try:
            available, reason = resolve_target(name, data_root=data_root).availability()
        except (InvalidValueError, TargetError) as error:
            available, reason = False, str(error)
        if available:
            readable.append(name)
        else:
            unreadable[name] = reason
    return readable, unreadable
