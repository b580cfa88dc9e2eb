"""The evaluation's transfer runs as Ray tasks: the job list, submission, results as they arrive.

Each (target, method, seed) job — plus the scaling curve's (target, method@n, seed) jobs — is one
Ray task of :func:`hgprompt_ray.transfer.evaluation.run_job_task` with the plan's per-job resources;
its result is written atomically as it arrives, so a killed evaluation resumes where it stopped.

The same jobs can also leave Ray: :func:`write_job_file` writes the unfinished ones, with their
budget and library, to ``OUTPUT/jobs.json`` (``evaluate.py --prepare-only``), and
:func:`run_here` runs them in this process (``launch/run_jobs.py``) on a machine that has a GPU
but no Ray (the weights need Ray's search; the tuned runs need only torch and timm).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.config import TransferConfig
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.transfer.evaluation import EvaluationJob
from hgprompt_ray.transfer.methods import get_method, registered

__all__ = ["JOBS_FILE", "build_jobs", "read_job_file", "remote", "run_here", "run_jobs", "unfinished",
           "write_job_file", "write_tsne"]  # fmt: skip

JOBS_FILE = "jobs.json"
_JOBS_SCHEMA = 1

logger = logging.getLogger(__name__)


def remote(function: Callable[..., Any], plan: Any, **options: Any) -> Any:
    """``ray.remote(function)`` with the plan's CPUs and GPUs per job (see EvaluationSettings)."""
    import ray

    resources = ray.cluster_resources()
    total = int(resources.get("CPU", 1))
    settings = plan.settings
    cpus = min(settings.cpus_per_job or min(4, total), total)
    gpus = settings.gpus_per_job
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    return ray.remote(num_cpus=cpus, num_gpus=gpus, **options)(function)


def _alpha(entry: Mapping[str, Any], method: str, seed: int) -> Any:
    if method in entry.get("per_seed", {}):
        return entry["per_seed"][method][str(seed)]
    return entry["methods"].get(method)


def build_jobs(
    plan: Any,
    weights: Mapping[str, Mapping[str, Any]],
    split_weights: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    targets: Sequence[str] | None = None,
) -> list[EvaluationJob]:
    """Every job of the evaluation (the registry's methods under each chosen protocol that they
    have), main runs first, then the scaling curve's; the cheap ``init-probe`` runs before the
    ``tuned`` ones. ``targets``: only these of the plan's (default: all; each needs its weights).

    Args:
        plan: the evaluation.
        weights: target -> the methods' weights on the plan's split draw (every ``tuned`` run,
            and ``init-probe`` seed 0).
        split_weights: target -> seed k -> the weights on the split draw ``split_seed + k``, for
            the ``init-probe`` seeds k > 0 (``method_weights.target_weights(plan, target, k)``).
    """
    jobs = []
    settings = plan.settings
    protocols = sorted(settings.protocols, key=lambda p: p != "init-probe")

    def entry_of(target: str, protocol: str, seed: int) -> Mapping[str, Any]:
        if protocol != "init-probe" or seed == 0:
            return weights[target]
        found = (split_weights or {}).get(target, {}).get(seed)
        if found is None:
            raise ValueError(f"no weights of split seed {seed} for {target!r}: compute target_weights(plan, target, {seed})")
        return found

    for target in plan.targets if targets is None else targets:
        name, sources = weights[target]["target"], tuple(weights[target]["sources"])
        for protocol in protocols:
            for seed in range(settings.seeds_of(protocol)):
                entry = entry_of(target, protocol, seed)
                for method in settings.protocol_methods(protocol):
                    jobs.append(EvaluationJob(target, name, method, seed, sources, _alpha(entry, method, seed),
                                              settings=plan.method_settings.get(method), protocol=protocol))  # fmt: skip
        for protocol in protocols:
            for seed in range(min(settings.scaling_seeds, settings.seeds_of(protocol))):
                for size, point in entry_of(target, protocol, seed)["scaling"].items():
                    for method, values in point["methods"].items():
                        if protocol not in get_method(method).protocols:
                            continue
                        alpha = values[str(seed)] if get_method(method).per_seed else values
                        jobs.append(EvaluationJob(target, name, method, seed, tuple(point["sources"]), alpha,
                                                  int(size), settings=plan.method_settings.get(method),
                                                  protocol=protocol))  # fmt: skip
    return jobs


