"""The maths behind several weightings, and the ensemble prompt they give.

Every weighting initialises the target prompt at P_T = sum_i alpha_i P_i (:func:`ensemble_prompt`).
The methods themselves are declared in ``hgprompt_ray.transfer.methods`` (one module each); here:

* SPoT (Vu et al., ACL 2022): task embeddings are mean-pooled prompt tokens; a target prompt is
  tuned briefly, and sources are ranked by cosine similarity with it. SPoT-best takes the most
  similar source; SPoT-weighted weights sources by their positive similarities.
* H only = H-ensemble (lambda = 0: argmax_alpha H(sum_i alpha_i f_i) on the simplex) and
  alignment only (L_align alone): HGPrompt's ablation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.core.simplex import SolverSettings, h_score_weights, solve_weights, uniform_weights
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "alignment_only_weights",
    "ensemble_prompt",
    "h_only_weights",
    "spot_similarities",
    "spot_weights",
    "uniform_weights",
    "h_score_weights",
]


def ensemble_prompt(prompts: torch.Tensor, alpha: EnsembleWeights | Any) -> torch.Tensor:
    """P_T = sum_i alpha_i P_i.

    Args:
        prompts: the K source prompts, in the order of ``alpha``.
        alpha: an :class:`EnsembleWeights` over the K prompts (or K raw weights on the simplex).

    Shape:
        prompts: (K, m, d); alpha: (K,); returns (m, d).
    """
    values = alpha.as_array() if isinstance(alpha, EnsembleWeights) else np.asarray(alpha, dtype=np.float64)
    weights = torch.as_tensor(values, dtype=prompts.dtype)
    if prompts.dim() != 3 or weights.shape != (prompts.shape[0],):
        raise InvalidValueError(
            invalid_value(
                "alpha.shape",
                tuple(weights.shape),
                f"must be ({prompts.shape[0]},), one weight per prompt",
                "",
            )
        )
    if torch.any(weights < 0) or not torch.isclose(
        weights.sum(), torch.ones((), dtype=weights.dtype), atol=1e-6
    ):
        raise InvalidValueError(
            invalid_value("alpha", weights.tolist(), "must lie on the simplex (>= 0, sum 1)", "")
        )
    return torch.einsum("k,kmd->md", weights, prompts)


def spot_similarities(target_prompt: torch.Tensor, sources: torch.Tensor) -> np.ndarray:
    """Cosine similarity of mean-pooled tokens: SPoT's task-embedding similarity.

    Shape:
        target_prompt: (m, d); sources: (K, m, d); returns (K,).
    """
    if sources.dim() != 3 or target_prompt.shape != sources.shape[1:]:
        raise InvalidValueError(
            invalid_value(
                "target_prompt.shape",
                tuple(target_prompt.shape),
                f"must match the sources' {tuple(sources.shape[1:])}",
                "",
            )
        )
    target = target_prompt.double().mean(dim=0)
    pooled = sources.double().mean(dim=1)
    return torch.nn.functional.cosine_similarity(pooled, target.unsqueeze(0), dim=1).numpy()


def spot_weights(similarities: Any, best: bool) -> np.ndarray:
    """SPoT-best (one-hot on the most similar) or SPoT-weighted (positive similarities, normalised)."""
    values = np.asarray(similarities, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise InvalidValueError(
            invalid_value("similarities", values.tolist(), "must be a finite (K,) vector", "")
        )
    if best:
        weights = np.zeros(values.size)
        weights[int(np.argmax(values))] = 1.0
        return weights
    return h_score_weights(values)  # clip at 0 and normalise (uniform if none is positive)


def h_only_weights(statistics: Any, settings: SolverSettings | None = None) -> np.ndarray:
    """argmax_alpha H(sum_i alpha_i f_i) on the simplex: H-ensemble, i.e. HGPrompt's ablation
    without the alignment term (lambda = 0), on the search's train800 statistics."""
    return solve_weights(statistics.train.full(), None, 0.0, settings).alpha


def alignment_only_weights(statistics: Any, settings: SolverSettings | None = None) -> np.ndarray:
    """argmin_alpha L_align(alpha): the ablation without the H-score term."""
    return solve_weights(statistics.train.full(), statistics.covariance, 1.0, settings, h_weight=0.0).alpha
