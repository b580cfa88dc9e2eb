"""The screening registry and the ranking it produces.

A screening score is a per-prompt transferability estimate: a pure function of one prompt's
target features f_i (N, d) and the labels, larger = expected to transfer better. Screening
scores every source once (linear in K) and hands the best ``top`` to the subset search, so the
K^2 search statistics and the search space are built for K' prompts, not K.

A new score is one module in this package with::

    @register_screening_score("my-score", help="what it measures (paper)")
    def my_score(features: np.ndarray, labels: np.ndarray) -> float: ...

imported by the package ``__init__``; ``--screen-metric`` choices, the checks of
``SearchSpec`` and the search record read :data:`SCREENING_SCORES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "SCREENING_SCORES",
    "Screening",
    "ScreeningScore",
    "rank_prompts",
    "register_screening_score",
]

ScoreFunction = Callable[[np.ndarray, np.ndarray], float]


class ScreeningScore(NamedTuple):
    """A registered screening score.

    Attributes:
        name: its ``--screen-metric`` name.
        function: (features (N, d), labels (N,)) -> score, larger = better transfer.
        help: one line: what it measures and where it comes from.
    """

    name: str
    function: ScoreFunction
    help: str


SCREENING_SCORES: dict[str, ScreeningScore] = {}
"""name -> :class:`ScreeningScore`, in registration order."""


def register_screening_score(name: str, *, help: str) -> Callable[[ScoreFunction], ScoreFunction]:
    """Decorator: register ``function`` as the screening score ``name`` (once)."""

    def register(function: ScoreFunction) -> ScoreFunction:
        if name in SCREENING_SCORES:
            raise ValueError(
                f"screening score {name!r} is registered twice. Fix: give the new one another name."
            )
        SCREENING_SCORES[name] = ScreeningScore(name, function, help)
        return function

    return register


def screening_score(name: str) -> ScreeningScore:
    """The registered score ``name``; InvalidValueError listing the known ones."""
    if name not in SCREENING_SCORES:
        raise InvalidValueError(
            invalid_value(
                "--screen-metric",
                name,
                f"must be one of {list(SCREENING_SCORES)}",
                f"Pass e.g. --screen-metric {next(iter(SCREENING_SCORES), 'h-score')}.",
            )
        )
    return SCREENING_SCORES[name]


@dataclass(frozen=True)
class Screening:
    """Every source ranked by one screening score.

    Attributes:
        metric: the score's registry name.
        prompts: all K prompt names, best first (ties: by name).
        scores: their scores, in the same order.
        top: how many the search keeps (None: all).
    """

    metric: str
    prompts: tuple[str, ...]
    scores: tuple[float, ...]
    top: int | None = None

    @property
    def kept(self) -> tuple[str, ...]:
        """The prompts handed to the subset search, best first."""
        return self.prompts if self.top is None else self.prompts[: self.top]

    def to_json(self) -> dict[str, Any]:
        """The record kept with the search (``screening.json``, ``best.json``)."""
        return {
            "metric": self.metric,
            "top": self.top,
            "kept": list(self.kept),
            "ranking": [{"prompt": p, "score": s} for p, s in zip(self.prompts, self.scores)],
        }


def rank_prompts(
    prompts: Sequence[str],
    features: Sequence[Any],
    labels: Any,
    metric: str = "h-score",
    top: int | None = None,
) -> Screening:
    """Score every prompt's features with ``metric`` and rank them, best first.

    Args:
        prompts: the K prompt names.
        features: their target features on the same N samples.
        labels: the N labels.
        metric: a registered screening score.
        top: how many the search keeps (None: all; else in [1, K]).

    Shape:
        features: K x (N, d); labels: (N,).
    """
    score = screening_score(metric)
    if len(features) != len(prompts):
        raise InvalidValueError(
            invalid_value("features", len(features), f"must hold one block per prompt ({len(prompts)})", "")
        )
    if top is not None and (
        isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(prompts)
    ):
        raise InvalidValueError(
            invalid_value(
                "--screen-top", top, f"must be in [1, {len(prompts)}] or None", "Lower --screen-top."
            )
        )
    values = [float(score.function(np.asarray(f), np.asarray(labels))) for f in features]
    bad = [p for p, v in zip(prompts, values) if not np.isfinite(v)]
    if bad:
        raise InvalidValueError(
            invalid_value(
                f"{metric} scores of {bad}", "non-finite", "must be finite", "Check those prompts' features."
            )
        )
    order = sorted(range(len(prompts)), key=lambda i: (-values[i], prompts[i]))
    return Screening(metric, tuple(prompts[i] for i in order), tuple(values[i] for i in order), top)
