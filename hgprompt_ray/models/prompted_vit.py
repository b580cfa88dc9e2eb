"""VPT-shallow over any timm ``VisionTransformer``.

The token sequence becomes ``[prefix; P; E(X) + pos]``: the m learned prompt tokens P are
inserted after the prefix tokens (CLS and any register tokens) and before the patch tokens,
after the position embedding has been added, so the prompts carry no position embedding
(Jia et al., "Visual Prompt Tuning", ECCV 2022). Only the prompt and the linear head train;
the backbone is frozen and stays in eval mode even under ``.train()``.

The model reuses timm's own stages (``patch_embed``, ``_pos_embed``, ``patch_drop``,
``norm_pre``, ``blocks``, ``norm``, ``forward_head(pre_logits=True)``) and copies none of them.
Several prompts can be applied to one batch in one call: the patch embedding is computed once
and the K prompted sequences run through the blocks as one K * B batch.
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["PromptedViT", "vpt_init_bound"]

_CPU_SEQUENCES_PER_PASS = (
    32  # measured on 2 cores (ViT-S, 115 tokens): 32 per pass 1.07x separate calls, 64 0.86x
)


def vpt_init_bound(patch_size: int, embed_dim: int) -> float:
    """Bound v of VPT's uniform(-v, v) prompt init: sqrt(6 / (3 * p * p + d))."""
    return math.sqrt(6.0 / float(3 * patch_size * patch_size + embed_dim))


