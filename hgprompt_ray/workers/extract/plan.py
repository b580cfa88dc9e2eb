"""The extraction plan: everything the workers need, decided once by the driver.

:func:`make_plan` checks the prompts against the config, resolves the target (once: the resolved
task travels in the plan, so no worker resolves the target by name again), draws the sample
indices of each split and derives the content address of every output table.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any

from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.core.probe_head import SHARED_HEAD_FOLDS
from hgprompt_ray.data import resolve_target
from hgprompt_ray.data.base import Task
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import load_backbone, resolve_precision
from hgprompt_ray.prompts import PromptLibrary, PromptRecord
from hgprompt_ray.workers.extract.cache import ExtractionCache
from hgprompt_ray.workers.extract.keys import (
    EXTRACTION_CODE_VERSION,
    _digest,
    backbone_fingerprint,
    sample_indices,
    target_fingerprint,
)

__all__ = ["ExtractionPlan", "make_plan"]


@dataclass(frozen=True)
class ExtractionPlan:
    """Everything the workers need, decided by the driver; ships to the workers.

    All fields but ``task`` are plain data. ``task`` is the target as the driver resolved it;
    Ray pickles it with the rest, and it pickles small: tasks hold how to read their images, not
    the images (a VTAB task leaves its in-memory pools out of its pickled state).

    Attributes:
        config: the :class:`ExtractionConfig` as a dict.
        names: prompt names, in the order of the gradient statistics.
        sha256: the prompts' SHA-256, in the order of ``names``.
        num_tokens: prompt length m, shared by all prompts.
        num_classes: classes of the target.
        indices: split -> the drawn sample indices into that split.
        gradient_positions: positions into the first split's drawn samples used for gradients.
        feature_keys: split -> prompt -> key of its feature table.
        feature_meta: split -> prompt -> metadata stored with its feature table.
        gradient_key: key of the gradient table (None without gradients).
        gradient_meta: metadata stored with the gradient table.
        compute_gradients: whether the gradient table still has to be computed.
        store_name: the feature store actor's name.
        task: the resolved target.
        progress: progress bars in the workers.
        precision: the resolved network precision, ``fp32`` or ``bf16`` (part of every key).
    """

    config: dict[str, Any]
    names: list[str]
    sha256: list[str]
    num_tokens: int
    num_classes: int
    indices: dict[str, list[int]]
    gradient_positions: list[int]
    feature_keys: dict[str, dict[str, str]]
    feature_meta: dict[str, dict[str, dict[str, Any]]]
    gradient_key: str | None
    gradient_meta: dict[str, Any]
    compute_gradients: bool
    store_name: str
    task: Task
    progress: bool = True
    precision: str = "fp32"

    def loop_config(self) -> dict[str, Any]:
        """The plan as the worker loop's config (a shallow dict: ``ExtractionPlan(**it)`` rebuilds it)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _prompt_records(config: ExtractionConfig) -> tuple[list[str], list[PromptRecord]]:
    """The requested prompts and their records, checked against the config's backbone and size."""
    library = PromptLibrary(config.library)
    if len(library) == 0:
        raise InvalidValueError(
            invalid_value(
                "library", config.library, "must hold at least one prompt", "Train or import prompts first."
            )
        )
    names = list(config.prompts) or library.names
    unknown = [n for n in names if n not in library]
    if unknown:
        raise InvalidValueError(
            invalid_value(
                "prompts",
                unknown,
                f"must be prompts of {config.library}",
                f"Known: {', '.join(library.names)}.",
            )
        )
    records = [library.record(n) for n in names]
    for record in records:
        if record.backbone != config.backbone:
            raise InvalidValueError(
                f"Prompt {record.name!r} was trained with backbone {record.backbone!r}, not "
                f"{config.backbone!r}. Fix: pass --backbone {record.backbone} or use prompts for "
                f"{config.backbone!r}."
            )
        if record.img_size != config.img_size:
            raise InvalidValueError(
                invalid_value(
                    "img_size",
                    config.img_size,
                    f"must equal the image size prompt {record.name!r} was trained at ({record.img_size})",
                    f"Pass --img-size {record.img_size}.",
                )
            )
    lengths = {r.num_tokens for r in records}
    if len(lengths) != 1:
        raise InvalidValueError(
            invalid_value("prompts", names, f"must share one length m (got {sorted(lengths)})", "")
        )
    return names, records


