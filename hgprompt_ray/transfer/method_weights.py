"""Every registered method's weights for one evaluation target (and its scaling subsets).

The methods come from the registry (``transfer.methods``): each method with a ``weights``
function gets a :class:`WeightingInputs` built from train800 and val200 only: the zero-shot
column's *val200* accuracies (from the library's matrix, computed as a Ray task when missing),
the HGPrompt search (:func:`hgprompt_ray.tuning.run_search`, whose result carries the search
statistics that H-ensemble and the ablation need: nothing is read back from disk), SPoT's briefly
tuned target prompt per seed, and the search's probe data for the black-box weighting — each
computed only when a chosen method needs it. The weights are computed in one Ray task. The entry
(with the zero-shot test column for the report's Spearman correlations, which no method reads)
is cached as ``<report>/weights/<target>.json`` so that a rerun of the evaluation starts from it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.errors import IntegrityError
from hgprompt_ray.threads import use_allocated_threads
from hgprompt_ray.transfer.methods.inputs import WeightingInputs, statistics_in_order
from hgprompt_ray.transfer.plan import EvaluationPlan
from hgprompt_ray.transfer.runner import remote
from hgprompt_ray.tuning.plan import STATE_FILE as SEARCH_STATE
from hgprompt_ray.tuning.plan import plan_search
from hgprompt_ray.tuning.run import SearchResult, run_search
from hgprompt_ray.tuning.spec import SearchSpec

__all__ = ["split_tag", "target_weights", "weights_task", "zero_shot_column", "zero_shot_columns", "zero_shot_val"]

logger = logging.getLogger(__name__)


def _num_test(plan: EvaluationPlan, target: str) -> int:
    size = len(plan.tasks[target].split("test", seed=plan.transfer.split_seed))
    return size if plan.transfer.max_test is None else min(size, plan.transfer.max_test)


def zero_shot_val(column: pd.DataFrame, sources: list[str]) -> dict[str, float]:
    """The val200 accuracy per source: the only part of the zero-shot matrix a method reads."""
    return {s: float(column.loc[s, "val_accuracy"]) for s in sources}


def _find_column(plan: EvaluationPlan, target: str, split_seed: int, tag: str) -> pd.DataFrame | None:
    """The target's zero-shot column on split draw ``split_seed``, from the library's matrix (and its
    parts) or this evaluation's ``zero_shot/<tag>.parquet``; None when neither has it. The rows'
    precision (fp32 in matrices without the column, else the resolved ``--precision``) is recorded
    in them but not matched: a matrix computed in fp32 serves a bf16 evaluation. Rows that record
    a prompt file's sha256 other than the library's (retrained since) do not count."""
    from hgprompt_ray.transfer.zero_shot import current_rows, matrix_files

    name, sources = plan.target_name(target), list(plan.sources[target])
    checksums = {r.name: r.sha256 for r in plan.library.records()}
    frames = [pd.read_parquet(f) for f in matrix_files(plan.zero_shot)]
    local = plan.output / "zero_shot" / f"{tag}.parquet"
    if local.is_file():
        frames.append(pd.read_parquet(local))
    columns = ["val_accuracy", "test_accuracy"]
    for frame in frames:
        split = frame["split_seed"] if "split_seed" in frame else 0  # matrices before the column: split 0
        column = frame[(frame["target"] == name) & (frame["num_test"] == _num_test(plan, target))
                       & (split == split_seed)]  # fmt: skip
        column = column[current_rows(column, checksums)]  # a prompt retrained since: its rows do not count
        column = column.drop_duplicates("source").set_index("source")
        if set(sources) <= set(column.index) and set(columns) <= set(column.columns):
            return column[columns]
    return None


def zero_shot_columns(plan: EvaluationPlan, target: str, seeds: list[int]) -> None:
    """Compute the zero-shot columns of the split draws ``split_seed + k`` (k in ``seeds``) that
    neither the matrix nor this folder has, in one Ray task that passes each distinct image of
    those draws through the network once (``zero_shot_draws``); each is kept as
    ``zero_shot/<tag>.parquet``. The init-probe seeds' draws of a pool overlap heavily."""
    _compute_columns(plan, target, {plan.transfer.split_seed + k: split_tag(plan, target, k) for k in seeds})


