"""The evaluation report: tables (Markdown + CSV), Spearman correlations and PNG plots.

Everything here reads finished results (``runs/**/*.json``, weights, the zero-shot matrix) and
computes nothing that needs a model, so a report can be rebuilt at any time from the folder. The
methods, their labels, their order, the ablation rows and the scaling curve's lines come from the
registry (``hgprompt_ray.transfer.methods``).
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
from hgprompt_ray.transfer.methods import get_method, method_names, registered
from hgprompt_ray.transfer.plots import (
    write_learning_curve_plot,
    write_scaling_plot,
    write_tsne_plot,
    write_weights_plot,
)

__all__ = [
    "RESULT_COLUMNS",
    "ablation_table",
    "baselines_beating",
    "learning_curves",
    "load_results",
    "main_table",
    "results_table",
    "spearman_table",
    "write_report",
    "write_scaling_plot",
    "write_tsne_plot",
    "write_weights_plot",
]

logger = logging.getLogger(__name__)
RESULT_COLUMNS = ("target", "method", "protocol", "seed", "test_accuracy", "val_accuracy", "wall_seconds")
"""The columns of ``results.csv`` (one row per main run)."""
TEMPLATE = Path(__file__).with_name("templates") / "report.md"
_LEGACY = {"h-only": "h-ensemble"}
"""Runs of schema 1 (before the registry): "h-only" was argmax_alpha H, which is H-ensemble."""
_LEGACY_DROPPED = ("h-ensemble",)
"""Schema-1 "h-ensemble" runs normalised per-source H-scores, which is not H-ensemble: left out."""


def load_results(root: Path) -> pd.DataFrame:
    """One row per finished run under ``root/runs`` (every field of the run records)."""
    rows = []
    for path in sorted((root / "runs").glob("**/*.json")):
        record = json.loads(path.read_text())
        job = record["job"]
        method = job["method"]
        if record.get("schema_version", 1) < 2:  # before the registry (see _LEGACY)
            if method in _LEGACY_DROPPED:
                continue
            method = _LEGACY.get(method, method)
        rows.append(
            {
                "target": job["target_name"],
                "method": method,
                "protocol": job.get("protocol", "tuned"),
                "seed": job["seed"],
                "scale": job["scale"] if job["scale"] is not None else len(job["sources"]),
                "main": job["scale"] is None,
                "num_sources": len(job["sources"]),
                "test_accuracy": record["test_accuracy"],
                "val_accuracy": record["val_accuracy"],
                "lr_scale": record.get("lr_scale"),
                "epochs": record.get("epochs", np.nan),
                "trainable_parameters": record.get("trainable_parameters", np.nan),
                "closed_form": bool(record.get("closed_form", False)),
                "wall_seconds": record["seconds"],
                "precision": record.get("precision", "fp32"),
                "key": record["key"],
            }
        )
    columns = ["target", "method", "protocol", "seed", "scale", "main", "num_sources", "test_accuracy", "val_accuracy",
               "lr_scale", "epochs", "trainable_parameters", "closed_form", "wall_seconds", "precision", "key"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``results.csv``: the main runs with :data:`RESULT_COLUMNS`."""
    main = frame[frame["main"]] if "main" in frame else frame
    return main.loc[:, list(RESULT_COLUMNS)].sort_values(["target", "method", "protocol", "seed"]).reset_index(drop=True)


def _cell(values: pd.Series) -> str:
    if values.empty:
        return "-"
    mean = 100 * values.mean()
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * values.std(ddof=1):.1f}"


def _count(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.2f}{suffix}"
    return f"{value:.0f}"


def _label(method: str, labels: Mapping[str, str] | None) -> str:
    return (labels or {}).get(method) or get_method(method).label


