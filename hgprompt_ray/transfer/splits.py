"""A target's splits for transfer: train800, val200, train800val200 and a fixed test subset.

The test subset (``max_test`` images drawn with seed 0, sorted) is the same for the zero-shot
matrix, the linear probe and every tuned method, so their accuracies are comparable image for
image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Subset

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.data import backbone_transform, resolve_target

__all__ = ["TRANSFER_SPLITS", "config_splits", "load_transfer_splits", "test_subset_indices"]

TRANSFER_SPLITS = ("train800", "val200", "train800val200", "test")


def test_subset_indices(num_test: int, max_test: int | None) -> np.ndarray | None:
    """Sorted indices of the test subset, or None when the whole split is used."""
    if max_test is None or num_test <= max_test:
        return None
    return np.sort(np.random.default_rng(0).choice(num_test, max_test, replace=False))


def load_transfer_splits(
    target: str,
    *,
    img_size: int,
    mean: Any,
    std: Any,
    split_seed: int = 0,
    max_test: int | None = None,
    data_root: str | None = None,
    splits: tuple[str, ...] = TRANSFER_SPLITS,
) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """The task, its datasets and their labels (the test split cut to ``max_test``)."""
    task = resolve_target(target, data_root=data_root)
    transform = backbone_transform(img_size, mean, std)
    datasets: dict[str, Any] = {s: task.split(s, seed=split_seed, transform=transform) for s in splits}
    labels = {s: np.asarray(d.labels) for s, d in datasets.items()}
    if "test" in datasets:
        keep = test_subset_indices(len(datasets["test"]), max_test)
        if keep is not None:
            datasets["test"] = Subset(datasets["test"], keep.tolist())
            labels["test"] = labels["test"][keep]
    return task, datasets, labels


def config_splits(
    config: TransferConfig, backbone: Any, splits: tuple[str, ...] = TRANSFER_SPLITS
) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """:func:`load_transfer_splits` for a transfer config, normalised as ``backbone`` expects."""
    return load_transfer_splits(
        config.task,
        img_size=config.img_size,
        mean=backbone.pretrained_cfg["mean"],
        std=backbone.pretrained_cfg["std"],
        split_seed=config.split_seed,
        max_test=config.max_test,
        data_root=config.data_root,
        splits=splits,
    )