def _compute_columns(plan: EvaluationPlan, target: str, tags: dict[int, str]) -> None:
    """:func:`zero_shot_columns` for the draws ``tags`` maps (split seed -> file tag)."""
    import ray

    missing = [draw for draw, tag in tags.items() if _find_column(plan, target, draw, tag) is None]
    if not missing:
        return
    sources = list(plan.sources[target])
    logger.info("zero-shot columns of %s on split draws %s: computing them (%d sources)",
                plan.target_name(target), missing, len(sources))  # fmt: skip
    config = dataclasses.replace(plan.transfer, task=target)
    rows = pd.DataFrame(ray.get(remote(_zero_shot_task, plan).remote(str(plan.library.root), sources, config, missing)))
    checksums = {r.name: r.sha256 for r in plan.library.records()}
    rows["sha256"] = rows["source"].map(checksums).fillna("")
    for draw in missing:
        local = plan.output / "zero_shot" / f"{tags[draw]}.parquet"
        local.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(local) as tmp:
            rows[rows["split_seed"] == draw].to_parquet(tmp, index=False)


def zero_shot_column(plan: EvaluationPlan, target: str, tag: str | None = None) -> pd.DataFrame:
    """The target's zero-shot accuracies per source (columns ``val_accuracy``, ``test_accuracy``,
    indexed by source) on the plan's split draw: from the matrix, else computed (a Ray task) and
    kept as ``zero_shot/<tag>.parquet`` (``tag``: the target's name, with ``~split<k>`` for
    another split draw)."""
    tag = tag or plan.target_name(target)
    _compute_columns(plan, target, {plan.transfer.split_seed: tag})
    found = _find_column(plan, target, plan.transfer.split_seed, tag)
    if found is None:
        raise IntegrityError(
            f"the zero-shot column of {plan.target_name(target)!r} on split draw {plan.transfer.split_seed} is "
            f"not in {plan.output / 'zero_shot' / (tag + '.parquet')} after computing it. Fix: delete that file and rerun."
        )
    return found


def _zero_shot_task(library: str, sources: list[str], config: Any, draws: list[int]) -> list[dict[str, Any]]:
    from hgprompt_ray.models import PromptedViT, load_backbone
    from hgprompt_ray.prompts import PromptLibrary
    from hgprompt_ray.transfer.zero_shot import zero_shot_draws

    use_allocated_threads()  # first: a reused worker keeps whatever thread count ran in it before
    backbone = load_backbone(config.backbone, config.img_size)
    prompts = PromptLibrary(library).load_many(
        sources, backbone=config.backbone, embed_dim=backbone.embed_dim
    )
    model = PromptedViT(backbone, num_prompt_tokens=prompts.shape[1]).eval()
    return zero_shot_draws(model, prompts, sources, config.task, img_size=config.img_size, split_seeds=draws,
                           max_test=config.max_test, data_root=config.data_root, precision=config.precision,
                           progress=False)  # fmt: skip


def search(plan: EvaluationPlan, target: str, sources: list[str], folder: Path, sampler: str = "tpe") -> SearchResult:
    """HGPrompt's search over ``sources`` in ``folder`` (resumed when the folder holds it);
    ``sampler="random"``: the random-search baseline, the same search otherwise."""
    settings = plan.settings
    spec = SearchSpec(
        target=target,
        library=str(plan.library.root),
        sources=tuple(sources),
        num_samples=settings.search_trials,
        samples=settings.samples,
        gradient_samples=settings.gradient_samples,
        metric=settings.search_metric,
        sampler=sampler,
        split_seed=plan.transfer.split_seed,
        data_root=plan.transfer.data_root,
        cache_dir=settings.cache_dir,
        output=str(folder),
        resume=(folder / SEARCH_STATE).is_file(),
        command="(launch/evaluate.py)",
    )
    return run_search(plan_search(spec, task=plan.tasks[target]), progress=False)


def spot_prompts(plan: EvaluationPlan, target: str, seeds: list[int], tag: str | None = None) -> dict[int, Any]:
    """SPoT's briefly tuned target prompt per seed (Ray tasks; cached as safetensors under
    ``spot/<tag>``)."""
    import ray
    from safetensors.torch import load_file, save_file

    from hgprompt_ray.transfer.evaluation import brief_tune_task

    folder = plan.output / "spot" / (tag or plan.target_name(target))
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


def weights_task(inputs: WeightingInputs, names: list[str], seeds: list[int]) -> dict[str, Any]:
    """Ray task body: each named method's weights (a list; per seed for per-seed methods).
    CMA-ES's val-probe forwards run here: on the task's whole CPU allocation, not one thread."""
    from hgprompt_ray.transfer.methods import get_method

    use_allocated_threads()

    found: dict[str, Any] = {}
    for name in names:
        method = get_method(name)
        if method.per_seed:
            found[name] = {str(s): np.asarray(method.weights(inputs, s)).tolist() for s in seeds}  # type: ignore[misc]
        else:
            found[name] = np.asarray(method.weights(inputs, 0)).tolist()  # type: ignore[misc]
    return found


