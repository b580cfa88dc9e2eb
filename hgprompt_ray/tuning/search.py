"""Ray Tune + Optuna over the trials of :mod:`hgprompt_ray.tuning.trainable`.

``screen_sources`` ranks every source by a screening score (one Ray task, linear in K) when
the search screens. ``prepare_statistics(extraction)`` runs one Ray task that reads the feature tables and gradient
table zero-copy from the object store and returns the :class:`SearchStatistics` as an
ObjectRef. ``build_tuner`` wraps the trial with ``tune.with_parameters`` (only refs — the
statistics and, for the probe metric, the ProbeData — and the settings travel to trials), one
CPU per trial, the searcher behind a ``ConcurrencyLimiter``, ``reuse_actors=True`` (fat trials: a whole solve each), and Tune's
experiment state under ``storage_path/name`` so ``Tuner.restore`` continues a killed search
with the searcher's state. ``trials_frame`` turns the results into one row per trial (a trial
that errored before reporting has no row).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune

from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.errors import IntegrityError
from hgprompt_ray.tuning.progress import TrialProgress
from hgprompt_ray.tuning.tasks import choice_task, screening_task, statistics_task
from hgprompt_ray.tuning.trainable import (
    DEFAULT_STATISTICS_BUDGET_GB,
    TrialInputs,
    choose_statistics,
    hgprompt_trial,
)
from hgprompt_ray.workers.extract import Extraction
from search_spaces.hgprompt import ALPHA_PREFIX, TRIAL_COLUMNS

__all__ = [
    "StateBackup",
    "build_tuner",
    "prepare_statistics",
    "statistics_choice",
    "repair_experiment_state",
    "restore_tuner",
    "screen_sources",
    "trials_frame",
]

logger = logging.getLogger(__name__)
_STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def backup_path(experiment_dir: Path) -> Path:
    """Where :class:`StateBackup` keeps the last complete state of ``experiment_dir``."""
    return experiment_dir.parent / f"{experiment_dir.name}-state-backup"


def _complete(path: Path) -> bool:
    """Whether a Tune state file was written to the end (JSON parses; a pickle's opcodes reach
    STOP — scanned with ``pickletools``, never unpickled)."""
    import json
    import pickletools

    try:
        data = path.read_bytes()
        if not data.startswith(b"\x80"):  # JSON (Tune also writes pickles under .json names)
            json.loads(data)
            return True
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
    except (OSError, ValueError, EOFError):
        return False


def _state_files(folder: Path) -> list[Path]:
    return sorted(p for pattern in _STATE_PATTERNS for p in folder.glob(pattern))


class StateBackup(tune.Callback):
    """Tune writes its experiment and searcher state in place (``open(..., "w")``), so a driver
    killed mid-write leaves a truncated file and ``Tuner.restore`` silently restarts the search
    without its searcher. This callback keeps the last complete set of those files."""

    def __init__(self, experiment_dir: str | Path, backup_dir: str | Path) -> None:
        self.experiment_dir, self.backup_dir = Path(experiment_dir), Path(backup_dir)

    def _backup(self, source: Path) -> None:
        import shutil

        from hgprompt_ray.atomic import atomic_path

        files = _state_files(source)
        if len(files) < len(_STATE_PATTERNS) or not all(_complete(f) for f in files):
            return
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        for old in _state_files(self.backup_dir):
            if not (source / old.name).exists():
                old.unlink()
        for path in files:
            with atomic_path(self.backup_dir / path.name) as tmp:
                shutil.copyfile(path, tmp)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # The driver staging folder holds one consistent set (Tune writes all three files there in
        # this thread); the copy under storage_path is uploaded from it and may lag behind.
        staging = getattr(getattr(trial, "storage", None), "experiment_driver_staging_path", None)
        self._backup(Path(staging) if staging and Path(staging).is_dir() else self.experiment_dir)


def repair_experiment_state(experiment_dir: str | Path, backup_dir: str | Path) -> list[str]:
    """Before a restore: put back the last complete state files where the current ones are
    truncated. Returns the names of the files replaced."""
    import shutil

    experiment_dir, backup_dir = Path(experiment_dir), Path(backup_dir)
    current = _state_files(experiment_dir)
    if current and all(_complete(f) for f in current):
        return []
    saved = _state_files(backup_dir)
    if not saved:
        return []
    for path in current:
        path.unlink()
    for source in saved:
        shutil.copyfile(source, experiment_dir / source.name)
    return [p.name for p in saved]


def screen_sources(
    extraction: Extraction, prompts: Sequence[str], metric: str, top: int | None, num_cpus: int = 1
) -> Any:
    """ObjectRef of the :class:`~hgprompt_ray.tuning.screening.Screening` of ``prompts``: each
    ranked by the screening score ``metric`` on its features of the extraction's first split
    (train800, the split the solve uses; val200 stays held out). One Ray task, zero-copy reads,
    linear in K."""
    import ray

    train_refs = extraction.feature_refs(next(iter(extraction.feature_keys)))
    task = ray.remote(num_cpus=num_cpus)(screening_task)
    return task.remote(list(prompts), metric, top, *[train_refs[p] for p in prompts])


def prepare_statistics(
    extraction: Extraction,
    val_split: str = "val200",
    num_cpus: int = 1,
    prompts: Sequence[str] | None = None,
    *,
    mode: str = "auto",
    trials: int = 1,
    max_prompts: int | None = None,
    budget_gb: float = DEFAULT_STATISTICS_BUDGET_GB,
) -> Any:
    """ObjectRef of the :class:`SearchStatistics` of ``prompts`` (default: every extracted
    prompt; e.g. the screened ones, in their order) (one Ray task).

    ``mode``, ``trials``, ``max_prompts`` and ``budget_gb`` choose the form of the feature
    statistics (:func:`~hgprompt_ray.tuning.trainable.choose_statistics`; the statistics keep
    the choice as ``.choice``, see :func:`statistics_choice`).
    """
    import ray

    train_split = next(iter(extraction.feature_keys))
    if val_split not in extraction.feature_keys or val_split == train_split:
        raise ValueError(
            f"the extraction has no held-out {val_split!r} features (splits: {list(extraction.feature_keys)}). "
            f"Fix: extract with splits=({train_split!r}, {val_split!r})."
        )
    prompts = list(extraction.prompts if prompts is None else prompts)
    train_refs = extraction.feature_refs(train_split)
    val_refs = extraction.feature_refs(val_split)
    choose_statistics(1, 1, [2], 1, 1, requested=mode, budget_gb=budget_gb)  # bad settings fail here
    task = ray.remote(num_cpus=num_cpus)(statistics_task)
    return task.remote(
        prompts,
        (mode, trials, max_prompts, budget_gb),
        *[train_refs[p] for p in prompts],
        *[val_refs[p] for p in prompts],
        extraction.gradient_ref(),
    )


def statistics_choice(statistics_ref: Any) -> dict[str, Any] | None:
    """The :class:`~hgprompt_ray.tuning.trainable.StatisticsChoice` (as a dict) of the statistics
    behind ``statistics_ref``, read by a small task (the driver maps none of the arrays)."""
    import ray

    return ray.get(ray.remote(num_cpus=0)(choice_task).remote(statistics_ref))  # type: ignore[no-any-return]


def build_tuner(
    *,
    statistics_ref: Any,
    space: Mapping[str, Any],
    searcher: Any,
    scheduler: Any | None,
    metric: str,
    mode: str,
    num_samples: int,
    max_concurrent: int,
    solver: Mapping[str, Any],
    stages: tuple[int, ...],
    seed: int,
    storage_path: str | Path,
    name: str,
    verbose: int = 0,
    objective: str = "both",
    probe_ref: Any = None,
) -> Any:
    """A ``tune.Tuner`` for a new search (see the module docstring)."""
    from ray.tune.search import ConcurrencyLimiter

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # snapshot experiment state often: resumable
    trainable = _trainable(
        statistics_ref, solver, stages, seed, scheduler is not None, objective=objective, probe_ref=probe_ref
    )
    experiment_dir = Path(storage_path).expanduser().resolve() / name
    return tune.Tuner(
        trainable,
        param_space=dict(space),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=scheduler,
            num_samples=num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).expanduser().resolve()),
            verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[
                StateBackup(experiment_dir, backup_path(experiment_dir)),
                TrialProgress(num_samples, metric, mode),
            ],
        ),
    )


def restore_tuner(
    path: str | Path,
    *,
    statistics_ref: Any,
    solver: Mapping[str, Any],
    stages: tuple[int, ...],
    seed: int,
    report_stages: bool = False,
    objective: str = "both",
    probe_ref: Any = None,
) -> Any:
    """Continue the search stored at ``path``: finished trials are kept, unfinished ones rerun
    with their configs, the searcher's state (Optuna's study) is restored, and the search
    stops at the ``num_samples`` it was started with."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    repaired = repair_experiment_state(path, backup_path(Path(path)))
    if repaired:
        logger.warning(
            "Tune's state files were cut off by the kill; restored the last complete ones: %s", repaired
        )
    damaged = sorted(f.name for f in _state_files(Path(path)) if not _complete(f))
    if damaged:  # killed mid-write before the backup held a complete set: nothing to restore from
        raise IntegrityError(
            f"--resume: Tune's state files {damaged} in {path} were cut off by a kill before any "
            "complete copy was kept, so the search cannot be restored. Fix: start it again with "
            "another --output (the finished trials' results stay in this folder)."
        )
    return tune.Tuner.restore(
        str(path),
        trainable=_trainable(
            statistics_ref, solver, stages, seed, report_stages, objective=objective, probe_ref=probe_ref
        ),
        resume_unfinished=True,
        resume_errored=True,
    )


