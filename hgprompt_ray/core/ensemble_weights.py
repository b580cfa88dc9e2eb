"""The ensemble weights alpha: one typed record from the solver to the report.

A solve works on positions (the subset a trial chose); everything after it — trial metrics,
``best.json``, evaluation jobs, ``ensemble_prompt`` — needs to know which prompt each weight
belongs to. :class:`EnsembleWeights` carries both, checks that the values lie on the simplex,
and converts at the edges in one function each: :meth:`to_metrics` / :meth:`from_metrics` for
the flat ``alpha_<name>`` keys of Tune (the prefix is the caller's, defined by the search space),
:meth:`to_json` / :meth:`from_json` for files, :meth:`aligned` for a fixed prompt order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["SIMPLEX_TOLERANCE", "EnsembleWeights"]

SIMPLEX_TOLERANCE = 1e-6
"""How far the sum of the weights may be from 1 (solver round-off)."""


@dataclass(frozen=True)
class EnsembleWeights:
    """Weights over named prompts, on the simplex (alpha_i >= 0, sum 1).

    Attributes:
        names: the prompt names, distinct, in a fixed order.
        values: one weight per name.
    """

    names: tuple[str, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        values = tuple(float(v) for v in np.asarray(self.values, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        if not names:
            raise InvalidValueError(
                invalid_value("EnsembleWeights.names", [], "must name at least one prompt", "")
            )
        if len(set(names)) != len(names):
            raise InvalidValueError(
                invalid_value("EnsembleWeights.names", list(names), "must not repeat a name", "")
            )
        if len(values) != len(names):
            raise InvalidValueError(
                invalid_value(
                    "EnsembleWeights.values",
                    list(values),
                    f"must have one weight per name ({len(names)})",
                    "",
                )
            )
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise InvalidValueError(
                invalid_value("EnsembleWeights.values", list(values), "must be finite and >= 0", "")
            )
        if abs(sum(values) - 1.0) > SIMPLEX_TOLERANCE:
            raise InvalidValueError(
                invalid_value(
                    "EnsembleWeights.values",
                    list(values),
                    f"must sum to 1 (got {sum(values)!r})",
                    "Normalise the weights.",
                )
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, names: Sequence[str]) -> EnsembleWeights:
        """alpha_i = 1/K over ``names`` (the Average baseline)."""
        return cls(tuple(names), tuple([1.0 / len(names)] * len(names)))

    @classmethod
    def one_hot(cls, names: Sequence[str], chosen: str) -> EnsembleWeights:
        """All weight on ``chosen``."""
        if chosen not in names:
            raise InvalidValueError(invalid_value("chosen", chosen, f"must be one of {list(names)}", ""))
        return cls(tuple(names), tuple(1.0 if n == chosen else 0.0 for n in names))

    @classmethod
    def from_subset(cls, names: Sequence[str], subset: Sequence[int], alpha: Any) -> EnsembleWeights:
        """Weights over all ``names`` from a solve over the positions ``subset`` (0 elsewhere)."""
        values = np.zeros(len(names))
        values[np.asarray(subset, dtype=np.int64)] = np.asarray(alpha, dtype=np.float64)
        return cls(tuple(names), tuple(values))

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], names: Sequence[str], prefix: str) -> EnsembleWeights:
        """The inverse of :meth:`to_metrics` (a name missing from ``metrics`` weighs 0)."""
        return cls(tuple(names), tuple(float(metrics.get(f"{prefix}{n}", 0.0)) for n in names))

    @classmethod
    def from_json(cls, entry: Mapping[str, float]) -> EnsembleWeights:
        """The inverse of :meth:`to_json`: ``{name: weight}`` in order."""
        return cls(tuple(entry), tuple(entry.values()))

    # ------------------------------------------------------------------ views
    def to_metrics(self, prefix: str) -> dict[str, float]:
        """Flat ``{prefix + name: weight}`` (Tune metrics, one column per prompt)."""
        return {f"{prefix}{n}": v for n, v in zip(self.names, self.values)}

    def to_json(self) -> dict[str, float]:
        """``{name: weight}`` in order (what ``best.json`` stores)."""
        return dict(zip(self.names, self.values))

    def aligned(self, names: Sequence[str]) -> np.ndarray:
        """The weights in the order of ``names`` (a superset: absent names weigh 0).

        Shape:
            returns: (len(names),) float64.
        """
        unknown = sorted(set(self.names) - set(names))
        if unknown and any(self.values[self.names.index(n)] > 0 for n in unknown):
            raise InvalidValueError(
                invalid_value("names", list(names), f"must include the weighted prompts {unknown}", "")
            )
        lookup = self.to_json()
        return np.array([lookup.get(n, 0.0) for n in names], dtype=np.float64)

    def as_array(self) -> np.ndarray:
        """The values as float64, shape (K,)."""
        return np.asarray(self.values, dtype=np.float64)

    @property
    def support(self) -> tuple[str, ...]:
        """The names with a positive weight."""
        return tuple(n for n, v in zip(self.names, self.values) if v > 0)
