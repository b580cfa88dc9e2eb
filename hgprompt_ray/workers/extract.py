"""Distributed extraction: prompt-sharded Ray Train workers compute features and gradient
statistics, publish them as Arrow tables in the object store, and cache them as Parquet.

Data flow (``extract(config)`` on the driver):

1. The driver resolves the target and the prompts, draws the sample indices of each split
   (``sample_seed``), fingerprints the backbone weights, and derives a content address for every
   output: one feature table per (prompt, split) and one gradient table for the prompt set.
   Everything already in the Parquet cache is not recomputed. When all of it is cached no
   worker starts at all.
2. Otherwise a ``TorchTrainer`` starts ``num_workers`` workers. Rank r takes the prompts at
   positions r, r + W, r + 2W, ... (a deterministic shard), loads the backbone and its prompts
   onto its device and, per split, runs the samples once per batch with all its prompts in one
   K-prompt forward (the patch embedding is computed once per batch). Each finished table is
   written to the cache (atomically) and handed to the detached :class:`FeatureStore` actor,
   which owns it, so it outlives the worker.
3. Gradients: each rank fits the probe head of each of its prompts on that prompt's features
   (``core.probe_head``: the loss that defines g^i_j, documented there) and computes per-sample
   gradients wrt its prompts with ``torch.func`` (``vmap(grad)``), batch by batch. L_align needs
   the M x M covariance of all prompts' gradients at each coordinate, which no single prompt
   shard has, so after each batch the ranks all-gather the (B, M, p) gradients and each rank
   folds only its 1/W of the p coordinates into Welford moments (``core.alignment``). Nothing
   ever holds M x N x p; each rank holds M x M x p / W moments. Rank 0 gathers the coordinate
   shards into one table.
4. A worker that dies is restarted by ``FailureConfig``; the restarted group finds the tables
   already cached and computes only the rest (the gradient pass restarts from its beginning).
   The computation is deterministic for a given world size, so the result is bit-identical to
   an undisturbed run.
5. The driver makes sure every table is in the store and in its own cache (tables made on other
   nodes are written to the driver's cache from the store) and returns an :class:`Extraction`:
   the keys, the ObjectRefs for trials and zero-copy numpy views.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.core import GradientMoments, empty_gradient_moments, update_gradient_moments
from hgprompt_ray.core.probe_head import fit_probe_head
from hgprompt_ray.data import backbone_transform, resolve_target
from hgprompt_ray.data.base import Task
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.gradients import prompt_gradients
from hgprompt_ray.paths import cache_root
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.workers._trainer import torch_trainer
from hgprompt_ray.workers.feature_store import (
    STORE_NAME,
    FeatureStore,
    alias_key,
    feature_table,
    features_from_table,
    gradient_table,
    moments_from_table,
    table_metadata,
)

__all__ = [
    "EXTRACTION_CODE_VERSION",
    "Extraction",
    "ExtractionCache",
    "backbone_fingerprint",
    "extract",
    "extract_worker",
    "sample_indices",
    "target_fingerprint",
]

logger = logging.getLogger(__name__)

EXTRACTION_CODE_VERSION = 1
"""Part of every cache key: bump it when what extraction computes changes."""
_STATS_FILE = "stats.json"


# --------------------------------------------------------------------------- identities
def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """SHA-256 over the backbone's parameter and buffer names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def target_fingerprint(task: Task, split_seed: int) -> str:
    """The target's identity: its registry name, or for folders/CSVs the exact split (files,
    labels, sizes and modification times), so editing the data changes every cache key."""
    describe = getattr(task, "describe_splits", None)
    if describe is None:
        return f"task:{task.name}"
    description = describe(split_seed)
    files = []
    for rows in description["splits"].values():
        for path, _ in rows:
            stat = os.stat(path)
            files.append([path, stat.st_size, stat.st_mtime_ns])
    payload = json.dumps([description, files], sort_keys=True).encode()
    return "files:" + hashlib.sha256(payload).hexdigest()


