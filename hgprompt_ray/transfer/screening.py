"""The suite screen: on which targets do a library's sources differ enough, zero-shot, for a
choice of ensemble to matter?

#20 calls a target informative when (1) its eligible sources' zero-shot test accuracies spread by
at least :data:`~hgprompt_ray.transfer.tables.INFORMATIVE`'s 5 points and (2) init-probe weightings
differ beyond seed noise. (2) needs the leave-one-out's runs, hours per target on a CPU; (1) needs
only the library's zero-shot matrix (``launch/zero_shot.py``, minutes per target), so the screen
tabulates (1) for every target the matrix covers, before any run, and the report puts each
target's init-probe verdict beside it where there is one.

Eligible sources are the leave-one-out's: every prompt but the target's own and those trained on
the target's images under another labelling (``data.eligible_sources``). A target is screened on
the draws where every eligible source has a row (at the column's largest ``num_test``, the
full test subset): a source missing there (a prompt added after the matrix, or retrained since)
could only narrow the spread, so such a target waits for its rows. The spread is taken
on split draw 0, as the report's verdict and ``--leave-one-out``'s order take it, and also over
the draws: the spread of the sources' mean accuracies, and the per-draw spread's mean with its 95%
Student-t half-width (the draws overlap, so that interval is optimistic, as the report says of
init-probe seeds). "best - bare" is the best eligible source's mean lead over the bare backbone's
probe (negative: no source beats no prompt, as on dsprites-orientation in #20's first table).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hgprompt_ray.atomic import atomic_path, atomic_write_text
from hgprompt_ray.data.registry import eligible_sources
from hgprompt_ray.transfer.statistics import mean_ci
from hgprompt_ray.transfer.tables import INFORMATIVE, markdown, spread_reaches_bar
from hgprompt_ray.transfer.zero_shot import NO_PROMPT

__all__ = ["SCREEN_TEXT", "write_screen", "zero_shot_screen"]


def zero_shot_screen(matrix: pd.DataFrame, source_tasks: Mapping[str, str],
                     eligible: Callable[[str, Mapping[str, str]], Sequence[str]] = eligible_sources) -> pd.DataFrame:  # fmt: skip
    """Per target of a zero-shot matrix, how far its eligible sources spread (module docstring).

    Args:
        matrix: rows ``source, target, test_accuracy`` and ``split_seed`` (absent: draw 0), as
            ``launch/zero_shot.py`` writes them, current rows only (``zero_shot.current_rows``);
            the bare backbone's rows have source ``(none)``.
        source_tasks: the library's prompts -> the task each was trained on.
        eligible: (target, source_tasks) -> its eligible prompts (default: the data registry's).

    Returns:
        One row per target with at least two eligible sources and a draw where all of them have a
        row (draws that lack one are left out; "spread (draw 0)" is NaN when draw 0 is one of
        them, and the screen then reads the spread of the means), widest draw-0 spread first;
        accuracies and spreads in points. Empty when no target qualifies.
    """
    frame = matrix.assign(split_seed=matrix["split_seed"].fillna(0) if "split_seed" in matrix else 0)
    rows = []
    for target in sorted(frame["target"].unique()):
        column = frame[frame["target"] == target]
        if "num_test" in column:
            column = column[column["num_test"] == column["num_test"].max()]
        sources = list(eligible(target, source_tasks))
        if len(sources) < 2:
            continue
        table = column.drop_duplicates(["source", "split_seed"], keep="last").pivot(
            index="split_seed", columns="source", values="test_accuracy")
        complete = table.reindex(columns=sources).dropna()
        if complete.empty:
            continue
        scores = 100 * complete
        means = scores.mean()
        per_draw = scores.max(axis=1) - scores.min(axis=1)
        spread_mean, half_width = mean_ci(per_draw.to_numpy())
        bare = 100 * table.loc[complete.index, NO_PROMPT].mean() if NO_PROMPT in table else np.nan
        first = per_draw.get(0, np.nan)
        rows.append({
            "target": target,
            "sources": len(sources),
            "draws": len(complete),
            "spread (draw 0)": first,
            "spread of draw means": float(means.max() - means.min()),
            "per-draw spread": spread_mean,
            "± (95%)": half_width,
            "best source": str(means.idxmax()),
            "best": float(means.max()),
            "worst source": str(means.idxmin()),
            "worst": float(means.min()),
            "bare backbone": bare,
            "best - bare": float(means.max() - bare),
            "screen": _screen_of(first if np.isfinite(first) else float(means.max() - means.min())),
        })  # fmt: skip
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).set_index("target")
    order = table["spread (draw 0)"].fillna(table["spread of draw means"])
    return table.loc[order.sort_values(ascending=False, kind="stable").index]


SCREEN_TEXT = (
    "Per target, the zero-shot test top-1 (%) of its eligible sources (all prompts but its own and those "
    "trained on its images under another labelling; a linear probe on train800 features under each "
    "prompt, C on val200): their spread on split draw 0 (the report's verdict and the leave-one-out's "
    "order use it), the spread of their means over the draws, the per-draw spread's mean and 95% "
    "half-width (the draws overlap: optimistic), the best and worst source by mean, the bare backbone's "
    "probe and the best source's lead over it. A target whose spread is under "
    f"{INFORMATIVE['zero_shot_spread']:g} points cannot show that one weighting beats another."
)
"""What the screen's columns are, in words (the zoo's ``screen.md`` and the report's section)."""


def write_screen(matrix: pd.DataFrame, source_tasks: Mapping[str, str], out: Path,
                 eligible: Callable[[str, Mapping[str, str]], Sequence[str]] = eligible_sources) -> pd.DataFrame:  # fmt: skip
    """:func:`zero_shot_screen` of ``matrix``, written atomically as ``out/screen.csv`` and
    ``out/screen.md`` (nothing when it is empty); returns it."""
    screen = zero_shot_screen(matrix, source_tasks, eligible)
    if screen.empty:
        return screen
    with atomic_path(out / "screen.csv") as tmp:
        screen.to_csv(tmp)
    text = f"# Which targets can separate weightings (zero-shot screen)\n\n{SCREEN_TEXT}\n\n{markdown(screen, '.1f')}\n"
    atomic_write_text(out / "screen.md", text)
    return screen


def _screen_of(spread: float) -> str:
    limit = INFORMATIVE["zero_shot_spread"]
    if spread_reaches_bar(spread):
        return f"candidate: spread >= {limit:g} points"
    return f"saturated: spread {spread:.1f} < {limit:g} points"
