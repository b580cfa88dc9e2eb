"""The evaluation report: tables (Markdown + CSV), Spearman correlations and PNG plots.

Everything here reads finished results (``runs/**/*.json``, weights, the zero-shot matrix) and
computes nothing that needs a model, so a report can be rebuilt at any time from the folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.transfer.evaluation import ABLATION_METHODS, METHOD_LABELS, METHODS, SCALING_METHODS

__all__ = [
    "ablation_table",
    "baselines_beating",
    "load_results",
    "main_table",
    "spearman_table",
    "write_scaling_plot",
    "write_tsne_plot",
    "write_report",
    "write_weights_plot",
]

logger = logging.getLogger(__name__)
ABLATION_ROWS = (
    ("neither (uniform)", "average"),
    ("H only", "h-only"),
    ("alignment only", "align-only"),
    ("both (HGPrompt)", "hgprompt"),
)


def load_results(root: Path) -> pd.DataFrame:
    """One row per finished run under ``root/runs``."""
    rows = []
    for path in sorted((root / "runs").glob("**/*.json")):
        record = json.loads(path.read_text())
        job = record["job"]
        rows.append(
            {
                "target": job["target_name"],
                "method": job["method"],
                "seed": job["seed"],
                "scale": job["scale"] if job["scale"] is not None else len(job["sources"]),
                "main": job["scale"] is None,
                "num_sources": len(job["sources"]),
                "test_accuracy": record["test_accuracy"],
                "val_accuracy": record["val_accuracy"],
                "selected_steps": record["selected_steps"],
                "seconds": record["seconds"],
                "key": record["key"],
            }
        )
    columns = ["target", "method", "seed", "scale", "main", "num_sources", "test_accuracy",
               "val_accuracy", "selected_steps", "seconds", "key"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _cell(values: pd.Series) -> str:
    if values.empty:
        return "-"
    mean = 100 * values.mean()
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * values.std(ddof=1):.1f}"


def main_table(frame: pd.DataFrame, methods: Sequence[str] = METHODS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table of "mean ± std" in %, numeric means) with targets as rows plus "Average".

    The Average row is the mean over targets of each method's per-target mean (as in the paper's
    tables); a method missing on some target gets no average.
    """
    main = frame[frame["main"]]
    targets = sorted(main["target"].unique())
    present = [m for m in methods if m in set(main["method"])]
    display = pd.DataFrame(
        index=[*targets, "Average"], columns=[METHOD_LABELS[m] for m in present], dtype=object
    )
    means = pd.DataFrame(index=targets, columns=present, dtype=float)
    for target in targets:
        for method in present:
            values = main[(main["target"] == target) & (main["method"] == method)]["test_accuracy"]
            display.loc[target, METHOD_LABELS[method]] = _cell(values)
            means.loc[target, method] = values.mean() if not values.empty else np.nan
    for method in present:
        column = means[method]
        display.loc["Average", METHOD_LABELS[method]] = (
            "-" if column.isna().any() else f"{100 * column.mean():.1f}"
        )
    return display, means


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: the four ablation settings; columns: targets and their average (mean ± std in %)."""
    main = frame[frame["main"]]
    targets = sorted(main["target"].unique())
    table = pd.DataFrame(
        index=[label for label, _ in ABLATION_ROWS], columns=[*targets, "Average"], dtype=object
    )
    for label, method in ABLATION_ROWS:
        means = []
        for target in targets:
            values = main[(main["target"] == target) & (main["method"] == method)]["test_accuracy"]
            table.loc[label, target] = _cell(values)
            means.append(values.mean() if not values.empty else np.nan)
        table.loc[label, "Average"] = "-" if np.isnan(means).any() else f"{100 * np.mean(means):.1f}"
    return table


def spearman_table(
    weights: Mapping[str, Mapping[str, Any]], zero_shot: pd.DataFrame, methods: Sequence[str]
) -> pd.DataFrame:
    """Spearman's rho between each method's source weights and the sources' zero-shot accuracy.

    Args:
        weights: target -> {"sources": [...], "methods": {method: [alpha...]}}.
        zero_shot: rows (source, target, test_accuracy).
        methods: which methods to correlate (constant weights, e.g. Average, give NaN).
    """
    from scipy.stats import spearmanr

    rows = []
    for target, entry in sorted(weights.items()):
        accuracy = zero_shot[zero_shot["target"] == target].set_index("source")["test_accuracy"]
        sources = list(entry["sources"])
        if not set(sources) <= set(accuracy.index):
            logger.warning("no zero-shot accuracy for every source of %s; skipped", target)
            continue
        truth = accuracy.loc[sources].to_numpy()
        row: dict[str, Any] = {"target": target}
        for method in methods:
            alpha = entry["methods"].get(method)
            if alpha is None or np.ptp(alpha) == 0 or np.ptp(truth) == 0:
                row[METHOD_LABELS[method]] = np.nan
            else:
                row[METHOD_LABELS[method]] = float(spearmanr(alpha, truth).statistic)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("target") if rows else pd.DataFrame()
    if not table.empty:
        table.loc["Average"] = table.mean(numeric_only=True)
    return table


def baselines_beating(means: pd.DataFrame, method: str = "hgprompt") -> list[tuple[str, str, float, float]]:
    """(target, baseline, baseline mean, method mean) wherever a baseline is at least as accurate."""
    found = []
    if method not in means.columns:
        return found
    for target in means.index:
        ours = means.loc[target, method]
        for other in means.columns:
            if other == method or np.isnan(means.loc[target, other]) or np.isnan(ours):
                continue
            if means.loc[target, other] >= ours:
                found.append((target, other, float(means.loc[target, other]), float(ours)))
    return found


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


def write_scaling_plot(frame: pd.DataFrame, methods: Sequence[str], path: Path) -> pd.DataFrame:
    """Test accuracy against the number of sources (mean and std over seeds), one line per method."""
    plt = _pyplot()
    data = frame[frame["method"].isin(methods)]
    summary = (
        data.groupby(["target", "method", "scale"])["test_accuracy"]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
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
                part["scale"], 100 * part["mean"], yerr=100 * part["std"].fillna(0), marker="o",
                capsize=3, label=METHOD_LABELS[method],
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


def write_weights_plot(entry: Mapping[str, Any], methods: Sequence[str], path: Path, title: str) -> None:
    """Grouped bars: each method's weight on each source (and the zero-shot accuracy if given)."""
    plt = _pyplot()
    sources = list(entry["sources"])
    shown = [m for m in methods if m in entry["methods"]]
    width = 0.8 / max(1, len(shown))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(sources) + 2), 3.8))
    positions = np.arange(len(sources))
    for index, method in enumerate(shown):
        axis.bar(positions + index * width, entry["methods"][method], width, label=METHOD_LABELS[method])
    axis.set_xticks(positions + 0.4 - width / 2, sources, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("weight alpha_i")
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=2)
    _save(figure, path)


