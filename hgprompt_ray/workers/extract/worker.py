"""The Ray Train worker loop of extraction: features, then gradient moments, of a prompt shard.

Rank r of W takes the prompts at positions r, r + W, r + 2W, ... (a deterministic shard), loads
the backbone and its prompts onto its device and, per split, runs the samples once per batch with
all its prompts in one K-prompt forward (the patch embedding is computed once per batch). Each
finished table is written to the cache (atomically) and handed to the detached
:class:`FeatureStore` actor, which owns it, so it outlives the worker.

Gradients: one head defines the loss of every prompt's gradients (``core/probe_head.py``: by
default fitted on rank 0 on the bare backbone's features of samples disjoint from the gradient
samples, cross-fitted, and broadcast); each rank computes per-sample gradients wrt its prompts
in one batched backward per batch (``models.gradients``, the batched-leaf trick). The network runs
at the plan's resolved precision (bf16 autocast or float32); features leave as float32 and the
moments accumulate in float64. After each
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
from hgprompt_ray.core.probe_head import ProbeHead, cross_fit_folds, fit_probe_head
from hgprompt_ray.data import backbone_transform
from hgprompt_ray.models import PromptedViT, autocast, load_backbone
from hgprompt_ray.models.gradients import prompt_gradients
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.threads import use_allocated_threads
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
    """Write this rank's liveness record (pid, Ray node id, phase, step, time) when
    ``heartbeat_dir`` is set: the node id tells which node's worker a record belongs to."""
    if config.heartbeat_dir:
        import ray

        record = {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "rank": rank,
            "phase": phase,
            "step": step,
            "time": time.time(),
        }
        atomic_write_json(Path(config.heartbeat_dir) / f"{rank}.json", record)


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
    threads = use_allocated_threads()
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
    # image x prompt forwards, sample x prompt gradients, the largest torch thread count of a rank
    counters = torch.tensor([0.0, 0.0, float(threads)], dtype=torch.float64)
    seconds = torch.zeros(2, dtype=torch.float64)  # this rank's feature and gradient compute time
    clock = time.perf_counter()
    for split in config.splits:
        keys = [plan.feature_keys[split][n] for n in names]
        todo = [i for i, key in enumerate(keys) if not cache.has(key)]
        labels = np.asarray(_labels(datasets[split]), dtype=np.int64)
        for start in range(0, len(todo), config.prompts_per_forward):  # bounded memory; resumable
            part = todo[start : start + config.prompts_per_forward]
            with autocast(plan.precision, device):
                features = _features(
                    model, datasets[split], prompts[part], config, rank, split, plan.progress
                )
            for row, i in enumerate(part):
                table = feature_table(
                    names[i],
                    features[row],
                    labels,
                    np.asarray(plan.indices[split]),
                    metadata=plan.feature_meta[split][names[i]],
                )
                cache.write(keys[i], table)
            counters[0] += len(part) * len(datasets[split])
        for key in keys:
            table = cache.read(key)
            if table is None:
                raise RuntimeError(f"feature table {key} vanished from the cache {cache.root}")
            store.put(key, table, info)
    seconds[0] = time.perf_counter() - clock

    clock = time.perf_counter()
    if plan.compute_gradients:
        with autocast(plan.precision, device):
            moments, head = _gradient_moments(
                model, prompts, names, plan, config, datasets, cache, rank, world
            )
        counters[1] += len(plan.gradient_positions) * len(names)
        if rank == 0:
            if moments is None or plan.gradient_key is None:
                raise RuntimeError("rank 0 gathered no gradient moments; the coordinate shards are missing")
            shape = (plan.num_tokens, model.embed_dim)
            meta = {**plan.gradient_meta, "gradient_head": head}
            cache.write(plan.gradient_key, gradient_table(plan.names, moments, shape, meta))
    if rank == 0 and plan.compute_gradients and plan.gradient_key is not None:
        # a table this run did not compute (cached, or cut from a superset's) is in the driver's
        # cache, which rank 0 on another node does not see: the driver puts it in the store
        table = cache.read(plan.gradient_key)
        if table is None:
            raise RuntimeError(f"gradient table {plan.gradient_key} is not in the cache {cache.root}")
        store.put(plan.gradient_key, table, info)
    seconds[1] = time.perf_counter() - clock
    if world > 1:
        torch.distributed.all_reduce(counters[:2])
        torch.distributed.all_reduce(counters[2:], op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    stats = {
        "image_prompt_forwards": int(counters[0]),
        "gradient_sample_prompts": int(counters[1]),
        "workers": world,
        "torch_threads": int(counters[2]),
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


@torch.inference_mode()
def _bare_features(model: PromptedViT, dataset: Subset, batch_size: int, device: Any) -> np.ndarray:
    """(N, d) CLS features of the bare backbone (no prompt), through timm's own hooks."""
    backbone = model.backbone
    chunks = []
    for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        tokens = backbone.forward_features(images.to(device))
        chunks.append(backbone.forward_head(tokens, pre_logits=True).float().cpu())
    return torch.cat(chunks).numpy()


HeadGroup = tuple[list[int], list[ProbeHead]]
"""Gradient-sample positions and the head of each of this rank's prompts for them."""


def _gradient_heads(
    model: PromptedViT,
    names: list[str],
    plan: ExtractionPlan,
    config: ExtractionConfig,
    dataset: Subset,
    cache: ExtractionCache,
    rank: int,
    world: int,
) -> tuple[list[HeadGroup], dict[str, Any]]:
    """The heads whose cross-entropy defines the gradients (see ``core/probe_head.py``)."""
    first = config.splits[0]
    if config.gradient_head == "per-prompt":
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
        return [(list(plan.gradient_positions), heads)], {"fit": "per-prompt, on the gradient samples"}
    # One head set for every rank: rank 0 fits, the others receive it (identical loss everywhere).
    fitted: list[Any] = [None]
    if rank == 0:
        device = next(model.parameters()).device
        bare = _bare_features(model, dataset, config.batch_size, device)
        labels = np.asarray(_labels(dataset), dtype=np.int64)
        folds, groups, held_out = cross_fit_folds(plan.gradient_positions), [], []
        for fold in folds:
            outside = np.setdiff1d(np.arange(len(labels)), fold)
            head = fit_probe_head(bare[outside], labels[outside], plan.num_classes, l2=config.head_l2)
            folded = head.folded(torch.float64)
            logits = torch.from_numpy(bare[fold]).double() @ folded[0].T + folded[1]
            held_out.append(float((logits.argmax(1).numpy() == labels[fold]).mean()))
            groups.append((fold.tolist(), head))
        fitted = [(groups, held_out)]
    if world > 1:
        torch.distributed.broadcast_object_list(fitted, src=0)
    groups, held_out = fitted[0]
    sizes = [len(fold) for fold, _ in groups]
    info = {
        "fit": "shared: bare backbone features, samples disjoint from the gradient samples",
        "folds": len(groups),
        "held_out_accuracy": float(np.average(held_out, weights=sizes)),
        "fold_held_out_accuracy": held_out,
    }
    return [(fold, [head] * len(names)) for fold, head in groups], info


def _gradient_moments(
    model: PromptedViT,
    prompts: torch.Tensor,
    names: list[str],
    plan: ExtractionPlan,
    config: ExtractionConfig,
    datasets: dict[str, Subset],
    cache: ExtractionCache,
    rank: int,
    world: int,
) -> tuple[GradientMoments | None, dict[str, Any]]:
    """This rank's coordinate shard of the prompt set's gradient moments (the whole set and the
    head's record on rank 0: held-out accuracy, each prompt's mean per-sample gradient norm)."""
    first = config.splits[0]
    total = len(plan.names)
    per_rank = math.ceil(total / world)
    groups, info = _gradient_heads(model, names, plan, config, datasets[first], cache, rank, world)
    coordinates = plan.num_tokens * model.embed_dim
    bounds = np.linspace(0, coordinates, world + 1).round().astype(int)
    low, high = int(bounds[rank]), int(bounds[rank + 1])
    moments = empty_gradient_moments(total, high - low)
    norms = torch.zeros(len(names), dtype=torch.float64)
    label = f"[rank {rank}] gradients x{len(names)} prompts"
    step = 0
    for positions, heads in groups:
        folded = [head.folded(prompts.dtype, prompts.device) for head in heads]
        loader = DataLoader(
            Subset(datasets[first], positions), batch_size=config.gradient_batch_size, shuffle=False
        )
        for images, labels in tqdm(loader, desc=label, disable=not plan.progress, leave=False):
            images, labels = images.to(prompts.device), labels.to(prompts.device)
            with torch.no_grad():
                tokens = model.embed_patches(images)
            local = torch.zeros(
                per_rank, len(labels), coordinates, dtype=torch.float32, device=prompts.device
            )
            for k in range(len(names)):
                weight, bias = folded[k]
                local[k] = prompt_gradients(
                    model, tokens, labels, prompts[k], lambda f, w=weight, b=bias: f @ w.T + b
                ).float()
                norms[k] += local[k].double().norm(dim=1).sum().cpu()
            if world > 1:
                parts = [torch.empty_like(local) for _ in range(world)]
                torch.distributed.all_gather(parts, local)
                # global position g sits on rank g % world, slot g // world
                batch = torch.stack([parts[g % world][g // world] for g in range(total)], dim=1)
            else:
                batch = local[:total].transpose(0, 1)
            moments = update_gradient_moments(moments, batch[:, :, low:high].cpu().double())
            _heartbeat(config, rank, "gradients", step)
            step += 1
    mine = {name: float(norms[k]) / len(plan.gradient_positions) for k, name in enumerate(names)}
    if world == 1:
        return moments, {**info, "mean_gradient_norm": mine}
    shards: list[Any] = [None] * world
    torch.distributed.all_gather_object(shards, (low, moments, mine))
    if rank != 0:
        return None, info
    shards.sort(key=lambda item: item[0])
    gathered = {name: value for shard in shards for name, value in shard[2].items()}
    info["mean_gradient_norm"] = {name: gathered[name] for name in plan.names}
    return GradientMoments(
        num_samples=moments.num_samples,
        mean=np.concatenate([s[1].mean for s in shards], axis=0),
        m2=np.concatenate([s[1].m2 for s in shards], axis=0),
    ), info
