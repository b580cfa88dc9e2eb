"""A trial's prompt subset from its sampled config: the decoders of the two subset encodings of
``search_spaces/hgprompt.py`` (``scores`` and ``ranked-slots``), chosen by the config's keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hgprompt_ray.errors import InvalidValueError, invalid_value
from search_spaces.hgprompt import SCORE_PREFIX, SLOT_PREFIX

__all__ = ["select_ranked_subset", "select_subset"]


def _count(config: Mapping[str, Any], available: int) -> int:
    count = int(config["num_prompts"])
    if not 1 <= count <= available:
        raise InvalidValueError(
            invalid_value("num_prompts", count, f"must be in [1, {available}]", "Lower --max-prompts.")
        )
    return count


def select_subset(config: Mapping[str, Any], prompts: Sequence[str]) -> list[int]:
    """Positions in ``prompts`` of the trial's ``num_prompts`` prompts, in ``prompts``' order (so
    the same subset always gives the same statistics).

    A config with ``slot_<j>`` keys is decoded by :func:`select_ranked_subset` (``prompts``
    ordered best first); otherwise the subset is the prompts with the highest
    ``score_<name>`` (ties: by name).
    """
    if f"{SLOT_PREFIX}0" in config:
        return select_ranked_subset(config, len(prompts))
    count = _count(config, len(prompts))
    ranked = sorted(
        range(len(prompts)), key=lambda i: (-float(config[f"{SCORE_PREFIX}{prompts[i]}"]), prompts[i])
    )
    return sorted(ranked[:count])


def select_ranked_subset(config: Mapping[str, Any], num_ranked: int) -> list[int]:
    """Ranks (0 = best) of the first ``num_prompts`` slots: slot j takes rank ``slot_j - 1``, or
    the nearest rank no earlier slot took (ties: the better rank). Never repeats a rank, never
    returns fewer than ``num_prompts``; sorted.
    """
    count = _count(config, num_ranked)
    taken = [False] * num_ranked
    chosen = []
    for j in range(count):
        wanted = int(config[f"{SLOT_PREFIX}{j}"]) - 1
        if not 0 <= wanted < num_ranked:
            raise InvalidValueError(
                invalid_value(f"{SLOT_PREFIX}{j}", wanted + 1, f"must be a rank in [1, {num_ranked}]", "")
            )
        for distance in range(num_ranked):
            better, worse = wanted - distance, wanted + distance
            if better >= 0 and not taken[better]:
                pick = better
                break
            if worse < num_ranked and not taken[worse]:
                pick = worse
                break
        taken[pick] = True
        chosen.append(pick)
    return sorted(chosen)
