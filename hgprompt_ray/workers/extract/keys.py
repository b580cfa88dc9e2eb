"""Identities that make up the extraction cache keys: backbone and target fingerprints, the drawn
sample indices, and the digest of a key payload.

Every function here feeds a content address: changing what one returns changes every cache key,
so bump :data:`EXTRACTION_CODE_VERSION` instead when what extraction computes changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import torch

from hgprompt_ray.data.base import Task

__all__ = [
    "EXTRACTION_CODE_VERSION",
    "backbone_fingerprint",
    "sample_indices",
    "target_fingerprint",
]

EXTRACTION_CODE_VERSION = 1
"""Part of every cache key: bump it when what extraction computes changes."""


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """SHA-256 over the backbone's parameter and buffer names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def target_fingerprint(task: Task, split_seed: int) -> str:
    """The target's identity: its registry name (with its split protocol where it has one: VTAB's
    official task_adaptation splits), or for folders/CSVs the exact split (files, labels, sizes
    and modification times), so editing the data changes every cache key."""
    describe = getattr(task, "describe_splits", None)
    if describe is None:
        protocol = getattr(task, "SPLIT_PROTOCOL", None)
        return f"task:{task.name}" if protocol is None else f"task:{task.name}@{protocol}"
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
    """SHA-256 of ``payload`` as sorted-key JSON: the content address of a cache key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
