"""Does screening keep the prompts the search would choose? Survival at K' = 2M, 4M and 8M.

For every target, one search over all eligible sources of the shipped zoo, without screening
(``launch/search.py``'s defaults: val-probe metric, TPE, ``--trials`` trials). Its chosen
ensembles (the best trial, and the best ``--top`` trials pooled) have M prompts each; a prompt
*survives* screening at K' if the H-score ranking of ``--screen-top`` (each source's own H on its
train800 features, the ``h-score`` screening score, equal to the statistics'
``source_h_scores``) puts it among the best K'. The table gives, per target and K' = 2M, 4M, 8M,
the share of the chosen prompts that survive (K' capped at the number of sources, marked ``all``
where the cap makes screening keep everything).

Usage:
  python bench/bench_screening_survival.py                                   # 5 offline targets
  python bench/bench_screening_survival.py --targets count --trials 4 --samples 48   # quick
  python bench/bench_screening_survival.py --json bench/results/screening_survival.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hgprompt_ray.atomic import atomic_write_json

TARGETS = ["count", "dsprites-scale", "dsprites-location", "dsprites-orientation", "textile-defect"]
FACTORS = (2, 4, 8)
# The settings a saved row depends on: a rerun resumes only when they match.
RESULT_SETTINGS = ("trials", "top", "samples", "gradient_samples", "seed")


def survival(chosen: list[str], ranking: list[str], factor: int) -> tuple[float, int]:
    """Share of ``chosen`` among the best ``factor * len(chosen)`` of ``ranking`` (and that K')."""
    keep = min(factor * len(chosen), len(ranking))
    kept = set(ranking[:keep])
    return sum(name in kept for name in chosen) / len(chosen), keep


def run_target(target: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import ray

    from hgprompt_ray.tuning import SearchSpec, run_search

    spec = SearchSpec(
        target=target,
        num_samples=args.trials,
        samples=args.samples,
        gradient_samples=args.gradient_samples,
        seed=args.seed,
        output=str(work / target),
        cache_dir=args.cache_dir,
    )
    result = run_search(spec, progress=False)
    statistics = ray.get(result.statistics)
    scores = np.asarray(statistics.source_h_scores)
    ranking = [statistics.prompts[i] for i in np.argsort(-scores, kind="stable")]
    frame = result.trials.sort_values(result.best["metric"], ascending=False)
    subsets = [row.split(",") for row in frame["subset"].head(args.top)]
    best = list(result.best["subset"])
    row: dict[str, Any] = {
        "target": target,
        "sources": len(ranking),
        "best_subset": best,
        "ranking": ranking,
        "h_scores": {name: float(scores[statistics.prompts.index(name)]) for name in ranking},
        "metric": result.best["metric"],
        "best_value": float(result.best[result.best["metric"]]),
    }
    for factor in FACTORS:
        share, keep = survival(best, ranking, factor)
        pooled = [survival(subset, ranking, factor)[0] for subset in subsets]
        row[f"best_{factor}M"] = share
        row[f"keep_{factor}M"] = keep
        row[f"top_{factor}M"] = float(np.mean(pooled))
    row["best_ranks"] = sorted(ranking.index(name) + 1 for name in best)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--top", type=int, default=5, help="best trials pooled")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--gradient-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="extraction cache (default: the user cache)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import ray

    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    # Resumable: with --json, each finished target is written at once and a rerun with the same
    # settings skips the targets already there (a target takes minutes on 2 cores).
    done: dict[str, dict[str, Any]] = {}
    if args.json and Path(args.json).exists():
        saved = json.loads(Path(args.json).read_text())
        same = {k: v for k, v in saved.get("args", {}).items() if k in RESULT_SETTINGS}
        if same == {k: vars(args)[k] for k in RESULT_SETTINGS}:
            done = {row["target"]: row for row in saved.get("rows", [])}
        else:
            print(f"{args.json} holds other settings {same}: starting afresh", file=sys.stderr)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for target in args.targets:
                if target in done:
                    rows.append(done[target])
                    continue
                rows.append(run_target(target, args, Path(folder)))
                print(
                    f"{target}: ranks of the chosen prompts {rows[-1]['best_ranks']}",
                    file=sys.stderr,
                    flush=True,
                )
                if args.json:
                    atomic_write_json(args.json, {"table": [], "args": vars(args), "rows": rows})
    finally:
        ray.shutdown()
    rule = "-" * 112
    lines = [
        f"Screening survival | shipped zoo, eligible sources per target | unscreened search: {args.trials} "
        f"trials, val-probe, N = {args.samples} | screening score h-score | best trial and best {args.top} pooled",
        rule,
        f"{'target':22s}{'K':>4s}{'M':>4s}  {'H-rank of chosen':22s}"
        + "".join(f"{f'K={f}M best':>14s}{f'top{args.top}':>8s}" for f in FACTORS),
    ]
    for row in rows:
        cells = ""
        for factor in FACTORS:
            keep = row[f"keep_{factor}M"]
            label = "all" if keep >= row["sources"] else str(keep)
            cells += f"{row[f'best_{factor}M']:>8.2f} ({label:>3s}){row[f'top_{factor}M']:>8.2f}"
        lines.append(
            f"{row['target']:22s}{row['sources']:>4d}{len(row['best_subset']):>4d}  {str(row['best_ranks']):22s}{cells}"
        )
    lines.append(rule)
    for factor in FACTORS:
        informative = [r for r in rows if r[f"keep_{factor}M"] < r["sources"]]
        if informative:
            lines.append(
                f"K'={factor}M: mean survival of the best ensemble's prompts {np.mean([r[f'best_{factor}M'] for r in informative]):.2f}"
                f" over the {len(informative)} target(s) where K' < K (top {args.top} pooled: "
                f"{np.mean([r[f'top_{factor}M'] for r in informative]):.2f})"
            )
        else:
            lines.append(f"K'={factor}M: K' >= K on every target (screening keeps everything)")
    lines.append(rule)
    print("\n".join(lines))
    if args.json:
        atomic_write_json(args.json, {"table": lines, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
