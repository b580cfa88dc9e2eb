"""Contracts of PromptedViT on tiny real timm ViTs."""

from __future__ import annotations

import math

import pytest
import torch

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import PromptedViT, vpt_init_bound
from tests.conftest import make_tiny_vit


def _images(batch: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_only_prompt_and_head_require_grad(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=5, num_classes=4)
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["head.bias", "head.weight", "prompt"]
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_every_prompt_token_receives_a_gradient(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=6, num_classes=4)
    logits = model(_images())
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]))
    loss.backward()
    grad = model.prompt.grad
    assert grad is not None and grad.shape == (6, 32)
    assert torch.isfinite(grad).all()
    assert (grad.abs().sum(dim=1) > 0).all(), "some prompt token got no gradient"
    assert all(p.grad is None for p in model.backbone.parameters())


def test_zero_tokens_equals_timm_forward_features_exactly(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=0)
    x = _images()
    with torch.no_grad():
        expected = tiny_vit.forward_features(x)[:, 0]
        got = model.forward_features(x)
    assert torch.equal(got, expected)


def test_k_prompt_call_equals_k_single_calls(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=4)
    prompts = torch.randn(5, 4, 32, generator=torch.Generator().manual_seed(3))
    x = _images(batch=3)
    with torch.no_grad():
        batched = model.forward_features(x, prompts)
        singles = torch.stack([model.forward_features(x, prompts[k]) for k in range(5)])
    assert batched.shape == (5, 3, 32)
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
    # and the prompts really matter: different prompts give different features
    assert (batched[0] - batched[1]).abs().max() > 1e-4


@pytest.mark.parametrize("max_sequences", [None, 1, 4, 7])
def test_chunked_passes_equal_one_pass(tiny_vit, max_sequences):
    prompts = torch.randn(5, 4, 32, generator=torch.Generator().manual_seed(3))
    x = _images(batch=3)
    with torch.no_grad():
        reference = PromptedViT(tiny_vit, 4, max_sequences_per_pass=1000).forward_features(x, prompts)
        chunked = PromptedViT(tiny_vit, 4, max_sequences_per_pass=max_sequences).forward_features(x, prompts)
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-5)


def test_k_prompt_call_embeds_patches_once(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=4, max_sequences_per_pass=2)
    calls = []
    handle = tiny_vit.patch_embed.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model.forward_features(_images(), torch.randn(8, 4, 32))
    handle.remove()
    assert len(calls) == 1


def test_prompts_sit_after_prefix_tokens_without_position_embedding():
    backbone = make_tiny_vit(reg_tokens=2)  # CLS + 2 register tokens
    model = PromptedViT(backbone, num_prompt_tokens=3)
    seen = {}
    handle = backbone.blocks[0].register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model.forward_features(_images(batch=2))
    handle.remove()
    tokens = seen["x"]
    assert tokens.shape == (2, 3 + 3 + 16, 32)
    for b in range(2):
        torch.testing.assert_close(tokens[b, 3:6], model.prompt.detach())  # no pos-embed added
    with torch.no_grad():
        reference = backbone.norm_pre(backbone._pos_embed(backbone.patch_embed(_images(batch=2))))
    torch.testing.assert_close(tokens[:, :3], reference[:, :3])
    torch.testing.assert_close(tokens[:, 6:], reference[:, 3:])


def test_dynamic_image_size_resizes_position_grid():
    backbone = make_tiny_vit(dynamic_img_size=True)
    bare = PromptedViT(backbone, num_prompt_tokens=0)
    x = _images(batch=2, size=48)  # 6 x 6 patches on a model built for 4 x 4
    with torch.no_grad():
        torch.testing.assert_close(bare.forward_features(x), backbone.forward_features(x)[:, 0])
        prompted = PromptedViT(backbone, num_prompt_tokens=3).forward_features(x)
    assert prompted.shape == (2, 32) and torch.isfinite(prompted).all()


def test_backbone_stays_in_eval_mode_under_train():
    backbone = make_tiny_vit(drop_rate=0.5, proj_drop_rate=0.5, attn_drop_rate=0.5)
    model = PromptedViT(backbone, num_prompt_tokens=2, num_classes=3).train()
    assert model.training and model.head.training
    assert not any(module.training for module in model.backbone.modules())
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # no dropout noise from the backbone


def test_vpt_init_is_uniform_within_bound(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=50)
    bound = vpt_init_bound(8, 32)
    assert bound == pytest.approx(math.sqrt(6 / (3 * 8 * 8 + 32)))
    values = model.prompt.detach()
    assert values.abs().max() <= bound
    assert values.abs().max() > 0.8 * bound  # 1600 draws fill the interval
    assert abs(values.mean().item()) < 0.1 * bound


def test_set_prompt_and_shape_errors(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=4)
    new = torch.full((4, 32), 0.25)
    model.set_prompt(new)
    assert torch.equal(model.prompt.detach(), new)
    with pytest.raises(InvalidValueError, match=r"prompt.shape must be \(4, 32\).*got \(5, 32\)"):
        model.set_prompt(torch.zeros(5, 32))
    with pytest.raises(InvalidValueError, match="prompts.shape"):
        model.forward_features(_images(), torch.zeros(2, 4, 16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_prompt_tokens": -1}, "num_prompt_tokens"),
        ({"num_prompt_tokens": 2, "num_classes": -3}, "num_classes"),
        ({"num_prompt_tokens": 2, "prompt_dropout": 1.5}, "prompt_dropout"),
    ],
)
def test_bad_arguments_name_the_field(tiny_vit, kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        PromptedViT(tiny_vit, **kwargs)


def test_backbone_without_cls_pooling_is_rejected():
    with pytest.raises(InvalidValueError, match="global_pool"):
        PromptedViT(make_tiny_vit(global_pool="avg"), num_prompt_tokens=2)
    with pytest.raises(TypeError, match="VisionTransformer"):
        PromptedViT(torch.nn.Linear(2, 2), num_prompt_tokens=2)  # type: ignore[arg-type]


def test_gradient_flows_to_stacked_prompts(tiny_vit):
    model = PromptedViT(tiny_vit, num_prompt_tokens=3)
    prompts = torch.randn(4, 3, 32, requires_grad=True)
    weights = torch.randn(32, generator=torch.Generator().manual_seed(5))
    (model.forward_features(_images(), prompts) @ weights).sum().backward()  # LayerNorm sums to 0
    assert prompts.grad is not None
    assert (prompts.grad.flatten(1).abs().sum(dim=1) > 0).all()


def test_instance_prompts_match_shared_prompt_and_differ_per_image(tiny_vit):
    model = PromptedViT(tiny_vit, 3)
    images = torch.randn(4, 3, 32, 32)
    shared = model.forward_features(images)
    per_image = model.forward_instance_features(images, model.prompt.detach().expand(4, -1, -1))
    assert torch.allclose(per_image, shared, atol=1e-5)
    other = torch.randn(3, 32)
    prompts = model.prompt.detach().expand(4, -1, -1).clone()
    prompts[1] = other
    mixed = model.forward_instance_features(images, prompts)
    assert torch.allclose(mixed[1], model.forward_features(images[1:2], other)[0], atol=1e-5)
    assert torch.allclose(mixed[[0, 2, 3]], shared[[0, 2, 3]], atol=1e-5)
    with pytest.raises(InvalidValueError, match="one prompt per image"):
        model.forward_instance_features(images, prompts[:2])
