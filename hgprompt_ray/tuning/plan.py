"""From a :class:`SearchSpec` to a checked :class:`SearchPlan`, before Ray starts.

Everything that can be checked without Ray is checked here, so bad input costs nothing and
writes nothing: the target resolves (once: the plan carries the resolved task from here on),
the library is intact, the sources share a backbone and image size, M fits the sources, and the
output folder is free (or holds the same search, for ``resume``). The extraction config is
built here and nowhere else (:func:`extraction_config`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.data import related_tasks, resolve_target
from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.prompts import LibrarySelection, open_library, select_sources
from hgprompt_ray.tuning.spec import SearchSpec
from search_spaces import hgprompt as space

__all__ = ["STATE_FILE", "SearchPlan", "extraction_config", "plan_search", "resolve_available"]

logger = logging.getLogger(__name__)
STATE_FILE = "search.json"
"""The search's record in its output folder (arguments, prompts, command)."""


@dataclass(frozen=True)
class SearchPlan:
    """A checked search.

    Attributes:
        spec: the search as asked.
        task: the resolved target task.
        selection: its sources in the library.
        max_prompts: the largest M (``spec.max_prompts`` or every searched source).
        output: the results folder.
        extraction: what the Ray Train workers extract.
        subset_space: the subset encoding, ``auto`` resolved: ``scores`` or ``ranked-slots``.
    """

    spec: SearchSpec
    task: Any
    selection: LibrarySelection
    max_prompts: int
    output: Path
    extraction: ExtractionConfig
    subset_space: str = "scores"

    @property
    def screens(self) -> bool:
        """Whether the sources are ranked by ``spec.screen_metric`` before the search: to keep
        the best ``spec.screen_top``, or to order the ranked slots."""
        return self.spec.screen_top is not None or self.subset_space == "ranked-slots"

    @property
    def prompts(self) -> tuple[str, ...]:
        """The source prompt names, in library order."""
        return self.selection.names

    @property
    def target_name(self) -> str:
        """The target's registry name."""
        return str(self.task.info.name)


def resolve_available(target: str, data_root: str | None = None, download: bool = False) -> Any:
    """The task for ``target``; an InvalidValueError when it cannot be read here."""
    task = resolve_target(target, data_root=data_root, download=download)
    available, reason = task.availability()
    if not available:
        raise InvalidValueError(f"target {target!r} is not available here: {reason}")
    return task


def extraction_config(
    spec: SearchSpec, task: Any, selection: LibrarySelection, prompts: Sequence[str] | None = None
) -> ExtractionConfig:
    """The one place an :class:`ExtractionConfig` is built from a search's settings."""
    return ExtractionConfig(
        target=spec.target,
        library=str(selection.library),
        prompts=tuple(selection.names if prompts is None else prompts),
        backbone=selection.backbone,
        img_size=selection.img_size,
        splits=("train800", "val200"),
        num_samples=spec.samples,
        gradient_samples=spec.gradient_samples,
        split_seed=spec.split_seed,
        sample_seed=spec.seed,
        data_root=spec.data_root,
        cache_dir=spec.cache_dir,
        precision=spec.precision,
    )