_RUNNING_HEAD_SCHEMA = 3
"""The first result schema whose trained runs standardise with running statistics."""


def _stale(path: Path) -> bool:
    """A trained run written under the earlier protocol (see ``RESULT_SCHEMA``)."""
    record = json.loads(path.read_text())
    return int(record.get("schema_version", 1)) < _RUNNING_HEAD_SCHEMA and not record.get("closed_form", False)


def unfinished(output: Path, jobs: list[EvaluationJob]) -> list[EvaluationJob]:
    """The jobs with no run record under ``output/runs``, or a stale one (run again, overwritten)."""
    todo, stale = [], []
    for job in jobs:
        path = output / "runs" / f"{job.key}.json"
        if not path.is_file():
            todo.append(job)
        elif _stale(path):
            todo.append(job)
            stale.append(job.key)
    if stale:
        logger.warning("%d trained runs followed the earlier protocol (result schema < 3: cumulative head statistics, "
                       "a chosen stopping epoch, fp32 scoring) and run again: %s", len(stale), ", ".join(stale))  # fmt: skip
    return todo


def run_jobs(plan: Any, jobs: list[EvaluationJob], on_result: Callable[[], None] | None = None) -> int:
    """Submit the unfinished jobs; write each result as it arrives, then call ``on_result`` (the
    caller's record of its progress, e.g. the chunk's wall time so far). Returns the runs done now."""
    import ray
    from tqdm.auto import tqdm

    from hgprompt_ray.transfer.evaluation import run_job_task, write_result

    output = plan.output
    todo = unfinished(output, jobs)
    logger.info("%d runs, %d done before, %d to go", len(jobs), len(jobs) - len(todo), len(todo))
    if not todo:
        return 0
    task = remote(run_job_task, plan, max_retries=1)
    library = str(plan.library.root)
    pending = {
        task.remote(job, dataclasses.replace(plan.transfer, task=job.target), library): job for job in todo
    }
    failures = []
    with tqdm(total=len(todo), desc="transfer runs", unit="run") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as error:
                failures.append((job.key, error))
                logger.error("run %s failed: %s", job.key, error)
            else:
                write_result(output, job, outcome, dataclasses.replace(plan.transfer, task=job.target))
                bar.set_postfix_str(f"{job.key} {outcome['metrics']['test_accuracy']:.3f}")
                if on_result is not None:
                    on_result()
            bar.update(1)
    if failures:
        raise RuntimeError(
            f"{len(failures)} runs failed (first: {failures[0][0]}: {failures[0][1]}); rerun to retry"
        )
    return len(todo)


def write_job_file(plan: Any, jobs: list[EvaluationJob]) -> Path:
    """``OUTPUT/jobs.json``: the unfinished jobs, the budget and the library (relative to the
    working directory when inside it, as in evaluate.json), for :func:`run_here` elsewhere."""
    from hgprompt_ray.transfer.plan import library_label

    todo = unfinished(plan.output, jobs)
    record = {
        "schema_version": _JOBS_SCHEMA,
        "library": library_label(Path(plan.library.root)),
        "transfer": dataclasses.asdict(plan.transfer),
        "jobs": [dataclasses.asdict(job) for job in todo],
    }
    path = Path(plan.output) / JOBS_FILE
    atomic_write_json(path, record)
    return path


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def read_job_file(output: Path) -> tuple[list[EvaluationJob], TransferConfig, str]:
    """The jobs, budget and library of ``output/jobs.json`` (:func:`write_job_file`)."""
    path = Path(output) / JOBS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. Fix: write it with "
                                f"`python launch/evaluate.py ... --output {output} --prepare-only` first.")  # fmt: skip
    record = json.loads(path.read_text())
    if record.get("schema_version") != _JOBS_SCHEMA:
        raise InvalidValueError(invalid_value("schema_version", record.get("schema_version"), f"must be {_JOBS_SCHEMA}",
                                              "Write the job file again with this version (--prepare-only)."))  # fmt: skip
    jobs = []
    for entry in record["jobs"]:
        settings, kind = entry.pop("settings"), get_method(entry["method"]).settings
        if settings is not None and kind is not None:
            settings = kind(**_tuples(settings))
        jobs.append(EvaluationJob(**_tuples(entry), settings=settings))
    return jobs, TransferConfig(**_tuples(record["transfer"])), str(record["library"])


