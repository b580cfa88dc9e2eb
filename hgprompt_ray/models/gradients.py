"""Per-sample gradients of a loss with respect to a VPT prompt.

``prompt_gradients(model, tokens, labels, prompt, logits_fn)`` returns g_j = d loss_j / d P for
every sample j of a batch as one (B, m * d) tensor. Three ways, equal within float tolerance:

- ``"batched"`` (default): the batched-leaf trick. The prompt is expanded to one copy per sample,
  a (B, m, d) leaf, and the batch runs once forward and once backward on the *summed* loss. No op
  of a ViT mixes samples, so loss_j depends only on copy j and the leaf's gradient row j is
  exactly g_j. It is one ordinary batched forward/backward: fused attention, autocast and every
  GEMM at batch size B.
- ``"vmap"``: ``vmap(grad(loss))`` over the samples with ``torch.func``. Under vmap timm's fused
  attention has no batching rule on the CPU, so the blocks run their plain ``softmax(q k^T) v``
  path (:func:`unfused_attention`); measured slower than ``"batched"`` (bench_extraction.py), kept
  as a second reference.
- ``"loop"``: one forward and backward per sample (the reference).

The loss is computed in float32 from the (possibly bf16-autocast) features; the gradients come
back in the prompt's dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import grad, vmap

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models.prompted_vit import PromptedViT

__all__ = ["GRADIENT_METHODS", "prompt_gradients", "unfused_attention"]

GRADIENT_METHODS = ("batched", "vmap", "loop")


@contextlib.contextmanager
def unfused_attention(module: nn.Module) -> Iterator[None]:
    """Switch timm attention layers in ``module`` to their unfused path for the duration."""
    changed = [m for m in module.modules() if getattr(m, "fused_attn", False) is True]
    for layer in changed:
        layer.fused_attn = False  # type: ignore[assignment]
    try:
        yield
    finally:
        for layer in changed:
            layer.fused_attn = True  # type: ignore[assignment]


def prompt_gradients(
    model: PromptedViT,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    prompt: torch.Tensor,
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    method: str = "batched",
) -> torch.Tensor:
    """Per-sample gradients of cross-entropy(logits_fn(CLS feature), label) wrt ``prompt``.

    Args:
        model: the prompted ViT (its own prompt and head are not used).
        tokens: embedded patches from ``model.embed_patches`` (no gradient needed through them).
        labels: class indices.
        prompt: the prompt the gradients are taken at.
        logits_fn: features (..., d) -> logits (..., C), differentiable (e.g. a folded probe head).
        method: ``"batched"`` (one backward over a per-sample leaf), ``"vmap"`` (torch.func) or
            ``"loop"`` (reference, one sample at a time); see the module docstring.

    Shape:
        tokens: (B, T, d); labels: (B,); prompt: (m, d); returns (B, m * d) in prompt's dtype.
    """
    if method not in GRADIENT_METHODS:
        raise InvalidValueError(
            invalid_value("method", method, f"must be one of {list(GRADIENT_METHODS)}", "Use 'batched'.")
        )
    tokens, prompt = tokens.detach(), prompt.detach()
    if method == "batched":
        leaf = prompt.unsqueeze(0).expand(tokens.shape[0], -1, -1).clone().requires_grad_(True)
        with torch.enable_grad():
            features = model.forward_instance_tokens(tokens, leaf)
            logits = logits_fn(features.float())
            total = nn.functional.cross_entropy(logits, labels, reduction="sum")
            (gradients,) = torch.autograd.grad(total, leaf)
        return gradients.flatten(1).to(prompt.dtype)

    def loss(p: torch.Tensor, token: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        feature = model.forward_tokens(token.unsqueeze(0), p.unsqueeze(0))[0, 0]
        return nn.functional.cross_entropy(logits_fn(feature.float()).unsqueeze(0), label.unsqueeze(0))

    if method == "vmap":
        with unfused_attention(model.backbone):
            gradients = vmap(grad(loss), in_dims=(None, 0, 0))(prompt, tokens, labels)
        return gradients.flatten(1).to(prompt.dtype)
    rows = []
    for token, label in zip(tokens, labels):
        leaf = prompt.clone().requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(loss(leaf, token, label), leaf)
        rows.append(gradient.flatten())
    return torch.stack(rows).to(prompt.dtype)