def plan_search(spec: SearchSpec, task: Any = None) -> SearchPlan:
    """Check ``spec`` against the disk and the library; raises InvalidValueError with the fix.

    Args:
        spec: the search.
        task: ``spec.target`` already resolved (an evaluation resolves its targets once); None:
            resolve it here. The plan carries it to the extraction workers.
    """
    if task is None:
        task = resolve_available(spec.target, spec.data_root, spec.download)
    library = open_library(spec.library)
    selection = select_sources(
        library,
        task.info.name,
        sources=spec.sources,
        include_target_prompt=spec.include_target_prompt,
        backbone=spec.backbone,
        img_size=spec.img_size,
        related=related_tasks(task.info.name),
    )
    count = len(selection.records)
    if not 1 <= spec.min_prompts <= count:
        raise InvalidValueError(
            f"--min-prompts must be in [1, {count}] (the usable prompts), but got {spec.min_prompts}."
        )
    searched, what = count, f"the {count} usable prompts"
    if spec.screen_top is not None:
        low = max(2, spec.min_prompts)
        if not low <= spec.screen_top <= count:
            raise InvalidValueError(
                f"--screen-top must be in [{low}, {count}] (at least --min-prompts and 2, at most the usable "
                f"prompts), but got {spec.screen_top}. Fix: pass e.g. --screen-top {min(count, max(low, 32))}, "
                "or leave it out to search every source."
            )
        searched, what = spec.screen_top, f"the {spec.screen_top} screened prompts (--screen-top)"
    max_prompts = searched if spec.max_prompts is None else spec.max_prompts
    if not spec.min_prompts <= max_prompts <= searched:
        raise InvalidValueError(
            f"--max-prompts must be in [{spec.min_prompts}, {searched}] (M cannot exceed {what}), but got "
            f"{max_prompts}. Fix: pass --max-prompts {searched}, or more prompts."
        )
    subset_space = spec.subset_space
    if subset_space == "auto":
        subset_space = "scores" if searched <= space.SCORES_MAX_PROMPTS else "ranked-slots"
    output = Path(spec.output or f"runs/search-{task.info.name}").expanduser()
    _check_output(output, spec, selection.names)
    return SearchPlan(
        spec=spec,
        task=task,
        selection=selection,
        max_prompts=max_prompts,
        output=output,
        extraction=extraction_config(spec, task, selection),
        subset_space=subset_space,
    )


def _check_output(output: Path, spec: SearchSpec, prompts: Sequence[str]) -> None:
    state = output / STATE_FILE
    if spec.resume:
        if not state.is_file():
            raise InvalidValueError(
                f"--resume: {output} holds no search to resume. Fix: drop --resume to start one."
            )
        previous = read_state(state)
        if previous["target"] != spec.target or previous["prompts"] != list(prompts):
            raise InvalidValueError(
                f"--resume: {output} holds a search of target {previous['target']!r} over prompts "
                f"{previous['prompts']}, not this one. Fix: pass the same --target and --prompts."
            )
        _check_same_settings(output, spec, previous.get("arguments", {}))
    elif output.exists() and any(output.iterdir()):
        what = "another search" if state.is_file() else "other files"
        raise InvalidValueError(
            f"--output {output} already holds {what}. Fix: pass --resume to continue it, or choose a new --output."
        )


RESUME_FIELDS = (
    "include_target_prompt", "num_samples", "lambda_range", "min_prompts", "max_prompts", "scheduler",
    "samples", "gradient_samples", "seed", "split_seed", "metric", "objective", "sampler", "report_test",
    "screen_top", "screen_metric", "subset_space",
)  # fmt: skip
"""Settings a resumed search must share with the search it continues."""
_BEFORE_THEY_EXISTED = {
    "metric": "val-h", "objective": "both", "sampler": "tpe", "report_test": 0,
    "screen_top": None, "screen_metric": "h-score", "subset_space": "auto",
}  # fmt: skip
"""What a search recorded before a setting existed did (its ``search.json`` lacks the key)."""


def read_state(path: Path) -> dict[str, Any]:
    """A ``search.json``; an IntegrityError naming the file when it is not readable JSON."""
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IntegrityError(
            f"{path} is not readable JSON ({error}). Fix: restore it, or start the search anew in a new --output."
        ) from error


def _check_same_settings(output: Path, spec: SearchSpec, arguments: dict[str, Any]) -> None:
    """A resumed search must not mix trials of other settings (statistics, metric, objective)."""
    current = dataclasses.asdict(spec)
    differ = []
    for name in RESUME_FIELDS:
        old = arguments.get(name, _BEFORE_THEY_EXISTED.get(name, current[name]))
        old, new = [list(v) if isinstance(v, (list, tuple)) else v for v in (old, current[name])]
        if old != new:
            differ.append(f"--{name.replace('_', '-')} {old} (now {new})")
    if differ:
        raise InvalidValueError(
            f"--resume: {output} holds a search with other settings: {'; '.join(differ)}. "
            "Fix: resume with the search's own settings, or choose a new --output."
        )
