"""extract_cls_features equals direct forwards, for one prompt and for K prompts."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hgprompt_ray.models import PromptedViT
from hgprompt_ray.models.features import extract_cls_features


def test_matches_direct_forward(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=3)
    images = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(images, torch.arange(10))
    prompts = torch.randn(4, 3, 32)
    with torch.no_grad():
        own = model.forward_features(images).numpy()
        stacked = model.forward_features(images, prompts).numpy()
    got_own = extract_cls_features(model, dataset, batch_size=3)
    got_stacked = extract_cls_features(model, dataset, prompts=prompts, batch_size=4)
    assert got_own.shape == (10, 32) and got_own.dtype == np.float32
    assert got_stacked.shape == (4, 10, 32)
    np.testing.assert_allclose(got_own, own, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_stacked, stacked, rtol=1e-5, atol=1e-5)
