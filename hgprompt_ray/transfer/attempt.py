"""ATTEMPT: instance-level attention over frozen source prompts, trained with the target.

Asai et al., "ATTEMPT: Parameter-Efficient Multi-task Tuning via Attentional Mixtures of Soft
Prompts" (EMNLP 2022), carried over to VPT-shallow: for an image x with patch embeddings E(x),

    q(x) = LayerNorm(W_up SiLU(W_down maxpool(E(x))))          (the attention sub-network G)
    k_j  = maxpool(P_j)   for the K frozen sources and the target prompt P_T
    a(x) = softmax_j(<q(x), k_j> / T),  T = d e                 (ATTEMPT's temperature d x exp(1))
    P(x) = P_T + sum_j a_j(x) P_j                              (j over the sources and P_T)

Trained: P_T (VPT init), G and the linear head; the backbone and the sources are frozen.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import PromptedViT

__all__ = ["AttemptClassifier"]


class AttemptClassifier(nn.Module):
    """A PromptedViT whose prompt is an instance-level attentional mixture.

    Args:
        model: the prompted ViT with a head; its ``prompt`` becomes the target prompt P_T.
        sources: the frozen source prompts, (K, m, d) with m and d of ``model``.
        bottleneck: width r of G's down projection.

    Shape:
        x: (B, 3, H, W); returns (B, num_classes) logits.
    """

    def __init__(self, model: PromptedViT, sources: torch.Tensor, bottleneck: int = 64) -> None:
        super().__init__()
        expected = (model.num_prompt_tokens, model.embed_dim)
        if sources.dim() != 3 or tuple(sources.shape[1:]) != expected or sources.shape[0] < 1:
            raise InvalidValueError(
                invalid_value(
                    "sources.shape",
                    tuple(sources.shape),
                    f"must be (K >= 1, {expected[0]}, {expected[1]})",
                    "Load the sources with the model's backbone and prompt length.",
                )
            )
        self.model = model
        self.register_buffer("sources", sources.detach().clone().float())
        dim = model.embed_dim
        self.attention = nn.Sequential(
            nn.Linear(dim, bottleneck), nn.SiLU(), nn.Linear(bottleneck, dim), nn.LayerNorm(dim)
        )
        self.temperature = float(dim) * math.e  # the paper's T = d x exp(1) (its code: 2000 for d = 768)

    def mixture_weights(self, x: torch.Tensor) -> torch.Tensor:
        """a(x): attention over [sources..., target], (B, K + 1), rows sum to 1."""
        with torch.no_grad():
            patches = self.model.embed_patches(x)[:, self.model.num_prefix_tokens :]
        query = self.attention(patches.amax(dim=1))
        keys = torch.cat([self.sources, self.model.prompt.unsqueeze(0)]).amax(dim=1)  # (K + 1, d)
        return torch.softmax(query @ keys.T / self.temperature, dim=-1)

    def instance_prompts(self, x: torch.Tensor) -> torch.Tensor:
        """P(x) for every image, (B, m, d)."""
        weights = self.mixture_weights(x)
        stacked = torch.cat([self.sources, self.model.prompt.unsqueeze(0)])  # (K + 1, m, d)
        return self.model.prompt.unsqueeze(0) + torch.einsum("bk,kmd->bmd", weights, stacked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_instance_features(x, self.instance_prompts(x))
        return self.model.head(features)

    def train(self, mode: bool = True) -> AttemptClassifier:
        super().train(mode)
        self.model.train(mode)  # keeps the backbone in eval mode
        return self
