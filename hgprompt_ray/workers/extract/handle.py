"""The driver side of extraction: :func:`extract` and the :class:`Extraction` handle it returns."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.core import GradientMoments
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.workers._trainer import torch_trainer, wants_gpu
from hgprompt_ray.workers.extract.cache import ExtractionCache
from hgprompt_ray.workers.extract.plan import make_plan
from hgprompt_ray.workers.extract.worker import STATS_FILE, extract_worker
from hgprompt_ray.workers.feature_store import (
    STORE_NAME,
    FeatureStore,
    alias_key,
    features_from_table,
    moments_from_table,
)

__all__ = ["Extraction", "extract"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extraction:
    """What :func:`extract` returns: where every table is, and how to read it.

    Picklable (keys and names only), so it can be passed to Tune trials; ObjectRefs come from
    the store actor by key.

    Attributes:
        target: the target as given.
        target_name: the task's name.
        prompts: prompt names, in the order of the gradient statistics.
        num_classes: classes of the target.
        feature_keys: split -> prompt -> key.
        gradient_key: key of the gradient table (None without gradients).
        store_name: the store actor's name.
        stats: work done by this call: ``image_prompt_forwards``, ``gradient_sample_prompts``,
            ``workers`` (0 when everything came from the cache), ``cached_tables``, ``seconds``
            (driver wall time) and, when workers ran, ``feature_seconds`` / ``gradient_seconds``
            (the slowest rank's compute time of each phase); ``gradients_from``: the cached
            table of a superset of the prompts that this set's gradient table was cut from
            (:meth:`ExtractionCache.derive_gradients`).
    """

    target: str
    target_name: str
    prompts: tuple[str, ...]
    num_classes: int
    feature_keys: dict[str, dict[str, str]]
    gradient_key: str | None
    store_name: str = STORE_NAME
    stats: dict[str, Any] = field(default_factory=dict)

    def store(self) -> FeatureStore:
        return FeatureStore(self.store_name)

    def feature_refs(self, split: str) -> dict[str, Any]:
        """prompt -> ObjectRef of its feature table on ``split``."""
        keys = self._keys(split)
        refs = self.store().refs(keys.values())
        return {name: refs[key] for name, key in keys.items()}

    def gradient_ref(self) -> Any:
        if self.gradient_key is None:
            raise InvalidValueError(
                invalid_value("gradients", False, "were not extracted", "Run extract with gradients=True.")
            )
        return self.store().refs([self.gradient_key])[self.gradient_key]

    def features(
        self, split: str, prompts: Sequence[str] | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(prompt -> (N, d) read-only zero-copy view, labels (N,)) for ``split``."""
        import ray

        keys = self._keys(split)
        names = list(prompts or self.prompts)
        missing = [n for n in names if n not in keys]
        if missing:
            raise InvalidValueError(
                invalid_value("prompts", missing, f"must be among the extracted {list(self.prompts)}", "")
            )
        refs = self.store().refs([keys[n] for n in names])
        tables = ray.get([refs[keys[n]] for n in names])
        views, labels = {}, np.empty(0, dtype=np.int64)
        for name, table in zip(names, tables):
            views[name], labels, _ = features_from_table(table)
        return views, labels

    def gradient_moments(self) -> tuple[list[str], GradientMoments]:
        """(prompt names, moments) of the gradient statistics, zero-copy."""
        import ray

        return moments_from_table(ray.get(self.gradient_ref()))

    def release(self) -> None:
        """Drop this extraction's tables from the store, so the object store can free them (a
        long evaluation extracts a new set per split draw). The cache keeps them: a later
        :func:`extract` of the same config computes nothing and puts them back."""
        self.store().drop(table_keys(self.feature_keys, self.gradient_key))

    def _keys(self, split: str) -> dict[str, str]:
        if split not in self.feature_keys:
            raise InvalidValueError(
                invalid_value("split", split, f"must be one of the extracted {list(self.feature_keys)}", "")
            )
        return self.feature_keys[split]


def table_keys(feature_keys: dict[str, dict[str, str]], gradient_key: str | None) -> list[str]:
    """Every table's key: the features of each (split, prompt), then the gradient table's."""
    keys = [key for split in feature_keys.values() for key in split.values()]
    return keys if gradient_key is None else [*keys, gradient_key]


def extract(
    config: ExtractionConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool | None = None,
    cpus_per_worker: int | None = None,
    store_name: str = STORE_NAME,
    storage_path: str | Path | None = None,
    name: str | None = None,
    max_failures: int = 2,
    progress: bool = True,
    task: Any = None,
) -> Extraction:
    """Extract (or load from the cache) everything ``config`` asks for; needs ``ray.init``.

    Args:
        config: what to extract.
        num_workers: Ray Train workers (capped at the number of prompts).
        use_gpu: None picks GPUs when the cluster has one per requested worker.
        cpus_per_worker: CPUs per worker (torch's thread count); None: an equal share.
        store_name: the detached store actor to publish to.
        storage_path: Ray Train run storage (default ``~/ray_results``).
        name: the Ray Train run name.
        max_failures: worker-group restarts allowed.
        progress: progress bars in the workers (Ray forwards them to this console).
        task: ``config.target`` already resolved (e.g. ``SearchPlan.task``): not resolved again.
    """
    import ray

    if not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidValueError(invalid_value("num_workers", num_workers, "must be a positive integer", ""))
    start = time.perf_counter()
    use_gpu = wants_gpu(use_gpu, num_workers)  # decided once: precision='auto' resolves for it
    plan = make_plan(config, store_name, progress, task=task, device="cuda" if use_gpu else "cpu")
    task = plan.task
    cache = ExtractionCache(config.cache_dir)
    derived = None  # a prompt subset's gradient table: cut from a cached superset's, not recomputed
    if plan.compute_gradients and plan.gradient_key is not None:
        derived = cache.derive_gradients(plan.gradient_key, plan.gradient_meta, plan.names)
        if derived is not None:
            plan = dataclasses.replace(plan, compute_gradients=False)
    all_keys = table_keys(plan.feature_keys, plan.gradient_key)
    missing = [k for k in all_keys if not cache.has(k)]
    stats: dict[str, Any] = {
        "image_prompt_forwards": 0,
        "gradient_sample_prompts": 0,
        "workers": 0,
        "cached_tables": len(all_keys) - len(missing),
    }
    if derived is not None:
        stats["gradients_from"] = derived
    store = FeatureStore(store_name)
    if missing:
        workers = min(num_workers, len(plan.names))
        logger.info(
            "Extracting %d of %d tables for %s with %d worker(s)",
            len(missing),
            len(all_keys),
            task.name,
            workers,
        )
        trainer = torch_trainer(
            extract_worker,
            plan.loop_config(),
            num_workers=workers,
            use_gpu=use_gpu,
            cpus_per_worker=cpus_per_worker,
            storage_path=storage_path,
            name=name,
            max_failures=max_failures,
        )
        result = trainer.fit()
        if result.error is not None or result.checkpoint is None:
            raise RuntimeError(f"extraction for {task.name!r} failed: {result.error}") from result.error
        with result.checkpoint.as_directory() as folder:
            stats.update(json.loads((Path(folder) / STATS_FILE).read_text()))
    # every table in the store, and in this machine's cache (workers on other nodes wrote theirs)
    present = store.contains(all_keys)
    for key in all_keys:
        if not present[key]:
            table = cache.read(key)
            if table is None:
                raise RuntimeError(
                    f"table {key} is neither in the feature store nor in the cache {cache.root}"
                )
            store.put(key, table, {"node_id": ray.get_runtime_context().get_node_id(), "rank": "driver"})
        elif not cache.has(key):
            cache.write(key, ray.get(store.refs([key])[key]))
    store.alias(
        {
            alias_key(task.name, split, prompt): key
            for split, keys in plan.feature_keys.items()
            for prompt, key in keys.items()
        }
    )
    stats["seconds"] = round(time.perf_counter() - start, 3)
    return Extraction(
        target=config.target,
        target_name=task.name,
        prompts=tuple(plan.names),
        num_classes=plan.num_classes,
        feature_keys=plan.feature_keys,
        gradient_key=plan.gradient_key,
        store_name=store_name,
        stats=stats,
    )
