"""Prompted ViT over timm and backbone loading (hub, local file, offline default)."""

from hgprompt_ray.models.backbones import (
    OFFLINE_BACKBONE,
    OFFLINE_IMG_SIZE,
    BackboneSpec,
    load_backbone,
)
from hgprompt_ray.models.prompted_vit import PromptedViT, vpt_init_bound

__all__ = [
    "OFFLINE_BACKBONE",
    "OFFLINE_IMG_SIZE",
    "BackboneSpec",
    "PromptedViT",
    "load_backbone",
    "vpt_init_bound",
]
