"""The evaluation report's PNG plots: scaling, t-SNE, source weights and learning curves."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hgprompt_ray.atomic import atomic_path

__all__ = ["write_learning_curve_plot", "write_scaling_plot", "write_tsne_plot", "write_weights_plot"]


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_scaling_plot(
    frame: pd.DataFrame, methods: Sequence[str], path: Path, label: Callable[[str], str] = str
) -> pd.DataFrame:
    """Test accuracy against the number of sources (mean over seeds, bars: the 95% Student-t CI),
    one line per method; returns the summary (``mean, std, count, ci`` per target, method, scale)."""
    from scipy.stats import t as student

    plt = _pyplot()
    data = frame[frame["method"].isin(methods)]
    summary = (
        data.groupby(["target", "method", "scale"])["test_accuracy"]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    counts = summary["count"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        quantile = student.ppf(0.975, np.maximum(counts - 1, 1))
        summary["ci"] = np.where(counts > 1, quantile * summary["std"].to_numpy() / np.sqrt(counts), np.nan)
    targets = sorted(summary["target"].unique())
    figure, axes = plt.subplots(
        1, max(1, len(targets)), figsize=(4.5 * max(1, len(targets)), 3.6), squeeze=False
    )
    for axis, target in zip(axes[0], targets):
        for method in methods:
            part = summary[(summary["target"] == target) & (summary["method"] == method)].sort_values("scale")
            if part.empty:
                continue
            axis.errorbar(
                part["scale"], 100 * part["mean"], yerr=100 * part["ci"].fillna(0), marker="o",
                capsize=3, label=label(method),
            )  # fmt: skip
        axis.set_title(target)
        axis.set_xlabel("number of source prompts")
        axis.set_ylabel("test top-1 (%)")
        axis.legend(fontsize=8)
    _save(figure, path)
    return summary


def write_tsne_plot(features: Mapping[str, Any], labels: np.ndarray, path: Path, seed: int = 0) -> None:
    """One t-SNE panel per prompt of the same test images, coloured by class."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    names = list(features)
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.0), squeeze=False)
    for axis, name in zip(axes[0], names):
        values = np.asarray(features[name], dtype=np.float64)
        perplexity = float(min(30, max(2, (len(values) - 1) // 3)))
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            values
        )
        axis.scatter(embedded[:, 0], embedded[:, 1], c=labels, s=6, cmap="tab10")
        axis.set_title(name, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    _save(figure, path)


def write_weights_plot(
    entry: Mapping[str, Any], methods: Sequence[str], path: Path, title: str, label: Callable[[str], str] = str
) -> dict[str, tuple[float, ...]]:
    """Grouped bars: each method's weight on each source. Returns each shown method's bar colour
    (RGBA). Every method gets its own: matplotlib's default cycle has 10 colours and the report
    shows 12 weightings, so HGPrompt drew in Single-Best's orange; ``tab20`` has 20, and beyond 20
    the colours are spread over ``turbo``."""
    plt = _pyplot()
    sources = list(entry["sources"])
    shown = [m for m in methods if m in entry["methods"]]
    width = 0.8 / max(1, len(shown))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(sources) + 2), 3.8))
    positions = np.arange(len(sources))
    many = len(shown) > 20
    palette = plt.get_cmap("turbo" if many else "tab20")
    colours: dict[str, tuple[float, ...]] = {}
    for index, method in enumerate(shown):
        colour = palette(index / (len(shown) - 1) if many else index)
        weights = entry["methods"][method]
        bars = axis.bar(positions + index * width, weights, width, label=label(method), color=colour)
        drawn = bars.patches[0].get_facecolor() if bars.patches else colour
        colours[method] = tuple(float(c) for c in drawn)
    axis.set_xticks(positions + 0.4 - width / 2, sources, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("weight alpha_i")
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=2)
    _save(figure, path)
    return colours


def write_learning_curve_plot(curves: pd.DataFrame, path: Path, title: str) -> None:
    """val200 accuracy and training loss per epoch of the selection fits, one line per
    (seed, learning-rate scale).

    Args:
        curves: rows (seed, lr_scale, epoch, val_accuracy, loss).
    """
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for (seed, scale), part in curves.groupby(["seed", "lr_scale"]):
        part = part.sort_values("epoch")
        name = f"seed {seed}, lr x{scale:g}"
        left.plot(part["epoch"], 100 * part["val_accuracy"], marker="o", label=name)
        right.plot(part["epoch"], part["loss"], marker="o", label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("val200 top-1 (%)")
    right.set_xlabel("epoch")
    right.set_ylabel("training loss (epoch mean)")
    left.set_title(title, fontsize=9)
    left.legend(fontsize=7)
    _save(figure, path)
