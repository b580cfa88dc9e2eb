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
    gradient_second_moment,
    merge_gradient_moments,
    update_gradient_moments,
)
from hgprompt_ray.core.ensemble_hscore import (
    EnsembleHStatistics,
    OnDemandHStatistics,
    TorchEnsembleH,
    ensemble_h_score,
    ensemble_h_score_torch,
    ensemble_statistics,
    per_source_h_scores,
)
from hgprompt_ray.core.ensemble_objective import EnsembleObjective
from hgprompt_ray.core.hscore import (
    h_score,
    ledoit_wolf_shrinkage,
    regularized_h_score,
    regularized_h_score_torch,
)
from hgprompt_ray.core.probe_head import ProbeHead, fit_probe_head
from hgprompt_ray.core.simplex import (
    SimplexConvergenceWarning,
    SimplexMinimum,
    SimplexResult,
    SolverSettings,
    h_score_weights,
    kkt_gap,
    minimize_on_simplex,
    solve_weights,
    solver_starts,
    uniform_weights,
)

__all__ = [
    "EnsembleHStatistics",
    "EnsembleObjective",
    "GradientMoments",
    "OnDemandHStatistics",
    "ProbeHead",
    "SimplexConvergenceWarning",
    "SimplexMinimum",
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
    "gradient_second_moment",
    "h_score",
    "h_score_weights",
    "kkt_gap",
    "ledoit_wolf_shrinkage",
    "merge_gradient_moments",
    "minimize_on_simplex",
    "per_source_h_scores",
    "regularized_h_score",
    "regularized_h_score_torch",
    "solve_weights",
    "solver_starts",
    "uniform_weights",
    "update_gradient_moments",
]
