"""The evaluation report's tables, computed from finished runs (``runs/**/*.json``) and weights:
the main table per protocol, the ablation, HGPrompt against each baseline (paired), whether the
weightings differ per target, Spearman's rho of the weights, VPT's learning curves, and Markdown.
Nothing here needs a model; :mod:`hgprompt_ray.transfer.report` writes them into a report folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hgprompt_ray.transfer.methods import get_method, method_names, registered
from hgprompt_ray.transfer.multiple_testing import holm
from hgprompt_ray.transfer.statistics import mean_ci, paired_differences, win_tie_loss
from hgprompt_ray.transfer.target_statistics import blocked_anova, one_way_anova, spearman_ci

__all__ = [
    "FIXED_DRAW",
    "INFORMATIVE",
    "RESULT_COLUMNS",
    "ablation_table",
    "baselines_beating",
    "informative_table",
    "label_of",
    "learning_curves",
    "load_results",
    "main_table",
    "markdown",
    "paired_table",
    "protocol_runs",
    "resampling_overlap",
    "results_table",
    "spearman_display",
    "spearman_table",
    "spread_reaches_bar",
]

logger = logging.getLogger(__name__)
RESULT_COLUMNS = ("target", "method", "protocol", "seed", "test_accuracy", "val_accuracy", "wall_seconds")
FIXED_DRAW = -1
PROBE_TRAIN_IMAGES = 1000
"""train800val200: what init-probe's probe and weights are fitted on (n_train of the correction)."""
"""The ``draw`` of a run on a task with fixed splits (else its ``split_seed``): one draw for every seed."""
"""The columns of ``results.csv`` (one row per main run)."""
INFORMATIVE = {"zero_shot_spread": 5.0, "p": 0.01, "seeds": 5}
"""An informative target (the evaluation issue's bar): its sources' zero-shot test accuracies
spread by >= 5 points, and the init-probe weightings differ beyond seed noise (one-way ANOVA
p < 0.01 over >= 5 seeds). Other targets are saturated for this purpose and marked in the tables."""
SPREAD_TOLERANCE = 1e-9
"""Points of float rounding that :func:`spread_reaches_bar` forgives: accuracies are counts over a
test set, and an exact 5-point spread can come out as 4.999999999999993 (0.968 - 0.918)."""
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
                "draw": int(record.get("split_seed", 0)) if record.get("split_seeded", True) else FIXED_DRAW,
                "num_test": record.get("num_test", np.nan),
                "key": record["key"],
            }
        )
    columns = ["target", "method", "protocol", "seed", "scale", "main", "num_sources", "test_accuracy", "val_accuracy",
               "lr_scale", "epochs", "trainable_parameters", "closed_form", "wall_seconds", "precision", "draw",
               "num_test", "key"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``results.csv``: the main runs with :data:`RESULT_COLUMNS`."""
    main = frame[frame["main"]] if "main" in frame else frame
    return main.loc[:, list(RESULT_COLUMNS)].sort_values(["target", "method", "protocol", "seed"]).reset_index(drop=True)


def _cell(values: pd.Series, overlap: float = 0.0) -> str:
    """``mean ± h`` in %, h the half-width of the 95% Student-t interval over the seeds (corrected
    for overlapping draws, :func:`resampling_overlap`)."""
    if values.empty:
        return "-"
    mean, half = mean_ci(values.to_numpy(dtype=float), overlap=overlap)
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


def label_of(method: str, labels: Mapping[str, str] | None) -> str:
    """The method's table label: from ``labels`` (settings filled in), else the registry's."""
    return (labels or {}).get(method) or get_method(method).label


def protocol_runs(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The main runs of one protocol (runs before the protocol column count as ``tuned``).

    Under ``init-probe`` the replicate is the split draw, not the seed: the probe is deterministic,
    so on a task with fixed splits (VTAB's official ones) every seed repeats one draw. Runs of one
    (target, method, draw) become one row (accuracies averaged: SPoT's seeded prompt is the only
    thing that varies; the seed kept is the draw's first), so the CIs, paired tests and ANOVA count
    draws, and such a target has one replicate.
    """
    main = frame[frame["main"]]
    if "protocol" in main:
        main = main[main["protocol"].fillna("tuned") == protocol]
    if protocol == "init-probe" and "draw" in main and not main.empty:
        main = _one_row_per_draw(main)
    return main


def resampling_overlap(runs: pd.DataFrame) -> float:
    """n_test / n_train of the runs' overlapping split draws, for Nadeau and Bengio's corrected t
    (:mod:`hgprompt_ray.transfer.statistics`): init-probe runs whose draws are resampled from one
    pool (``draw`` >= 0, more than one per target) share about half their train800val200 images
    (n_train = :data:`PROBE_TRAIN_IMAGES`); n_test is their median ``num_test``. 0 otherwise: the
    tuned protocol's seeds train on one fixed draw, so its tests are over training seeds."""
    if runs.empty or not {"draw", "num_test", "protocol"} <= set(runs.columns):
        return 0.0
    pooled = runs[(runs["protocol"] == "init-probe") & (runs["draw"] >= 0)]
    if pooled.empty or pooled.groupby("target")["draw"].nunique().max() < 2:
        return 0.0
    tested = pooled["num_test"].dropna()
    return float(tested.median()) / PROBE_TRAIN_IMAGES if not tested.empty else 0.0


def _one_row_per_draw(runs: pd.DataFrame) -> pd.DataFrame:
    keys = ["target", "method", "draw"]
    averaged = {"test_accuracy", "val_accuracy", "wall_seconds"}
    rules = {c: ("mean" if c in averaged else "first") for c in runs.columns if c not in keys}
    rules["seed"] = "min"
    ordered = runs.sort_values([*keys, "seed"], kind="stable")
    return ordered.groupby(keys, as_index=False, sort=False).agg(rules).loc[:, list(runs.columns)]


def _fit_text(method: Any, protocol: str) -> str:
    if protocol == "init-probe":
        return "probe on the bare backbone" if method.closed_form else "probe on P0's features"
    return "closed form" if method.closed_form else "epoch budget"


def main_table(
    frame: pd.DataFrame,
    labels: Mapping[str, str] | None = None,
    protocol: str = "tuned",
    order: Sequence[str] = (),
    marked: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, numeric means): one row per method in the registry's order (VPT's layout),
    over the main runs of ``protocol``.

    Columns: kind, what trains, trainable parameters (mean over runs), how it is fitted, each
    target's test top-1 "mean ± h" in % (h: the 95% CI half-width over seeds), the average over
    targets (the mean of per-target means; "-" when the method is missing on a target) and the
    wall time per run. The numeric means have targets as rows and method names as columns.
    Targets come in ``order`` first (the informative ones), then the rest sorted; a target in
    ``marked`` (not informative) is shown as "<target> †".
    """
    main = protocol_runs(frame, protocol)
    found = set(main["target"].unique())
    targets = [t for t in order if t in found] + sorted(found - set(order))
    present = [m for m in method_names() if m in set(main["method"])]
    rows, overlap = {}, resampling_overlap(main)
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
            row[f"{target} †" if target in marked else target] = _cell(values, overlap)
            means.loc[target, name] = values.mean() if not values.empty else np.nan
        column = means[name]
        row["Average"] = "-" if column.isna().any() else f"{100 * column.mean():.1f}"
        row["Wall s/run"] = f"{runs['wall_seconds'].mean():.0f}"
        rows[label_of(name, labels)] = row
    display = pd.DataFrame.from_dict(rows, orient="index", dtype=object)
    display.index.name = "method"
    return display, means


def ablation_table(frame: pd.DataFrame, protocol: str = "tuned") -> pd.DataFrame:
    """Rows: the registry's ablation rows; columns: targets and their average (mean ± 95% CI
    half-width in %), over the main runs of ``protocol``."""
    main = protocol_runs(frame, protocol)
    targets = sorted(main["target"].unique())
    rows = [(m.ablation_row, m.name) for m in registered() if m.ablation_row]
    overlap = resampling_overlap(main)
    table = pd.DataFrame(index=[label for label, _ in rows], columns=[*targets, "Average"], dtype=object)
    for label, method in rows:
        means = []
        for target in targets:
            values = main[(main["target"] == target) & (main["method"] == method)]["test_accuracy"]
            table.loc[label, target] = _cell(values, overlap)
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
            row[label_of(method, labels)] = rho
            long.append({"target": target, "method": method, "rho": rho, "ci_low": low, "ci_high": high})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("target") if rows else pd.DataFrame()
    if not table.empty:
        table.loc["Average"] = table.mean(numeric_only=True)
    return table, pd.DataFrame(long, columns=["target", "method", "rho", "ci_low", "ci_high"])


def spearman_display(long: pd.DataFrame, labels: Mapping[str, str] | None) -> pd.DataFrame:
    """Cells ``rho [low, high]`` (targets x method labels)."""
    if long.empty:
        return pd.DataFrame()
    cells = long.assign(
        cell=[
            "-" if np.isnan(r) else f"{r:.2f} [{lo:.2f}, {hi:.2f}]"
            for r, lo, hi in zip(long["rho"], long["ci_low"], long["ci_high"])
        ],
        label=[label_of(m, labels) for m in long["method"]],
    )
    table = cells.pivot(index="target", columns="label", values="cell")
    order = [label_of(m, labels) for m in dict.fromkeys(long["method"])]
    return table.loc[:, order]


def paired_table(frame: pd.DataFrame, protocol: str, labels: Mapping[str, str] | None = None,
                 method: str = "hgprompt") -> pd.DataFrame:  # fmt: skip
    """HGPrompt minus each baseline over the (target, seed) pairs of ``protocol``'s main runs:
    the mean difference in points with its 95% CI, the paired t-test's and Wilcoxon's p, and the
    per-target win/tie/loss counts (a win or loss needs a paired t-test p < 0.05 on that target)."""
    runs = protocol_runs(frame, protocol)
    if method not in set(runs["method"]):
        return pd.DataFrame()
    baselines = [m for m in method_names() if m in set(runs["method"]) and m != method]
    if not baselines:
        return pd.DataFrame()
    overlap = resampling_overlap(runs)  # init-probe's overlapping draws: Nadeau-Bengio's corrected t
    paired = paired_differences(runs, method=method, baselines=baselines, protocol=protocol, overlap=overlap)
    summary, _ = win_tie_loss(runs, method=method, baselines=baselines, protocol=protocol, overlap=overlap)
    merged = paired.merge(summary, on="baseline", how="left", suffixes=("", "_wtl"))
    table = pd.DataFrame(
        {
            "pairs": merged["pairs"].astype(int),
            "HGPrompt - baseline (points)": [
                "-" if np.isnan(d) else f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                for d, lo, hi in zip(merged["mean_difference"], merged["ci_low"], merged["ci_high"])
            ],
            "p (paired t)": merged["p_t"],
            "p (t, Holm)": holm(merged["p_t"].to_numpy(dtype=float)),  # the family: this table's baselines
            "p (Wilcoxon)": merged["p_wilcoxon"],
            "win / tie / loss (targets)": [
                f"{int(w)} / {int(t)} / {int(lo)}" for w, t, lo in zip(merged["wins"], merged["ties"], merged["losses"])
            ],
        }
    )
    table.index = [label_of(b, labels) for b in merged["baseline"]]
    table.index.name = "baseline"
    return table


def informative_table(
    frame: pd.DataFrame,
    protocol: str,
    labels: Mapping[str, str] | None = None,
    zero_shot_spread: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Per target, whether the weightings differ beyond seed noise: the spread of their mean test
    accuracy (points), the best and worst weighting, a one-way ANOVA across them (the verdict's
    test, as :data:`INFORMATIVE` defines it) and the blocked ANOVA's p beside it, the sources'
    zero-shot spread (points, when given) and whether the target is informative (:data:`INFORMATIVE`).
    Rows: the informative targets first, then by p."""
    runs = protocol_runs(frame, protocol)
    weightings = {m.name for m in registered(kind="weighting")}
    runs = runs[runs["method"].isin(weightings)]
    rows = []
    for target in sorted(runs["target"].unique()):
        part = runs[runs["target"] == target]
        means = part.groupby("method")["test_accuracy"].mean()
        f_statistic, p_value = one_way_anova(part, target, protocol)
        blocked_p = blocked_anova(part, target, protocol)[1]
        rows.append({
            "target": target,
            "weightings": int(len(means)),
            "seeds": int(part.groupby("method").size().min()),
            "spread (points)": 100 * float(means.max() - means.min()),
            "best": label_of(str(means.idxmax()), labels),
            "worst": label_of(str(means.idxmin()), labels),
            "F": f_statistic,
            "p (ANOVA)": p_value,
            "p (blocked on seed)": blocked_p,
            "zero-shot spread (points)": (zero_shot_spread or {}).get(target, np.nan),
        })  # fmt: skip
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).set_index("target")
    noise = {t: runs[runs["target"] == t].groupby("method")["test_accuracy"].std().fillna(0).max() for t in table.index}
    table["verdict"] = [_verdict_of(row, noise[t], protocol) for t, row in table.iterrows()]
    table["informative"] = table["verdict"] == "informative"
    table["_p"] = table["p (ANOVA)"].fillna(np.inf)
    return table.sort_values(["informative", "_p"], ascending=[False, True], kind="stable").drop(columns="_p")


