"""CMA-ES: a black-box search of alpha, as model-merging tools search merge weights.

mergekit-evolve (Goddard et al., "Arcee's MergeKit", 2024) runs CMA-ES (Hansen & Ostermeier,
"Completely Derandomized Self-Adaptation in Evolution Strategies", Evolutionary Computation 2001)
over merge weights and scores each candidate on held-out data. Here: Optuna's ``CmaEsSampler``
over K softmax logits z (alpha = softmax(z), each z_i in [-4, 4]; the mean starts at z = 0, the
uniform ensemble, with step size 8 / 6, Optuna's defaults), scored by the same metric as the HGPrompt search (the val200
accuracy of a probe fitted on train800 features of P0 = sum_i alpha_i P_i,
``tuning.probe_metric``) with as many evaluations as the search has trials. It sees neither the
H-score nor the gradients: it is the answer to "is the H/alignment objective better than searching
alpha directly on the metric?". The metric's forward passes run exactly as the search's do (the
same function, the same precision), so the two searches are scored alike; the tuned run that
follows, like every method's, runs under the transfer config's precision.
"""

from __future__ import annotations

import logging

import numpy as np

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method

logger = logging.getLogger(__name__)
LOGIT_BOUND = 4.0
"""Each logit's range: alpha_i / alpha_j up to e^8, i.e. practically one-hot at the corners."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """alpha = softmax(z), in float64."""
    shifted = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits))
    return shifted / shifted.sum()


def cma_es_search(objective, num_sources: int, evaluations: int, seed: int = 0) -> tuple[np.ndarray, list[float]]:  # type: ignore[no-untyped-def]
    """Maximise ``objective(alpha)`` over softmax logits with CMA-ES; returns (best alpha, scores).

    The first evaluation is the uniform ensemble (z = 0; Optuna samples a study's first trial
    independently, so it is enqueued); ties keep the earliest best evaluation.
    """
    import optuna

    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise InvalidValueError(invalid_value("evaluations", evaluations, "must be a positive integer", "Use the search's trials."))
    if num_sources < 2:
        raise InvalidValueError(invalid_value("num_sources", num_sources, "must be at least 2", "Add sources."))
    names = [f"z{i}" for i in range(num_sources)]
    # Optuna's defaults: the mean starts at the box's centre (z = 0, the uniform ensemble) with
    # step size range / 6 (x0 and sigma0 are deprecated since Optuna 4.9)
    sampler = optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=0, warn_independent_sampling=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({n: 0.0 for n in names})  # the first evaluation is the uniform ensemble
    scores: list[float] = []
    best_score, best_alpha = -np.inf, np.full(num_sources, 1.0 / num_sources)
    for _ in range(evaluations):
        trial = study.ask()
        alpha = softmax(np.array([trial.suggest_float(n, -LOGIT_BOUND, LOGIT_BOUND) for n in names]))
        score = float(objective(alpha))
        study.tell(trial, score)
        scores.append(score)
        if score > best_score:
            best_score, best_alpha = score, alpha
    return best_alpha, scores


def cma_es_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """CMA-ES over alpha on the search's val200 probe metric, ``inputs.evaluations`` evaluations."""
    from hgprompt_ray.tuning.probe_metric import ProbeData, probe_accuracy

    probe = inputs.probe
    if probe is None:
        raise InvalidValueError(invalid_value("probe", None, "is required for CMA-ES", "Pass the search's ProbeData."))
    if not isinstance(probe, ProbeData):
        import ray

        probe = ray.get(probe)
    positions = list(inputs.probe_positions or range(len(inputs.sources)))
    alpha, scores = cma_es_search(lambda a: probe_accuracy(probe, positions, a), len(inputs.sources),
                                  inputs.evaluations, seed)  # fmt: skip
    logger.info("CMA-ES: %d evaluations, best val200 probe %.3f", len(scores), max(scores))
    return alpha


METHOD = register_method(
    TransferMethod(
        name="cma-es",
        label="CMA-ES (black-box alpha)",
        kind=MethodKind.WEIGHTING,
        paper="CMA-ES over merge weights as in mergekit-evolve (Goddard et al., 2024); Hansen & "
        "Ostermeier, Evolutionary Computation 2001",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from the CMA-ES alpha)",
        reads=("train800", "val200", "sources", "search"),
        weights=cma_es_weights,
        needs=("probe",),
        order=60,
    )
)