def main_table(frame: pd.DataFrame, labels: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, numeric means): one row per method in the registry's order (VPT's layout).

    Columns: kind, what trains, trainable parameters (mean over runs), how it is fitted, each
    target's test top-1 "mean ± std" in %, the average over targets (the mean of per-target
    means; "-" when the method is missing on a target) and the wall time per run. The numeric
    means have targets as rows and method names as columns.
    """
    main = frame[frame["main"]]
    targets = sorted(main["target"].unique())
    present = [m for m in method_names() if m in set(main["method"])]
    rows = {}
    means = pd.DataFrame(index=targets, columns=present, dtype=float)
    for name in present:
        method, runs = get_method(name), main[main["method"] == name]
        row = {
            "Kind": method.kind.value,
            "Trains": method.trains_text,
            "Params": _count(float(runs["trainable_parameters"].mean())),
            "Fit": "closed form" if method.closed_form else "epoch budget",
        }
        for target in targets:
            values = runs[runs["target"] == target]["test_accuracy"]
            row[target] = _cell(values)
            means.loc[target, name] = values.mean() if not values.empty else np.nan
        column = means[name]
        row["Average"] = "-" if column.isna().any() else f"{100 * column.mean():.1f}"
        row["Wall s/run"] = f"{runs['wall_seconds'].mean():.0f}"
        rows[_label(name, labels)] = row
    display = pd.DataFrame.from_dict(rows, orient="index", dtype=object)
    display.index.name = "method"
    return display, means


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: the registry's ablation rows; columns: targets and their average (mean ± std in %)."""
    main = frame[frame["main"]]
    targets = sorted(main["target"].unique())
    rows = [(m.ablation_row, m.name) for m in registered() if m.ablation_row]
    table = pd.DataFrame(index=[label for label, _ in rows], columns=[*targets, "Average"], dtype=object)
    for label, method in rows:
        means = []
        for target in targets:
            values = main[(main["target"] == target) & (main["method"] == method)]["test_accuracy"]
            table.loc[label, target] = _cell(values)
            means.append(values.mean() if not values.empty else np.nan)
        table.loc[label, "Average"] = "-" if np.isnan(means).any() else f"{100 * np.mean(means):.1f}"
    return table


