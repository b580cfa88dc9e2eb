"""Evaluation runs: one (method, target, protocol, seed) job = one transfer run, as a Ray task.

``transfer.method_weights`` works out every method's source weights, ``transfer.runner``
submits the jobs; each job's result is written atomically to ``<report>/runs/<key>.json`` (and
its final prompt to ``.safetensors``), so a rerun skips what is done. The task bodies here are
thin (CONTRIBUTING.md, "Workers"): typed inputs, one call into ``transfer.tune``, a result. The
methods themselves live in the registry (``transfer.methods``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.config import TransferConfig
from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.threads import use_allocated_threads
from hgprompt_ray.transfer.methods import get_method

__all__ = ["EVALUATION_STATE", "RESULT_SCHEMA", "with_totals", "EvaluationJob", "brief_tune_task", "features_task", "run_job", "run_job_task", "write_result"]

EVALUATION_STATE = "evaluate.json"
"""The evaluation folder's record of its invocations (``launch/evaluate.py``, ``launch/run_jobs.py``)."""



def with_totals(state: dict[str, Any], output: Path) -> dict[str, Any]:
    """``state`` with its totals recomputed: ``seconds`` (every chunk's: an interrupted one's up to
    its last checkpoint, or 0 when it recorded none) and ``runs`` (the run records under ``output/runs``)."""
    seconds = sum(c.get("seconds") or 0.0 for c in state.get("chunks", []))
    return {**state, "seconds": seconds, "runs": sum(1 for _ in (Path(output) / "runs").glob("*/*/*.json"))}


RESULT_SCHEMA = 3
"""2: the registry's methods, lr scale and epochs chosen on val200, trainable parameters.
3: the head's BatchNorm keeps running statistics (``methods.common.RunningNorm``); the lr scale is
chosen on val200 at the end of the schedule and every method trains for the budget's epochs (no
stopping epoch chosen); val200 and test are scored at the training's precision (fp32 before);
SideTune's side network starts at zero. A trained (not closed-form) run of an earlier schema is
run again on resume."""


@dataclass(frozen=True)
class EvaluationJob:
    """One transfer run.

    Attributes:
        target: the target as given (task name, folder or CSV).
        target_name: the task's registry name (folder names for paths).
        method: a registered method's name (``hgprompt_ray.transfer.methods``).
        seed: the run's seed (head init, shuffling, the method's modules).
        sources: the source prompts available to the method.
        weights: the method's weights over ``sources`` (weightings, PANDA), else None.
        scale: the number of sources when the job belongs to the scaling curve (None: main).
        settings: the method's settings (its config dataclass), or None for its defaults.
        protocol: one of the method's protocols (``tuned``: the VTAB-1k protocol).
    """

    target: str
    target_name: str
    method: str
    seed: int
    sources: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    scale: int | None = None
    settings: Any = None
    protocol: str = "tuned"

    def __post_init__(self) -> None:
        method = get_method(self.method)
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.protocol not in method.protocols:
            raise InvalidValueError(
                invalid_value("protocol", self.protocol, f"must be one of {list(method.protocols)} for {self.method}", "")
            )
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
            if len(self.weights) != len(self.sources):
                raise InvalidValueError(
                    invalid_value("weights", list(self.weights), f"must have {len(self.sources)} entries", "")
                )
        elif method.weights is not None:
            raise InvalidValueError(invalid_value("weights", None, f"are required for {self.method!r}", ""))

    @property
    def ensemble_weights(self) -> EnsembleWeights | None:
        """The weights as an :class:`EnsembleWeights` over ``sources`` (None: no weights)."""
        return None if self.weights is None else EnsembleWeights(self.sources, self.weights)

    @property
    def key(self) -> str:
        """``<target>/<method>[@<scale>]/seed<k>``: where the result lives under ``runs/``."""
        tag = self.method if self.scale is None else f"{self.method}@{self.scale}"
        if self.protocol != "tuned":
            tag += f"~{self.protocol}"
        return f"{self.target_name}/{tag}/seed{self.seed}"