def _inputs(plan: EvaluationPlan, target: str, sources: list[str], needs: set[str], seeds: list[int],
            zero_shot: pd.DataFrame, tag: str) -> tuple[WeightingInputs, Any, list[SearchResult]]:  # fmt: skip
    """The weightings' inputs for ``target`` (train800 / val200 only), the search, if run, and
    every search run (HGPrompt's, the random one)."""
    import ray

    name = tag
    found = statistics = probe = None
    positions: tuple[int, ...] = ()
    searched: list[SearchResult] = []
    if needs & {"search", "probe"}:
        found = search(plan, target, sources, plan.output / "searches" / name)
        searched.append(found)
        statistics = statistics_in_order(ray.get(found.statistics), sources)  # the search's order may differ
    if "probe" in needs and found is not None:
        from hgprompt_ray.tuning.probe_metric import probe_data_task

        extraction = found.plan.extraction
        probe = remote(probe_data_task, plan).remote(extraction, plan.tasks[target])
        order = list(extraction.prompts) or plan.library.names
        positions = tuple(order.index(s) for s in sources)
    random_weights = None
    if "random-search" in needs:
        randomly = search(plan, target, sources, plan.output / "searches" / f"{name}@random", sampler="random")
        random_weights = randomly.weights.aligned(sources)
        searched.append(randomly)
    similarities: dict[int, np.ndarray] = {}
    if "spot" in needs:
        from hgprompt_ray.transfer.weights import spot_similarities

        prompts = plan.library.load_many(sources, backbone=plan.backbone)
        similarities = {s: spot_similarities(p, prompts) for s, p in spot_prompts(plan, target, seeds, tag).items()}
    inputs = WeightingInputs(
        sources=tuple(sources),
        prompts=plan.library.load_many(sources, backbone=plan.backbone),
        zero_shot_val=zero_shot_val(zero_shot, sources),
        statistics=statistics,
        search_weights=None if found is None else found.weights.aligned(sources),
        spot_similarities=similarities,
        probe=probe,
        probe_positions=positions,
        evaluations=plan.settings.search_trials,
        search_subset=() if found is None else tuple(sources.index(s) for s in found.best.get("subset") or ()
                                                     if s in sources),
        random_search_weights=random_weights,
    )  # fmt: skip
    return inputs, found, searched


def split_tag(plan: EvaluationPlan, target: str, seed: int = 0) -> str:
    """The folder and file name of ``target``'s weights for the split draw ``split_seed + seed``:
    its name for the plan's own draw (seed 0), ``<name>~split<k>`` for another."""
    name = plan.target_name(target)
    return name if seed == 0 else f"{name}~split{plan.transfer.split_seed + seed}"


def _cached_entry(path: Path, sources: list[str]) -> dict[str, Any] | None:
    """The cached weights entry, or None when absent or over other sources (a changed library)."""
    if not path.is_file():
        return None
    import json

    cached = dict(json.loads(path.read_text()))
    if cached.get("sources") != sources:
        logger.warning("%s holds weights over other sources %s: recomputing them", path, cached.get("sources"))
        return None
    return cached


def _lacks(cached: dict[str, Any], method: Any, seeds: list[int]) -> bool:
    """Whether ``cached`` lacks ``method``'s weights (a per-seed method's: for any of ``seeds``)."""
    if method.per_seed:
        return any(str(s) not in cached.get("per_seed", {}).get(method.name, {}) for s in seeds)
    return method.name not in cached["methods"]


