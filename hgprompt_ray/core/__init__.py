"""Pure maths of HGPrompt: H-score, exact ensemble H-score, gradient alignment, simplex solver.

Imports neither Ray nor timm (numpy and torch only); a test checks it.
"""

from hgprompt_ray.core.alignment import (
    GradientMoments,
    alignment_loss,
    alignment_loss_torch,
    alignment_scale,
    empty_gradient_moments,
    gradient_covariance,
    merge_gradient_moments,
    update_gradient_moments,
)
from hgprompt_ray.core.ensemble_hscore import (
    EnsembleHStatistics,
    TorchEnsembleH,
    ensemble_h_score,
    ensemble_h_score_torch,
    ensemble_statistics,
    per_source_h_scores,
)
from hgprompt_ray.core.hscore import (
    h_score,
    h_score_torch,
    ledoit_wolf_shrinkage,
    regularized_h_score,
    regularized_h_score_torch,
)
from hgprompt_ray.core.probe_head import ProbeHead, fit_probe_head
from hgprompt_ray.core.simplex import (
    SimplexConvergenceWarning,
    SimplexResult,
    SolverSettings,
    h_score_weights,
    solve_weights,
    uniform_weights,
)

__all__ = [
    "EnsembleHStatistics",
    "GradientMoments",
    "ProbeHead",
    "SimplexConvergenceWarning",
    "SimplexResult",
    "SolverSettings",
    "TorchEnsembleH",
    "alignment_loss",
    "alignment_loss_torch",
    "alignment_scale",
    "empty_gradient_moments",
    "ensemble_h_score",
    "ensemble_h_score_torch",
    "ensemble_statistics",
    "fit_probe_head",
    "gradient_covariance",
    "h_score",
    "h_score_torch",
    "h_score_weights",
    "ledoit_wolf_shrinkage",
    "merge_gradient_moments",
    "per_source_h_scores",
    "regularized_h_score",
    "regularized_h_score_torch",
    "solve_weights",
    "uniform_weights",
    "update_gradient_moments",
]
