"""The Ray Train worker loop of extraction: features, then gradient moments, of a prompt shard.

Rank r of W takes the prompts at positions r, r + W, r + 2W, ... (a deterministic shard), loads
the backbone and its prompts onto its device and, per split, runs the samples once per batch with
all its prompts in one K-prompt forward (the patch embedding is computed once per batch). Each
finished table is written to the cache (atomically) and handed to the detached
:class:`FeatureStore` actor, which owns it, so it outlives the worker.

Gradients: each rank fits the probe head of each of its prompts on that prompt's features and
computes per-sample gradients wrt its prompts with ``torch.func``, batch by batch. After each
batch the ranks all-gather the (B, M, p) gradients and each rank folds only its 1/W of the p
coordinates into Welford moments; rank 0 gathers the coordinate shards into one table.

The target is not resolved here: the worker reads the task the driver resolved, from the plan.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.core import GradientMoments, empty_gradient_moments, update_gradient_moments
from hgprompt_ray.core.probe_head import fit_probe_head
from hgprompt_ray.data import backbone_transform
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.gradients import prompt_gradients
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.workers.extract.cache import ExtractionCache
from hgprompt_ray.workers.extract.plan import ExtractionPlan
from hgprompt_ray.workers.feature_store import (
    FeatureStore,
    feature_table,
    features_from_table,
    gradient_table,
)

__all__ = ["STATS_FILE", "extract_worker"]

STATS_FILE = "stats.json"
"""The file in rank 0's reported checkpoint that holds the run's work statistics."""


def _heartbeat(config: ExtractionConfig, rank: int, phase: str, step: int) -> None:
    """Write this rank's liveness record (pid, phase, step, time) when ``heartbeat_dir`` is set."""
    if config.heartbeat_dir:
        atomic_write_json(
            Path(config.heartbeat_dir) / f"{rank}.json",
            {"pid": os.getpid(), "rank": rank, "phase": phase, "step": step, "time": time.time()},
        )