def _head_identity(config: ExtractionConfig) -> dict[str, Any]:
    """What defines the gradient loss, in the gradient table's key (per-prompt keeps its old key)."""
    head: dict[str, Any] = {"kind": "logistic", "l2": config.head_l2}
    if config.gradient_head == "shared":
        head.update(fit="shared, bare backbone features, disjoint samples", folds=SHARED_HEAD_FOLDS)
    return head


def make_plan(
    config: ExtractionConfig, store_name: str, progress: bool, task: Any = None, device: str = "cpu"
) -> ExtractionPlan:
    """Resolve the target, draw the samples and derive every table's key (see the module docstring).

    Args:
        config: what to extract.
        store_name: the feature store actor the workers publish to.
        progress: progress bars in the workers.
        task: the target, already resolved by the caller (None: resolve ``config.target`` here).
            Either way it is resolved once on the driver and shipped to the workers.
        device: the workers' device type, ``cpu`` or ``cuda``: what ``precision='auto'`` resolves
            for. A CPU resolves by the driver's own instruction set, which the workers are
            assumed to share (bf16 runs on any CPU, slowly without native support).

    Raises:
        InvalidValueError: an empty library, unknown prompts, prompts of another backbone or
            image size, prompts of different lengths, or an unknown target.
    """
    names, records = _prompt_records(config)
    if task is None:
        task = resolve_target(config.target, data_root=config.data_root)
    backbone = load_backbone(config.backbone, config.img_size)
    precision = resolve_precision(config.precision, device)
    identity = {
        "backbone": config.backbone,
        "backbone_sha256": backbone_fingerprint(backbone),
        "img_size": config.img_size,
        "target": target_fingerprint(task, config.split_seed),
        "split_seed": config.split_seed,
        "precision": precision,
        "code_version": EXTRACTION_CODE_VERSION,
    }
    indices, feature_keys, feature_meta = {}, {}, {}
    for split in config.splits:
        size = len(task.split(split, seed=config.split_seed))
        chosen = sample_indices(size, config.num_samples, config.sample_seed, split)
        indices[split] = chosen.tolist()
        drawn = len(chosen) < size
        common = {
            **identity,
            "split": split,
            "num_samples": len(chosen),
            "sample_seed": config.sample_seed if drawn else None,
        }
        feature_keys[split], feature_meta[split] = {}, {}
        for record in records:
            payload = {**common, "kind": "features", "prompt_sha256": record.sha256}
            key = "features-" + _digest(payload)
            feature_keys[split][record.name] = key
            feature_meta[split][record.name] = {**payload, "target_name": task.name, "key": key}
    first = config.splits[0]
    count = len(indices[first])
    positions = sample_indices(count, config.gradient_samples, config.sample_seed, "gradients")
    gradient_key, gradient_meta = None, {}
    if config.gradients:
        payload = {
            **identity,
            "kind": "gradients",
            "split": first,
            "features": [feature_keys[first][n] for n in names],
            "gradient_positions_sha256": hashlib.sha256(positions.tobytes()).hexdigest(),
            "num_gradient_samples": len(positions),
            "head": _head_identity(config),
            "loss": "cross-entropy of the probe head (core.probe_head)",
        }
        gradient_key = "gradients-" + _digest(payload)
        gradient_meta = {**payload, "target_name": task.name, "key": gradient_key}
    cache = ExtractionCache(config.cache_dir)
    return ExtractionPlan(
        config=asdict(config),
        names=names,
        sha256=[r.sha256 for r in records],
        num_tokens=records[0].num_tokens,
        num_classes=task.info.num_classes,
        indices=indices,
        gradient_positions=positions.tolist(),
        feature_keys=feature_keys,
        feature_meta=feature_meta,
        gradient_key=gradient_key,
        gradient_meta=gradient_meta,
        compute_gradients=gradient_key is not None and not cache.has(gradient_key),
        store_name=store_name,
        task=task,
        progress=progress,
        precision=precision,
    )
