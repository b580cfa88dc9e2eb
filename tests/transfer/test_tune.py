"""The protocol on a tiny real ViT and a tiny folder task: the lr chosen on val200 at the end of
the schedule, refit on train800val200, test scored last; the probe in closed form; ATTEMPT's mixture."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from hgprompt_ray.config import PRECISIONS, TransferConfig
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models import precision as precision_module
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.transfer.attempt import AttemptClassifier
from hgprompt_ray.transfer.linear_probe import PROBE_GRID
from hgprompt_ray.transfer.splits import config_splits
from hgprompt_ray.transfer.tune import brief_tune, probe_transfer, tune_transfer
from tests.workers.conftest import EMBED_DIM


@pytest.fixture(scope="module")
def transfer_config(tiny_setup):
    _, training = tiny_setup
    return TransferConfig(
        task=training.task,
        backbone=training.backbone,
        img_size=32,
        epochs=3,
        lr_scales=(0.5, 1.0),
        batch_size=32,
        base_lr=0.4,
        max_test=80,
        eval_batch_size=128,
    )


@pytest.fixture(scope="module")
def backbone(transfer_config):
    return load_backbone(transfer_config.backbone, transfer_config.img_size)


def test_prompt_run_learns_and_follows_the_protocol(transfer_config, backbone):
    result = tune_transfer(transfer_config, "vpt", num_prompt_tokens=4, backbone=backbone)
    assert result.test_accuracy > 0.75  # two colour classes: chance is 0.5
    assert [(s, e) for s, e, _ in result.val_curve] == [(s, e) for s in (0.5, 1.0) for e in (1.0, 2.0, 3.0)]
    assert len(result.loss_curve) == 6 and all(np.isfinite(loss) for _, _, loss in result.loss_curve)
    final = {s: a for s, e, a in result.val_curve if e == 3.0}  # the lr is chosen at the end of the schedule
    best = max(final.values())
    assert result.val_accuracy == best and result.epochs == 3.0  # every method trains for the budget's epochs
    assert result.lr_scale == min(s for s, a in final.items() if a == best)  # ties: the earlier scale
    assert result.num_test == 80  # the seeded test subset
    assert result.prompt is not None and result.prompt.shape == (4, EMBED_DIM)
    assert result.trainable_parameters == 4 * EMBED_DIM + 2 * EMBED_DIM + 2  # prompt + linear head
    assert result.precision == precision_module.resolve_precision("auto")


def test_the_run_starts_from_the_initial_prompt(transfer_config, backbone):
    initial = torch.randn(4, EMBED_DIM, generator=torch.Generator().manual_seed(3))
    frozen = dataclasses.replace(transfer_config, base_lr=1e-12, weight_decay=0.0, epochs=1, lr_scales=(1.0,))
    result = tune_transfer(frozen, "average", initial=initial, backbone=backbone)
    assert torch.allclose(result.prompt, initial, atol=1e-6)
    moved = tune_transfer(dataclasses.replace(frozen, base_lr=0.4), "average", initial=initial, backbone=backbone)
    assert not torch.allclose(moved.prompt, initial, atol=1e-3)


def test_linear_probe_is_closed_form_and_attempt_runs(transfer_config, backbone):
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    probe = tune_transfer(transfer_config, "linear-probe", backbone=backbone)
    assert probe.test_accuracy > 0.75 and probe.epochs == 0 and np.isnan(probe.lr_scale) and probe.prompt is None
    assert probe.val_curve == [] and probe.trainable_parameters == EMBED_DIM + 1  # binary logistic regression
    sources = torch.randn(3, 4, EMBED_DIM, generator=torch.Generator().manual_seed(0)) * 0.5
    attempt = tune_transfer(dataclasses.replace(transfer_config, lr_scales=(1.0,)), "attempt", sources=sources,
                            backbone=backbone)  # fmt: skip
    assert attempt.test_accuracy > 0.75 and attempt.prompt is None
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # the backbone is never trained


def test_init_probe_fits_the_probe_on_the_features_under_p0(transfer_config, backbone):
    bare = probe_transfer(transfer_config, None, backbone=backbone)
    linear = tune_transfer(transfer_config, "linear-probe", backbone=backbone)
    assert (bare.test_accuracy, bare.val_accuracy) == (linear.test_accuracy, linear.val_accuracy)  # the same procedure
    assert bare.trainable_parameters == EMBED_DIM + 1 and bare.epochs == 0 and bare.prompt is None
    prompt = torch.randn(4, EMBED_DIM, generator=torch.Generator().manual_seed(5)) * 4.0
    fp32 = dataclasses.replace(transfer_config, precision="fp32")
    found = probe_transfer(fp32, prompt, backbone=backbone)
    # by hand: features under P0, C on val200 after train800 fits, refit on train800val200, test
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _, datasets, labels = config_splits(fp32, backbone)
    model = PromptedViT(backbone, num_prompt_tokens=4).eval()
    features = {s: extract_cls_features(model, datasets[s], prompts=prompt[None])[0] for s in ("train800", "val200", "test")}
    scaler = StandardScaler().fit(features["train800"])
    scored = [(LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(features["train800"]), labels["train800"])
               .score(scaler.transform(features["val200"]), labels["val200"]), c) for c in PROBE_GRID]  # fmt: skip
    val, c = max(scored, key=lambda item: item[0])
    both = np.concatenate([features["train800"], features["val200"]])
    refit_scaler = StandardScaler().fit(both)
    refit = LogisticRegression(C=c, max_iter=3000).fit(
        refit_scaler.transform(both), np.concatenate([labels["train800"], labels["val200"]])
    )
    assert found.val_accuracy == pytest.approx(val)
    assert found.test_accuracy == pytest.approx(refit.score(refit_scaler.transform(features["test"]), labels["test"]))
    assert found.num_test == 80 and found.precision == "fp32"


def test_max_steps_caps_every_fit(transfer_config, backbone, caplog):
    capped = dataclasses.replace(transfer_config, max_steps=2, lr_scales=(1.0,))
    with caplog.at_level(logging.INFO, logger="hgprompt_ray.transfer.tune"):
        result = tune_transfer(capped, "vpt", num_prompt_tokens=4, backbone=backbone)
    assert [e for _, e, _ in result.val_curve] == [pytest.approx(2 / 7)]  # 240 images, batch 32: 7 steps an epoch
    lines = [r.getMessage() for r in caplog.records if r.name == "hgprompt_ray.transfer.tune"]  # progress per epoch
    assert lines[0].startswith(f"{capped.task} vpt seed 0: lr x1, epoch 0.29/{capped.epochs}: train loss ")
    assert lines[0].endswith(f"val200 {result.val_curve[0][2]:.3f}") and "refit on train800val200" in lines[-1]


def test_brief_tune_moves_the_prompt(transfer_config, backbone):
    prompt = brief_tune(transfer_config, 4, steps=3, backbone=backbone)
    model = PromptedViT(backbone, 4)
    model.reset_prompt(torch.Generator().manual_seed(transfer_config.seed))
    assert prompt.shape == (4, EMBED_DIM) and not torch.allclose(prompt, model.prompt.detach())
    with pytest.raises(InvalidValueError, match="steps"):
        brief_tune(transfer_config, 4, steps=0, backbone=backbone)


def test_attempt_mixture(backbone):
    model = PromptedViT(backbone, 4, num_classes=2)
    sources = torch.randn(3, 4, EMBED_DIM, generator=torch.Generator().manual_seed(0))
    attempt = AttemptClassifier(model, sources)
    images = torch.randn(5, 3, 32, 32)
    weights = attempt.mixture_weights(images)
    assert weights.shape == (5, 4)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5), atol=1e-6)
    assert not torch.allclose(weights[0], weights[1])  # instance-level: images get different mixtures
    with torch.no_grad():  # the formula, with the paper's temperature T = d x exp(1)
        query = attempt.attention(model.embed_patches(images)[:, model.num_prefix_tokens :].amax(dim=1))
        keys = torch.cat([sources, model.prompt[None]]).amax(dim=1)
        assert torch.allclose(weights, torch.softmax(query @ keys.T / (EMBED_DIM * math.e), dim=-1), atol=1e-6)
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
        AttemptClassifier(model, torch.randn(3, 5, EMBED_DIM))


def test_config_errors(tiny_setup):
    _, training = tiny_setup
    cases = {
        "epochs": dict(epochs=0),
        "lr_scales": dict(lr_scales=()),
        "lr_scales must be positive": dict(lr_scales=(1.0, -0.1)),
        "warmup_fraction": dict(warmup_fraction=1.0),
        "precision must be one of": dict(precision="fp16"),
        "max_steps": dict(max_steps=0),
    }
    for message, change in cases.items():
        with pytest.raises(InvalidValueError, match=message):
            TransferConfig(task=training.task, **change)
    with pytest.raises(InvalidValueError, match="method"):
        tune_transfer(TransferConfig(task=training.task), "lora")
    assert TransferConfig(task="x", lr_scales=[1, 3]).lr_scales == (1.0, 3.0)
    assert PRECISIONS == precision_module.PRECISIONS  # the config's copy of the accepted values


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_val_and_test_are_scored_at_the_training_precision(transfer_config, backbone, precision):
    from hgprompt_ray.transfer.methods.common import BuildContext, prompt_classifier
    from hgprompt_ray.transfer.tune import _accuracy

    config = dataclasses.replace(transfer_config, precision=precision)
    _, datasets, _ = config_splits(config, backbone)
    model = prompt_classifier(BuildContext(backbone, 2, 4, 0))
    seen = []
    model.backbone.blocks[0].attn.qkv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    _accuracy(model, datasets["val200"], config, torch.device("cpu"))
    assert seen and set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
