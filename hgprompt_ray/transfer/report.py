"""The evaluation report: tables (Markdown + CSV), Spearman correlations and PNG plots.

Everything here reads finished results (``runs/**/*.json``, weights, the zero-shot matrix) and
computes nothing that needs a model, so a report can be rebuilt at any time from the folder. The
methods, their labels, their order, the ablation rows and the scaling curve's lines come from the
registry (``hgprompt_ray.transfer.methods``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.transfer.methods import registered
from hgprompt_ray.transfer.plots import (
    write_learning_curve_plot,
    write_scaling_plot,
    write_tsne_plot,
    write_weights_plot,
)
from hgprompt_ray.transfer.tables import (
    INFORMATIVE,
    RESULT_COLUMNS,
    ablation_table,
    baselines_beating,
    informative_table,
    label_of,
    learning_curves,
    load_results,
    main_table,
    markdown,
    paired_table,
    protocol_runs,
    resampling_overlap,
    results_table,
    spearman_display,
    spearman_table,
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
TEMPLATE = Path(__file__).with_name("templates") / "report.md"
PROTOCOL_ORDER = ("tuned", "init-probe")
"""The report's protocol sections, in this order."""


def _write_csv(table: pd.DataFrame, path: Path, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)


def _verdict(means: pd.DataFrame, labels: Mapping[str, str]) -> str:
    losses = baselines_beating(means)
    if not losses:
        return "HGPrompt has the best mean on every target of this report."
    lines = [f"- {t}: {label_of(m, labels)} {100 * o:.1f} vs HGPrompt {100 * h:.1f}" for t, m, o, h in losses]
    return "HGPrompt does **not** beat these baselines (mean over seeds, test top-1 %):\n\n" + "\n".join(lines)


def _learning_section(output: Path, target: str, labels: Mapping[str, str]) -> str:
    curves = learning_curves(output, target, "vpt")
    if curves.empty:
        return ""
    write_learning_curve_plot(curves, output / "learning_curve.png", f"{label_of('vpt', labels)} on {target}")
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


def _overlap_text(runs: pd.DataFrame) -> str:
    overlap = resampling_overlap(runs)
    if not overlap:
        return ""
    return (f" The seeds are split draws of one pool that overlap, so the CIs and t-tests are Nadeau and Bengio's "
            f"corrected resampled t (variance x (1/n + n_test/n_train), n_test/n_train = {overlap:.2f}); the "
            "Wilcoxon test has no such correction: its p is left out (nan).")  # fmt: skip


def _half_width_text(runs: pd.DataFrame) -> str:
    """The main table's note on its half-widths where the seeds are overlapping draws (else nothing)."""
    overlap = resampling_overlap(runs)
    if not overlap:
        return ""
    return (" The seeds are overlapping split draws of one pool, so each half-width is Nadeau and Bengio's "
            f"corrected one, t x sd x sqrt(1/n + n_test/n_train) with n_test/n_train = {overlap:.2f} (at 5 seeds "
            f"{((1 / 5 + overlap) * 5) ** 0.5:.2f} times the plain Student-t half-width).")  # fmt: skip


def _suffix(protocol: str) -> str:
    return "" if protocol == "tuned" else f"_{protocol}"


