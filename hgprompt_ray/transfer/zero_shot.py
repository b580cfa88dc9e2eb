"""The zero-shot transfer matrix: how well each source prompt's features serve each target.

For a target and a source prompt P_i: extract CLS features of the target's train800, val200 and
test images under P_i (all prompts of the library in one K-prompt pass per batch), fit a linear
probe on train800 (C chosen on val200) and report its test accuracy. The bare backbone (no
prompt) is included as the reference row ``(none)``. This matrix is the ground truth against which
ensemble weights are judged (Spearman correlation of alpha with zero-shot accuracy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer.linear_probe import linear_probe
from hgprompt_ray.transfer.splits import load_transfer_splits

__all__ = ["NO_PROMPT", "zero_shot_matrix", "zero_shot_target"]

logger = logging.getLogger(__name__)
NO_PROMPT = "(none)"


def zero_shot_target(
    model: PromptedViT,
    prompts: torch.Tensor,
    names: Sequence[str],
    target: str,
    *,
    img_size: int,
    split_seed: int = 0,
    max_test: int | None = None,
    batch_size: int = 32,
    data_root: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows (source, target, test_accuracy, val_accuracy, c, ...) for one target.

    Shape:
        prompts: (K, m, d), in the order of ``names``.
    """
    start = time.perf_counter()
    mean, std = model.backbone.pretrained_cfg["mean"], model.backbone.pretrained_cfg["std"]
    task, splits, labels = load_transfer_splits(
        target,
        img_size=img_size,
        mean=mean,
        std=std,
        split_seed=split_seed,
        max_test=max_test,
        data_root=data_root,
        splits=("train800", "val200", "test"),
    )
    bare = PromptedViT(model.backbone, num_prompt_tokens=0).eval()
    rows = []
    features: dict[str, np.ndarray] = {}
    bare_features: dict[str, np.ndarray] = {}
    for split, dataset in splits.items():
        label = f"{task.name}/{split}"
        features[split] = extract_cls_features(
            model, dataset, prompts=prompts, batch_size=batch_size, progress=progress, description=label
        )
        bare_features[split] = extract_cls_features(bare, dataset, batch_size=batch_size)
    for index, name in enumerate([*names, NO_PROMPT]):
        pick = bare_features if name == NO_PROMPT else {s: f[index] for s, f in features.items()}
        result = linear_probe(*[(pick[s], labels[s]) for s in ("train800", "val200", "test")])
        rows.append(
            {
                "source": name,
                "target": task.name,
                "test_accuracy": result.test_accuracy,
                "val_accuracy": result.val_accuracy,
                "c": result.c,
                "num_test": int(len(labels["test"])),
                "split_seed": split_seed,
            }
        )
    logger.info("zero-shot %s: %d sources in %.0f s", task.name, len(names), time.perf_counter() - start)
    return rows


def zero_shot_matrix(
    library: PromptLibrary,
    targets: Sequence[str],
    *,
    backbone: str,
    img_size: int,
    sources: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Rows of the full matrix: every source prompt (and no prompt) on every target."""
    names = list(sources or library.names)
    model_backbone = load_backbone(backbone, img_size)
    prompts = library.load_many(names, backbone=backbone, embed_dim=model_backbone.embed_dim)
    model = PromptedViT(model_backbone, num_prompt_tokens=prompts.shape[1]).eval()
    rows: list[dict[str, Any]] = []
    for target in targets:
        rows.extend(zero_shot_target(model, prompts, names, target, img_size=img_size, **kwargs))
    return rows