class PromptedViT(nn.Module):
    """A frozen timm ViT with m learnable prompt tokens and a linear head.

    Args:
        backbone: a timm ``VisionTransformer`` with a class token and ``global_pool="token"``.
            Its parameters are frozen in place.
        num_prompt_tokens: m, the number of prompt tokens (0 gives the bare backbone).
        num_classes: outputs of the linear head; 0 for no head (features only).
        prompt_dropout: dropout on the prompt tokens while training (VPT uses 0.0 or 0.1).
        max_sequences_per_pass: cap on prompted sequences (K x B) per pass through the blocks
            when several prompts are applied at once. None: 32 on the CPU (larger batches fall
            out of cache and run slower there), no cap on a GPU.

    Shape:
        x: (B, 3, H, W) images, normalised as the backbone expects.
        prompt: (m, d) learned; ``forward_features(x, prompts)`` also takes (K, m, d).
        forward_features: (B, d), or (K, B, d) when prompts is (K, m, d).
        forward: (B, num_classes) logits.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        num_prompt_tokens: int,
        num_classes: int = 0,
        prompt_dropout: float = 0.0,
        max_sequences_per_pass: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, VisionTransformer):
            raise TypeError(
                invalid_value(
                    "backbone",
                    type(backbone).__name__,
                    "must be a timm VisionTransformer",
                    "Build it with hgprompt_ray.models.load_backbone or timm.create_model('vit_*').",
                )
            )
        if backbone.cls_token is None or backbone.global_pool != "token" or backbone.attn_pool is not None:
            raise InvalidValueError(
                invalid_value(
                    "backbone.global_pool",
                    backbone.global_pool,
                    "must be 'token' with a class token (features are the CLS output)",
                    "Create the model with class_token=True, global_pool='token'.",
                )
            )
        if not isinstance(num_prompt_tokens, int) or num_prompt_tokens < 0:
            raise InvalidValueError(
                invalid_value(
                    "num_prompt_tokens", num_prompt_tokens, "must be a non-negative integer", "VPT uses 50."
                )
            )
        if not isinstance(num_classes, int) or num_classes < 0:
            raise InvalidValueError(
                invalid_value(
                    "num_classes", num_classes, "must be a non-negative integer", "Use 0 for no head."
                )
            )
        if not 0.0 <= prompt_dropout < 1.0:
            raise InvalidValueError(
                invalid_value("prompt_dropout", prompt_dropout, "must be in [0, 1)", "Use 0.0 or 0.1.")
            )
        self.backbone = backbone
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.embed_dim: int = backbone.embed_dim
        self.num_prefix_tokens: int = backbone.num_prefix_tokens
        self.num_prompt_tokens = num_prompt_tokens
        self.patch_size: int = int(backbone.patch_embed.patch_size[0])
        self.prompt = nn.Parameter(torch.zeros(num_prompt_tokens, self.embed_dim))
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.head: nn.Module = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes
        if max_sequences_per_pass is not None and (
            not isinstance(max_sequences_per_pass, int) or max_sequences_per_pass < 1
        ):
            raise InvalidValueError(
                invalid_value(
                    "max_sequences_per_pass", max_sequences_per_pass, "must be a positive int or None", ""
                )
            )
        self.max_sequences_per_pass = max_sequences_per_pass
        self.reset_prompt()
        self.train(False)

    @property
    def prompt_init_bound(self) -> float:
        """VPT's init bound v for this backbone's patch size and width."""
        return vpt_init_bound(self.patch_size, self.embed_dim)

    @torch.no_grad()
    def reset_prompt(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the prompt from VPT's uniform(-v, v), v = sqrt(6 / (3 p^2 + d))."""
        bound = self.prompt_init_bound
        self.prompt.uniform_(-bound, bound, generator=generator)

    @torch.no_grad()
    def set_prompt(self, prompt: torch.Tensor) -> None:
        """Copy ``prompt`` (m, d) into the learnable prompt (e.g. an ensemble initialisation)."""
        expected = (self.num_prompt_tokens, self.embed_dim)
        if tuple(prompt.shape) != expected:
            raise InvalidValueError(
                invalid_value(
                    "prompt.shape",
                    tuple(prompt.shape),
                    f"must be {expected} for this model",
                    "Check m and d.",
                )
            )
        self.prompt.copy_(prompt.to(self.prompt))

    def train(self, mode: bool = True) -> PromptedViT:
        """Set train mode on the prompt parts; the backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Prefix + patch tokens with position embedding, before any prompt is inserted.

        Shape:
            x: (B, 3, H, W); returns (B, num_prefix_tokens + num_patches, d).
        """
        backbone = self.backbone
        tokens = backbone.patch_embed(x)
        tokens = backbone._pos_embed(tokens)
        tokens = backbone.patch_drop(tokens)
        return backbone.norm_pre(tokens)

    def _check_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 3 or prompts.shape[-1] != self.embed_dim:
            raise InvalidValueError(
                invalid_value(
                    "prompts.shape",
                    tuple(prompts.shape),
                    f"must be (m, {self.embed_dim}) or (K, m, {self.embed_dim})",
                    "Stack K prompts of the backbone's width along a new first axis.",
                )
            )
        return prompts

    def forward_tokens(self, tokens: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Run embedded tokens with K prompts through the blocks and return CLS features.

        The K x B prompted sequences run in passes of at most ``max_sequences_per_pass``
        sequences (whole prompts per pass); the patch embedding is shared by all passes.

        Shape:
            tokens: (B, T, d) from :meth:`embed_patches`.
            prompts: (K, m, d).
            returns: (K, B, d) final-norm CLS outputs.
        """
        num_prompts, batch = prompts.shape[0], tokens.shape[0]
        limit = self.max_sequences_per_pass
        if limit is None:
            limit = _CPU_SEQUENCES_PER_PASS if tokens.device.type == "cpu" else num_prompts * batch
        chunk = max(1, limit // max(1, batch))
        if chunk >= num_prompts:
            return self._forward_prompt_chunk(tokens, prompts)
        return torch.cat(
            [self._forward_prompt_chunk(tokens, prompts[i : i + chunk]) for i in range(0, num_prompts, chunk)]
        )

    def _forward_prompt_chunk(self, tokens: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        num_prompts, num_tokens = prompts.shape[0], prompts.shape[1]
        batch = tokens.shape[0]
        if num_prompts == 1 and num_tokens == 0:
            sequence = tokens
        else:
            prefix = tokens[:, : self.num_prefix_tokens].unsqueeze(0).expand(num_prompts, -1, -1, -1)
            patches = tokens[:, self.num_prefix_tokens :].unsqueeze(0).expand(num_prompts, -1, -1, -1)
            inserted = self.prompt_dropout(prompts.to(tokens.dtype))
            inserted = inserted.unsqueeze(1).expand(-1, batch, -1, -1)
            sequence = torch.cat([prefix, inserted, patches], dim=2).flatten(0, 1)
        sequence = self.backbone.blocks(sequence)
        sequence = self.backbone.norm(sequence)
        features = self.backbone.forward_head(sequence, pre_logits=True)
        return features.view(num_prompts, batch, -1)

    def forward_features(self, x: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm CLS features under this model's prompt or under given prompts.

        Args:
            x: images.
            prompts: None for ``self.prompt``; (m, d) for one other prompt; (K, m, d) to apply K
                prompts to the same images in one call (patch embedding computed once).

        Shape:
            x: (B, 3, H, W).
            returns: (B, d), or (K, B, d) when prompts has three dimensions.
        """
        batched = prompts is not None and prompts.dim() == 3
        stacked = self._check_prompts(self.prompt if prompts is None else prompts)
        features = self.forward_tokens(self.embed_patches(x), stacked)
        return features if batched else features[0]

    def forward_instance_features(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """CLS features with a different prompt for every image (e.g. ATTEMPT's mixtures).

        Shape:
            x: (B, 3, H, W); prompts: (B, m, d); returns (B, d).
        """
        if prompts.dim() != 3 or prompts.shape[0] != x.shape[0] or prompts.shape[-1] != self.embed_dim:
            raise InvalidValueError(
                invalid_value(
                    "prompts.shape",
                    tuple(prompts.shape),
                    f"must be (B={x.shape[0]}, m, {self.embed_dim}): one prompt per image",
                    "Use forward_features for one prompt shared by the batch.",
                )
            )
        return self.forward_instance_tokens(self.embed_patches(x), prompts)

    def forward_instance_tokens(self, tokens: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """CLS features of embedded tokens with a different prompt for every sample.

        Sample j's output depends only on ``prompts[j]`` (no op of the blocks mixes samples), which
        is what makes per-sample gradients one backward pass (``models.gradients``).

        Shape:
            tokens: (B, T, d) from :meth:`embed_patches`; prompts: (B, m, d); returns (B, d).
        """
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        sequence = torch.cat([prefix, self.prompt_dropout(prompts.to(tokens.dtype)), patches], dim=1)
        sequence = self.backbone.norm(self.backbone.blocks(sequence))
        return self.backbone.forward_head(sequence, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the linear head on the prompted CLS feature.

        Shape:
            x: (B, 3, H, W); returns (B, num_classes) (or (B, d) without a head).
        """
        return self.head(self.forward_features(x))
