"""Per-sample gradients of a loss with respect to a VPT prompt, with ``torch.func``.

``prompt_gradients(model, tokens, labels, prompt, logits_fn)`` returns g_j = d loss_j / d P for
every sample j of a batch as one (B, m * d) tensor: ``vmap(grad(loss))`` over the samples, the
prompt shared. Under vmap timm's fused attention (``F.scaled_dot_product_attention``) has no
batching rule on the CPU and falls back to a slow per-sample loop, so the blocks run their plain
``softmax(q k^T) v`` path while the gradients are taken (:func:`unfused_attention`; same maths).
``method="loop"`` is the reference: one forward and backward per sample.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import grad, vmap

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models.prompted_vit import PromptedViT

__all__ = ["prompt_gradients", "unfused_attention"]


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
    method: str = "vmap",
) -> torch.Tensor:
    """Per-sample gradients of cross-entropy(logits_fn(CLS feature), label) wrt ``prompt``.

    Args:
        model: the prompted ViT (its own prompt and head are not used).
        tokens: embedded patches from ``model.embed_patches`` (no gradient needed through them).
        labels: class indices.
        prompt: the prompt the gradients are taken at.
        logits_fn: feature (d,) -> logits (C,), differentiable (e.g. ``ProbeHead.logits``).
        method: ``"vmap"`` (torch.func) or ``"loop"`` (reference, one sample at a time).

    Shape:
        tokens: (B, T, d); labels: (B,); prompt: (m, d); returns (B, m * d) in prompt's dtype.
    """
    if method not in ("vmap", "loop"):
        raise InvalidValueError(invalid_value("method", method, "must be 'vmap' or 'loop'", ""))
    tokens = tokens.detach()

    def loss(p: torch.Tensor, token: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        feature = model.forward_tokens(token.unsqueeze(0), p.unsqueeze(0))[0, 0]
        return nn.functional.cross_entropy(logits_fn(feature).unsqueeze(0), label.unsqueeze(0))

    prompt = prompt.detach()
    if method == "vmap":
        with unfused_attention(model.backbone):
            gradients = vmap(grad(loss), in_dims=(None, 0, 0))(prompt, tokens, labels)
        return gradients.flatten(1)
    rows = []
    for token, label in zip(tokens, labels):
        leaf = prompt.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss(leaf, token, label), leaf)
        rows.append(gradient.flatten())
    return torch.stack(rows)
