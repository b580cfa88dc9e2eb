"""``run_search(spec) -> SearchResult``: the whole HGPrompt search, the one entry point.

    import ray
    from hgprompt_ray.tuning import SearchSpec, run_search

    ray.init()
    result = run_search(SearchSpec(target="count"))
    result.weights            # EnsembleWeights of the best trial
    result.trials             # one row per trial

Steps: :func:`~hgprompt_ray.tuning.plan.plan_search` (checks, nothing written); extraction of
the target's features and gradient statistics under every source prompt (Ray Train, cached on
disk: a rerun computes nothing); with ``screen_top`` (or ranked slots) the screening of every
source (:func:`~hgprompt_ray.tuning.search.screen_sources`, ``screening.json``), and with
``screen_top`` the gradients of the kept prompts only, after it; the search statistics of the
searched prompts, once, all pairs or on demand as
:func:`~hgprompt_ray.tuning.trainable.choose_statistics` decides (one Ray task, an ObjectRef);
the trials (Tune + OptunaSearch, seeded TPE or random sampler, resumable); then ``best.json``, the trial table and
the plots in the output folder (see :mod:`hgprompt_ray.tuning.outputs`). Ray must be running
(``ray.init`` or ``launch/_ray.start_ray``): the package never starts it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.tuning.outputs import best_trial, write_outputs
from hgprompt_ray.tuning.plan import STATE_FILE, SearchPlan, plan_search, read_state
from hgprompt_ray.tuning.probe_metric import probe_data_task
from hgprompt_ray.tuning.progress import progress_logger
from hgprompt_ray.tuning.spec import SearchSpec
from search_spaces import hgprompt as space

__all__ = ["TUNE_NAME", "SearchFailedError", "SearchResult", "run_search"]

logger = logging.getLogger(__name__)
TUNE_NAME = "tune"
"""Tune's experiment folder under ``<output>/ray``."""


class SearchFailedError(RuntimeError):
    """No trial reported the search metric (the Tune logs in the run folder say why)."""


@dataclass(frozen=True)
class SearchResult:
    """A finished search.

    Attributes:
        plan: the checked search (spec, resolved task, sources, output folder).
        weights: the best trial's ensemble weights over every source (0 outside its subset).
        best: the ``best.json`` record (the best trial's settings, metric and weights).
        trials: one row per trial, in creation order.
        statistics: ObjectRef of the :class:`~hgprompt_ray.tuning.trainable.SearchStatistics`.
        extraction: the extraction handle of the searched prompts (feature and gradient tables
            in the object store).
        output: the results folder.
        seconds: wall time of the search.
        screening_extraction: with ``screen_top``, the handle of every source's features (the
            screening's input; no gradients); None otherwise.
    """

    plan: SearchPlan
    weights: EnsembleWeights
    best: dict[str, Any]
    trials: pd.DataFrame
    statistics: Any
    extraction: Any
    output: Path
    seconds: float
    screening_extraction: Any = None

    def release(self) -> None:
        """Drop the search's feature and gradient tables from the object store (the cache keeps
        them; a resumed search puts them back). The weights and ``best`` stay usable."""
        for extraction in (self.extraction, self.screening_extraction):
            if extraction is not None:
                extraction.release()