def _trainable(
    statistics_ref: Any,
    solver: Mapping[str, Any],
    stages: tuple[int, ...],
    seed: int,
    report_stages: bool,
    objective: str = "both",
    probe_ref: Any = None,
) -> Any:
    inputs = TrialInputs(
        statistics=statistics_ref,
        solver=dict(solver),
        stages=tuple(stages),
        seed=seed,
        report_stages=report_stages,
        objective=objective,
        probe=probe_ref,
    )
    return tune.with_resources(
        tune.with_parameters(hgprompt_trial, inputs=inputs), trial_resources(probe_ref)
    )


TRIALS_PER_GPU = 4
"""Trials sharing one GPU on a cluster with GPUs: a trial's probe forward barely loads a card."""


def trial_resources(probe_ref: Any) -> dict[str, float]:
    """One CPU per trial, plus a 1/TRIALS_PER_GPU GPU share when the trials run the probe metric
    and the cluster has GPUs (the probe's forward then runs there; the solve stays on the CPU)."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0
    if probe_ref is None or gpus <= 0:
        return {"cpu": 1}
    return {"cpu": 1, "gpu": 1.0 / TRIALS_PER_GPU}


def _creation_index(result: Any, metrics: Mapping[str, Any]) -> float:
    """The trial's creation counter, from its folder name ``<trainable>_<id>_<counter>_<params>``."""
    name = Path(str(getattr(result, "path", "") or "")).name
    match = re.search(rf"_{re.escape(str(metrics.get('trial_id')))}_(\d+)_", name)
    return float(match.group(1)) if match else float(metrics.get("timestamp") or 0)


def trials_frame(result_grid: Any, prompts: list[str]) -> pd.DataFrame:
    """One row per trial (its last report), in the order trials were created, with a trial
    number, the config (lambda, M, scores), the metrics and alpha per prompt."""
    rows = []
    for result in result_grid:
        metrics = dict(result.metrics or {})
        if not any(key.startswith(ALPHA_PREFIX) for key in metrics):
            continue  # a trial that never reported (it errored): Ray still fills trial_id and times
        row: dict[str, Any] = {
            "trial_id": metrics.get("trial_id"),
            "_order": _creation_index(result, metrics),
        }
        for key in TRIAL_COLUMNS:
            row[key] = metrics.get(key)
        row.update(EnsembleWeights.from_metrics(metrics, prompts, ALPHA_PREFIX).to_metrics(ALPHA_PREFIX))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    unreported = [c for c in TRIAL_COLUMNS if frame[c].isna().all()]  # e.g. test_probe_accuracy when off
    frame = frame.drop(columns=unreported)
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    frame.insert(0, "trial", np.arange(1, len(frame) + 1))
    return frame
