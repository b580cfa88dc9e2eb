"""A tiny timm ViT (3 blocks, width 32, 16 px images) and a separable two-class batch."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.workers.conftest import extraction_setup, tiny_library, tiny_setup  # noqa: F401  (shared fixtures)


@pytest.fixture
def tiny_vit():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    return model.eval()


@pytest.fixture
def separable():
    """64 images of two colours (class 0 red-ish, class 1 blue-ish) with noise, and labels."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    colour = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])[labels]
    images = colour[:, :, None, None] + 0.5 * torch.randn(64, 3, 16, 16, generator=generator)
    return images, labels
