"""The offline backbone exported as one file: same bf16 model bit for bit, refusals named."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import OFFLINE_BACKBONE, load_backbone
from hgprompt_ray.models.portable import OFFLINE_WEIGHTS_ENV, export_offline_weights
from hgprompt_ray.models.precision import autocast


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_offline_weights(tmp_path_factory.mktemp("portable") / "offline.safetensors")


def _forward(model, images, precision):
    with torch.no_grad(), autocast(precision, "cpu"):
        return model.forward_features(images).float()


def test_export_halves_the_matrices_and_keeps_vectors_fp32(exported):
    state = load_file(str(exported))
    assert state["blocks.0.attn.qkv.weight"].dtype == torch.bfloat16
    assert (
        state["patch_embed.proj.weight"].dtype == torch.bfloat16
        and state["patch_embed.proj.weight"].dim() == 4
    )
    for name in (
        "blocks.0.attn.qkv.bias",
        "blocks.0.norm1.weight",
        "blocks.0.ls1.gamma",
        "pos_embed",
        "cls_token",
    ):
        assert state[name].dtype == torch.float32, name
    with safe_open(str(exported), "pt") as handle:
        assert (
            handle.metadata()["backbone"] == OFFLINE_BACKBONE and handle.metadata()["matrices"] == "bfloat16"
        )
    full = sum(t.numel() * 4 for t in state.values())
    assert exported.stat().st_size < 0.55 * full


def test_exported_file_gives_the_same_bf16_model(exported, monkeypatch):
    original = load_backbone(OFFLINE_BACKBONE, 112)
    monkeypatch.setenv(OFFLINE_WEIGHTS_ENV, str(exported))
    portable = load_backbone(OFFLINE_BACKBONE, 112)
    assert portable.backbone_name == OFFLINE_BACKBONE
    images = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(7))
    assert torch.equal(_forward(original, images, "bf16"), _forward(portable, images, "bf16"))
    # in fp32 the rounded matrices show: the export is not the fp32 model (and this test could fail)
    assert not torch.equal(_forward(original, images, "fp32"), _forward(portable, images, "fp32"))


def test_refusals_name_the_variable(exported, tmp_path, monkeypatch):
    monkeypatch.setenv(OFFLINE_WEIGHTS_ENV, str(tmp_path / "absent.safetensors"))
    with pytest.raises(FileNotFoundError, match=OFFLINE_WEIGHTS_ENV):
        load_backbone(OFFLINE_BACKBONE, 112)
    with pytest.raises(InvalidValueError, match="must be unset when exporting"):
        export_offline_weights(tmp_path / "again.safetensors")
    stale = tmp_path / "stale.safetensors"
    save_file(load_file(str(exported)), str(stale), metadata={"converter": "0"})
    monkeypatch.setenv(OFFLINE_WEIGHTS_ENV, str(stale))
    with pytest.raises(InvalidValueError, match="converter version '0'"):
        load_backbone(OFFLINE_BACKBONE, 112)
