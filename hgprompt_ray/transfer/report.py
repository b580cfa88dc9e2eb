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
from hgprompt_ray.transfer.statistics import (
    mean_ci,
    one_way_anova,
    paired_differences,
    spearman_ci,
    win_tie_loss,
)

__all__ = [
    "RESULT_COLUMNS",
    "ablation_table",
    "baselines_beating",
    "informative_table",
    "learning_curves",
    "load_results",
    "main_table",
    "paired_table",
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
PROTOCOL_ORDER = ("tuned", "init-probe")
"""The report's protocol sections, in this order."""
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
    """``mean ± h`` in %, h the half-width of the 95% Student-t interval over the seeds."""
    if values.empty:
        return "-"
    mean, half = mean_ci(values.to_numpy(dtype=float))
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * half:.1f}"


def _count(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.2f}{suffix}"
    return f"{value:.0f}"


def _label(method: str, labels: Mapping[str, str] | None) -> str:
    return (labels or {}).get(method) or get_method(method).label


def _protocol_runs(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The main runs of one protocol (runs before the protocol column count as ``tuned``)."""
    main = frame[frame["main"]]
    if "protocol" in main:
        main = main[main["protocol"].fillna("tuned") == protocol]
    return main


def _fit_text(method: Any, protocol: str) -> str:
    if protocol == "init-probe":
        return "probe on the bare backbone" if method.closed_form else "probe on P0's features"
    return "closed form" if method.closed_form else "epoch budget"


def main_table(
    frame: pd.DataFrame, labels: Mapping[str, str] | None = None, protocol: str = "tuned"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, numeric means): one row per method in the registry's order (VPT's layout),
    over the main runs of ``protocol``.

    Columns: kind, what trains, trainable parameters (mean over runs), how it is fitted, each
    target's test top-1 "mean ± h" in % (h: the 95% CI half-width over seeds), the average over
    targets (the mean of per-target means; "-" when the method is missing on a target) and the
    wall time per run. The numeric means have targets as rows and method names as columns.
    """
    main = _protocol_runs(frame, protocol)
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
            "Fit": _fit_text(method, protocol),
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


def ablation_table(frame: pd.DataFrame, protocol: str = "tuned") -> pd.DataFrame:
    """Rows: the registry's ablation rows; columns: targets and their average (mean ± 95% CI
    half-width in %), over the main runs of ``protocol``."""
    main = _protocol_runs(frame, protocol)
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
    column: str = "val_accuracy",
    n_boot: int = 2000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman's rho between each method's source weights and the sources' zero-shot accuracy,
    with a percentile bootstrap 95% CI over the sources (:func:`statistics.spearman_ci`).

    Args:
        weights: target -> {"sources": [...], "methods": {method: [alpha...]}}.
        zero_shot: rows (source, target, ``column``): the sources' zero-shot accuracy on the target
            (``val_accuracy``: what Single-Best reads; ``test_accuracy``: read by no method).
        methods: which methods to correlate (constant weights, e.g. Average, give NaN).
        labels: table labels of the methods.
        column: the zero-shot accuracy to correlate with.
        n_boot: bootstrap resamples.

    Returns:
        (rho table: targets and an "Average" row x method labels; long table: one row per
        (target, method) with ``rho, ci_low, ci_high``).
    """
    rows, long = [], []
    for target, entry in sorted(weights.items()):
        accuracy = zero_shot[zero_shot["target"] == target].set_index("source")[column]
        sources = list(entry["sources"])
        if not set(sources) <= set(accuracy.index):
            logger.warning("no zero-shot accuracy for every source of %s; skipped", target)
            continue
        truth = accuracy.loc[sources].to_numpy(dtype=float)
        row: dict[str, Any] = {"target": target}
        for method in methods:
            alpha = entry["methods"].get(method)
            rho = low = high = np.nan
            if alpha is not None and len(alpha) >= 3:
                rho, low, high = spearman_ci(alpha, truth, n_boot=n_boot)
            row[_label(method, labels)] = rho
            long.append({"target": target, "method": method, "rho": rho, "ci_low": low, "ci_high": high})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("target") if rows else pd.DataFrame()
    if not table.empty:
        table.loc["Average"] = table.mean(numeric_only=True)
    return table, pd.DataFrame(long, columns=["target", "method", "rho", "ci_low", "ci_high"])


def _spearman_display(long: pd.DataFrame, labels: Mapping[str, str] | None) -> pd.DataFrame:
    """Cells ``rho [low, high]`` (targets x method labels)."""
    if long.empty:
        return pd.DataFrame()
    cells = long.assign(
        cell=[
            "-" if np.isnan(r) else f"{r:.2f} [{lo:.2f}, {hi:.2f}]"
            for r, lo, hi in zip(long["rho"], long["ci_low"], long["ci_high"])
        ],
        label=[_label(m, labels) for m in long["method"]],
    )
    table = cells.pivot(index="target", columns="label", values="cell")
    order = [_label(m, labels) for m in dict.fromkeys(long["method"])]
    return table.loc[:, order]


def paired_table(frame: pd.DataFrame, protocol: str, labels: Mapping[str, str] | None = None,
                 method: str = "hgprompt") -> pd.DataFrame:  # fmt: skip
    """HGPrompt minus each baseline over the (target, seed) pairs of ``protocol``'s main runs:
    the mean difference in points with its 95% CI, the paired t-test's and Wilcoxon's p, and the
    per-target win/tie/loss counts (a win or loss needs a paired t-test p < 0.05 on that target)."""
    runs = _protocol_runs(frame, protocol)
    if method not in set(runs["method"]):
        return pd.DataFrame()
    baselines = [m for m in method_names() if m in set(runs["method"]) and m != method]
    if not baselines:
        return pd.DataFrame()
    paired = paired_differences(runs, method=method, baselines=baselines, protocol=protocol)
    summary, _ = win_tie_loss(runs, method=method, baselines=baselines, protocol=protocol)
    merged = paired.merge(summary, on="baseline", how="left", suffixes=("", "_wtl"))
    table = pd.DataFrame(
        {
            "pairs": merged["pairs"].astype(int),
            "HGPrompt - baseline (points)": [
                "-" if np.isnan(d) else f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                for d, lo, hi in zip(merged["mean_difference"], merged["ci_low"], merged["ci_high"])
            ],
            "p (paired t)": merged["p_t"],
            "p (Wilcoxon)": merged["p_wilcoxon"],
            "win / tie / loss (targets)": [
                f"{int(w)} / {int(t)} / {int(lo)}" for w, t, lo in zip(merged["wins"], merged["ties"], merged["losses"])
            ],
        }
    )
    table.index = [_label(b, labels) for b in merged["baseline"]]
    table.index.name = "baseline"
    return table


def informative_table(frame: pd.DataFrame, protocol: str, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per target, whether the weightings differ beyond seed noise: the spread of their mean test
    accuracy (points), the best and worst weighting, and a one-way ANOVA across them (p < 0.01
    with >= 5 seeds is the issue's bar for an informative target)."""
    runs = _protocol_runs(frame, protocol)
    weightings = {m.name for m in registered(kind="weighting")}
    runs = runs[runs["method"].isin(weightings)]
    rows = []
    for target in sorted(runs["target"].unique()):
        part = runs[runs["target"] == target]
        means = part.groupby("method")["test_accuracy"].mean()
        f_statistic, p_value = one_way_anova(part, target, protocol)
        rows.append({
            "target": target,
            "weightings": int(len(means)),
            "seeds": int(part.groupby("method").size().min()),
            "spread (points)": 100 * float(means.max() - means.min()),
            "best": _label(str(means.idxmax()), labels),
            "worst": _label(str(means.idxmin()), labels),
            "F": f_statistic,
            "p (ANOVA)": p_value,
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("target") if rows else pd.DataFrame()


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


_PROTOCOL_TEXT = {
    "tuned": "the VTAB-1k protocol, one epoch budget for every method (above)",
    "init-probe": "a logistic probe on train800 features under the initial prompt P0 (the weightings' "
    "sum_i alpha_i P_i; the linear probe's bare backbone), C chosen on val200, refit on train800val200, "
    "test top-1; seed k is the train800/val200 draw split seed + k, with every weighting recomputed on it",
}


def _suffix(protocol: str) -> str:
    return "" if protocol == "tuned" else f"_{protocol}"


def _protocol_section(output: Path, frame: pd.DataFrame, protocol: str, labels: Mapping[str, str]) -> tuple[str, pd.DataFrame]:
    """One protocol's tables (written as CSV too) as Markdown, and its main table as displayed."""
    suffix = _suffix(protocol)
    display, means = main_table(frame, labels, protocol)
    _write_csv(display, output / f"main_table{suffix}.csv")
    ablation = ablation_table(frame, protocol)
    _write_csv(ablation, output / f"ablation{suffix}.csv")
    paired = paired_table(frame, protocol, labels)
    informative = informative_table(frame, protocol, labels)
    parts = [
        f"## Main table, {protocol} (test top-1 %, mean ± 95% CI half-width over seeds; trainable "
        f"parameters; wall time per run)\n\nProtocol: {_PROTOCOL_TEXT[protocol]}.\n\n{markdown(display)}",
        f"### Where HGPrompt does not win ({protocol})\n\n{_verdict(means, labels)}",
    ]
    if not paired.empty:
        _write_csv(paired, output / f"paired{suffix}.csv")
        parts.append(
            f"### HGPrompt against each baseline ({protocol}): paired over (target, seed)\n\n"
            "The mean difference in test top-1 points with its 95% CI, the paired t-test's and the Wilcoxon "
            "signed-rank test's p over all pairs, and per target a win or a loss when that target's paired "
            "t-test over seeds has p < 0.05 (a tie otherwise, also with fewer than 2 seeds).\n\n"
            + markdown(paired, ".3g")
        )
    if not informative.empty:
        _write_csv(informative, output / f"informative{suffix}.csv")
        parts.append(
            f"### Do the weightings differ on each target? ({protocol})\n\n"
            "Spread of the weightings' mean test top-1 and a one-way ANOVA across them over seeds: a target "
            "separates weightings only where p is small (< 0.01 with >= 5 seeds).\n\n" + markdown(informative, ".3g")
        )
    if not ablation.isna().all().all() and (ablation != "-").any().any():
        parts.append(f"### Ablation ({protocol}; test top-1 %)\n\nThe four objectives on the same sources: the subset "
                     "that the HGPrompt search's best trial chose, weighted uniformly, by argmax H, by argmin L_align "
                     f"and by the search's alpha; only the objective differs between rows.\n\n{markdown(ablation)}")  # fmt: skip
    return "\n\n".join(parts), display


def write_report(output: Path, state: Mapping[str, Any]) -> tuple[Path, pd.DataFrame]:
    """Rebuild every table, plot and ``report.md`` of an evaluation folder from its files.

    Args:
        output: the evaluation folder (``runs/``, ``weights/``, ``evaluate.json``).
        state: the ``evaluate.json`` record (command, library, budget, targets, seeds, wall time).

    Returns:
        The report's path and the main table as displayed (``tuned`` when it has runs, else
        ``init-probe``).
    """
    from string import Template

    budget = state["budget"]
    settings = budget.get("method_settings", {})
    labels = {m.name: m.display_label(settings.get(m.name)) for m in registered()}
    frame = load_results(output)
    # the weights on the plan's own split draw (``<target>~split<k>``: an init-probe seed's draw)
    weights = {p.stem: json.loads(p.read_text()) for p in sorted((output / "weights").glob("*.json"))
               if "~split" not in p.stem}  # fmt: skip
    _write_csv(results_table(frame), output / "results.csv", index=False)
    _write_csv(frame, output / "runs.csv", index=False)
    protocols = [p for p in PROTOCOL_ORDER if not _protocol_runs(frame, p).empty] or ["tuned"]
    protocol_parts, displays = [], {}
    for protocol in protocols:
        text, displays[protocol] = _protocol_section(output, frame, protocol, labels)
        protocol_parts.append(text)
    display = displays[protocols[0]]
    zero_shot = pd.DataFrame(
        [{"source": s, "target": t, "val_accuracy": e.get("zero_shot_val", {}).get(s, np.nan), "test_accuracy": a}
         for t, e in weights.items() for s, a in e["zero_shot"].items()]  # fmt: skip
    )
    weightings = [m.name for m in registered() if m.weights is not None]
    spearman_column = "val_accuracy" if not zero_shot.empty and zero_shot["val_accuracy"].notna().all() else "test_accuracy"
    spearman, spearman_long = (spearman_table(weights, zero_shot, weightings, labels, spearman_column)
                               if not zero_shot.empty else (pd.DataFrame(), pd.DataFrame()))  # fmt: skip
    _write_csv(spearman, output / "spearman.csv")
    _write_csv(spearman_long, output / "spearman_ci.csv", index=False)
    sections = []
    names = state.get("target_names", [])
    if names:
        sections.append(_learning_section(output, names[0], labels))
    scaling_methods = [m.name for m in registered() if m.scaling]
    for protocol in protocols:
        runs = frame[frame["target"].isin(state.get("scaling_target_names", []))]
        runs = runs[runs["protocol"].fillna("tuned") == protocol]
        if runs.empty or runs["scale"].nunique() < 2:
            continue
        suffix = _suffix(protocol)
        summary = write_scaling_plot(runs[runs["seed"] < state["scaling_seeds"]], scaling_methods,
                                     output / f"scaling{suffix}.png", lambda m: labels[m])  # fmt: skip
        _write_csv(summary, output / f"scaling{suffix}.csv", index=False)
        table = summary.pivot_table(index="scale", columns="method", values="mean")
        table.columns = [labels[m] for m in table.columns]
        sections.append(f"## Scaling with the number of sources ({protocol})\n\n![scaling](scaling{suffix}.png)\n\n"
                        "Test top-1 (fraction, mean over seeds; the plot's bars are 95% CIs) per number of sources "
                        "(subsets: a seeded random order of the sources, first n; every method over the same "
                        "subset):\n\n" + markdown(table))  # fmt: skip
    for name, entry in weights.items():
        write_weights_plot(entry, weightings, output / f"weights_{name}.png", f"source weights, target {name}",
                           lambda m: labels[m])  # fmt: skip
    if (output / "tsne.png").is_file():
        shown = " and ".join(labels[m.name] for m in registered() if m.tsne)
        sections.append("## t-SNE of target test features\n\n![t-SNE](tsne.png)\n\n"
                        f"Test features of the first target under the tuned prompts (seed 0) of {shown}, "
                        "coloured by class.")  # fmt: skip
    spearman_text = "(no zero-shot column)"
    if not spearman_long.empty:
        spearman_text = markdown(_spearman_display(spearman_long, labels))
        if not spearman.empty:
            spearman_text += "\n\nMean rho over targets: " + ", ".join(
                f"{c} {v:.2f}" for c, v in spearman.loc["Average"].items() if np.isfinite(v)
            )
    text = Template(TEMPLATE.read_text()).substitute(
        command=state["command"],
        library=state["library"],
        backbone=state["backbone"],
        img_size=state["img_size"],
        targets=", ".join(state["target_names"]),
        seeds=state["seeds"],
        protocols=", ".join(protocols),
        minutes=f"{state.get('seconds', float('nan')) / 60:.1f}",
        lr_scales=", ".join(f"{s:g}" for s in budget.get("lr_scales", [1.0])),
        max_steps="" if budget.get("max_steps") is None else f" (capped at {budget['max_steps']} steps per fit)",
        methods="\n".join(f"- **{labels[m.name]}** ({m.kind.value}; trains {m.trains_text}): {m.paper}."
                          for m in registered() if m.name in set(frame["method"])),  # fmt: skip
        protocol_sections="\n\n".join(protocol_parts),
        spearman_truth="val200" if spearman_column == "val_accuracy" else "test",
        spearman_table=spearman_text,
        sections="\n".join("\n" + s + "\n" for s in sections if s),
        **{k: budget.get(k, "?") for k in ("epochs", "batch_size", "base_lr", "warmup_fraction", "max_test",
                                           "precision", "search_trials", "samples", "gradient_samples", "spot_steps")},
    )  # fmt: skip
    text = text.replace("\n\n\n", "\n\n")  # an empty section leaves no gap
    with atomic_path(output / "report.md") as tmp:
        Path(tmp).write_text(text)
    return output / "report.md", display