def spread_reaches_bar(points: float) -> bool:
    """Whether a zero-shot spread (points) reaches :data:`INFORMATIVE`'s bar, up to rounding: the one
    comparison the screen, the leave-one-out's order and the report's verdict share."""
    return bool(points >= INFORMATIVE["zero_shot_spread"] - SPREAD_TOLERANCE)


def _verdict_of(row: pd.Series, seed_noise: float, protocol: str) -> str:
    """Why a target is or is not informative (:data:`INFORMATIVE`), in words."""
    if row["seeds"] < INFORMATIVE["seeds"]:
        what = "distinct split draws" if protocol == "init-probe" else "training seeds on one split"
        return f"undetermined: {row['seeds']} < {INFORMATIVE['seeds']} seeds ({what})"
    if seed_noise == 0:  # a task with fixed splits: every seed repeats one draw, the ANOVA is degenerate
        return "undetermined: the seeds agree exactly (one split draw)"
    spread = row["zero-shot spread (points)"]
    if not np.isfinite(spread):
        return "undetermined: no zero-shot column"
    if not spread_reaches_bar(spread):
        return f"saturated: zero-shot spread {spread:.1f} < {INFORMATIVE['zero_shot_spread']:g} points"
    if not row["p (ANOVA)"] < INFORMATIVE["p"]:
        return f"weightings within seed noise: p = {row['p (ANOVA)']:.2g}"
    return "informative"


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
