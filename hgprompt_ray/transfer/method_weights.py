"""Every weight-based method's alpha for one evaluation target (and its scaling subsets).

Inputs per target: the zero-shot column (from the library's matrix, computed as a Ray task when
missing), the HGPrompt search (:func:`hgprompt_ray.tuning.run_search`, whose result also carries
the search statistics that the H-ensemble and ablation weights need: nothing is read back from
disk), and SPoT's briefly tuned target prompt per seed. The entry is cached as
``<report>/weights/<target>.json`` so that a rerun of the evaluation starts from it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.transfer.plan import EvaluationPlan
from hgprompt_ray.transfer.runner import remote
from hgprompt_ray.tuning.plan import STATE_FILE as SEARCH_STATE
from hgprompt_ray.tuning.plan import plan_search
from hgprompt_ray.tuning.run import SearchResult, run_search
from hgprompt_ray.tuning.spec import SearchSpec

__all__ = ["target_weights"]

logger = logging.getLogger(__name__)


def _num_test(plan: EvaluationPlan, target: str) -> int:
    size = len(plan.tasks[target].split("test", seed=plan.transfer.split_seed))
    return size if plan.transfer.max_test is None else min(size, plan.transfer.max_test)


def zero_shot_column(plan: EvaluationPlan, target: str) -> pd.Series:
    """The target's zero-shot accuracy per source: from the matrix, else computed (a Ray task)."""
    import ray

    name, sources = plan.target_name(target), list(plan.sources[target])
    frames = [pd.read_parquet(plan.zero_shot)] if plan.zero_shot.is_file() else []
    parts = plan.zero_shot.parent / "parts"
    if parts.is_dir():
        frames += [pd.read_parquet(p) for p in sorted(parts.glob("*.parquet"))]
    local = plan.output / "zero_shot" / f"{name}.parquet"
    if local.is_file():
        frames.append(pd.read_parquet(local))
    for frame in frames:
        column = frame[(frame["target"] == name) & (frame["num_test"] == _num_test(plan, target))]
        column = column.drop_duplicates("source").set_index("source")["test_accuracy"]
        if set(sources) <= set(column.index):
            return column
    logger.info("zero-shot column of %s missing: computing it (%d sources)", name, len(sources))
    config = dataclasses.replace(plan.transfer, task=target)
    rows = ray.get(remote(_zero_shot_task, plan).remote(str(plan.library.root), sources, config))
    local.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    with atomic_path(local) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame.set_index("source")["test_accuracy"]


def _zero_shot_task(library: str, sources: list[str], config: Any) -> list[dict[str, Any]]:
    from hgprompt_ray.models import PromptedViT, load_backbone
    from hgprompt_ray.prompts import PromptLibrary
    from hgprompt_ray.transfer.zero_shot import zero_shot_target

    backbone = load_backbone(config.backbone, config.img_size)
    prompts = PromptLibrary(library).load_many(
        sources, backbone=config.backbone, embed_dim=backbone.embed_dim
    )
    model = PromptedViT(backbone, num_prompt_tokens=prompts.shape[1]).eval()
    return zero_shot_target(model, prompts, sources, config.task, img_size=config.img_size,
                            split_seed=config.split_seed, max_test=config.max_test,
                            data_root=config.data_root, progress=False)  # fmt: skip


def search(plan: EvaluationPlan, target: str, sources: list[str], folder: Path) -> SearchResult:
    """HGPrompt's search over ``sources`` in ``folder`` (resumed when the folder holds it)."""
    settings = plan.settings
    spec = SearchSpec(
        target=target,
        library=str(plan.library.root),
        sources=tuple(sources),
        num_samples=settings.search_trials,
        samples=settings.samples,
        gradient_samples=settings.gradient_samples,
        metric=settings.search_metric,
        split_seed=plan.transfer.split_seed,
        data_root=plan.transfer.data_root,
        cache_dir=settings.cache_dir,
        output=str(folder),
        resume=(folder / SEARCH_STATE).is_file(),
        command="(launch/evaluate.py)",
    )
    return run_search(plan_search(spec, task=plan.tasks[target]), progress=False)


