"""Walk every registered method: its choices (source, weights, epochs, learning rate) read only
train800 and val200, never test.

Two CSV targets share every train and val image and label; their test images are the same too,
but the second one's test labels are flipped. Every method runs the protocol on both: its chosen
learning-rate scale, epochs and val200 curve must be identical (and the test accuracies differ,
so test did change). The weightings' inputs hold the zero-shot matrix's val200 column only:
their weights must not change when the test column is scrambled, and Single-Best follows val200.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.models import load_backbone
from hgprompt_ray.transfer.method_weights import zero_shot_val
from hgprompt_ray.transfer.methods import registered
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.tune import tune_transfer
from tests.transfer.test_weights import _statistics


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    root = tmp_path_factory.mktemp("leak")
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "vit.safetensors"))
    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", 40), ("val", 16), ("test", 24)):
        for i in range(count):
            label = i % 2
            colour = (170, 70, 70) if label == 0 else (70, 70, 170)
            pixels = np.clip(rng.normal(colour, 80, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{split}{i}.png")
            rows.append({"path": f"{split}{i}.png", "label": f"c{label}", "split": split})
    honest = pd.DataFrame(rows)
    flipped = honest.copy()
    test = flipped["split"] == "test"
    flipped.loc[test, "label"] = flipped.loc[test, "label"].map({"c0": "c1", "c1": "c0"})
    honest.to_csv(root / "honest.csv", index=False)
    flipped.to_csv(root / "flipped.csv", index=False)
    return root, f"test_vit={root / 'vit.safetensors'}"


@pytest.mark.slow
@pytest.mark.parametrize("method", registered(), ids=lambda m: m.name)
def test_choices_ignore_the_test_labels(two_targets, method):
    root, backbone_name = two_targets
    backbone = load_backbone(backbone_name, 32)
    sources = torch.randn(3, 2, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    outcomes = []
    for target in ("honest.csv", "flipped.csv"):
        config = TransferConfig(task=str(root / target), backbone=backbone_name, img_size=32, epochs=2,
                                lr_scales=(0.3, 3.0), batch_size=16, base_lr=0.4, eval_batch_size=64)  # fmt: skip
        initial = sources.mean(0) if method.is_weighting else None
        outcomes.append(tune_transfer(config, method, initial=initial, sources=sources,
                                      weights=np.array([0.5, 0.3, 0.2]), backbone=backbone))  # fmt: skip
    honest, flipped = outcomes

    def choices(result):  # the closed-form probe has no lr scale (nan) and chooses C on val200
        return (None if np.isnan(result.lr_scale) else result.lr_scale, result.epochs, result.val_accuracy,
                result.val_curve)  # fmt: skip

    assert choices(honest) == choices(flipped)
    assert honest.test_accuracy == pytest.approx(1 - flipped.test_accuracy)  # test did differ


def test_weightings_read_the_val_column_only():
    sources = ["a", "b", "c"]
    matrix = pd.DataFrame({"val_accuracy": [0.40, 0.70, 0.55], "test_accuracy": [0.90, 0.10, 0.50]},
                          index=pd.Index(sources, name="source"))  # fmt: skip
    scrambled = matrix.assign(test_accuracy=[0.0, 1.0, 0.3])
    assert "test" not in " ".join(WeightingInputs._fields)
    prompts = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0))
    statistics = _statistics()
    found = []
    for frame in (matrix, scrambled):
        inputs = WeightingInputs(tuple(sources), prompts, zero_shot_val(frame, sources), statistics,
                                 np.array([0.2, 0.5, 0.3]), {0: np.array([0.1, -0.2, 0.4])},
                                 random_search_weights=np.array([0.0, 0.4, 0.6]))  # fmt: skip
        found.append({m.name: np.asarray(m.weights(inputs, 0)) for m in registered()
                      if m.weights is not None and "probe" not in m.needs})  # fmt: skip
    for name, alpha in found[0].items():
        assert np.array_equal(alpha, found[1][name]), name
    assert found[0]["single-best"].tolist() == [0, 1, 0]  # the best on val200, not the best on test ("a")