def _seed_major(jobs: list[EvaluationJob]) -> list[EvaluationJob]:
    """Main runs before the scaling curve's, each seed's whole set (every target and method)
    before the next seed: a deadline cuts into the last seeds, not into every seed."""
    order = {name: i for i, name in enumerate(dict.fromkeys(j.target_name for j in jobs))}
    return sorted(jobs, key=lambda j: (j.scale is not None, j.seed, order[j.target_name]))


def run_here(
    output: Path,
    jobs: list[EvaluationJob],
    transfer: TransferConfig,
    library: str,
    *,
    shard: tuple[int, int] = (0, 1),
    deadline: float | None = None,
    clock: Callable[[], float] | None = None,
) -> list[str]:
    """Run this shard's unfinished jobs in this process, without Ray; write each result as it
    finishes (resumable, like :func:`run_jobs`). Returns the keys run now.

    Args:
        output: the evaluation folder (``runs/`` goes under it).
        jobs: every job of the file; the shard takes the seed-major order's ``index::count`` of all
            of them, then runs those still unfinished. Sharding the full list, not the unfinished
            one, keeps the shards disjoint and complete when their processes start at different
            times: a shard that read the unfinished list after another had finished a run would
            slice a shorter list and skip runs that neither takes.
        transfer: the budget; library: the prompt library's folder.
        shard: (index, count): this process's share, so that several processes share one GPU.
        deadline: start no job after this time (of ``clock``); a job in progress finishes.
    """
    import time

    from hgprompt_ray.transfer.evaluation import run_job, write_result

    index, count = shard
    if not 0 <= index < count:
        raise InvalidValueError(invalid_value("shard", f"{index}/{count}", "must be I/N with 0 <= I < N", "Use e.g. 0/4."))
    clock = clock or time.monotonic
    mine = unfinished(Path(output), _seed_major(jobs)[index::count])  # keeps the seed-major order
    done = []
    for job in mine:
        if deadline is not None and clock() >= deadline:
            logger.warning("deadline reached: %d of this shard's %d runs left for a rerun", len(mine) - len(done), len(mine))
            break
        config = dataclasses.replace(transfer, task=job.target)
        outcome = run_job(job, config, library)
        write_result(Path(output), job, outcome, config)
        done.append(job.key)
        logger.info("%s: test %.3f (%.0f s)", job.key, outcome["metrics"]["test_accuracy"], outcome["metrics"]["seconds"])
    return done


def write_tsne(plan: Any, weights: Mapping[str, Mapping[str, Any]]) -> None:
    """t-SNE of the first target's test features under the tuned prompts of the methods marked ``tsne``
    in the registry (HGPrompt and Average)."""
    import ray
    from safetensors.torch import load_file

    from hgprompt_ray.transfer import report
    from hgprompt_ray.transfer.evaluation import features_task

    first = plan.targets[0]
    name = weights[first]["target"]
    prompts = {}
    for method in [m.name for m in registered() if m.tsne]:
        path = Path(plan.output) / "runs" / name / method / "seed0.safetensors"
        if path.is_file():
            prompts[get_method(method).label] = load_file(str(path))["prompt"]
    if len(prompts) < 2:
        return
    found = ray.get(
        remote(features_task, plan).remote(dataclasses.replace(plan.transfer, task=first), prompts)
    )
    report.write_tsne_plot(
        dict(zip(found["names"], found["features"])), found["labels"], plan.output / "tsne.png"
    )