def _merged(cached: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``cached`` with ``new``'s methods and scaling points added (the rest as cached: same draw)."""
    merged = {**new, **cached}
    merged["methods"] = {**cached["methods"], **new["methods"]}
    merged["per_seed"] = {**cached.get("per_seed", {})}  # a seed that runs may have used keeps its weights
    for name, values in new["per_seed"].items():
        merged["per_seed"][name] = {**values, **merged["per_seed"].get(name, {})}
    merged["spot_similarities"] = {**new["spot_similarities"], **cached.get("spot_similarities", {})}
    merged["search"] = cached.get("search") or new["search"]
    merged["scaling"] = {size: {**point, "methods": dict(point["methods"])} for size, point in cached["scaling"].items()}
    for size, point in new["scaling"].items():
        merged["scaling"].setdefault(size, {"sources": point["sources"], "methods": {}})["methods"].update(point["methods"])
    return merged


def target_weights(plan: EvaluationPlan, target: str, seed: int = 0) -> dict[str, Any]:
    """Every method's weights for one target (and the scaling subsets), from the registry; cached
    as ``weights/<tag>.json`` (:func:`split_tag`).

    Args:
        plan: the evaluation.
        target: one of its targets.
        seed: 0 for the weights every ``tuned`` run and the ``init-probe`` seed 0 use (the plan's
            split draw); k > 0 for the ``init-probe`` seed k, whose train800/val200 are the draw
            ``split_seed + k``: everything a method reads (zero-shot val200, the search, SPoT's
            prompt) is then recomputed on that draw, so no choice reads an image of that draw's test.
    """
    import ray

    from hgprompt_ray.transfer.methods import get_method

    name, tag = plan.target_name(target), split_tag(plan, target, seed)
    path = plan.output / "weights" / f"{tag}.json"
    settings = plan.settings
    methods = [get_method(m) for m in settings.all_methods if get_method(m).weights is not None]
    if seed:  # only the init-probe runs of this seed read this entry
        methods = [m for m in methods if "init-probe" in m.protocols]
    seeds = [seed] if seed else sorted(set(range(settings.seeds)) | set(range(settings.scaling_seeds)))
    in_scaling = target in plan.scaling_targets and seed < settings.scaling_seeds
    scaling = [m for m in methods if m.scaling] if in_scaling else []
    cached = _cached_entry(path, list(plan.sources[target]))
    if cached is not None:  # what a resumed folder lacks: methods registered or chosen since, a scaling curve
        methods = [m for m in methods if _lacks(cached, m, seeds)]
        points = [p["methods"] for p in cached["scaling"].values()]
        scaling = [m for m in scaling if not points or any(m.name not in p for p in points)]
        if not methods and not scaling:
            return cached
        logger.info("%s lacks %s: computing them (the search and SPoT resume from disk)", path,
                    ", ".join(sorted({m.name for m in methods} | {f"{m.name} (scaling)" for m in scaling})))  # fmt: skip
    if seed:
        transfer = dataclasses.replace(plan.transfer, split_seed=plan.transfer.split_seed + seed)
        plan = dataclasses.replace(plan, transfer=transfer)
    sources = list(plan.sources[target])
    needs = {n for m in [*methods, *scaling] for n in m.needs}
    zero_shot = zero_shot_column(plan, target, tag)
    inputs, found, searched = _inputs(plan, target, sources, needs, seeds, zero_shot, tag)
    task = remote(weights_task, plan)
    computed = ray.get(task.remote(inputs, [m.name for m in methods], seeds)) if methods else {}
    entry: dict[str, Any] = {
        "target": name,
        "split_seed": plan.transfer.split_seed,
        "sources": sources,
        "methods": {m.name: computed[m.name] for m in methods if not m.per_seed},
        "per_seed": {m.name: computed[m.name] for m in methods if m.per_seed},
        "spot_similarities": {str(s): v.tolist() for s, v in inputs.spot_similarities.items()},
        "zero_shot": {s: float(zero_shot.loc[s, "test_accuracy"]) for s in sources},
        "zero_shot_val": dict(inputs.zero_shot_val),
        "search": {} if found is None else {k: found.best.get(k) for k in (
            "lambda", "num_prompts", "subset", "metric", "val_h_score", "val_probe_accuracy", "trials")},
        "scaling": {},
    }  # fmt: skip
    if inputs.statistics is not None:
        entry["source_h_scores"] = np.asarray(inputs.statistics.source_h_scores).tolist()
    # this seed's weights stand for a per-seed method in the Spearman table and the weight plot
    entry["methods"].update({n: v[str(seed)] for n, v in entry["per_seed"].items() if str(seed) in v})
    if scaling:
        order = [sources[i] for i in np.random.default_rng(0).permutation(len(sources))]
        for size in sorted(n for n in set(settings.scaling_sizes) if n < len(sources)):  # the rest: plan.py
            subset = sorted(order[:size], key=sources.index)
            index = [sources.index(s) for s in subset]
            scaled = None
            if any("search" in m.needs for m in scaling):
                searched.append(search(plan, target, subset, plan.output / "searches" / f"{tag}@{size}"))
                scaled = searched[-1].weights.aligned(subset)
            point = ray.get(task.remote(inputs.subset(index, scaled), [m.name for m in scaling],
                                        [seed] if seed else list(range(settings.scaling_seeds))))  # fmt: skip
            entry["scaling"][str(size)] = {"sources": subset, "methods": point}
    if cached is not None:
        entry = _merged(cached, entry)
        entry["methods"].update({n: v[str(seed)] for n, v in entry["per_seed"].items() if str(seed) in v})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, entry)
    for result in searched:  # this draw's tables leave the object store (19 prompts x 5 draws spilled GBs)
        result.release()
    return entry