def spearman_table(
    weights: Mapping[str, Mapping[str, Any]],
    zero_shot: pd.DataFrame,
    methods: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Spearman's rho between each method's source weights and the sources' zero-shot accuracy.

    Args:
        weights: target -> {"sources": [...], "methods": {method: [alpha...]}}.
        zero_shot: rows (source, target, test_accuracy): the ground truth, read by no method.
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
                row[_label(method, labels)] = np.nan
            else:
                row[_label(method, labels)] = float(spearmanr(alpha, truth).statistic)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("target") if rows else pd.DataFrame()
    if not table.empty:
        table.loc["Average"] = table.mean(numeric_only=True)
    return table


def baselines_beating(means: pd.DataFrame, method: str = "hgprompt") -> list[tuple[str, str, float, float]]:
    """(target, baseline, baseline mean, method mean) wherever a baseline is at least as accurate."""
    found: list[tuple[str, str, float, float]] = []
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


def learning_curves(root: Path, target: str, method: str = "vpt") -> pd.DataFrame:
    """Rows (seed, lr_scale, epoch, val_accuracy, loss) of a method's selection fits on a target."""
    rows = []
    for path in sorted((root / "runs" / target / method).glob("seed*.json")):
        record = json.loads(path.read_text())
        losses = {(s, e): loss for s, e, loss in record.get("loss_curve", [])}
        for point in record.get("val_curve", []):
            if len(point) != 3:  # a run of the earlier step-based protocol: no epochs to plot
                continue
            scale, epoch, accuracy = point
            rows.append({"seed": record["job"]["seed"], "lr_scale": scale, "epoch": epoch,
                         "val_accuracy": accuracy, "loss": losses.get((scale, epoch), np.nan)})  # fmt: skip
    return pd.DataFrame(rows, columns=["seed", "lr_scale", "epoch", "val_accuracy", "loss"])


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


def _write_csv(table: pd.DataFrame, path: Path, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)


def _verdict(means: pd.DataFrame, labels: Mapping[str, str]) -> str:
    losses = baselines_beating(means)
    if not losses:
        return "HGPrompt has the best mean on every target of this report."
    lines = [f"- {t}: {_label(m, labels)} {100 * o:.1f} vs HGPrompt {100 * h:.1f}" for t, m, o, h in losses]
    return "HGPrompt does **not** beat these baselines (mean over seeds, test top-1 %):\n\n" + "\n".join(lines)


def _learning_section(output: Path, target: str, labels: Mapping[str, str]) -> str:
    curves = learning_curves(output, target, "vpt")
    if curves.empty:
        return ""
    write_learning_curve_plot(curves, output / "learning_curve.png", f"{_label('vpt', labels)} on {target}")
    _write_csv(curves, output / "learning_curve.csv", index=False)
    table = curves.pivot_table(index="epoch", columns=["lr_scale"], values="val_accuracy", aggfunc="mean")
    table.columns = [f"val200, lr x{c:g}" for c in table.columns]
    return ("## Learning curve of VPT from scratch\n\n![learning curve](learning_curve.png)\n\n"
            f"val200 top-1 (fraction, mean over seeds) after each epoch of the train800 fits on {target}, per "
            "learning-rate scale: a curve still rising at the last epoch means the budget is too small for "
            "VPT to converge.\n\n" + markdown(table))  # fmt: skip


def write_report(output: Path, state: Mapping[str, Any]) -> tuple[Path, pd.DataFrame]:
    """Rebuild every table, plot and ``report.md`` of an evaluation folder from its files.

    Args:
        output: the evaluation folder (``runs/``, ``weights/``, ``evaluate.json``).
        state: the ``evaluate.json`` record (command, library, budget, targets, seeds, wall time).

    Returns:
        The report's path and the main table as displayed.
    """
    from string import Template

    budget = state["budget"]
    settings = budget.get("method_settings", {})
    labels = {m.name: m.display_label(settings.get(m.name)) for m in registered()}
    frame = load_results(output)
    weights = {p.stem: json.loads(p.read_text()) for p in sorted((output / "weights").glob("*.json"))}
    _write_csv(results_table(frame), output / "results.csv", index=False)
    _write_csv(frame, output / "runs.csv", index=False)
    display, means = main_table(frame, labels)
    _write_csv(display, output / "main_table.csv")
    ablation = ablation_table(frame)
    _write_csv(ablation, output / "ablation.csv")
    zero_shot = pd.DataFrame(
        [{"source": s, "target": t, "test_accuracy": a} for t, e in weights.items() for s, a in e["zero_shot"].items()]
    )
    weightings = [m.name for m in registered() if m.weights is not None]
    spearman = spearman_table(weights, zero_shot, weightings, labels)
    _write_csv(spearman, output / "spearman.csv")
    sections = []
    names = state.get("target_names", [])
    if names:
        sections.append(_learning_section(output, names[0], labels))
    scaling_frame = frame[frame["target"].isin(state.get("scaling_target_names", []))]
    scaling_methods = [m.name for m in registered() if m.scaling]
    if not scaling_frame.empty and scaling_frame["scale"].nunique() > 1:
        summary = write_scaling_plot(scaling_frame[scaling_frame["seed"] < state["scaling_seeds"]], scaling_methods,
                                     output / "scaling.png", lambda m: labels[m])  # fmt: skip
        _write_csv(summary, output / "scaling.csv", index=False)
        table = summary.pivot_table(index="scale", columns="method", values="mean")
        table.columns = [labels[m] for m in table.columns]
        sections.append("## Scaling with the number of sources\n\n![scaling](scaling.png)\n\n"
                        "Test top-1 (fraction) per number of sources (subsets: a seeded random order of the "
                        "sources, first n; every method over the same subset):\n\n" + markdown(table))  # fmt: skip
    for name, entry in weights.items():
        write_weights_plot(entry, weightings, output / f"weights_{name}.png", f"source weights, target {name}",
                           lambda m: labels[m])  # fmt: skip
    if (output / "tsne.png").is_file():
        shown = " and ".join(labels[m.name] for m in registered() if m.tsne)
        sections.append("## t-SNE of target test features\n\n![t-SNE](tsne.png)\n\n"
                        f"Test features of the first target under the tuned prompts (seed 0) of {shown}, "
                        "coloured by class.")  # fmt: skip
    text = Template(TEMPLATE.read_text()).substitute(
        command=state["command"],
        library=state["library"],
        backbone=state["backbone"],
        img_size=state["img_size"],
        targets=", ".join(state["target_names"]),
        seeds=state["seeds"],
        minutes=f"{state.get('seconds', float('nan')) / 60:.1f}",
        lr_scales=", ".join(f"{s:g}" for s in budget.get("lr_scales", [1.0])),
        max_steps="" if budget.get("max_steps") is None else f" (capped at {budget['max_steps']} steps per fit)",
        methods="\n".join(f"- **{labels[m.name]}** ({m.kind.value}; trains {m.trains_text}): {m.paper}."
                          for m in registered() if m.name in set(frame["method"])),  # fmt: skip
        main_table=markdown(display),
        verdict=_verdict(means, labels),
        ablation_table=markdown(ablation),
        spearman_table=markdown(spearman, ".2f") if not spearman.empty else "(no zero-shot column)",
        sections="\n".join("\n" + s + "\n" for s in sections if s),
        **{k: budget.get(k, "?") for k in ("epochs", "batch_size", "base_lr", "warmup_fraction", "max_test",
                                           "precision", "search_trials", "samples", "gradient_samples", "spot_steps")},
    )  # fmt: skip
    text = text.replace("\n\n\n", "\n\n")  # an empty section leaves no gap
    with atomic_path(output / "report.md") as tmp:
        Path(tmp).write_text(text)
    return output / "report.md", display
