"""Shared fixtures for Ray Train tests: a local cluster and a tiny training setup."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hgprompt_ray.config import ExtractionConfig, PromptTrainingConfig
from hgprompt_ray.prompts import PromptLibrary

ray = pytest.importorskip("ray")

NAMES = ["p0", "p1", "p2"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A random vit_tiny checkpoint and a two-class colour task of 32 px images."""
    root = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(170, 70, 70), (70, 70, 170)]):
        (root / "data" / f"class{c}").mkdir(parents=True)
        for i in range(200):
            pixels = np.clip(rng.normal(colour, 70, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "data" / f"class{c}" / f"{i}.png")
    config = PromptTrainingConfig(
        task=str(root / "data"),
        backbone=f"vit_tiny_patch16_224={weights}",
        img_size=32,
        num_prompt_tokens=4,
        epochs=4,
        batch_size=32,
        base_lr=0.2,
        eval_batch_size=128,
    )
    return root, config


@pytest.fixture(scope="module")
def extraction_setup(tiny_setup, tmp_path_factory):
    """tiny_setup's backbone and 2-class folder task, and a library of three random prompts."""
    root, training = tiny_setup
    library = PromptLibrary(tmp_path_factory.mktemp("library") / "lib", create=True)
    generator = torch.Generator().manual_seed(1)
    for name in NAMES:
        library.add(
            name,
            torch.randn(4, 192, generator=generator) * 0.5,
            source_task="random",
            backbone=training.backbone,
            img_size=32,
        )
    config = ExtractionConfig(
        target=training.task,
        library=str(library.root),
        backbone=training.backbone,
        img_size=32,
        num_samples=48,
        gradient_samples=24,
        batch_size=16,
        gradient_batch_size=8,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        precision="fp32",  # compared with a float32 reference; bf16 has its own test
    )
    return config
