"""A real search (tiny timm ViT, Ray Train extraction, Ray Tune + Optuna) that screens the
sources and searches ranked slots over the best ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hgprompt_ray.core import ensemble_h_score
from hgprompt_ray.tuning import SearchSpec, run_search
from hgprompt_ray.tuning.screening import rank_prompts
from hgprompt_ray.workers.feature_store import features_from_table, moments_from_table

ray = pytest.importorskip("ray")


def test_screened_ranked_slot_search(ray_cluster, extraction_setup, tmp_path):
    config = extraction_setup
    spec = SearchSpec(
        target=config.target,
        library=config.library,
        backbone=config.backbone,
        img_size=config.img_size,
        samples=config.num_samples,
        gradient_samples=config.gradient_samples,
        cache_dir=config.cache_dir,
        precision=config.precision,  # the directory's cache holds these features already
        num_samples=5,
        max_concurrent=2,
        screen_top=2,
        screen_metric="logme",
        subset_space="ranked-slots",
        metric="val-h",
        output=str(tmp_path / "search"),
    )
    result = run_search(spec, progress=False)
    out = tmp_path / "search"
    screening = json.loads((out / "screening.json").read_text())
    ranking = [entry["prompt"] for entry in screening["ranking"]]
    scores = [entry["score"] for entry in screening["ranking"]]
    assert sorted(ranking) == ["p0", "p1", "p2"] and scores == sorted(scores, reverse=True)
    assert screening["metric"] == "logme" and screening["kept"] == ranking[:2]
    # the ranking is LogME of each prompt's train800 features, as the search's own tables hold them
    every = result.screening_extraction  # every source's features; the gradients came after
    tables = every.feature_refs(next(iter(every.feature_keys)))
    blocks = [features_from_table(ray.get(tables[name])) for name in ["p0", "p1", "p2"]]
    expected = rank_prompts(["p0", "p1", "p2"], [b[0] for b in blocks], blocks[0][1], "logme", top=2)
    assert list(expected.prompts) == ranking
    frame = pd.read_parquet(out / "trials.parquet")
    assert len(frame) == 5
    for subset in frame["subset"]:
        names = subset.split(",")
        assert 1 <= len(names) == len(set(names)) <= 2 and set(names) <= set(screening["kept"])
    best = json.loads((out / "best.json").read_text())
    assert best["subset_space"] == "ranked-slots" and best["screening"]["kept"] == screening["kept"]
    assert set(best["alpha"]) == {"p0", "p1", "p2"} and best["alpha"][ranking[2]] == 0.0
    assert sum(best["alpha"].values()) == pytest.approx(1.0)
    # the statistics are those of the screened prompts, in the screened order
    statistics = ray.get(result.statistics)
    assert statistics.prompts == tuple(screening["kept"])
    order = [statistics.prompts.index(name) for name in best["subset"]]
    alpha = np.array([best["alpha"][name] for name in best["subset"]])
    assert best["val_h_score"] == pytest.approx(ensemble_h_score(statistics.val.subset(order), alpha))
    # the gradients were extracted after the screening, for the kept prompts only (K' x K' moments)
    names, moments = moments_from_table(ray.get(result.extraction.gradient_ref()))
    assert names == screening["kept"] and moments.num_prompts == 2
    assert best["extraction"]["screening_stats"]["gradient_sample_prompts"] == 0
    computed = best["extraction"]["stats"]  # never the 3 prompts': the 2 kept, or none when their table
    # was cut from a cached one of all three (the directory's cache: test_lambda_path extracts them)
    assert computed["gradient_sample_prompts"] == (
        0 if "gradients_from" in computed else 2 * config.gradient_samples
    )
    # a small library keeps the exact all-pairs statistics, and the choice is recorded
    assert best["statistics"]["mode"] == "all-pairs" and statistics.choice == best["statistics"]
    assert set(best["seconds"]) == {"extraction", "screening", "gradients", "statistics", "trials"}


def test_screened_search_scores_the_probe_on_the_right_prompts(ray_cluster, extraction_setup, tmp_path):
    """With screening the searched prompts are a reordered part of the library: the probe metric
    must combine the prompts the trial named (a trial refuses a ProbeData of other prompts)."""
    import dataclasses

    from hgprompt_ray.data import resolve_target
    from hgprompt_ray.tuning.probe_metric import probe_accuracy, probe_data_task

    config = extraction_setup
    spec = SearchSpec(
        target=config.target,
        library=config.library,
        backbone=config.backbone,
        img_size=config.img_size,
        samples=config.num_samples,
        gradient_samples=config.gradient_samples,
        cache_dir=config.cache_dir,
        precision=config.precision,  # the directory's cache holds these features already
        num_samples=3,
        max_concurrent=2,
        screen_top=2,
        output=str(tmp_path / "search"),
    )
    result = run_search(spec, progress=False)  # SearchFailedError if the trials refused the probe data
    assert result.plan.subset_space == "scores"  # auto, for 2 searched prompts
    kept = json.loads((tmp_path / "search" / "screening.json").read_text())["kept"]
    searched = probe_data_task(
        dataclasses.replace(result.plan.extraction, prompts=tuple(kept)), resolve_target(config.target), 0
    )._replace(cache_dir=None)  # recomputed here, not read back from the trials' kept results
    assert searched.names == tuple(kept) == ray.get(result.statistics).prompts
    assert len(result.trials) == 3
    for _, row in result.trials.iterrows():
        subset = row["subset"].split(",")
        alpha = [row[f"alpha_{name}"] for name in subset]
        expected = probe_accuracy(searched, [kept.index(name) for name in subset], alpha)
        assert row["val_probe_accuracy"] == pytest.approx(expected, abs=1.5 / len(searched.val_labels))