def run_search(spec: SearchSpec | SearchPlan, *, progress: bool = True) -> SearchResult:
    """Run one search (module docstring). Pass a :class:`SearchPlan` to reuse checks already made.

    Raises:
        InvalidValueError: bad settings (before anything is written).
        SearchFailedError: no trial reported the metric.
    """
    import ray
    from ray import tune

    from hgprompt_ray.tuning.search import (
        build_tuner,
        prepare_statistics,
        restore_tuner,
        screen_sources,
        statistics_choice,
        trials_frame,
    )
    from hgprompt_ray.workers.extract import extract

    plan = spec if isinstance(spec, SearchPlan) else plan_search(spec)
    spec = plan.spec
    if not ray.is_initialized():
        raise RuntimeError("Ray is not running. Fix: call ray.init() (or use launch/search.py) first.")
    start = time.perf_counter()
    output, prompts = plan.output, list(plan.prompts)
    output.mkdir(parents=True, exist_ok=True)
    if not spec.resume:
        _write_state(plan)
    say = progress_logger()
    say.info(
        "extracting %s under %d prompts (cached: a rerun computes nothing)", plan.target_name, len(prompts)
    )
    # With --screen-top, the gradients wait for the screening: only the kept prompts' are computed
    # (K' x K' moments instead of K x K); the kept prompts' features then come from the cache.
    timings: dict[str, float] = {}
    lap = time.perf_counter()

    def stage(name: str) -> None:  # wall seconds of each step, kept in best.json
        nonlocal lap
        now = time.perf_counter()
        timings[name] = round(now - lap, 3)
        lap = now

    deferred = plan.screens and spec.screen_top is not None and spec.screen_top < len(prompts)
    extraction = extract(
        dataclasses.replace(plan.extraction, gradients=False) if deferred else plan.extraction,
        num_workers=spec.workers,
        storage_path=output / "ray",
        progress=progress,
        task=plan.task,
    )
    say.info(
        "extraction done in %.0f s (%s forwards computed, %s tables from the cache%s)",
        time.perf_counter() - start,
        extraction.stats.get("image_prompt_forwards", "?"),
        extraction.stats.get("cached_tables", "?"),
        "; gradients after the screening" if deferred else "",
    )
    logger.info("extraction: %s", extraction.stats)
    stage("extraction")
    screening = None
    screening_stats = screening_extraction = None
    if plan.screens:  # rank the sources (keep the best --screen-top; order the ranked slots)
        screening = ray.get(screen_sources(extraction, prompts, spec.screen_metric, spec.screen_top))
        prompts = list(screening.kept)
        atomic_write_json(output / "screening.json", screening.to_json())
        say.info(
            "screening: %d sources ranked by %s; searching %d over %s subsets (best: %s)",
            len(screening.prompts),
            spec.screen_metric,
            len(prompts),
            plan.subset_space,
            ", ".join(prompts[:3]),
        )
        stage("screening")
    if deferred:
        screening_stats, screening_extraction = extraction.stats, extraction
        extraction = extract(
            dataclasses.replace(plan.extraction, prompts=tuple(prompts)),
            num_workers=spec.workers,
            storage_path=output / "ray",
            progress=progress,
            task=plan.task,
        )
        say.info(
            "gradients of the %d screened prompts done (%s gradient sample x prompts computed)",
            len(prompts),
            extraction.stats.get("gradient_sample_prompts", "?"),
        )
        stage("gradients")
    statistics_ref = prepare_statistics(
        extraction,
        prompts=prompts,
        mode=spec.statistics,
        trials=spec.num_samples,
        max_prompts=plan.max_prompts,
        budget_gb=spec.statistics_budget_gb,
    )
    choice = statistics_choice(statistics_ref)
    if choice is not None:
        say.info("search statistics: %s (%s)", choice["mode"], choice["reason"])
    stage("statistics")
    metric = space.METRICS[spec.metric]
    if spec.resume and (output / "best.json").is_file():  # finished: nothing to run, load it
        best = read_state(output / "best.json")
        best.setdefault("metric", space.VAL_H)  # a search from before --metric maximised val_h_score
        say.info("the search in %s is finished; loaded its best trial", output)
        return SearchResult(
            plan=plan,
            weights=EnsembleWeights.from_json(best["alpha"]),
            best=best,
            trials=pd.read_parquet(output / "trials.parquet"),
            statistics=statistics_ref,
            extraction=extraction,
            output=output,
            seconds=time.perf_counter() - start,
            screening_extraction=screening_extraction,
        )
    probe_ref = None
    if metric == space.VAL_PROBE or spec.report_test:  # the combined prompt's probe: images, once
        probe_extraction = dataclasses.replace(plan.extraction, prompts=tuple(prompts))  # the searched order
        probe_ref = ray.remote(num_cpus=1)(probe_data_task).remote(
            probe_extraction, plan.task, spec.report_test
        )
    storage = (output / "ray").resolve()
    tuner_args: dict[str, Any] = {
        "statistics_ref": statistics_ref,
        "solver": space.SOLVER,
        "stages": space.STAGES,
        "seed": spec.seed,
        "objective": spec.objective,
        "probe_ref": probe_ref,
    }
    if spec.resume and tune.Tuner.can_restore(storage / TUNE_NAME):
        tuner = restore_tuner(storage / TUNE_NAME, report_stages=spec.scheduler == "asha", **tuner_args)
    else:  # a new search, or one killed before Tune saved any state
        cpus = int(ray.cluster_resources().get("CPU", 1))
        tuner = build_tuner(
            space=space.subset_search_space(
                plan.subset_space, prompts, spec.lambda_range, spec.min_prompts, plan.max_prompts
            ),
            searcher=space.optuna_searcher(spec.seed, spec.sampler),
            scheduler=space.asha_scheduler() if spec.scheduler == "asha" else None,
            metric=metric,
            mode=space.MODE,
            num_samples=spec.num_samples,
            max_concurrent=spec.max_concurrent or max(1, cpus),
            storage_path=storage,
            name=TUNE_NAME,
            **tuner_args,
        )
    say.info(
        "searching: %d trials over lambda, M and the subset of %d prompts (objective %s, metric %s)",
        spec.num_samples,
        len(prompts),
        spec.objective,
        metric,
    )
    frame = trials_frame(tuner.fit(), prompts)
    stage("trials")
    if frame.empty or metric not in frame or frame[metric].isna().all():
        raise SearchFailedError(f"no trial reported {metric}; see the Tune logs in {storage}")
    best = best_trial(frame, list(plan.prompts), metric, plan.target_name)  # every source; 0 if screened out
    best["metric"], best["objective_terms"] = metric, spec.objective
    best["subset_space"] = plan.subset_space
    if screening is not None:
        best["screening"] = screening.to_json()
    best["statistics"] = choice
    best["seconds"] = timings
    best["extraction"] = {
        "stats": extraction.stats,
        "screening_stats": screening_stats,
        "feature_keys": extraction.feature_keys,
        "gradient_key": extraction.gradient_key,
        "samples": spec.samples,
        "gradient_samples": spec.gradient_samples,
        "sample_seed": spec.seed,
        "split_seed": spec.split_seed,
        "backbone": plan.selection.backbone,
        "img_size": plan.selection.img_size,
    }
    write_outputs(output, frame, best, metric)
    return SearchResult(
        plan=plan,
        weights=EnsembleWeights.from_json(best["alpha"]),
        best=best,
        trials=frame,
        statistics=statistics_ref,
        extraction=extraction,
        output=output,
        seconds=time.perf_counter() - start,
        screening_extraction=screening_extraction,
    )


def _write_state(plan: SearchPlan) -> None:
    spec = plan.spec
    arguments = dataclasses.asdict(spec)
    state = {
        "target": spec.target,
        "target_name": plan.target_name,
        "prompts": list(plan.prompts),
        "arguments": arguments,
        "command": spec.command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(plan.output / STATE_FILE, state)
    describe = getattr(plan.task, "describe_splits", None)
    if describe is not None:
        atomic_write_json(plan.output / "splits.json", describe(spec.split_seed))
