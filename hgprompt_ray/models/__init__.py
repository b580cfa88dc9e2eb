"""Prompted ViT over timm and backbone loading (hub, local file, offline default)."""

from hgprompt_ray.models.backbones import (
    OFFLINE_BACKBONE,
    OFFLINE_IMG_SIZE,
    BackboneSpec,
    load_backbone,
)
from hgprompt_ray.models.gradients import prompt_gradients, unfused_attention
from hgprompt_ray.models.precision import PRECISIONS, autocast, native_bf16, resolve_precision
from hgprompt_ray.models.prompted_vit import PromptedViT, vpt_init_bound

__all__ = [
    "OFFLINE_BACKBONE",
    "OFFLINE_IMG_SIZE",
    "PRECISIONS",
    "BackboneSpec",
    "PromptedViT",
    "autocast",
    "load_backbone",
    "native_bf16",
    "prompt_gradients",
    "resolve_precision",
    "unfused_attention",
    "vpt_init_bound",
]
