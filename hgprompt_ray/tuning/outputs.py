"""What a finished search writes and shows: the best trial, the trial table, plots, a summary.

``best.json`` is the search's answer: the best trial's settings and its weights (an
:class:`EnsembleWeights`, stored as ``{"alpha": {prompt: weight}}``), written atomically like
every other file here. ``alpha.png`` shows the weights, ``search_curve.png`` the metric per
trial with the best so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from search_spaces.hgprompt import ALPHA_PREFIX, VAL_H, VAL_PROBE

__all__ = ["best_trial", "summary_lines", "write_outputs"]


def best_trial(frame: pd.DataFrame, prompts: Sequence[str], metric: str, target: str) -> dict[str, Any]:
    """The best row of the trial table as the ``best.json`` record (weights under ``alpha``)."""
    row = frame.loc[frame[metric].idxmax()]
    weights = EnsembleWeights.from_metrics(row, prompts, ALPHA_PREFIX)
    scores = {m: float(row[m]) for m in (VAL_PROBE, VAL_H) if m in row and pd.notna(row[m])}
    return {
        "target": target,
        metric: float(row[metric]),
        **scores,
        "lambda": float(row["lambda"]),
        "num_prompts": int(row["num_prompts"]),
        "subset": str(row["subset"]).split(","),
        "alpha": weights.to_json(),
        "objective": float(row["objective"]),
        "h_score": float(row["h_score"]),
        "alignment": float(row["alignment"]),
        "trial": int(row["trial"]),
        "trial_id": str(row["trial_id"]),
        "trials": int(len(frame)),
    }


def write_outputs(output: Path, frame: pd.DataFrame, best: dict[str, Any], metric: str) -> list[str]:
    """Write the trial table (Parquet + CSV), ``best.json`` and the plots; returns the file names."""
    with atomic_path(output / "trials.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(output / "trials.csv") as tmp:
        frame.to_csv(tmp, index=False)
    atomic_write_json(output / "best.json", best)
    _write_plots(frame, best, output, metric)
    return ["best.json", "trials.parquet", "trials.csv", "alpha.png", "search_curve.png"]


def _write_plots(frame: pd.DataFrame, best: dict[str, Any], output: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompts = list(best["alpha"])
    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(prompts) + 2), 3.6))
    weights = [best["alpha"][p] for p in prompts]
    axis.bar(range(len(prompts)), weights, color=["tab:blue" if w > 0 else "lightgrey" for w in weights])
    axis.set_xticks(range(len(prompts)), prompts, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("alpha")
    axis.set_title(
        f"best ensemble for {best['target']}: lambda={best['lambda']:.3g}, M={best['num_prompts']}, "
        f"{metric}={best[metric]:.3f}",
        fontsize=9,
    )
    figure.tight_layout()
    with atomic_path(output / "alpha.png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.scatter(frame["trial"], frame[metric], s=14, label="trial", color="tab:grey")
    axis.plot(frame["trial"], frame[metric].cummax(), color="tab:red", label="best so far")
    axis.set_xlabel("trial (creation order)")
    axis.set_ylabel(f"{metric} (val200)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(output / "search_curve.png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def summary_lines(best: dict[str, Any], metric: str, seconds: float) -> list[str]:
    """The final table a person reads: the best trial and its non-zero weights, largest first."""
    alpha = best["alpha"]
    lines = [
        f"Best ensemble for {best['target']} after {best['trials']} trials ({seconds:.0f} s)",
        f"  {metric} {best[metric]:.4f} | lambda {best['lambda']:.4g} | M {best['num_prompts']} | "
        f"train H {best['h_score']:.4f} | L_align {best['alignment']:.4f}",
        f"  {'prompt':<24}{'alpha':>8}",
    ]
    lines += [f"  {p:<24}{alpha[p]:>8.3f}" for p in sorted(alpha, key=lambda p: -alpha[p]) if alpha[p] > 0]
    return lines
