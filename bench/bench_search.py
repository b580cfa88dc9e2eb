"""Search overhead: the same trials through Ray Tune vs plain Optuna in one process.

Both run ``--trials`` trials of the real trial function (``tuning.trainable.run_trial``: subset
choice, staged alpha solve, val200 H-score) on the same precomputed statistics, with the same
space (``search_spaces/hgprompt.py``) and the same seeded TPE sampler:

  plain Optuna   one process, ``study.ask`` / objective / ``study.tell``, sequential; torch may
                 use every core;
  Ray Tune       ``launch/search.py``'s Tuner (OptunaSearch behind a ConcurrencyLimiter,
                 ``--max-concurrent`` trials of one CPU each, ``reuse_actors=True``).

It prints the wall-time ratio Tune / Optuna (target <= 1.5 on 2 cores) and the share of Tune's
wall time spent inside the objective: the summed in-trial solve time divided by
(wall time x concurrent trial slots) (target >= 0.7). By default the statistics are real: the offline zoo's prompts on ``--target`` (extracted
as ``launch/search.py`` does, from the cache when it has run before), so the objective is exactly
a search's; ``--synthetic`` uses random statistics of ``--prompts`` x ``--samples`` x ``--dim``.

Usage:
  python bench/bench_search.py                  # 200 real trials on digits-parity, ~10 minutes
  python bench/bench_search.py --synthetic      # random statistics, a fraction of a second each
  python bench/bench_search.py --smoke-test     # 10 synthetic trials
  python bench/bench_search.py --json bench/results/search.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.core import empty_gradient_moments, update_gradient_moments
from hgprompt_ray.tuning.search import build_tuner, trials_frame
from hgprompt_ray.tuning.trainable import SearchStatistics, TrialInputs, run_trial, search_statistics
from search_spaces import hgprompt as space

ROOT = Path(__file__).resolve().parents[1]


def synthetic_statistics(args: argparse.Namespace) -> SearchStatistics:
    rng = np.random.default_rng(0)
    classes = 5
    names = [f"p{i}" for i in range(args.prompts)]
    labels = rng.integers(0, classes, args.samples + 200)
    centres = rng.normal(size=(args.prompts, classes, args.dim))
    strength = rng.uniform(0.1, 1.5, size=args.prompts)
    features = [
        strength[i] * centres[i][labels] + rng.normal(size=(len(labels), args.dim))
        for i in range(args.prompts)
    ]
    moments = update_gradient_moments(
        empty_gradient_moments(args.prompts, args.coordinates),
        rng.normal(size=(64, args.prompts, args.coordinates)),
    )
    return search_statistics(
        names,
        [f[: args.samples] for f in features],
        labels[: args.samples],
        [f[args.samples :] for f in features],
        labels[args.samples :],
        moments,
    )


def real_statistics(args: argparse.Namespace) -> SearchStatistics:
    import ray

    from hgprompt_ray.config import ExtractionConfig
    from hgprompt_ray.prompts import PromptLibrary
    from hgprompt_ray.tuning.search import prepare_statistics
    from hgprompt_ray.workers.extract import extract

    library = PromptLibrary(ROOT / "prompt_zoo" / "offline")
    prompts = tuple(r.name for r in library.records() if r.source_task != args.target)
    config = ExtractionConfig(
        target=args.target,
        library=str(library.root),
        prompts=prompts,
        num_samples=256,
        gradient_samples=64,
    )  # launch/search.py's defaults: the same cache entries
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    statistics = ray.get(prepare_statistics(extract(config, progress=False)))
    ray.shutdown()
    return statistics


def run_optuna(statistics: SearchStatistics, args: argparse.Namespace) -> dict[str, float]:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = OptunaSearch.convert_search_space(space.hgprompt_space(list(statistics.prompts)))
    inputs = TrialInputs(statistics=statistics, solver=space.SOLVER, stages=space.STAGES, seed=args.seed)
    study = optuna.create_study(direction="maximize", sampler=space.tpe_sampler(args.seed))
    inside, start = 0.0, time.perf_counter()
    for _ in range(args.trials):
        trial = study.ask(distributions)
        metrics = run_trial(trial.params, inputs, lambda m: None)
        inside += metrics["solve_seconds"]
        study.tell(trial, metrics[space.VAL_H])
    wall = time.perf_counter() - start
    return {"wall_s": wall, "inside_s": inside, "best": study.best_value, "trials": len(study.trials)}


def run_tune(statistics: SearchStatistics, args: argparse.Namespace) -> dict[str, float]:
    import ray

    statistics_ref = ray.put(statistics)
    with tempfile.TemporaryDirectory() as storage:
        tuner = build_tuner(
            statistics_ref=statistics_ref,
            space=space.hgprompt_space(list(statistics.prompts)),
            searcher=space.optuna_searcher(args.seed),
            scheduler=None,
            metric=space.VAL_H,
            mode=space.MODE,
            num_samples=args.trials,
            max_concurrent=args.max_concurrent,
            solver=space.SOLVER,
            stages=space.STAGES,
            seed=args.seed,
            storage_path=storage,
            name="bench",
            verbose=0,
        )
        start = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - start
    frame = trials_frame(results, list(statistics.prompts))
    inside = float(frame["solve_seconds"].sum())
    return {
        "wall_s": wall,
        "inside_s": inside,
        "best": float(frame[space.VAL_H].max()),
        "trials": int(len(frame)),
        "share": inside / (wall * args.max_concurrent),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--target", default="digits-parity", help="offline target of the real statistics")
    parser.add_argument("--synthetic", action="store_true", help="random statistics instead")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--coordinates", type=int, default=960)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.synthetic = 10, True
    import ray
    import torch

    statistics = synthetic_statistics(args) if args.synthetic else real_statistics(args)
    dim = statistics.train.second_moment.shape[-1]
    coordinates = statistics.covariance.shape[0]
    source = "synthetic" if args.synthetic else f"offline zoo on {args.target}"
    ray.init(num_cpus=args.max_concurrent, include_dashboard=False, log_to_driver=False)
    tune = run_tune(statistics, args)
    ray.shutdown()
    torch.set_num_threads(args.max_concurrent)
    optuna_result = run_optuna(statistics, args)
    ratio = tune["wall_s"] / optuna_result["wall_s"]
    per_trial = {k: v["inside_s"] / v["trials"] for k, v in (("tune", tune), ("optuna", optuna_result))}
    rule = "-" * 86
    lines = [
        f"Search | {args.trials} trials | {source}: M={len(statistics.prompts)} prompts, d={dim}, "
        f"p={coordinates} | Tune: {args.max_concurrent} concurrent x 1 CPU | 2 cores",
        rule,
        f"{'':34s}{'wall s':>10s}{'objective s':>13s}{'per trial s':>13s}{'best val H':>12s}",
        f"{'plain Optuna, one process':34s}{optuna_result['wall_s']:10.1f}{optuna_result['inside_s']:13.1f}"
        f"{per_trial['optuna']:13.3f}{optuna_result['best']:12.4f}",
        f"{'Ray Tune + OptunaSearch':34s}{tune['wall_s']:10.1f}{tune['inside_s']:13.1f}"
        f"{per_trial['tune']:13.3f}{tune['best']:12.4f}",
        f"{'wall ratio Tune / Optuna  [<= 1.5]':34s}{ratio:10.2f}  {'PASS' if ratio <= 1.5 else 'MISS'}",
        f"{'objective share under Tune [>= 0.7]':34s}{tune['share']:10.2f}  {'PASS' if tune['share'] >= 0.7 else 'MISS'}",
        rule,
    ]
    print("\n".join(lines))
    if args.json:
        atomic_write_json(
            args.json,
            {"table": lines, "args": vars(args), "tune": tune, "optuna": optuna_result, "ratio": ratio},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
