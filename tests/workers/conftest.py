"""Shared fixtures for Ray Train tests: a tiny training setup (the local cluster, ``ray_cluster``,
is tests/conftest.py's)."""

from __future__ import annotations

from pathlib import Path

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
ARCH = "test_vit"
"""timm's own CI model (timm >= 1.0.9): a CLS-token ViT, 6 blocks of width 64, patch 16 (2 x 2
patches at 32 px). The Ray and launch tests run every pipeline end to end on it: a real timm
VisionTransformer, about 18x less arithmetic than vit_tiny, so the suite's time goes to what
it checks rather than to matrix products."""
EMBED_DIM = 64
DEPTH = 6


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory):
    """A random ``test_vit`` checkpoint and a two-class colour task of 32 px images.

    One for the whole session: nothing writes into it (runs and caches live elsewhere), and a
    folder target's fingerprint (paths and modification times) stays the same throughout."""
    root = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=0)
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
        backbone=f"{ARCH}={weights}",
        img_size=32,
        num_prompt_tokens=4,
        epochs=4,
        batch_size=32,
        base_lr=0.2,
        eval_batch_size=128,
    )
    return root, config


@pytest.fixture(scope="session")
def tiny_library(tiny_setup, tmp_path_factory) -> str:
    """A library of three random prompts (``NAMES``) for tiny_setup's backbone; read-only."""
    _, training = tiny_setup
    library = PromptLibrary(tmp_path_factory.mktemp("library") / "lib", create=True)
    generator = torch.Generator().manual_seed(1)
    for name in NAMES:
        library.add(
            name,
            torch.randn(4, EMBED_DIM, generator=generator) * 0.5,
            source_task="random",
            backbone=training.backbone,
            img_size=32,
        )
    return str(library.root)


def extraction_config(tiny_setup, library: str, cache_dir: Path) -> ExtractionConfig:
    """tiny_setup's backbone and 2-class folder task, ``library``'s prompts, and ``cache_dir``."""
    _, training = tiny_setup
    return ExtractionConfig(
        target=training.task,
        library=library,
        backbone=training.backbone,
        img_size=32,
        num_samples=48,
        gradient_samples=24,
        batch_size=16,
        gradient_batch_size=8,
        cache_dir=str(cache_dir),
        precision="fp32",  # compared with a float32 reference; bf16 has its own test
    )


def directory_extraction_setup(label: str):
    """An ``extraction_setup`` with one cache for every module of a test directory, for the
    directories whose tests check what an extraction serves, never how much it computed: a table
    one module computed is served to the next from the cache. Assign it as ``extraction_setup``
    in the directory's conftest."""

    @pytest.fixture(scope="session", name="extraction_setup")
    def shared(tiny_setup, tiny_library, tmp_path_factory):
        return extraction_config(tiny_setup, tiny_library, tmp_path_factory.mktemp(f"{label}-cache"))

    return shared


@pytest.fixture(scope="module")
def extraction_setup(tiny_setup, tiny_library, tmp_path_factory):
    """The extraction config, with a cache of the module's own: what a test here computes (or
    corrupts) is seen by this module only. tests/launch and tests/tuning, which only consume what
    an extraction serves, override it with one cache for their whole directory."""
    return extraction_config(tiny_setup, tiny_library, tmp_path_factory.mktemp("cache"))