def spot_prompts(plan: EvaluationPlan, target: str, seeds: list[int]) -> dict[int, Any]:
    """SPoT's briefly tuned target prompt per seed (Ray tasks; cached as safetensors)."""
    import ray
    from safetensors.torch import load_file, save_file

    from hgprompt_ray.transfer.evaluation import brief_tune_task

    folder = plan.output / "spot" / plan.target_name(target)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = int(plan.library.record(plan.sources[target][0]).num_tokens)
    task = remote(brief_tune_task, plan)
    config = dataclasses.replace(plan.transfer, task=target)
    pending = {s: task.remote(config, s, tokens, plan.settings.spot_steps)
               for s in seeds if not (folder / f"seed{s}.safetensors").is_file()}  # fmt: skip
    for seed, ref in pending.items():
        with atomic_path(folder / f"seed{seed}.safetensors") as tmp:
            save_file({"prompt": ray.get(ref).contiguous()}, str(tmp))
    return {s: load_file(str(folder / f"seed{s}.safetensors"))["prompt"] for s in seeds}


def target_weights(plan: EvaluationPlan, target: str) -> dict[str, Any]:
    """Every weight-based method's alpha for one target (and the scaling subsets); cached as JSON."""
    import ray

    from hgprompt_ray.core.simplex import h_score_weights, uniform_weights
    from hgprompt_ray.transfer.weights import (
        alignment_only_weights,
        h_only_weights,
        single_best_weights,
        spot_similarities,
        spot_weights,
    )

    name = plan.target_name(target)
    path = plan.output / "weights" / f"{name}.json"
    if path.is_file():
        import json

        return dict(json.loads(path.read_text()))
    settings = plan.settings
    sources = list(plan.sources[target])
    zero_shot = zero_shot_column(plan, target)
    found = search(plan, target, sources, plan.output / "searches" / name)
    statistics = ray.get(found.statistics)
    seeds = sorted(set(range(settings.seeds)) | set(range(settings.scaling_seeds)))
    spot = spot_prompts(plan, target, seeds)
    prompts = plan.library.load_many(sources, backbone=plan.backbone)
    similarities = {s: spot_similarities(p, prompts) for s, p in spot.items()}
    methods = {
        "average": uniform_weights(len(sources)).tolist(),
        "single-best": single_best_weights(sources, zero_shot.to_dict()).tolist(),
        "h-ensemble": h_score_weights(statistics.source_h_scores).tolist(),
        "hgprompt": found.weights.aligned(sources).tolist(),
        "h-only": h_only_weights(statistics).tolist(),
        "align-only": alignment_only_weights(statistics).tolist(),
        "spot-best": spot_weights(similarities[0], best=True).tolist(),
        "spot-weighted": spot_weights(similarities[0], best=False).tolist(),
    }
    entry: dict[str, Any] = {
        "target": name,
        "sources": sources,
        "methods": methods,
        "per_seed": {
            "spot-best": {str(s): spot_weights(v, best=True).tolist() for s, v in similarities.items()},
            "spot-weighted": {str(s): spot_weights(v, best=False).tolist() for s, v in similarities.items()},
        },
        "spot_similarities": {str(s): v.tolist() for s, v in similarities.items()},
        "source_h_scores": statistics.source_h_scores.tolist(),
        "zero_shot": {s: float(zero_shot[s]) for s in sources},
        "search": {
            k: found.best.get(k)
            for k in (
                "lambda",
                "num_prompts",
                "subset",
                "metric",
                "val_h_score",
                "val_probe_accuracy",
                "trials",
            )
        },  # fmt: skip
        "scaling": {},
    }
    if target in plan.scaling_targets:
        order = [sources[i] for i in np.random.default_rng(0).permutation(len(sources))]
        for size in sorted(set(settings.scaling_sizes) - {len(sources)}):
            subset = sorted(order[:size], key=sources.index)
            index = [sources.index(s) for s in subset]
            scaled = search(plan, target, subset, plan.output / "searches" / f"{name}@{size}")
            entry["scaling"][str(size)] = {
                "sources": subset,
                "hgprompt": scaled.weights.aligned(subset).tolist(),
                "average": uniform_weights(size).tolist(),
                "spot-best": {
                    str(s): spot_weights(v[index], best=True).tolist() for s, v in similarities.items()
                },
            }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, entry)
    return entry
