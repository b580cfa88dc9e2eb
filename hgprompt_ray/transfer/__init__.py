"""Transfer to a target: linear probes, the zero-shot matrix, VTAB-1k tuning, baselines, reports."""

from hgprompt_ray.transfer.attempt import AttemptClassifier
from hgprompt_ray.transfer.linear_probe import PROBE_GRID, linear_probe
from hgprompt_ray.transfer.splits import load_transfer_splits, test_subset_indices
from hgprompt_ray.transfer.tune import TransferResult, brief_tune, tune_transfer
from hgprompt_ray.transfer.zero_shot import zero_shot_matrix

__all__ = [
    "PROBE_GRID",
    "AttemptClassifier",
    "TransferResult",
    "brief_tune",
    "linear_probe",
    "load_transfer_splits",
    "test_subset_indices",
    "tune_transfer",
    "zero_shot_matrix",
]
