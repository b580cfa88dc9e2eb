"""Per-sample prompt gradients: the batched leaf and torch.func vmap(grad) against one backward per sample."""

from __future__ import annotations

import pytest
import timm
import torch

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import PromptedViT, prompt_gradients, unfused_attention


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    backbone = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    return PromptedViT(backbone, 3, num_classes=0).eval()


@pytest.mark.parametrize("method", ["batched", "vmap"])
def test_fast_methods_equal_a_loop_of_single_backward_passes(model, method):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(6, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    prompt = torch.randn(3, 192, generator=generator)
    weight = torch.randn(3, 192, generator=generator) * 0.1
    tokens = model.embed_patches(images).detach()
    fast = prompt_gradients(model, tokens, labels, prompt, lambda f: f @ weight.T, method=method)
    slow = prompt_gradients(model, tokens, labels, prompt, lambda f: f @ weight.T, method="loop")
    assert fast.shape == (6, 3 * 192)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(fast[0], fast[1])  # per sample, not a batch mean
    # the sum of per-sample gradients is the gradient of the summed loss
    leaf = prompt.clone().requires_grad_(True)
    logits = model.forward_tokens(tokens, leaf.unsqueeze(0))[0] @ weight.T
    total = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    (gradient,) = torch.autograd.grad(total, leaf)
    torch.testing.assert_close(fast.sum(0), gradient.flatten(), rtol=1e-4, atol=1e-5)


def test_unfused_attention_is_restored(model):
    layers = [m for m in model.modules() if hasattr(m, "fused_attn")]
    before = [m.fused_attn for m in layers]
    with unfused_attention(model):
        assert not any(m.fused_attn for m in layers)
    assert [m.fused_attn for m in layers] == before


def test_unknown_method(model):
    tokens = model.embed_patches(torch.zeros(1, 3, 32, 32))
    with pytest.raises(InvalidValueError, match=r"method must be one of \['batched', 'vmap', 'loop'\]"):
        prompt_gradients(model, tokens, torch.tensor([0]), torch.zeros(3, 192), lambda f: f, method="jvp")


def test_batched_leaf_is_the_default_and_leaves_the_prompt_untouched(model):
    generator = torch.Generator().manual_seed(2)
    tokens = model.embed_patches(torch.randn(4, 3, 32, 32, generator=generator))
    prompt = torch.randn(3, 192, generator=generator)
    before = prompt.clone()
    labels = torch.tensor([0, 1, 0, 1])
    default = prompt_gradients(model, tokens, labels, prompt, lambda f: f[..., :2])
    batched = prompt_gradients(model, tokens, labels, prompt, lambda f: f[..., :2], method="batched")
    assert torch.equal(default, batched)
    assert torch.equal(prompt, before) and not prompt.requires_grad
    # works inside inference mode's sibling, no_grad, as the extraction worker calls it
    with torch.no_grad():
        again = prompt_gradients(model, tokens, labels, prompt, lambda f: f[..., :2])
    torch.testing.assert_close(again, default)


def test_bf16_autocast_gradients_stay_close_to_float32(model):
    from hgprompt_ray.models import autocast

    generator = torch.Generator().manual_seed(3)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    prompt = torch.randn(3, 192, generator=generator)
    weight = torch.randn(3, 192, generator=generator) * 0.1
    with torch.no_grad():
        tokens = model.embed_patches(images)
    exact = prompt_gradients(model, tokens, labels, prompt, lambda f: f @ weight.T)
    with autocast("bf16"):
        low = prompt_gradients(model, tokens, labels, prompt, lambda f: f @ weight.T)
    assert low.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(low, exact, dim=1)
    assert float(cosine.min()) > 0.99, cosine
    assert not torch.equal(low, exact)  # bf16 really ran
