"""What the tuning methods share: the build context, the head, and classifiers over timm's hooks.

Every classifier here reads the frozen timm ViT through its own stages (``forward_features``,
``forward_head(pre_logits=True)``, or ``PromptedViT`` for prompts) and copies none of timm's code.
A build works on a deep copy of the backbone it is given, so that a method which changes backbone
weights or attaches modules (full fine-tuning, PARTIAL-k, BIAS, Adapter) never touches the
backbone the next build starts from. The backbone stays in eval mode in training too (no dropout,
no stochastic depth), as in VPT's frozen setting, so every method sees the same forward.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import PromptedViT
from hgprompt_ray.models.heads import HEAD_BN_MOMENTUM, RunningNorm, linear_head

__all__ = [
    "HEAD_BN_MOMENTUM",
    "HEAD_PATTERNS",
    "PROMPT_PATTERNS",
    "BackboneClassifier",
    "RunningNorm",
    "BuildContext",
    "FeatureCache",
    "check_count",
    "fresh_backbone",
    "linear_head",
    "matching_parameters",
    "prompt_classifier",
]

HEAD_PATTERNS = ("head.*",)
"""The head's parameters (the zero-initialised linear layer after the BatchNorm)."""
PROMPT_PATTERNS = ("prompt", *HEAD_PATTERNS)
"""VPT-shallow: the prompt tokens and the head."""


class BuildContext(NamedTuple):
    """What a method's ``build`` gets.

    Attributes:
        backbone: the loaded timm ViT (never modified: builds copy it).
        num_classes: the target's classes.
        num_prompt_tokens: m of the source prompts (and of VPT's fresh prompt).
        seed: the run's seed (head, prompt and module init).
        settings: the method's settings (its config dataclass) or None.
        initial: the initial prompt (m, d), or None for VPT's uniform init.
        sources: the frozen source prompts (K, m, d), or None.
        weights: the method's weights over the sources (K,), or None.
        feature_cache: frozen backbone features shared by the builds of one run (the lr grid's
            fits and the refit see the same images through identical frozen copies), or None.
    """

    backbone: Any
    num_classes: int
    num_prompt_tokens: int
    seed: int
    settings: Any = None
    initial: torch.Tensor | None = None
    sources: torch.Tensor | None = None
    weights: np.ndarray | None = None
    feature_cache: FeatureCache | None = None


class FeatureCache:
    """The frozen backbone's features per distinct image, for the methods whose backbone does not
    train (``BackboneClassifier(frozen_features=True)``: MLP-k, SideTune's B(x)).

    An image is keyed by a 128-bit BLAKE2b digest of its pixels (there is no augmentation, so an
    image's tensor is the same every epoch) and the autocast state it was computed under. A run
    with 10 epochs x 3 learning-rate scales otherwise forwards each train800 image 30 times and
    each val200 image after every epoch; with the cache each distinct image goes through the
    backbone once. Rows a batch lacks are forwarded together, the others are read back.
    """

    def __init__(self) -> None:
        self.store: dict[tuple[bytes, bool], torch.Tensor] = {}
        self.computed = 0

    def features(self, x: torch.Tensor, compute: Any) -> torch.Tensor:
        """``compute(x)`` for the rows of ``x`` not seen before; every row's feature, (B, d)."""
        autocast = torch.is_autocast_enabled(x.device.type)
        pixels = x.detach().to("cpu", torch.float32).contiguous()
        keys = [(hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest(), autocast) for row in pixels]
        missing = [i for i, key in enumerate(keys) if key not in self.store]
        if missing:
            with torch.no_grad():
                fresh = compute(x[missing])
            for i, row in zip(missing, fresh):
                self.store[keys[i]] = row.detach().clone()
            self.computed += len(missing)
        return torch.stack([self.store[key] for key in keys])




def fresh_backbone(context: BuildContext) -> Any:
    """A deep copy of the context's backbone, every parameter frozen, in eval mode."""
    backbone = copy.deepcopy(context.backbone)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone.eval()


def prompt_classifier(context: BuildContext, prompt: torch.Tensor | None = None) -> PromptedViT:
    """VPT-shallow: a PromptedViT whose prompt starts at ``prompt`` (default: ``context.initial``;
    None draws VPT's uniform init from the seed) with the linear head."""
    torch.manual_seed(context.seed)
    model = PromptedViT(fresh_backbone(context), context.num_prompt_tokens, num_classes=context.num_classes)
    model.head = linear_head(model.embed_dim, context.num_classes)
    model.reset_prompt(torch.Generator().manual_seed(context.seed))
    start = context.initial if prompt is None else prompt
    if start is not None:
        model.set_prompt(start)
    return model


class BackboneClassifier(nn.Module):
    """A head on the final-norm CLS feature of a timm ViT, through timm's own hooks.

    Args:
        backbone: the (copied) timm ViT; which of its parameters train is the method's choice.
        head: the module from the d-dimensional feature to the logits.
        frozen_features: compute the backbone's features without autograd (nothing in the
            backbone trains: MLP-k, SideTune), which saves the backward pass through it.
        cache: with ``frozen_features``, a :class:`FeatureCache` that forwards each distinct image
            once (None: every pass forwards the backbone).

    Shape:
        x: (B, 3, H, W); returns (B, num_classes).
    """

    def __init__(
        self, backbone: Any, head: nn.Module, frozen_features: bool = False, cache: FeatureCache | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen_features = frozen_features
        self.cache = cache if frozen_features else None
        self.embed_dim = int(backbone.embed_dim)

    def _backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_features):
            tokens = self.backbone.forward_features(x)
            return self.backbone.forward_head(tokens, pre_logits=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final-norm CLS feature, (B, d)."""
        if self.cache is not None:
            return self.cache.features(x, self._backbone_features)
        return self._backbone_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> BackboneClassifier:
        super().train(mode)
        self.backbone.eval()  # the same forward for every method (module docstring)
        return self


def matching_parameters(module: nn.Module, patterns: Iterable[str]) -> list[str]:
    """The names of ``module``'s parameters that match any glob pattern (``fnmatch``)."""
    patterns = tuple(patterns)
    return [n for n, _ in module.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def set_trainable(module: nn.Module, patterns: Iterable[str]) -> nn.Module:
    """requires_grad on exactly the parameters matching ``patterns`` (and off on every other)."""
    chosen = set(matching_parameters(module, patterns))
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(name in chosen)
    return module


def tuned_backbone_classifier(context: BuildContext, patterns: Iterable[str]) -> nn.Module:
    """A fresh copy of the backbone with a linear head, exactly ``patterns`` trainable (the
    model of every method that tunes backbone parameters: full, PARTIAL-k, BIAS)."""
    backbone = fresh_backbone(context)
    model = BackboneClassifier(backbone, linear_head(backbone.embed_dim, context.num_classes))
    return set_trainable(model, patterns)


def check_count(field: str, value: Any, low: int, high: int | None, flag: str, what: str) -> int:
    """An integer setting in [low, high]: an error naming the field, the value and the fix otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        rule = f"must be an integer in [{low}, {high}] ({what})" if high is not None else f"must be an integer >= {low}"
        bound = high if high is not None and isinstance(value, int) and value > high else low
        raise InvalidValueError(invalid_value(field, value, rule, f"Pass {flag} {bound}."))
    return value
