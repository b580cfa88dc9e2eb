"""Shared fixtures: tiny real timm ViTs; an isolated cache folder for the whole run."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def make_tiny_vit(seed: int = 0, **overrides: object) -> VisionTransformer:
    """A real timm VisionTransformer small enough for unit tests (4 x 4 patches, d = 32)."""
    torch.manual_seed(seed)
    config = dict(TINY_VIT, num_classes=0)
    config.update(overrides)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **config)
    return model.eval()


@pytest.fixture
def tiny_vit() -> VisionTransformer:
    return make_tiny_vit()


@pytest.fixture(scope="session")
def _ray_stopped_after_the_last_test():
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(_ray_stopped_after_the_last_test):
    """The run's local Ray cluster (2 CPUs, no dashboard): started unless one runs, then shared
    by every later module that asks for it, and stopped after the last test.

    A start and a stop cost about 9 s on the 2-core machine. A module that needs Ray down (the
    two-node ``Cluster`` of tests/workers) calls ``ray.shutdown()``; the next module's
    ``ray_cluster`` starts it again. tests/launch keeps a cluster of its own, started by the
    launchers' ``start_ray`` and stopped after its last test (``tests/launch/conftest.py``).
    """
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield


def pytest_configure(config: pytest.Config) -> None:
    """Point the converted-weights cache at a fresh temp folder for the whole run.

    Set at configure time (not with monkeypatch) so module- and session-scoped fixtures see it.
    """
    config._hgprompt_cache = tempfile.mkdtemp(prefix="hgprompt_cache_")  # type: ignore[attr-defined]
    os.environ["HGPROMPT_CACHE"] = config._hgprompt_cache  # type: ignore[attr-defined]
    # Ray Train's controller polls its workers every 2 s by default, so every TorchTrainer run
    # (a few dozen in the suite) waits up to 2 s to see its workers finish or die. Polling at
    # 0.5 s only shortens those waits; the clusters and processes are the real ones. Set before
    # any ray.init, so the controllers of every local cluster and subprocess driver inherit it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(getattr(config, "_hgprompt_cache", ""), ignore_errors=True)
