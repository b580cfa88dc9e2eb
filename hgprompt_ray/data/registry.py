"""One registry for both suites: ``get_task(name)``."""

from __future__ import annotations

from pathlib import Path

from hgprompt_ray.data.base import Task
from hgprompt_ray.data.offline import OFFLINE_TASKS, offline_task
from hgprompt_ray.data.vtab import VTAB_TASKS, vtab_task
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["get_task", "list_tasks"]


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
