"""Prompted ViT over timm and backbone loading (hub, local file, offline default)."""

from typing import TYPE_CHECKING

from hgprompt_ray.lazy import lazy_exports

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

_EXPORTS = {  # submodule: the names it exports (imported when one is first read)
    "backbones": (
        "OFFLINE_BACKBONE",
        "OFFLINE_IMG_SIZE",
        "BackboneSpec",
        "load_backbone",
    ),
    "gradients": (
        "prompt_gradients",
        "unfused_attention",
    ),
    "precision": (
        "PRECISIONS",
        "autocast",
        "native_bf16",
        "resolve_precision",
    ),
    "prompted_vit": (
        "PromptedViT",
        "vpt_init_bound",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from hgprompt_ray.models.backbones import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE, BackboneSpec, load_backbone
    from hgprompt_ray.models.gradients import prompt_gradients, unfused_attention
    from hgprompt_ray.models.precision import PRECISIONS, autocast, native_bf16, resolve_precision
    from hgprompt_ray.models.prompted_vit import PromptedViT, vpt_init_bound