def _node_info(rank: int) -> dict[str, Any]:
    """Where a table was made: Ray node id, rank and pid."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "rank": rank, "pid": os.getpid()}


def extract_worker(plan_dict: dict[str, Any]) -> None:
    """Ray Train worker loop (``train_loop_per_worker``); see the module docstring.

    Args:
        plan_dict: the fields of an :class:`ExtractionPlan` (``ExtractionPlan.loop_config()``).
    """
    import ray.train
    import ray.train.torch

    plan = ExtractionPlan(**plan_dict)
    config = ExtractionConfig(**plan.config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    mine = list(range(rank, len(plan.names), world))
    names = [plan.names[i] for i in mine]
    cache = ExtractionCache(config.cache_dir)
    store = FeatureStore(plan.store_name)
    info = _node_info(rank)

    backbone = load_backbone(config.backbone, config.img_size)
    model = PromptedViT(backbone, plan.num_tokens, num_classes=0).eval().to(device)
    library = PromptLibrary(config.library)
    prompts = library.load_many(names, backbone=config.backbone, embed_dim=model.embed_dim).to(device)
    transform = backbone_transform(
        config.img_size, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    )
    datasets = {
        split: Subset(
            plan.task.split(split, seed=config.split_seed, transform=transform), plan.indices[split]
        )
        for split in config.splits
    }
    counters = torch.zeros(2, dtype=torch.float64)  # image x prompt forwards, sample x prompt gradients
    seconds = torch.zeros(2, dtype=torch.float64)  # this rank's feature and gradient compute time
    clock = time.perf_counter()
    for split in config.splits:
        keys = [plan.feature_keys[split][n] for n in names]
        todo = [i for i, key in enumerate(keys) if not cache.has(key)]
        if todo:
            features = _features(model, datasets[split], prompts[todo], config, rank, split, plan.progress)
            labels = np.asarray(_labels(datasets[split]), dtype=np.int64)
            for row, i in enumerate(todo):
                table = feature_table(
                    names[i],
                    features[row],
                    labels,
                    np.asarray(plan.indices[split]),
                    metadata=plan.feature_meta[split][names[i]],
                )
                cache.write(keys[i], table)
            counters[0] += len(todo) * len(datasets[split])
        for key in keys:
            table = cache.read(key)
            if table is None:
                raise RuntimeError(f"feature table {key} vanished from the cache {cache.root}")
            store.put(key, table, info)
    seconds[0] = time.perf_counter() - clock

    clock = time.perf_counter()
    if plan.compute_gradients:
        moments = _gradient_moments(model, prompts, names, mine, plan, config, datasets, cache, rank, world)
        counters[1] += len(plan.gradient_positions) * len(names)
        if rank == 0:
            if moments is None or plan.gradient_key is None:
                raise RuntimeError("rank 0 gathered no gradient moments; the coordinate shards are missing")
            shape = (plan.num_tokens, model.embed_dim)
            cache.write(plan.gradient_key, gradient_table(plan.names, moments, shape, plan.gradient_meta))
    if rank == 0 and plan.gradient_key is not None:
        table = cache.read(plan.gradient_key)
        if table is None:
            raise RuntimeError(f"gradient table {plan.gradient_key} is not in the cache {cache.root}")
        store.put(plan.gradient_key, table, info)
    seconds[1] = time.perf_counter() - clock
    if world > 1:
        torch.distributed.all_reduce(counters)
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    stats = {
        "image_prompt_forwards": int(counters[0]),
        "gradient_sample_prompts": int(counters[1]),
        "workers": world,
        "feature_seconds": round(float(seconds[0]), 3),
        "gradient_seconds": round(float(seconds[1]), 3),
    }
    # Train V2 keeps a run's last metrics only with a checkpoint: rank 0 reports one holding them.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            (Path(folder) / STATS_FILE).write_text(json.dumps(stats))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(stats, checkpoint=checkpoint)


def _labels(dataset: Subset) -> list[int]:
    base = dataset.dataset
    return [int(base.labels[i]) for i in dataset.indices]  # type: ignore[attr-defined]


@torch.inference_mode()
def _features(
    model: PromptedViT,
    dataset: Subset,
    prompts: torch.Tensor,
    config: ExtractionConfig,
    rank: int,
    split: str,
    progress: bool,
) -> np.ndarray:
    """(K, N, d) features of the K prompts, one K-prompt forward per batch."""
    device = prompts.device
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False)
    chunks = []
    label = f"[rank {rank}] {split} x{prompts.shape[0]} prompts"
    for step, (images, _) in enumerate(tqdm(loader, desc=label, disable=not progress, leave=False)):
        chunks.append(model.forward_features(images.to(device), prompts).float().cpu())
        _heartbeat(config, rank, f"features/{split}", step)
    return torch.cat(chunks, dim=1).numpy()


def _gradient_moments(
    model: PromptedViT,
    prompts: torch.Tensor,
    names: list[str],
    mine: list[int],
    plan: ExtractionPlan,
    config: ExtractionConfig,
    datasets: dict[str, Subset],
    cache: ExtractionCache,
    rank: int,
    world: int,
) -> GradientMoments | None:
    """This rank's coordinate shard of the prompt set's gradient moments; the whole set on rank 0."""
    first = config.splits[0]
    total = len(plan.names)
    per_rank = math.ceil(total / world)
    heads = []
    for name in names:
        table = cache.read(plan.feature_keys[first][name])
        if table is None:
            raise RuntimeError(
                f"the {first} features of prompt {name!r} are not in the cache {cache.root}; "
                "they are written before the gradient pass. Fix: check the cache folder is writable."
            )
        features, labels, _ = features_from_table(table)
        heads.append(fit_probe_head(features, labels, plan.num_classes, l2=config.head_l2))
    folded = [head.folded(prompts.dtype, prompts.device) for head in heads]
    coordinates = plan.num_tokens * model.embed_dim
    bounds = np.linspace(0, coordinates, world + 1).round().astype(int)
    low, high = int(bounds[rank]), int(bounds[rank + 1])
    moments = empty_gradient_moments(total, high - low)
    subset = Subset(datasets[first], plan.gradient_positions)
    loader = DataLoader(subset, batch_size=config.gradient_batch_size, shuffle=False)
    label = f"[rank {rank}] gradients x{len(names)} prompts"
    for step, (images, labels) in enumerate(tqdm(loader, desc=label, disable=not plan.progress, leave=False)):
        images, labels = images.to(prompts.device), labels.to(prompts.device)
        with torch.no_grad():
            tokens = model.embed_patches(images)
        local = torch.zeros(per_rank, len(labels), coordinates, dtype=torch.float32, device=prompts.device)
        for k in range(len(names)):
            weight, bias = folded[k]
            local[k] = prompt_gradients(
                model, tokens, labels, prompts[k], lambda f, w=weight, b=bias: f @ w.T + b
            ).float()
        if world > 1:
            parts = [torch.empty_like(local) for _ in range(world)]
            torch.distributed.all_gather(parts, local)
            # global position g sits on rank g % world, slot g // world
            batch = torch.stack([parts[g % world][g // world] for g in range(total)], dim=1)
        else:
            batch = local[:total].transpose(0, 1)
        moments = update_gradient_moments(moments, batch[:, :, low:high].cpu().double())
        _heartbeat(config, rank, "gradients", step)
    if world == 1:
        return moments
    shards: list[Any] = [None] * world
    torch.distributed.all_gather_object(shards, (low, moments))
    if rank != 0:
        return None
    shards.sort(key=lambda item: item[0])
    return GradientMoments(
        num_samples=moments.num_samples,
        mean=np.concatenate([s[1].mean for s in shards], axis=0),
        m2=np.concatenate([s[1].m2 for s in shards], axis=0),
    )
