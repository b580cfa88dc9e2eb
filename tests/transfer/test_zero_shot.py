"""The zero-shot matrix on a tiny real backbone, two folder targets and a two-prompt library."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer import linear_probe
from launch.zero_shot import main


def _folder(root, colours, per_class=40, seed=0):
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(colours):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 60, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def tiny_library(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    backbone = f"vit_tiny_patch16_224={weights}"
    a = _folder(tmp_path / "redblue", [(180, 60, 60), (60, 60, 180)])
    b = _folder(tmp_path / "darklight", [(60, 60, 60), (190, 190, 190)], seed=1)
    library = PromptLibrary(tmp_path / "lib", create=True)
    for name, source in (("p-redblue", str(a)), ("p-darklight", str(b))):
        library.add(name, torch.randn(3, 192) * 0.1, source_task=source, backbone=backbone, img_size=32)
    return tmp_path, library


def test_matrix_files_and_values(tiny_library):
    root, library = tiny_library
    out = root / "zs"
    assert main(["--prompts", str(library.root), "--out", str(out), "--max-test", "20"]) == 0
    frame = pd.read_parquet(out / "zero_shot.parquet")
    assert set(frame["source"]) == {"p-redblue", "p-darklight", "(none)"}
    assert set(frame["target"]) == {"redblue", "darklight"}
    assert len(frame) == 6 and frame["test_accuracy"].between(0, 1).all()
    assert (frame["test_accuracy"] > 0.8).all()  # colour tasks are easy for any feature
    assert (out / "zero_shot.png").stat().st_size > 1000 and (out / "zero_shot.csv").is_file()
    before = (out / "parts" / "redblue.parquet").stat().st_mtime_ns
    assert main(["--prompts", str(library.root), "--out", str(out), "--max-test", "20"]) == 0  # resumes
    assert (out / "parts" / "redblue.parquet").stat().st_mtime_ns == before


def test_bad_libraries_exit_2(tmp_path, capsys):
    assert main(["--prompts", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    PromptLibrary(tmp_path / "empty", create=True)
    assert main(["--prompts", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_linear_probe_picks_c_on_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(int)
    result = linear_probe((x[:200], y[:200]), (x[200:250], y[200:250]), (x[250:], y[250:]))
    assert result.test_accuracy > 0.9 and result.c in (0.01, 0.1, 1.0, 10.0)