def markdown(table: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which the project does not depend on)."""
    header = "| " + " | ".join([str(table.index.name or ""), *map(str, table.columns)]) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    lines = [header, rule]
    for index, row in table.iterrows():
        cells = []
        for value in row:
            if isinstance(value, (float, np.floating)):
                cells.append("-" if np.isnan(value) else format(value, floatfmt))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join([str(index), *cells]) + " |")
    return "\n".join(lines)


ALL_METHODS = METHODS + ABLATION_METHODS


SPEARMAN_METHODS = ("hgprompt", "h-ensemble", "spot-weighted", "h-only", "align-only", "single-best", "spot-best")
WEIGHT_PLOT_METHODS = ("hgprompt", "h-ensemble", "h-only", "align-only", "spot-weighted", "single-best")
TEMPLATE = Path(__file__).with_name("templates") / "report.md"


def _write_csv(table: pd.DataFrame, path: Path, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)


def _verdict(means: pd.DataFrame) -> str:
    losses = baselines_beating(means)
    if not losses:
        return "HGPrompt has the best mean on every target of this report."
    lines = [f"- {t}: {METHOD_LABELS[m]} {100 * o:.1f} vs HGPrompt {100 * h:.1f}" for t, m, o, h in losses]
    return "HGPrompt does **not** beat these baselines (mean over seeds, test top-1 %):\n\n" + "\n".join(lines)


def write_report(output: Path, state: Mapping[str, Any]) -> tuple[Path, pd.DataFrame]:
    """Rebuild every table, plot and ``report.md`` of an evaluation folder from its files.

    Args:
        output: the evaluation folder (``runs/``, ``weights/``, ``evaluate.json``).
        state: the ``evaluate.json`` record (command, library, budget, targets, seeds, wall time).

    Returns:
        The report's path and the main table as displayed.
    """
    from string import Template

    frame = load_results(output)
    weights = {p.stem: json.loads(p.read_text()) for p in sorted((output / "weights").glob("*.json"))}
    _write_csv(frame, output / "results.csv", index=False)
    display, means = main_table(frame)
    _write_csv(display, output / "main_table.csv")
    ablation = ablation_table(frame)
    _write_csv(ablation, output / "ablation.csv")
    zero_shot = pd.DataFrame(
        [{"source": s, "target": t, "test_accuracy": a} for t, e in weights.items() for s, a in e["zero_shot"].items()]
    )
    spearman = spearman_table(weights, zero_shot, SPEARMAN_METHODS)
    _write_csv(spearman, output / "spearman.csv")
    sections = []
    scaling_frame = frame[frame["target"].isin(state.get("scaling_target_names", []))]
    if not scaling_frame.empty and scaling_frame["scale"].nunique() > 1:
        summary = write_scaling_plot(
            scaling_frame[scaling_frame["seed"] < state["scaling_seeds"]], SCALING_METHODS, output / "scaling.png"
        )
        _write_csv(summary, output / "scaling.csv", index=False)
        table = summary.pivot_table(index="scale", columns="method", values="mean")
        table.columns = [METHOD_LABELS[m] for m in table.columns]
        sections.append("## Scaling with the number of sources\n\n![scaling](scaling.png)\n\n"
                        "Test top-1 (fraction) per number of sources (subsets: a seeded random order of the "
                        "sources, first n; SPoT-best and Average over the same subset):\n\n"
                        + markdown(table))  # fmt: skip
    for name, entry in weights.items():
        write_weights_plot(entry, WEIGHT_PLOT_METHODS, output / f"weights_{name}.png", f"source weights, target {name}")
    if (output / "tsne.png").is_file():
        sections.append("## t-SNE of target test features\n\n![t-SNE](tsne.png)\n\n"
                        "Test features of the first target under the tuned prompts (seed 0) of HGPrompt and "
                        "Average, coloured by class.")  # fmt: skip
    budget = state["budget"]
    text = Template(TEMPLATE.read_text()).substitute(
        command=state["command"],
        library=state["library"],
        backbone=state["backbone"],
        img_size=state["img_size"],
        targets=", ".join(state["target_names"]),
        seeds=state["seeds"],
        minutes=f"{state.get('seconds', float('nan')) / 60:.1f}",
        eval_every=budget["steps"] // budget["eval_points"],
        main_table=markdown(display),
        verdict=_verdict(means),
        ablation_table=markdown(ablation),
        spearman_table=markdown(spearman, ".2f") if not spearman.empty else "(no zero-shot column)",
        sections="\n".join("\n" + s + "\n" for s in sections),
        **{k: budget[k] for k in ("steps", "batch_size", "base_lr", "warmup_fraction", "max_test",
                                  "search_trials", "samples", "gradient_samples", "spot_steps")},  # fmt: skip
    )
    with atomic_path(output / "report.md") as tmp:
        Path(tmp).write_text(text)
    return output / "report.md", display
