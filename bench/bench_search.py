"""Search overhead: the same trials through Ray Tune vs plain Optuna in one process.

Both run ``--trials`` trials of the real trial function (``tuning.trainable.run_trial``: subset
choice, staged alpha solve, and the search's trial metric: by default ``val_probe_accuracy``, a
forward pass of the combined prompt over train800 + val200 and a probe, at ``--precision``; or
the cheap ``val_h_score`` with ``--metric val-h``) on the same precomputed statistics, with the
same space (``search_spaces/hgprompt.py``) and the same seeded TPE sampler:

  plain Optuna   one process, ``study.ask`` / objective / ``study.tell``, sequential; torch may
                 use every core;
  Ray Tune       ``launch/search.py``'s Tuner (OptunaSearch behind a ConcurrencyLimiter,
                 ``--max-concurrent`` trials of one CPU each, ``reuse_actors=True``).

It prints the wall-time ratio Tune / Optuna (target <= 0.85 on 2 cores: two 1-thread trials use
the cores better than one 2-thread objective) and the share of Tune's wall time spent inside the
objective: the summed in-trial solve + probe time divided by (wall time x concurrent trial slots)
(target >= 0.9), with the per-trial overhead that remains. By default the statistics are real: the offline zoo's prompts on ``--target`` (extracted
as ``launch/search.py`` does, from the cache when it has run before), so the objective is exactly
a search's; ``--synthetic`` uses random statistics of ``--prompts`` x ``--samples`` x ``--dim``.

Usage:
  python bench/bench_search.py                  # 24 real probe-metric trials on digits-parity
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
from typing import Any

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


def real_statistics(args: argparse.Namespace) -> tuple[SearchStatistics, Any]:
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
        precision=args.precision,
    )  # launch/search.py's defaults: the same cache entries
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    statistics = ray.get(prepare_statistics(extract(config, progress=False)))
    ray.shutdown()
    probe = None
    if args.metric == "val-probe":
        from hgprompt_ray.data import resolve_target
        from hgprompt_ray.tuning.probe_metric import probe_data_task

        # no kept results: the second runner must compute the same trials' metric, not read the first's
        probe = probe_data_task(config, resolve_target(args.target))._replace(cache_dir=None)
    return statistics, probe


def _objective_seconds(metrics: Any) -> float:
    return float(metrics["solve_seconds"]) + float(metrics.get("probe_seconds", 0.0) or 0.0)


def run_optuna(statistics: SearchStatistics, probe: Any, args: argparse.Namespace) -> dict[str, float]:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = OptunaSearch.convert_search_space(space.hgprompt_space(list(statistics.prompts)))
    inputs = TrialInputs(
        statistics=statistics,
        solver=space.SOLVER,
        stages=space.STAGES,
        seed=args.seed,
        probe=probe,
        report_stages=False,  # as the Tuner without a scheduler: the metric once, at the end
    )
    metric = space.METRICS[args.metric]
    study = optuna.create_study(direction="maximize", sampler=space.tpe_sampler(args.seed))
    inside, start = 0.0, time.perf_counter()
    for _ in range(args.trials):
        trial = study.ask(distributions)
        metrics = run_trial(trial.params, inputs, lambda m: None)
        inside += _objective_seconds(metrics)
        study.tell(trial, metrics[metric])
    wall = time.perf_counter() - start
    return {"wall_s": wall, "inside_s": inside, "best": study.best_value, "trials": len(study.trials)}


def run_tune(statistics: SearchStatistics, probe: Any, args: argparse.Namespace) -> dict[str, float]:
    import ray

    statistics_ref = ray.put(statistics)
    metric = space.METRICS[args.metric]
    with tempfile.TemporaryDirectory() as storage:
        tuner = build_tuner(
            statistics_ref=statistics_ref,
            space=space.hgprompt_space(list(statistics.prompts)),
            searcher=space.optuna_searcher(args.seed),
            scheduler=None,
            metric=metric,
            mode=space.MODE,
            num_samples=args.trials,
            max_concurrent=args.max_concurrent,
            solver=space.SOLVER,
            stages=space.STAGES,
            seed=args.seed,
            storage_path=storage,
            name="bench",
            verbose=0,
            probe_ref=None if probe is None else ray.put(probe),
        )
        start = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - start
    frame = trials_frame(results, list(statistics.prompts))
    inside = float(sum(_objective_seconds(row) for _, row in frame.iterrows()))
    return {
        "wall_s": wall,
        "inside_s": inside,
        "best": float(frame[metric].max()),
        "torch_threads": sorted(set(frame["torch_threads"].astype(int))),
        "trials": int(len(frame)),
        "share": inside / (wall * args.max_concurrent),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--metric", default="val-probe", choices=list(space.METRICS), help="the trial metric")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
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

    if args.synthetic:
        args.metric = "val-h"  # no images behind random statistics
    statistics, probe = (synthetic_statistics(args), None) if args.synthetic else real_statistics(args)
    dim = statistics.train.second_moment.shape[-1]
    coordinates = statistics.covariance.shape[0]
    source = "synthetic" if args.synthetic else f"offline zoo on {args.target}"
    ray.init(num_cpus=args.max_concurrent, include_dashboard=False, log_to_driver=False)
    tune = run_tune(statistics, probe, args)
    ray.shutdown()
    torch.set_num_threads(args.max_concurrent)
    optuna_result = run_optuna(statistics, probe, args)
    ratio = tune["wall_s"] / optuna_result["wall_s"]
    per_trial = {k: v["inside_s"] / v["trials"] for k, v in (("tune", tune), ("optuna", optuna_result))}
    overhead = (tune["wall_s"] * args.max_concurrent - tune["inside_s"]) / tune["trials"]
    rule = "-" * 86
    lines = [
        f"Search | {args.trials} trials | {source}: M={len(statistics.prompts)} prompts, d={dim}, "
        f"p={coordinates} | metric {args.metric} | Tune: {args.max_concurrent} concurrent x 1 CPU "
        f"(torch threads {tune['torch_threads']}); Optuna: 1 process x {args.max_concurrent} threads",
        rule,
        f"{'':34s}{'wall s':>10s}{'objective s':>13s}{'per trial s':>13s}{'best':>12s}",
        f"{'plain Optuna, one process':34s}{optuna_result['wall_s']:10.1f}{optuna_result['inside_s']:13.1f}"
        f"{per_trial['optuna']:13.3f}{optuna_result['best']:12.4f}",
        f"{'Ray Tune + OptunaSearch':34s}{tune['wall_s']:10.1f}{tune['inside_s']:13.1f}"
        f"{per_trial['tune']:13.3f}{tune['best']:12.4f}",
        f"{'wall ratio Tune / Optuna  [<= 0.85]':34s}{ratio:10.2f}  {'PASS' if ratio <= 0.85 else 'MISS'}",
        f"{'objective share under Tune [>= 0.9]':34s}{tune['share']:10.2f}  {'PASS' if tune['share'] >= 0.9 else 'MISS'}",
        f"{'Tune overhead per trial slot, s':34s}{overhead:10.3f}  (wall x slots - objective) / trials",
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
