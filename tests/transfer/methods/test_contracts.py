"""Every registered method's classifier on a tiny timm ViT: exactly the declared parameters
train, the frozen ones stay bit-identical, the loss falls on a separable task, bad settings fail
with a clear error. A new method is covered here by registering it."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models.precision import autocast
from hgprompt_ray.transfer.methods import get_method, registered
from hgprompt_ray.transfer.methods.common import (
    BuildContext,
    FeatureCache,
    matching_parameters,
    prompt_classifier,
)
from hgprompt_ray.transfer.tune import _fit, count_trainable

TRAINED = [m.name for m in registered() if not m.closed_form and (m.build is not None or m.is_weighting)]
SOURCES = torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(1)) * 0.5


def _context(backbone, name):
    method = get_method(name)
    initial = SOURCES.mean(0) if method.is_weighting else None
    return BuildContext(backbone, 2, 4, 0, method.default_settings(), initial, SOURCES, np.array([0.5, 0.3, 0.2]),
                        FeatureCache())  # as tune_transfer builds them  # fmt: skip


def _build(backbone, name):
    method = get_method(name)
    context = _context(backbone, name)
    return prompt_classifier(context) if method.is_weighting else method.build(context)


@pytest.mark.parametrize("name", TRAINED)
def test_exactly_the_declared_parameters_train_and_the_rest_stay_bit_identical(tiny_vit, separable, name):
    method = get_method(name)
    before = copy.deepcopy(tiny_vit.state_dict())
    model = _build(tiny_vit, name)
    declared = set(matching_parameters(model, method.trainable_patterns(method.default_settings(), 3)))
    assert declared, name
    assert {n for n, p in model.named_parameters() if p.requires_grad} == declared
    assert count_trainable(model) == sum(p.numel() for n, p in model.named_parameters() if n in declared)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in declared}
    start = {n: p.detach().clone() for n, p in model.named_parameters() if n in declared}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    images, labels = separable
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the methods run under mixed precision
            loss = torch.nn.functional.cross_entropy(model(images[:15]), labels[:15])  # unbalanced: the bias moves
        loss.backward()
        graded = {n for n, p in model.named_parameters() if p.grad is not None}
        assert graded == declared, (name, sorted(graded ^ declared))
        optimizer.step()
    for n, p in model.named_parameters():
        if n in declared:
            assert not torch.equal(p, start[n]), f"{name}: {n} did not move"
        else:
            assert torch.equal(p, frozen[n]), f"{name}: frozen {n} changed"
    after = tiny_vit.state_dict()  # the backbone the method was built from is never touched
    assert all(torch.equal(before[k], after[k]) for k in before), name


@pytest.mark.parametrize("name", TRAINED)
def test_the_loss_falls_on_a_separable_task(tiny_vit, separable, name):
    method = get_method(name)
    config = TransferConfig(task="x", batch_size=16, epochs=6, base_lr=0.4, warmup_fraction=0.0, precision="auto")
    model = _build(tiny_vit, name)
    losses = []
    _fit(model, TensorDataset(*separable), config.epochs, method, config, 1.0, torch.device("cpu"),
         on_epoch=lambda epoch, loss: losses.append(loss))  # fmt: skip
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert losses[-1] < 0.9 * losses[0], (name, losses)


def test_bad_settings_name_the_field_the_value_and_the_fix(tiny_vit):
    from hgprompt_ray.transfer.methods.adapter import AdapterSettings
    from hgprompt_ray.transfer.methods.mlp import MlpSettings
    from hgprompt_ray.transfer.methods.panda import PandaSettings
    from hgprompt_ray.transfer.methods.partial import PartialSettings
    from hgprompt_ray.transfer.methods.sidetune import SideTuneSettings

    cases = [
        (lambda: PartialSettings(partial_k=0), "partial_k must be an integer >= 1, but got 0. Pass --partial-k 1."),
        (lambda: MlpSettings(mlp_k=0), "mlp_k must be an integer >= 1, but got 0. Pass --mlp-k 1."),
        (lambda: AdapterSettings(adapter_reduction=0), "adapter_reduction must be an integer >= 1"),
        (lambda: PandaSettings(panda_distill_weight=-0.5), "panda_distill_weight must be a finite number >= 0, but got -0.5"),
        (lambda: SideTuneSettings(sidetune_width=0), "sidetune_width must be an integer >= 1"),
    ]  # fmt: skip
    for make, message in cases:
        with pytest.raises(InvalidValueError, match="Pass --|Fix|Pass") as error:
            make()
        assert message in str(error.value)
    context = BuildContext(tiny_vit, 2, 4, 0, PartialSettings(partial_k=4))
    with pytest.raises(InvalidValueError) as error:  # k larger than the depth (3 blocks)
        get_method("partial").build(context)
    assert str(error.value) == (
        "partial_k must be an integer in [1, 3] (the backbone has 3 blocks), but got 4. Pass --partial-k 3."
    )
    with pytest.raises(InvalidValueError, match="adapter_reduction must be at most the width d = 32, but got 64"):
        get_method("adapter").build(BuildContext(tiny_vit, 2, 4, 0, AdapterSettings(adapter_reduction=64)))
    with pytest.raises(InvalidValueError, match="sources"):
        get_method("panda").build(BuildContext(tiny_vit, 2, 4, 0))


def test_settings_survive_copy_and_pickle():
    for method in registered():
        if method.settings is None:
            continue
        settings = method.default_settings()
        for clone in (copy.copy(settings), copy.deepcopy(settings), pickle.loads(pickle.dumps(settings))):
            assert clone == settings
        for item in dataclasses.fields(settings):
            assert item.metadata["help"] and item.name.startswith(method.name.replace("-", "_"))


def test_partial_trains_the_last_k_blocks(tiny_vit):
    from hgprompt_ray.transfer.methods.partial import PartialSettings

    model = get_method("partial").build(BuildContext(tiny_vit, 2, 4, 0, PartialSettings(partial_k=2)))
    trained = {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad and ".blocks." in f".{n}"}
    assert trained == {"1", "2"}
    assert get_method("partial").display_label(PartialSettings(partial_k=2)) == "PARTIAL-2"


def test_adapters_start_as_the_identity_and_sidetune_blends(tiny_vit, separable):
    from hgprompt_ray.transfer.methods.common import BackboneClassifier, fresh_backbone, linear_head

    images = separable[0][:4]
    context = BuildContext(tiny_vit, 2, 4, 0)
    plain = BackboneClassifier(fresh_backbone(context), linear_head(32, 2))
    adapted = get_method("adapter").build(context)
    assert torch.allclose(adapted.features(images), plain.features(images), atol=1e-6)  # W_up = 0
    with torch.no_grad():
        adapted.adapters[0].up.bias.copy_(torch.linspace(-1, 1, 32))  # not a constant: LayerNorm removes those
    assert not torch.allclose(adapted.features(images), plain.features(images), atol=1e-3)  # the hooks act
    side = get_method("sidetune").build(context)
    assert torch.sigmoid(side.side_alpha).item() == 0.5
    assert side.side(images).shape == (4, 32)
    assert torch.equal(side.side(images), torch.zeros(4, 32))  # starts as the linear head on B(x) / 2


def test_mlp_k_layers():
    from hgprompt_ray.transfer.methods.mlp import mlp_head

    head = mlp_head(32, 5, 3)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 32), (32, 32), (5, 32)]
    assert len([m for m in mlp_head(32, 5, 1) if isinstance(m, torch.nn.Linear)]) == 1


def test_panda_distills_toward_the_weighted_teachers(tiny_vit, separable):
    from hgprompt_ray.transfer.methods.panda import PandaSettings

    weights = np.array([0.5, 0.3, 0.2])
    model = get_method("panda").build(BuildContext(tiny_vit, 2, 4, 0, PandaSettings(2.0), None, SOURCES, weights))
    assert torch.equal(model.model.prompt.detach(), SOURCES[0])  # starts at the most transferable source
    images, labels = separable[0][:8], separable[1][:8]
    indices = torch.arange(8)
    with torch.no_grad():
        teachers = model.model.forward_features(images, SOURCES)  # (K, B, d)
        student = model.model.forward_features(images)
        expected = torch.nn.functional.cross_entropy(model.model.head(student), labels)
        expected += 2.0 * sum(w * (student - f).pow(2).mean() for w, f in zip(weights, teachers))
        expected -= 2.0 * sum(w * (f - teachers.mul(torch.tensor(weights, dtype=torch.float32)[:, None, None]).sum(0)).pow(2).mean()
                              for w, f in zip(weights, teachers))  # the constant sum_i w_i ||f_i - t||^2
        assert torch.allclose(model.training_loss(images, labels, indices), expected, atol=1e-4)
    assert len(model._teacher) == 8  # each image's teacher target is kept for the next epochs


def test_the_head_standardises_with_recent_statistics_when_features_move():
    """A method's features move while it trains; the head must standardise the final ones with
    statistics of the recent batches, not an average since step 0 (MAE's cumulative statistics)."""
    from hgprompt_ray.transfer.methods.common import linear_head

    head = linear_head(4, 2).train()
    generator = torch.Generator().manual_seed(0)
    for shift in [0.0] * 50 + [6.0] * 50:  # features that moved halfway through training
        head(torch.randn(32, 4, generator=generator) + shift)
    norm = head[0]
    assert torch.allclose(norm.running_mean, torch.full((4,), 6.0), atol=0.3), norm.running_mean
    assert torch.allclose(norm.running_var, torch.ones(4), atol=0.4), norm.running_var


def test_the_head_statistics_start_from_the_first_batches_not_from_zero_and_one():
    from hgprompt_ray.transfer.methods.common import linear_head

    head = linear_head(3, 2).train()
    batch = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)) * 5 + 40  # a ViT-like offset
    head(batch)
    norm = head[0]
    assert torch.allclose(norm.running_mean, batch.mean(0)) and torch.allclose(norm.running_var, batch.var(0))


@pytest.mark.parametrize("name", ["mlp", "sidetune"])
def test_frozen_features_go_through_the_backbone_once_per_distinct_image(tiny_vit, separable, name):
    images = separable[0][:12]
    plain = _build(tiny_vit, name)
    plain.cache = None  # the same model, every pass through the backbone
    cache = FeatureCache()
    fits = [get_method(name).build(_context(tiny_vit, name)._replace(feature_cache=cache)) for _ in range(2)]
    rows = []
    for model in fits:  # two fits of one run (the lr grid) share the cache
        model.backbone.patch_embed.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0])))
    for precision in ("fp32", "bf16"):
        with autocast(precision):
            expected = plain.features(images)
            for model in fits:
                for rows_of in (slice(0, 8), slice(4, 12), slice(0, 12)):  # overlapping batches
                    got = model.features(images[rows_of])
                    assert torch.allclose(got, expected[rows_of], atol=1e-5), (name, precision)
    assert sum(rows) == cache.computed == 24  # 12 images, once per precision (the autocast state is in the key)
