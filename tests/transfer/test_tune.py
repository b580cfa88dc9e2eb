"""Transfer tuning under the VTAB-1k protocol on a tiny real ViT and a tiny folder task."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.transfer.attempt import AttemptClassifier
from hgprompt_ray.transfer.tune import brief_tune, tune_transfer


@pytest.fixture(scope="module")
def transfer_config(tiny_setup):
    _, training = tiny_setup
    return TransferConfig(
        task=training.task,
        backbone=training.backbone,
        img_size=32,
        steps=12,
        eval_points=3,
        batch_size=32,
        base_lr=0.4,
        max_test=80,
        eval_batch_size=128,
    )


@pytest.fixture(scope="module")
def backbone(transfer_config):
    return load_backbone(transfer_config.backbone, transfer_config.img_size)


def test_prompt_run_learns_and_follows_the_protocol(transfer_config, backbone):
    result = tune_transfer(transfer_config, "prompt", num_prompt_tokens=4, backbone=backbone)
    assert result.test_accuracy > 0.75  # two colour classes: chance is 0.5
    assert [s for s, _ in result.val_curve] == [4, 8, 12]
    assert result.selected_steps in (4, 8, 12)
    best = max(a for _, a in result.val_curve)
    assert result.val_accuracy == best
    assert result.num_test == 80  # the seeded test subset
    assert result.prompt is not None and result.prompt.shape == (4, 192)


def test_the_run_starts_from_the_initial_prompt(transfer_config, backbone):
    initial = torch.randn(4, 192, generator=torch.Generator().manual_seed(3))
    frozen = dataclasses.replace(transfer_config, base_lr=1e-12, weight_decay=0.0, steps=2, eval_points=1)
    result = tune_transfer(frozen, "prompt", initial=initial, backbone=backbone)
    assert torch.allclose(result.prompt, initial, atol=1e-6)
    moved = tune_transfer(
        dataclasses.replace(frozen, base_lr=0.4), "prompt", initial=initial, backbone=backbone
    )
    assert not torch.allclose(moved.prompt, initial, atol=1e-3)


def test_linear_probe_and_attempt_runs(transfer_config, backbone):
    probe = tune_transfer(transfer_config, "probe", backbone=backbone)
    assert probe.test_accuracy > 0.75 and probe.selected_steps == 0 and probe.prompt is None
    sources = torch.randn(3, 4, 192, generator=torch.Generator().manual_seed(0)) * 0.5
    attempt = tune_transfer(transfer_config, "attempt", sources=sources, backbone=backbone)
    assert attempt.test_accuracy > 0.75 and attempt.prompt is None


def test_brief_tune_moves_the_prompt(transfer_config, backbone):
    prompt = brief_tune(transfer_config, 4, steps=3, backbone=backbone)
    model = PromptedViT(backbone, 4)
    model.reset_prompt(torch.Generator().manual_seed(transfer_config.seed))
    assert prompt.shape == (4, 192) and not torch.allclose(prompt, model.prompt.detach())
    with pytest.raises(InvalidValueError, match="steps"):
        brief_tune(transfer_config, 4, steps=0, backbone=backbone)


def test_attempt_mixture(backbone):
    model = PromptedViT(backbone, 4, num_classes=2)
    sources = torch.randn(3, 4, 192, generator=torch.Generator().manual_seed(0))
    attempt = AttemptClassifier(model, sources)
    images = torch.randn(5, 3, 32, 32)
    weights = attempt.mixture_weights(images)
    assert weights.shape == (5, 4)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5), atol=1e-6)
    assert not torch.allclose(weights[0], weights[1])  # instance-level: images get different mixtures
    prompts = attempt.instance_prompts(images)
    expected = model.prompt + torch.einsum("k,kmd->md", weights[2], torch.cat([sources, model.prompt[None]]))
    assert torch.allclose(prompts[2], expected, atol=1e-5)
    attempt(images).sum().backward()
    trained = {n for n, p in attempt.named_parameters() if p.grad is not None}
    assert "model.prompt" in trained and "model.head.weight" in trained
    assert any(n.startswith("attention.") for n in trained)
    assert not any(n.startswith("model.backbone.") for n in trained)
    assert torch.equal(attempt.sources, sources)
    with pytest.raises(InvalidValueError, match="sources.shape"):
        AttemptClassifier(model, torch.randn(3, 5, 192))


def test_config_errors(tiny_setup):
    _, training = tiny_setup
    with pytest.raises(InvalidValueError, match="eval_points"):
        TransferConfig(task=training.task, steps=2, eval_points=3)
    with pytest.raises(InvalidValueError, match="steps"):
        TransferConfig(task=training.task, steps=0)
    with pytest.raises(InvalidValueError, match="warmup_fraction"):
        TransferConfig(task=training.task, warmup_fraction=1.0)
    with pytest.raises(InvalidValueError, match="kind"):
        tune_transfer(TransferConfig(task=training.task), "lora")
    assert TransferConfig(task="x", steps=25, eval_points=2).eval_steps == (12, 25)
