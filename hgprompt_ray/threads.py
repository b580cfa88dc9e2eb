"""Torch's intra-op thread count set to the CPUs Ray gave the calling task, actor or trial.

Ray sets ``OMP_NUM_THREADS`` in its workers, but torch fixes its pool when it is first used and a
reused worker process keeps the count of whatever ran in it first; a Tune trial or a Ray task that
finds more threads than CPUs oversubscribes the cores (OpenMP threads spinning against each other,
10-50x slower at Ray's niceness). So every Ray task body, actor and trial calls
:func:`use_allocated_threads` first.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["allocated_cpus", "use_allocated_threads"]

logger = logging.getLogger(__name__)


def allocated_cpus(default: int | None = None) -> int | None:
    """Whole CPUs Ray assigned to the current task/actor/trial (at least 1), else ``default``.

    Outside Ray, before ``ray.init`` or on the driver there is no allocation: ``default`` comes back.
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return default
    if not ray.is_initialized():
        return default
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except AssertionError:  # the driver process: Ray assigns it nothing
        return default
    if not cpus:
        return default
    return max(1, int(cpus))


def use_allocated_threads(default: int | None = None) -> int:
    """Set torch's intra-op threads to this Ray task's CPU allocation; returns the count in use.

    Args:
        default: the count outside Ray, or for a task that asked for no CPU (None: leave torch's).
    """
    count = allocated_cpus(default)
    if count is not None and torch.get_num_threads() != count:
        logger.debug("torch threads %d -> %d (the Ray allocation)", torch.get_num_threads(), count)
        torch.set_num_threads(count)
    return torch.get_num_threads()
