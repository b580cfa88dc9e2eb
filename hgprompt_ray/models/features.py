"""Batched CLS-feature extraction over a labelled split (optionally under several prompts)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hgprompt_ray.models.prompted_vit import PromptedViT

__all__ = ["extract_cls_features"]

logger = logging.getLogger(__name__)


@torch.inference_mode()
def extract_cls_features(
    model: PromptedViT,
    dataset: Dataset,
    *,
    prompts: torch.Tensor | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    description: str = "features",
) -> np.ndarray:
    """Final-norm CLS features of every image in ``dataset``.

    Args:
        model: the prompted ViT (``num_prompt_tokens=0`` for the bare backbone).
        dataset: yields (image tensor, label), images already resized and normalised.
        prompts: None for the model's own prompt, or (K, m, d) to apply K prompts at once.
        batch_size: images per forward.
        num_workers: DataLoader workers.
        progress: show a tqdm bar.
        description: the bar's label.

    Shape:
        returns: (N, d) float32, or (K, N, d) when prompts is given.
    """
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks: list[torch.Tensor] = []
    for images, _ in tqdm(loader, desc=description, disable=not progress, leave=False):
        images = images.to(device)
        features = model.forward_features(images, None if prompts is None else prompts.to(device))
        chunks.append(features.float().cpu())
    return torch.cat(chunks, dim=-2).numpy()
