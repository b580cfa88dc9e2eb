"""One place that builds the ``TorchTrainer`` of every worker loop (resources, storage, retries)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Ray Train's detached placement-group cleaner polls the controller's liveness through the State
#: API once a second; on a cluster started without the dashboard that API is absent and every
#: poll logs a WARNING (about 30 lines a minute, drowning the progress output) while changing
#: nothing: the cleaner keeps running and still removes the group when the controller is gone.
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
QUIET_CLEANER_HOOK = f"{__name__}.quiet_placement_group_cleaner"


def quiet_placement_group_cleaner() -> None:
    """Ray ``worker_process_setup_hook``: only errors from the placement-group cleaner's logger.

    ``launch/_ray.start_ray`` installs it (``QUIET_CLEANER_HOOK``) on a local cluster started
    without the dashboard, where the cleaner's State-API poll can only fail.
    """
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)


def wants_gpu(use_gpu: bool | None, num_workers: int) -> bool:
    """``use_gpu``, or for None whether the cluster has one GPU per worker (needs ``ray.init``)."""
    if use_gpu is not None:
        return use_gpu
    import ray

    return bool(ray.cluster_resources().get("GPU", 0) >= num_workers)


def torch_trainer(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    use_gpu: bool | None,
    cpus_per_worker: int | None,
    storage_path: str | Path | None,
    name: str | None,
    max_failures: int,
    checkpoints_to_keep: int | None = None,
) -> Any:
    """A ``TorchTrainer`` for ``loop``; needs ``ray.init``.

    ``use_gpu=None`` picks GPUs when the cluster has one per worker; ``cpus_per_worker=None``
    gives each worker an equal share of the cluster's CPUs (Ray sets the worker's
    ``OMP_NUM_THREADS`` to it, so it is torch's thread count).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    use_gpu = wants_gpu(use_gpu, num_workers)
    if cpus_per_worker is None:
        cpus_per_worker = max(1, int(resources.get("CPU", 1)) // num_workers)
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=None if storage_path is None else str(Path(storage_path).expanduser().resolve()),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=checkpoints_to_keep),
        ),
    )
