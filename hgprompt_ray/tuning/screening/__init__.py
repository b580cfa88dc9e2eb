"""Screening: rank all K sources by a cheap per-prompt transferability score and hand the best
K' to the subset search (``SearchSpec.screen_top``). The scores are a registry
(:data:`SCREENING_SCORES`; one module per member: ``h_score.py``, ``logme.py``)."""

from hgprompt_ray.tuning.screening import h_score, logme  # noqa: F401  (registers the members)
from hgprompt_ray.tuning.screening.logme import log_maximum_evidence
from hgprompt_ray.tuning.screening.registry import (
    SCREENING_SCORES,
    Screening,
    ScreeningScore,
    rank_prompts,
    register_screening_score,
    screening_score,
)

__all__ = [
    "SCREENING_SCORES",
    "Screening",
    "ScreeningScore",
    "log_maximum_evidence",
    "rank_prompts",
    "register_screening_score",
    "screening_score",
]
