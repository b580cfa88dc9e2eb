"""What a method's ``weights`` function may read: :class:`WeightingInputs`, built from train800 and
val200 only.

The zero-shot column here is the matrix's *val200* accuracy (a probe fitted on train800 under each
source prompt, scored on val200); the HGPrompt search and its statistics come from train800 and
val200 samples; SPoT's target prompt is tuned on train800; the black-box search scores val200.
Nothing here holds a test label or a test accuracy, which is what lets a test walk every method
and check that its choices never read test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.errors import IntegrityError, InvalidValueError, invalid_value

__all__ = ["WeightingInputs", "statistics_in_order"]


def statistics_in_order(statistics: Any, names: Sequence[str]) -> Any:
    """The search's ``SearchStatistics`` over exactly ``names``, in that order, matched by prompt
    name: the search holds its prompts in its own order (``ranked-slots`` ranks them), while
    H-ensemble, the ablation and the scaling subsets index them by positions in ``sources``.

    Raises:
        IntegrityError: a name the statistics lack (a source the search screened out).
    """
    held = list(statistics.prompts)
    missing = [n for n in names if n not in held]
    if missing:
        raise IntegrityError(
            f"the search's statistics lack the sources {missing} (it kept {held}). Fix: run the "
            "evaluation's search without screening (its statistics must cover every source)."
        )
    index = [held.index(n) for n in names]
    if index == list(range(len(held))):
        return statistics
    return statistics._replace(
        prompts=tuple(names),
        train=statistics.train.subset(index),
        val=statistics.val.subset(index),
        covariance=np.ascontiguousarray(statistics.covariance[:, index][:, :, index]),
        source_h_scores=np.asarray(statistics.source_h_scores)[index],
    )


class WeightingInputs(NamedTuple):
    """Everything the weightings (and PANDA's transferability weights) read, for one target.

    Attributes:
        sources: the K source prompt names.
        prompts: the source prompts (K, m, d).
        zero_shot_val: val200 zero-shot accuracy per source.
        statistics: the search's ``SearchStatistics`` (train800 features and gradients, val200
            features) or None.
        search_weights: the HGPrompt search's best alpha over ``sources`` (K,) or None.
        spot_similarities: seed -> SPoT's cosine similarities (K,).
        probe: the search's ``ProbeData`` (train800 / val200 images) or an ObjectRef of it, or None.
        probe_positions: positions of ``sources`` in ``probe.prompts``.
        evaluations: the black-box weighting's budget: the HGPrompt search's number of trials.
        search_subset: positions in ``sources`` of the subset the search's best trial chose (the
            ablation's four objectives are all solved on it); empty: the positive ``search_weights``.
        random_search_weights: the same search's best alpha with random sampling (K,) or None.
    """

    sources: tuple[str, ...]
    prompts: torch.Tensor
    zero_shot_val: dict[str, float]
    statistics: Any = None
    search_weights: np.ndarray | None = None
    spot_similarities: dict[int, np.ndarray] = {}  # a NamedTuple default, never mutated
    probe: Any = None
    probe_positions: tuple[int, ...] = ()
    evaluations: int = 32
    search_subset: tuple[int, ...] = ()
    random_search_weights: np.ndarray | None = None

    def required(self, field: str, method: str, fix: str) -> np.ndarray:
        """The (K,) weights held in ``field``, as float64; a clear error naming ``method`` when absent."""
        value = getattr(self, field)
        if value is None:
            raise InvalidValueError(invalid_value(field, None, f"are required for {method}", fix))
        return np.asarray(value, dtype=np.float64)

    def search_positions(self) -> list[int]:
        """Positions of the search's chosen subset in ``sources`` (see ``search_subset``)."""
        if self.search_subset:
            return list(self.search_subset)
        if self.search_weights is not None:
            return [int(i) for i in np.flatnonzero(np.asarray(self.search_weights) > 0)]
        raise InvalidValueError(
            invalid_value("search_subset", (), "is required (no search was run)", "Run the HGPrompt search first.")
        )

    def on_search_subset(self, solve: Any) -> np.ndarray:
        """``solve(inputs restricted to the search's subset)`` -> weights over the subset, scattered
        into a (K,) alpha with zeros outside it."""
        index = self.search_positions()
        alpha = np.zeros(len(self.sources))
        alpha[index] = np.asarray(solve(self.subset(index, None)), dtype=np.float64)
        return alpha

    def subset(self, index: Sequence[int], search_weights: np.ndarray | None) -> WeightingInputs:
        """The inputs restricted to the sources at ``index`` (the scaling curve's subsets)."""
        index = list(index)
        statistics = self.statistics
        if statistics is not None:
            statistics = statistics_in_order(statistics, [self.sources[i] for i in index])
        return self._replace(
            sources=tuple(self.sources[i] for i in index),
            prompts=self.prompts[index],
            zero_shot_val={self.sources[i]: self.zero_shot_val[self.sources[i]] for i in index
                           if self.sources[i] in self.zero_shot_val},  # fmt: skip
            statistics=statistics,
            search_weights=search_weights,
            spot_similarities={s: np.asarray(v)[index] for s, v in self.spot_similarities.items()},
            probe_positions=tuple(self.probe_positions[i] for i in index) if self.probe_positions else (),
            search_subset=(),
        )
