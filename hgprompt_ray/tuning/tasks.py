"""The Ray tasks of a search (its statistics, the screening, the statistics' form), apart
from ``search`` (the Tuner, its callbacks and the driver's tables), so that a fresh Ray worker
running one imports numpy, torch and the maths only: the task's module is what the worker
imports to unpickle it, and ``search`` pulls in Tune, pandas and the extraction (about 5.4 s
in a fresh process on the 2-core machine, against about 2 s here)."""

from __future__ import annotations

import logging
from typing import Any

from hgprompt_ray.tuning.screening import Screening, rank_prompts
from hgprompt_ray.tuning.trainable import (
    DEFAULT_STATISTICS_BUDGET_GB,
    SearchStatistics,
    choose_statistics,
    search_statistics,
)
from hgprompt_ray.workers.feature_store import features_from_table, moments_from_table

__all__ = ["choice_task", "screening_task", "statistics_task"]

logger = logging.getLogger(__name__)


def _statistics_from_tables(
    prompts: list[str],
    train_tables: list[Any],
    val_tables: list[Any],
    gradient_table: Any,
    mode: str = "all-pairs",
    trials: int = 1,
    max_prompts: int | None = None,
    budget_gb: float = DEFAULT_STATISTICS_BUDGET_GB,
) -> SearchStatistics:
    train = [features_from_table(t) for t in train_tables]
    val = [features_from_table(t) for t in val_tables]
    names, moments = moments_from_table(gradient_table)
    order = [names.index(p) for p in prompts]
    moments = moments.subset(order) if order != list(range(len(names))) else moments
    choice = choose_statistics(
        len(prompts),
        max_prompts or len(prompts),
        [len(train[0][1]), len(val[0][1])],
        train[0][0].shape[1],
        trials,
        requested=mode,
        budget_gb=budget_gb,
    )
    logger.info("search statistics: %s (%s)", choice.mode, choice.reason)
    return search_statistics(
        prompts, [f for f, _, _ in train], train[0][1], [f for f, _, _ in val], val[0][1], moments, choice
    )


def screening_task(prompts: list[str], metric: str, top: int | None, *tables: Any) -> Screening:
    blocks = [features_from_table(table) for table in tables]
    return rank_prompts(prompts, [features for features, _, _ in blocks], blocks[0][1], metric, top)


def statistics_task(prompts: list[str], form: tuple[Any, ...], *tables: Any) -> SearchStatistics:
    from hgprompt_ray.threads import use_allocated_threads

    use_allocated_threads()
    count = len(prompts)
    return _statistics_from_tables(
        prompts, list(tables[:count]), list(tables[count : 2 * count]), tables[-1], *form
    )


def choice_task(statistics: SearchStatistics) -> dict[str, Any] | None:
    return statistics.choice