def _informative(frame: pd.DataFrame, protocols: list[str], spread: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """(informative targets, the others) by the init-probe runs (the issue's definition), or by the
    tuned ones when there are no init-probe runs; both empty without weightings."""
    protocol = "init-probe" if "init-probe" in protocols else protocols[0]
    table = informative_table(frame, protocol, None, spread)
    if table.empty:
        return [], []
    chosen = list(table.index[table["informative"]])
    return chosen, sorted(set(frame[frame["main"]]["target"]) - set(chosen))  # with no verdict: marked too


def _protocol_section(
    output: Path,
    frame: pd.DataFrame,
    protocol: str,
    labels: Mapping[str, str],
    spread: Mapping[str, float],
    informative_targets: tuple[list[str], list[str]],
) -> tuple[str, pd.DataFrame]:
    """One protocol's tables (written as CSV too) as Markdown, and its main table as displayed."""
    suffix = _suffix(protocol)
    chosen, others = informative_targets
    display, means = main_table(frame, labels, protocol, order=chosen, marked=others)
    _write_csv(display, output / f"main_table{suffix}.csv")
    ablation = ablation_table(frame, protocol)
    _write_csv(ablation, output / f"ablation{suffix}.csv")
    paired = paired_table(frame, protocol, labels)
    informative = informative_table(frame, protocol, labels, spread)
    mark = ""
    if others:
        mark = ("\n\nInformative targets first; † marks a target not shown to be informative (its verdict is in "
                "the table \"Do the weightings differ on each target?\" of the init-probe protocol, or of tuned "
                f"without init-probe runs: the sources' zero-shot test spread >= {INFORMATIVE['zero_shot_spread']:g} "
                f"points and ANOVA p < {INFORMATIVE['p']:g} over >= {INFORMATIVE['seeds']} seeds make a target "
                "informative).")  # fmt: skip
    parts = [
        f"## Main table, {protocol} (test top-1 %, mean ± 95% CI half-width over seeds; trainable "
        f"parameters; wall time per run)\n\nProtocol: {_PROTOCOL_TEXT[protocol]}."
        f"{_half_width_text(protocol_runs(frame, protocol))}{mark}\n\n{markdown(display)}",
        f"### Where HGPrompt does not win ({protocol})\n\n{_verdict(means, labels)}",
    ]
    if not paired.empty:
        _write_csv(paired, output / f"paired{suffix}.csv")
        parts.append(
            f"### HGPrompt against each baseline ({protocol}): paired over (target, seed)\n\n"
            "The mean difference in test top-1 points with its 95% CI, the paired t-test's p (and Holm's "
            "adjustment of it for the number of baselines in this table: a 'significant' difference among a "
            "dozen baselines needs p (t, Holm) < 0.05), the Wilcoxon signed-rank test's p over all pairs, and per target a win or a loss when that target's paired "
            "t-test over seeds has p < 0.05 (a tie otherwise, also with fewer than 2 seeds)."
            + _overlap_text(protocol_runs(frame, protocol)) + "\n\n" + markdown(paired, ".3g")
        )
    parts.extend(_informative_pairs(output, frame, protocol, labels, chosen, others))
    if not informative.empty:
        _write_csv(informative, output / f"informative{suffix}.csv")
        parts.append(
            f"### Do the weightings differ on each target? ({protocol})\n\n"
            "Spread of the weightings' mean test top-1 and a one-way ANOVA across them over seeds, and the "
            "spread of the sources' zero-shot test accuracies: a target is informative when both spreads are "
            f"real (zero-shot >= {INFORMATIVE['zero_shot_spread']:g} points, p < {INFORMATIVE['p']:g} with "
            f">= {INFORMATIVE['seeds']} seeds). The one-way test ignores that all weightings of a seed share "
            "its split draw (init-probe) or training seed (tuned); \"p (blocked on seed)\" is the "
            "randomized-block ANOVA that removes each seed's common shift, over the seeds every weighting "
            "ran (shown beside it; the verdict uses the one-way p).\n\n" + markdown(informative, ".3g")
        )
    if not ablation.isna().all().all() and (ablation != "-").any().any():
        parts.append(f"### Ablation ({protocol}; test top-1 %)\n\nThe four objectives on the same sources: the subset "
                     "that the HGPrompt search's best trial chose, weighted uniformly, by argmax H, by argmin L_align "
                     f"and by the search's alpha; only the objective differs between rows.\n\n{markdown(ablation)}")  # fmt: skip
    return "\n\n".join(parts), display


def _informative_pairs(
    output: Path, frame: pd.DataFrame, protocol: str, labels: Mapping[str, str], chosen: list[str], others: list[str]
) -> list[str]:
    """The paired table again over the informative targets alone (``paired_informative<suffix>.csv``),
    when some targets are informative and some are not: the product's claim is about targets where the
    choice of ensemble matters, and the pooled table dilutes them with targets where no weighting differs.
    [] (and no CSV: an earlier report's would mislead) otherwise."""
    path = output / f"paired_informative{_suffix(protocol)}.csv"
    table = paired_table(frame[frame["target"].isin(chosen)], protocol, labels) if chosen and others else pd.DataFrame()
    if table.empty:
        path.unlink(missing_ok=True)
        return []
    _write_csv(table, path)
    return [
        f"### HGPrompt against each baseline on the informative targets only ({protocol})\n\n"
        f"The table above over the {len(chosen)} informative targets ({', '.join(chosen)}) alone, the same tests, "
        "the same correction for overlapping draws and the same Holm family. A target is informative when its weightings differ beyond seed noise, "
        "HGPrompt's among them, whichever is ahead: the selection looks at the spread, not at the sign of "
        "any difference.\n\n" + markdown(table, ".3g")
    ]  # fmt: skip


def _screen_section(output: Path, state: Mapping[str, Any], frame: pd.DataFrame, spread: Mapping[str, float]) -> str:
    """The library's zero-shot screen (``transfer.screening``) of every target its matrix
    (``<library>/zero_shot/zero_shot.parquet`` and the ``parts/`` of a run still going, the library
    path as recorded, from the working directory) or this evaluation's own columns
    (``zero_shot.evaluation_columns``, for the pairs the matrix lacks) cover, with each target's
    init-probe verdict where it has runs; "" (and no ``screen.csv``) without a matrix or a readable
    manifest. Only the manifest is read: a damaged prompt file does not stop a report."""
    from hgprompt_ray.prompts import PromptLibrary
    from hgprompt_ray.transfer.screening import SCREEN_TEXT, zero_shot_screen
    from hgprompt_ray.transfer.zero_shot import evaluation_columns, matrix_files, read_matrix

    folder = Path(str(state.get("library") or "")).expanduser() / "zero_shot"
    screen, own = pd.DataFrame(), []
    if state.get("library") and matrix_files(folder / "zero_shot.parquet"):
        try:
            records = PromptLibrary(folder.parent).records()
        except (OSError, ValueError) as error:  # the library's own errors say what is wrong
            logger.warning("no zero-shot screen: the library %s cannot be read (%s)", folder.parent, error)
            records = []
        if records:
            checksums = {r.name: r.sha256 for r in records}
            extra = evaluation_columns(output)
            rows = read_matrix(folder / "zero_shot.parquet", checksums, extra=extra)
            own = sorted(set(rows.loc[rows["file"].isin([str(f) for f in extra]), "target"]))
            screen = zero_shot_screen(rows, {r.name: r.source_task for r in records})
    if screen.empty:
        (output / "screen.csv").unlink(missing_ok=True)  # a screen of an earlier report would mislead
        return ""
    verdicts = informative_table(frame, "init-probe", None, spread)
    known = {} if verdicts.empty else verdicts["verdict"].to_dict()
    screen["init-probe verdict"] = [known.get(t, "no init-probe runs yet") for t in screen.index]
    _write_csv(screen, output / "screen.csv")
    return (f"## Which targets can separate weightings: the zero-shot screen of `{state['library']}`\n\n"
            f"{SCREEN_TEXT} The last column is the target's verdict in the init-probe table above, where it "
            f"has runs.{_own_text(own)}\n\n{markdown(screen, '.1f')}")  # fmt: skip


def _own_text(targets: list[str]) -> str:
    if not targets:
        return ""
    return (f" The rows of {', '.join(targets)} (targets or draws the library's matrix lacks) come from this "
            "evaluation's own zero-shot columns, `zero_shot/` here.")


def _chunks_text(state: Mapping[str, Any]) -> str:
    """Every invocation that filled the folder (a chunk of targets each), with its wall time."""
    chunks = state.get("chunks") or [{"command": state["command"], "seconds": state.get("seconds")}]
    if len(chunks) == 1:
        return f"    {chunks[0]['command']}"
    lines = []
    for chunk in chunks:
        seconds = chunk.get("seconds")
        ended = (f" until its time limit ({chunk['stopped']})" if chunk.get("stopped")
                 else " until it was interrupted" if chunk.get("finished") is False else "")  # fmt: skip
        took = "did not finish" if seconds is None else f"{seconds / 60:.1f} min{ended}"
        protocols = f" ({', '.join(chunk['protocols'])})" if chunk.get("protocols") else ""
        machine = f" on {chunk['machine']}" if chunk.get("machine") else ""
        lines.append(f"    {chunk['command']}\n      # {', '.join(chunk.get('target_names') or [])}{protocols}: "
                     f"{took}{machine}")  # fmt: skip
    return "Chunks, one invocation each (the same budget and library; a repeated target resumes):\n\n" + "\n".join(lines)


def _targets_text(planned: list[str], done: set[str]) -> str:
    """The targets with results, then those a chunk planned that have none yet (a long evaluation
    in progress, or one cut short)."""
    waiting = [t for t in planned if t not in done]
    have = [t for t in planned if t in done] + sorted(done - set(planned))
    if not waiting:
        return ", ".join(have)
    return (f"with results: {', '.join(have) or 'none yet'}; planned, no results yet: "
            f"{', '.join(waiting)}")  # fmt: skip


def _wall_text(state: Mapping[str, Any], frame: pd.DataFrame) -> str:
    """The evaluation's wall time. An interrupted invocation (resumed later) records its time up to
    its last saved step (``finished: false``), or none if it was written before those checkpoints:
    then the runs' own sum is given."""
    chunks = state.get("chunks", [])
    if any(c.get("seconds") is None for c in chunks) or state.get("seconds") is None:
        runs = frame["wall_seconds"].sum() if "wall_seconds" in frame else float("nan")
        return f"not recorded (an invocation was interrupted); the runs took {runs / 60:.1f} min together"
    cut = sum(1 for c in chunks if c.get("finished") is False and not c.get("stopped"))
    return f"{state['seconds'] / 60:.1f} min in all" + (
        f" ({cut} invocation{'s' if cut > 1 else ''} interrupted: counted up to the last result saved)" if cut else "")


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
    protocols = [p for p in PROTOCOL_ORDER if not protocol_runs(frame, p).empty] or ["tuned"]
    zero_shot = pd.DataFrame(
        [{"source": s, "target": t, "val_accuracy": e.get("zero_shot_val", {}).get(s, np.nan), "test_accuracy": a}
         for t, e in weights.items() for s, a in e["zero_shot"].items()]  # fmt: skip
    )
    spread = {} if zero_shot.empty else (100 * zero_shot.groupby("target")["test_accuracy"].agg(lambda v: v.max() - v.min())).to_dict()
    targets = _informative(frame, protocols, spread)
    protocol_parts, displays = [], {}
    for protocol in protocols:
        text, displays[protocol] = _protocol_section(output, frame, protocol, labels, spread, targets)
        protocol_parts.append(text)
    display = displays[protocols[0]]
    weightings = [m.name for m in registered() if m.weights is not None]
    spearman_column = "val_accuracy" if not zero_shot.empty and zero_shot["val_accuracy"].notna().all() else "test_accuracy"
    spearman, spearman_long = (spearman_table(weights, zero_shot, weightings, labels, spearman_column)
                               if not zero_shot.empty else (pd.DataFrame(), pd.DataFrame()))  # fmt: skip
    _write_csv(spearman, output / "spearman.csv")
    _write_csv(spearman_long, output / "spearman_ci.csv", index=False)
    sections = [_screen_section(output, state, frame, spread)]
    tuned_vpt = set(protocol_runs(frame, "tuned").query("method == 'vpt'")["target"])
    shown = [n for n in state.get("target_names", []) if n in tuned_vpt]  # the first with VPT's tuned runs
    if shown:
        sections.append(_learning_section(output, shown[0], labels))
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
        by = ["target", "scale"] if summary["target"].nunique() > 1 else "scale"  # never mean over targets
        table = summary.pivot_table(index=by, columns="method", values="mean")
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
        spearman_text = markdown(spearman_display(spearman_long, labels))
        if not spearman.empty:
            spearman_text += "\n\nMean rho over targets: " + ", ".join(
                f"{c} {v:.2f}" for c, v in spearman.loc["Average"].items() if np.isfinite(v)
            )
    text = Template(TEMPLATE.read_text()).substitute(
        commands=_chunks_text(state),
        machine="; ".join(dict.fromkeys(c["machine"] for c in state.get("chunks", []) if c.get("machine")))
        or state.get("machine", "not recorded"),
        library=state["library"],
        backbone=state["backbone"],
        img_size=state["img_size"],
        targets=_targets_text(state["target_names"], set(frame["target"])),
        seeds=", ".join(f"{p} {budget.get('tuned_seeds') or state['seeds'] if p == 'tuned' else state['seeds']}"
                        for p in protocols),
        protocols=", ".join(protocols),
        wall=_wall_text(state, frame),
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