def sample_indices(split_size: int, num_samples: int | None, seed: int, split: str) -> np.ndarray:
    """Sorted indices of the drawn samples: all of the split when ``num_samples`` is None or at
    least the split's size, else a draw without replacement seeded by (seed, split)."""
    if num_samples is None or num_samples >= split_size:
        return np.arange(split_size, dtype=np.int64)
    salt = int.from_bytes(hashlib.sha256(split.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(split_size, size=num_samples, replace=False)).astype(np.int64)


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- disk cache
class ExtractionCache:
    """Content-addressed Parquet files: ``ROOT/<kind>/<key[:2]>/<key>.parquet``.

    A table whose stored key does not match its file name, or that does not parse, counts as
    missing (it is derived data: recomputing it loses nothing) and a warning names the file.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else cache_root() / "extraction"

    def path(self, key: str) -> Path:
        kind, digest = key.split("-", 1)
        return self.root / kind / digest[:2] / f"{digest}.parquet"

    def has(self, key: str) -> bool:
        """Whether a readable table of ``key`` is cached (reads the file's schema only)."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            stored = table_metadata(pq.read_schema(path).empty_table()).get("key")
        except (OSError, pa.ArrowException, InvalidValueError, ValueError) as error:
            logger.warning("Ignoring unreadable cache file %s (%s); it will be recomputed.", path, error)
            return False
        return bool(stored == key)

    def write(self, key: str, table: pa.Table) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return path

    def read(self, key: str) -> pa.Table | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            stored = table_metadata(table).get("key")
        except (OSError, pa.ArrowException, InvalidValueError, ValueError) as error:
            logger.warning("Ignoring unreadable cache file %s (%s); it will be recomputed.", path, error)
            return None
        if stored != key:
            logger.warning("Ignoring cache file %s: it holds key %s, not %s.", path, stored, key)
            return None
        return table.combine_chunks()


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _Plan:
    """Everything the workers need, decided by the driver (plain data: ships to workers)."""

    config: dict[str, Any]
    names: list[str]
    sha256: list[str]
    num_tokens: int
    num_classes: int
    indices: dict[str, list[int]]
    gradient_positions: list[int]
    feature_keys: dict[str, dict[str, str]]
    feature_meta: dict[str, dict[str, dict[str, Any]]]
    gradient_key: str | None
    gradient_meta: dict[str, Any]
    compute_gradients: bool
    store_name: str
    progress: bool = True


def _make_plan(config: ExtractionConfig, store_name: str, progress: bool) -> tuple[_Plan, Task]:
    library = PromptLibrary(config.library)
    if len(library) == 0:
        raise InvalidValueError(
            invalid_value(
                "library", config.library, "must hold at least one prompt", "Train or import prompts first."
            )
        )
    names = list(config.prompts) or library.names
    unknown = [n for n in names if n not in library]
    if unknown:
        raise InvalidValueError(
            invalid_value(
                "prompts",
                unknown,
                f"must be prompts of {config.library}",
                f"Known: {', '.join(library.names)}.",
            )
        )
    records = [library.record(n) for n in names]
    for record in records:
        if record.backbone != config.backbone:
            raise InvalidValueError(
                f"Prompt {record.name!r} was trained with backbone {record.backbone!r}, not "
                f"{config.backbone!r}. Fix: pass --backbone {record.backbone} or use prompts for "
                f"{config.backbone!r}."
            )
        if record.img_size != config.img_size:
            raise InvalidValueError(
                invalid_value(
                    "img_size",
                    config.img_size,
                    f"must equal the image size prompt {record.name!r} was trained at ({record.img_size})",
                    f"Pass --img-size {record.img_size}.",
                )
            )
    lengths = {r.num_tokens for r in records}
    if len(lengths) != 1:
        raise InvalidValueError(
            invalid_value("prompts", names, f"must share one length m (got {sorted(lengths)})", "")
        )
    task = resolve_target(config.target, data_root=config.data_root)
    backbone = load_backbone(config.backbone, config.img_size)
    identity = {
        "backbone": config.backbone,
        "backbone_sha256": backbone_fingerprint(backbone),
        "img_size": config.img_size,
        "target": target_fingerprint(task, config.split_seed),
        "split_seed": config.split_seed,
        "code_version": EXTRACTION_CODE_VERSION,
    }
    indices, feature_keys, feature_meta = {}, {}, {}
    for split in config.splits:
        size = len(task.split(split, seed=config.split_seed))
        chosen = sample_indices(size, config.num_samples, config.sample_seed, split)
        indices[split] = chosen.tolist()
        drawn = len(chosen) < size
        common = {
            **identity,
            "split": split,
            "num_samples": len(chosen),
            "sample_seed": config.sample_seed if drawn else None,
        }
        feature_keys[split], feature_meta[split] = {}, {}
        for record in records:
            payload = {**common, "kind": "features", "prompt_sha256": record.sha256}
            key = "features-" + _digest(payload)
            feature_keys[split][record.name] = key
            feature_meta[split][record.name] = {**payload, "target_name": task.name, "key": key}
    first = config.splits[0]
    count = len(indices[first])
    positions = sample_indices(count, config.gradient_samples, config.sample_seed, "gradients")
    gradient_key, gradient_meta = None, {}
    if config.gradients:
        payload = {
            **identity,
            "kind": "gradients",
            "split": first,
            "features": [feature_keys[first][n] for n in names],
            "gradient_positions_sha256": hashlib.sha256(positions.tobytes()).hexdigest(),
            "num_gradient_samples": len(positions),
            "head": {"kind": "logistic", "l2": config.head_l2},
            "loss": "cross-entropy of the probe head (core.probe_head)",
        }
        gradient_key = "gradients-" + _digest(payload)
        gradient_meta = {**payload, "target_name": task.name, "key": gradient_key}
    cache = ExtractionCache(config.cache_dir)
    plan = _Plan(
        config=asdict(config),
        names=names,
        sha256=[r.sha256 for r in records],
        num_tokens=records[0].num_tokens,
        num_classes=task.info.num_classes,
        indices=indices,
        gradient_positions=positions.tolist(),
        feature_keys=feature_keys,
        feature_meta=feature_meta,
        gradient_key=gradient_key,
        gradient_meta=gradient_meta,
        compute_gradients=gradient_key is not None and not cache.has(gradient_key),
        store_name=store_name,
        progress=progress,
    )
    return plan, task


# --------------------------------------------------------------------------- the worker
def _heartbeat(config: ExtractionConfig, rank: int, phase: str, step: int) -> None:
    if config.heartbeat_dir:
        atomic_write_json(
            Path(config.heartbeat_dir) / f"{rank}.json",
            {"pid": os.getpid(), "rank": rank, "phase": phase, "step": step, "time": time.time()},
        )


def _node_info(rank: int) -> dict[str, Any]:
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "rank": rank, "pid": os.getpid()}


def extract_worker(plan_dict: dict[str, Any]) -> None:
    """Ray Train worker loop (``train_loop_per_worker``); see the module docstring."""
    import ray.train
    import ray.train.torch

    plan = _Plan(**plan_dict)
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
    task = resolve_target(config.target, data_root=config.data_root, validate=False)
    transform = backbone_transform(
        config.img_size, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    )
    datasets = {
        split: Subset(task.split(split, seed=config.split_seed, transform=transform), plan.indices[split])
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
            (Path(folder) / _STATS_FILE).write_text(json.dumps(stats))
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
    plan: _Plan,
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


# --------------------------------------------------------------------------- the driver
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
            (the slowest rank's compute time of each phase).
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

    def _keys(self, split: str) -> dict[str, str]:
        if split not in self.feature_keys:
            raise InvalidValueError(
                invalid_value("split", split, f"must be one of the extracted {list(self.feature_keys)}", "")
            )
        return self.feature_keys[split]


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
) -> Extraction:
    """Extract (or load from the cache) everything ``config`` asks for; needs ``ray.init``.

    Args:
        config: what to extract.
        num_workers: Ray Train workers (capped at the number of prompts).
        use_gpu: None picks GPUs when the cluster has one per worker.
        cpus_per_worker: CPUs per worker (torch's thread count); None: an equal share.
        store_name: the detached store actor to publish to.
        storage_path: Ray Train run storage (default ``~/ray_results``).
        name: the Ray Train run name.
        max_failures: worker-group restarts allowed.
        progress: progress bars in the workers (Ray forwards them to this console).
    """
    import ray

    if not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidValueError(invalid_value("num_workers", num_workers, "must be a positive integer", ""))
    start = time.perf_counter()
    plan, task = _make_plan(config, store_name, progress)
    cache = ExtractionCache(config.cache_dir)
    all_keys = [k for split in plan.feature_keys.values() for k in split.values()]
    if plan.gradient_key is not None:
        all_keys.append(plan.gradient_key)
    missing = [k for k in all_keys if not cache.has(k)]
    stats: dict[str, Any] = {
        "image_prompt_forwards": 0,
        "gradient_sample_prompts": 0,
        "workers": 0,
        "cached_tables": len(all_keys) - len(missing),
    }
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
            asdict(plan),
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
            stats.update(json.loads((Path(folder) / _STATS_FILE).read_text()))
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
