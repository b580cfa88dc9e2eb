"""Report tables and correlations against direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from hgprompt_ray.transfer import report


def _frame():
    rows = []
    accuracy = {("a", "hgprompt"): [0.80, 0.84], ("a", "average"): [0.70, 0.74], ("a", "vpt"): [0.9, 0.9],
                ("b", "hgprompt"): [0.50, 0.60], ("b", "average"): [0.55, 0.55], ("b", "vpt"): [0.4, 0.5]}  # fmt: skip
    for (target, method), values in accuracy.items():
        for seed, value in enumerate(values):
            rows.append({"target": target, "method": method, "protocol": "tuned", "seed": seed, "scale": 4,
                         "main": True, "test_accuracy": value, "val_accuracy": value, "wall_seconds": 10.0 + seed,
                         "trainable_parameters": 1154.0})  # fmt: skip
    rows.append(
        {"target": "a", "method": "hgprompt", "protocol": "tuned", "seed": 0, "scale": 2, "main": False,
         "test_accuracy": 0.1, "val_accuracy": 0.1, "wall_seconds": 1.0, "trainable_parameters": 1154.0}
    )  # fmt: skip
    return pd.DataFrame(rows)


def test_main_table_means_stds_and_average_column():
    display, means = report.main_table(_frame())
    assert list(display.index) == ["VPT (scratch)", "Average", "HGPrompt"]  # the registry's order and labels
    assert list(display.columns) == ["Kind", "Trains", "Params", "Fit", "a", "b", "Average", "Wall s/run"]
    assert display.loc["HGPrompt", "a"] == f"82.0 ± {100 * np.std([0.80, 0.84], ddof=1):.1f}"
    assert means.loc["b", "hgprompt"] == pytest.approx(0.55)  # the scaling row (main=False) is left out
    assert display.loc["Average", "Average"] == f"{100 * np.mean([0.72, 0.55]):.1f}"
    assert display.loc["HGPrompt", "Params"] == "1.15k" and display.loc["VPT (scratch)", "Wall s/run"] == "10"
    assert display.loc["VPT (scratch)", "Kind"] == "tuning" and display.loc["Average", "Kind"] == "weighting"
    results = report.results_table(_frame())
    assert tuple(results.columns) == report.RESULT_COLUMNS and len(results) == 12
    losses = report.baselines_beating(means)
    assert ("a", "vpt", pytest.approx(0.9), pytest.approx(0.82)) in losses
    assert ("b", "average", pytest.approx(0.55), pytest.approx(0.55)) in losses  # a tie is not a win
    assert not any(t == "a" and m == "average" for t, m, _, _ in losses)


def test_spearman_matches_scipy_and_skips_constant_weights():
    zero_shot = pd.DataFrame({"source": ["s1", "s2", "s3", "s4"], "target": "a",
                              "test_accuracy": [0.2, 0.9, 0.5, 0.4]})  # fmt: skip
    weights = {"a": {"sources": ["s1", "s2", "s3", "s4"],
                     "methods": {"hgprompt": [0.1, 0.6, 0.3, 0.0], "average": [0.25] * 4}}}  # fmt: skip
    table = report.spearman_table(weights, zero_shot, ["hgprompt", "average"])
    expected = spearmanr([0.1, 0.6, 0.3, 0.0], [0.2, 0.9, 0.5, 0.4]).statistic
    assert table.loc["a", "HGPrompt"] == pytest.approx(expected)
    assert np.isnan(table.loc["a", "Average"])
    assert table.loc["Average", "HGPrompt"] == pytest.approx(expected)


def test_scaling_and_weights_plots(tmp_path):
    frame = _frame()
    summary = report.write_scaling_plot(frame, ["hgprompt", "average"], tmp_path / "scaling.png")
    point = summary[(summary["target"] == "a") & (summary["method"] == "hgprompt") & (summary["scale"] == 2)]
    assert point["mean"].item() == pytest.approx(0.1)
    entry = {"sources": ["s1", "s2"], "methods": {"hgprompt": [0.3, 0.7], "h-only": [1.0, 0.0]}}
    report.write_weights_plot(entry, ["hgprompt", "h-only"], tmp_path / "w.png", "t")
    rng = np.random.default_rng(0)
    features = {"x": rng.normal(size=(40, 8)), "y": rng.normal(size=(40, 8))}
    report.write_tsne_plot(features, np.repeat([0, 1], 20), tmp_path / "tsne.png")
    for name in ("scaling.png", "w.png", "tsne.png"):
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG"
