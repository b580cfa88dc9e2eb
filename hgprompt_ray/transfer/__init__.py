"""Transfer to a target: linear probes, the zero-shot transfer matrix (tuning and baselines follow)."""

from hgprompt_ray.transfer.linear_probe import PROBE_GRID, linear_probe
from hgprompt_ray.transfer.zero_shot import zero_shot_matrix

__all__ = ["PROBE_GRID", "linear_probe", "zero_shot_matrix"]