def _progress_to_stderr() -> None:
    """Send the transfer modules' INFO lines (a tuned run's epochs) to this worker's stderr, which
    Ray forwards to the driver's console under the task's name and pid: a tuned run takes minutes."""
    progress = logging.getLogger("hgprompt_ray.transfer")
    if not any(getattr(h, "hgprompt_progress", False) for h in progress.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.hgprompt_progress = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False


def _threads() -> None:
    """Torch's threads: the Ray task's CPU allocation; outside Ray (``run_jobs.py``'s worker
    processes) ``OMP_NUM_THREADS``, which it sets for each."""
    count = os.environ.get("OMP_NUM_THREADS")
    use_allocated_threads(int(count) if count and count.isdigit() and int(count) > 0 else None)


def run_job_task(job: EvaluationJob, transfer: TransferConfig, library: str) -> dict[str, Any]:
    """The Ray task body: :func:`run_job` with the transfer modules' progress on the worker's stderr.
    The handler is set here, in the Ray worker, not in :func:`run_job`, which ``run_jobs.py``'s worker
    processes and tests call in-process, where the caller's logging setup stands."""
    _progress_to_stderr()
    return run_job(job, transfer, library)


def run_job(job: EvaluationJob, transfer: TransferConfig, library: str) -> dict[str, Any]:
    """Run one job; returns its metrics and final prompt."""
    from hgprompt_ray.data import resolve_target
    from hgprompt_ray.models import load_backbone
    from hgprompt_ray.prompts import PromptLibrary
    from hgprompt_ray.transfer.tune import probe_transfer, tune_transfer
    from hgprompt_ray.transfer.weights import ensemble_prompt

    method = get_method(job.method)
    config = replace(transfer, task=job.target, seed=job.seed)
    _threads()
    backbone = load_backbone(config.backbone, config.img_size)
    prompts = PromptLibrary(library).load_many(
        list(job.sources), backbone=config.backbone, embed_dim=backbone.embed_dim
    )
    weights = job.ensemble_weights
    initial = ensemble_prompt(prompts, weights) if method.is_weighting and weights is not None else None
    seeded = resolve_target(job.target, data_root=config.data_root).split_is_seeded  # False: one fixed split
    if job.protocol == "init-probe":  # the probe is deterministic: seed k is the split draw split_seed + k
        config = replace(config, split_seed=transfer.split_seed + job.seed)
        result = probe_transfer(config, initial, backbone=backbone)
    else:
        result = tune_transfer(config, method, settings=job.settings, initial=initial, sources=prompts,
                               weights=None if weights is None else weights.as_array(),
                               num_prompt_tokens=int(prompts.shape[1]), backbone=backbone)  # fmt: skip
    return {
        "metrics": {
            "test_accuracy": result.test_accuracy,
            "val_accuracy": result.val_accuracy,
            "lr_scale": None if method.closed_form or job.protocol == "init-probe" else result.lr_scale,
            "epochs": result.epochs,
            "val_curve": result.val_curve,
            "loss_curve": result.loss_curve,
            "trainable_parameters": result.trainable_parameters,
            "closed_form": method.closed_form or job.protocol == "init-probe",
            "split_seed": config.split_seed,
            "split_seeded": bool(seeded),
            "num_test": result.num_test,
            "seconds": result.seconds,
            "precision": result.precision,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
        "prompt": result.prompt,
    }


def write_result(root: Path, job: EvaluationJob, outcome: dict[str, Any], transfer: TransferConfig) -> Path:
    """Write ``runs/<key>.json`` (and the prompt) atomically; returns the JSON path."""
    path = root / "runs" / f"{job.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if outcome.get("prompt") is not None:
        from safetensors.torch import save_file

        with atomic_path(path.with_suffix(".safetensors")) as tmp:
            save_file({"prompt": outcome["prompt"].contiguous()}, str(tmp))
    record = {
        "schema_version": RESULT_SCHEMA,
        "job": asdict(job),
        "key": job.key,
        "transfer": asdict(replace(transfer, seed=job.seed)),
        **outcome["metrics"],
    }
    atomic_write_json(path, record)
    return path


def brief_tune_task(transfer: TransferConfig, seed: int, num_prompt_tokens: int, steps: int) -> torch.Tensor:
    """Ray task body: SPoT's briefly tuned target prompt for one seed."""
    from hgprompt_ray.transfer.tune import brief_tune

    _threads()
    return brief_tune(replace(transfer, seed=seed), num_prompt_tokens, steps)


def features_task(transfer: TransferConfig, prompts: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Ray task body: test features of the target under each named prompt (for t-SNE)."""
    from hgprompt_ray.models import PromptedViT, load_backbone
    from hgprompt_ray.models.features import extract_cls_features
    from hgprompt_ray.models.precision import autocast
    from hgprompt_ray.transfer.splits import config_splits

    _threads()
    config = transfer
    backbone = load_backbone(config.backbone, config.img_size)
    _, datasets, labels = config_splits(config, backbone, ("test",))
    names = list(prompts)
    stacked = torch.stack([prompts[n] for n in names])
    model = PromptedViT(backbone, int(stacked.shape[1])).eval()
    with autocast(config.precision, next(model.parameters()).device):
        features = extract_cls_features(model, datasets["test"], prompts=stacked, batch_size=config.eval_batch_size)
    return {"names": names, "features": features, "labels": labels["test"]}
