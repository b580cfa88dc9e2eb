"""Report tables and correlations against direct computations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr, ttest_rel
from scipy.stats import t as t_dist

from hgprompt_ray.transfer import report
from hgprompt_ray.transfer.multiple_testing import holm
from hgprompt_ray.transfer.target_statistics import blocked_anova


def _frame():
    rows = []
    accuracy = {("a", "hgprompt"): [0.80, 0.84], ("a", "average"): [0.70, 0.74], ("a", "vpt"): [0.9, 0.9],
                ("b", "hgprompt"): [0.50, 0.60], ("b", "average"): [0.55, 0.55], ("b", "vpt"): [0.4, 0.5]}  # fmt: skip
    for (target, method), values in accuracy.items():
        for seed, value in enumerate(values):
            rows.append({"target": target, "method": method, "protocol": "tuned", "seed": seed, "scale": 4,
                         "main": True, "test_accuracy": value, "val_accuracy": value, "wall_seconds": 10.0 + seed,
                         "trainable_parameters": 1154.0})  # fmt: skip
    rows.append(
        {"target": "a", "method": "hgprompt", "protocol": "tuned", "seed": 0, "scale": 2, "main": False,
         "test_accuracy": 0.1, "val_accuracy": 0.1, "wall_seconds": 1.0, "trainable_parameters": 1154.0}
    )  # fmt: skip
    return pd.DataFrame(rows)


def test_main_table_means_stds_and_average_column():
    display, means = report.main_table(_frame())
    assert list(display.index) == ["VPT (scratch)", "Average", "HGPrompt"]  # the registry's order and labels
    assert list(display.columns) == ["Kind", "Trains", "Params", "Fit", "a", "b", "Average", "Wall s/run"]
    half = t_dist.ppf(0.975, 1) * np.std([0.80, 0.84], ddof=1) / np.sqrt(2)  # the 95% CI over 2 seeds
    assert display.loc["HGPrompt", "a"] == f"82.0 ± {100 * half:.1f}"
    assert means.loc["b", "hgprompt"] == pytest.approx(0.55)  # the scaling row (main=False) is left out
    assert display.loc["Average", "Average"] == f"{100 * np.mean([0.72, 0.55]):.1f}"
    assert display.loc["HGPrompt", "Params"] == "1.15k" and display.loc["VPT (scratch)", "Wall s/run"] == "10"
    assert display.loc["VPT (scratch)", "Kind"] == "tuning" and display.loc["Average", "Kind"] == "weighting"
    results = report.results_table(_frame())
    assert tuple(results.columns) == report.RESULT_COLUMNS and len(results) == 12
    losses = report.baselines_beating(means)
    assert ("a", "vpt", pytest.approx(0.9), pytest.approx(0.82)) in losses
    assert ("b", "average", pytest.approx(0.55), pytest.approx(0.55)) in losses  # a tie is not a win
    assert not any(t == "a" and m == "average" for t, m, _, _ in losses)


def test_spearman_matches_scipy_with_a_ci_and_skips_constant_weights():
    zero_shot = pd.DataFrame({"source": ["s1", "s2", "s3", "s4"], "target": "a",
                              "val_accuracy": [0.2, 0.9, 0.5, 0.4], "test_accuracy": [0.9, 0.1, 0.2, 0.3]})  # fmt: skip
    weights = {"a": {"sources": ["s1", "s2", "s3", "s4"],
                     "methods": {"hgprompt": [0.1, 0.6, 0.3, 0.0], "average": [0.25] * 4}}}  # fmt: skip
    table, long = report.spearman_table(weights, zero_shot, ["hgprompt", "average"])
    expected = spearmanr([0.1, 0.6, 0.3, 0.0], [0.2, 0.9, 0.5, 0.4]).statistic  # the val column by default
    assert table.loc["a", "HGPrompt"] == pytest.approx(expected)
    assert np.isnan(table.loc["a", "Average"])
    assert table.loc["Average", "HGPrompt"] == pytest.approx(expected)
    row = long[long["method"] == "hgprompt"].iloc[0]
    assert row["ci_low"] <= row["rho"] <= row["ci_high"] <= 1
    on_test, _ = report.spearman_table(weights, zero_shot, ["hgprompt"], column="test_accuracy")
    assert on_test.loc["a", "HGPrompt"] == pytest.approx(spearmanr([0.1, 0.6, 0.3, 0.0], [0.9, 0.1, 0.2, 0.3]).statistic)


def _two_protocols():
    """HGPrompt beats Average by 5 points on target a (5 seeds, small noise) and ties on b,
    under init-probe; one tuned run per method that must stay out of the init-probe tables."""
    rng = np.random.default_rng(0)
    rows = []
    for target, gap in (("a", 0.05), ("b", 0.0)):
        for seed in range(5):
            base = 0.6 + 0.02 * rng.normal()
            noise = 0.002 * rng.normal() if gap else 0.0
            for method, value in (("average", base), ("hgprompt", base + gap + noise), ("single-best", base - 0.1)):
                rows.append({"target": target, "method": method, "protocol": "init-probe", "seed": seed,
                             "scale": 3, "main": True, "test_accuracy": value, "val_accuracy": value,
                             "wall_seconds": 2.0, "trainable_parameters": 10.0})  # fmt: skip
    for method in ("average", "hgprompt"):
        rows.append({"target": "a", "method": method, "protocol": "tuned", "seed": 0, "scale": 3, "main": True,
                     "test_accuracy": 0.1, "val_accuracy": 0.1, "wall_seconds": 9.0, "trainable_parameters": 99.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_protocols_have_their_own_tables_with_paired_tests():
    frame = _two_protocols()
    display, means = report.main_table(frame, protocol="init-probe")
    assert means.loc["a", "hgprompt"] == pytest.approx(frame.query("protocol == 'init-probe' and target == 'a' and method == 'hgprompt'")["test_accuracy"].mean())
    assert display.loc["HGPrompt", "Fit"] == "probe on P0's features"
    tuned, tuned_means = report.main_table(frame, protocol="tuned")
    assert tuned_means.loc["a", "hgprompt"] == pytest.approx(0.1) and list(tuned_means.index) == ["a"]
    paired = report.paired_table(frame, "init-probe")
    assert list(paired.index) == ["Average", "Single-Best"] and (paired["pairs"] == 10).all()
    ours = frame.query("protocol == 'init-probe' and method == 'hgprompt'").sort_values(["target", "seed"])
    theirs = frame.query("protocol == 'init-probe' and method == 'average'").sort_values(["target", "seed"])
    expected = ttest_rel(ours["test_accuracy"].to_numpy(), theirs["test_accuracy"].to_numpy()).pvalue
    assert paired.loc["Average", "p (paired t)"] == pytest.approx(expected)
    np.testing.assert_allclose(paired["p (t, Holm)"], holm(paired["p (paired t)"].to_numpy()))
    assert (paired["p (t, Holm)"] >= paired["p (paired t)"]).all()
    assert paired.loc["Average", "win / tie / loss (targets)"] == "1 / 1 / 0"  # a: win; b: identical, a tie
    # b: a constant 10-point gap over 5 seeds has no variance; the sign test's p = 0.0625 is no win
    assert paired.loc["Single-Best", "win / tie / loss (targets)"].startswith("1 / 1 / 0")
    informative = report.informative_table(frame, "init-probe")
    assert informative.loc["a", "p (ANOVA)"] < 0.01 and informative.loc["a", "seeds"] == 5
    assert informative.loc["a", "p (blocked on seed)"] == pytest.approx(
        blocked_anova(frame.query("protocol == 'init-probe'"), "a")[1]
    )  # all three methods are weightings
    assert informative.loc["a", "p (blocked on seed)"] < informative.loc["a", "p (ANOVA)"]  # the draws' shifts removed
    assert informative.loc["a", "spread (points)"] == pytest.approx(100 * (means.loc["a"].max() - means.loc["a"].min()))
    assert informative.loc["a", "best"] == "HGPrompt" and informative.loc["b", "worst"] == "Single-Best"
    assert not informative["informative"].any()  # no zero-shot spread given: not shown to be informative
    # both targets separate the weightings (ANOVA p < 0.01, 5 seeds); a's sources spread too little
    spread = report.informative_table(frame, "init-probe", zero_shot_spread={"a": 3.0, "b": 12.0})
    assert list(spread.index) == ["b", "a"] and spread["informative"].tolist() == [True, False]
    assert spread.loc["a", "zero-shot spread (points)"] == 3.0
    fewer = report.informative_table(frame[frame["seed"] < 4], "init-probe", zero_shot_spread={"a": 9.0, "b": 9.0})
    assert not fewer["informative"].any() and (fewer["verdict"] == "undetermined: 4 < 5 seeds (distinct split draws)").all()
    tuned = report.informative_table(frame[frame["seed"] < 4].assign(protocol="tuned"), "tuned", zero_shot_spread={"a": 9.0})
    assert (tuned["verdict"] == "undetermined: 4 < 5 seeds (training seeds on one split)").all()
    ordered, _ = report.main_table(frame, protocol="init-probe", order=["b"], marked=["a"])
    assert [c for c in ordered.columns if c in ("a †", "b")] == ["b", "a †"]


def test_scaling_and_weights_plots(tmp_path):
    frame = _frame()
    summary = report.write_scaling_plot(frame, ["hgprompt", "average"], tmp_path / "scaling.png")
    point = summary[(summary["target"] == "a") & (summary["method"] == "hgprompt") & (summary["scale"] == 2)]
    assert point["mean"].item() == pytest.approx(0.1)
    entry = {"sources": ["s1", "s2"], "methods": {"hgprompt": [0.3, 0.7], "h-only": [1.0, 0.0]}}
    report.write_weights_plot(entry, ["hgprompt", "h-only"], tmp_path / "w.png", "t")
    many = {"sources": ["s1", "s2"], "methods": {f"m{i}": [0.5, 0.5] for i in range(12)}}
    colours = report.write_weights_plot(many, list(many["methods"]), tmp_path / "w12.png", "t")
    assert list(colours) == list(many["methods"])
    assert len(set(colours.values())) == 12  # no two methods share a colour (the default cycle has 10)
    crowd = {"sources": ["s1"], "methods": {f"m{i}": [1.0] for i in range(25)}}
    crowded = report.write_weights_plot(crowd, list(crowd["methods"]), tmp_path / "w25.png", "t")
    assert len(set(crowded.values())) == 25
    rng = np.random.default_rng(0)
    features = {"x": rng.normal(size=(40, 8)), "y": rng.normal(size=(40, 8))}
    report.write_tsne_plot(features, np.repeat([0, 1], 20), tmp_path / "tsne.png")
    for name in ("scaling.png", "w.png", "tsne.png"):
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG"


def _write_run(root, target, method, protocol, seed, accuracy, seeded=True):
    folder = root / "runs" / target / (method if protocol == "tuned" else f"{method}~{protocol}")
    folder.mkdir(parents=True, exist_ok=True)
    job = {"target_name": target, "method": method, "protocol": protocol, "seed": seed, "scale": None,
           "sources": ["s1", "s2", "s3"]}  # fmt: skip
    record = {"schema_version": 3, "job": job, "test_accuracy": accuracy, "val_accuracy": accuracy, "seconds": 3.0,
              "key": f"{target}/{method}/seed{seed}", "trainable_parameters": 10, "closed_form": True,
              "split_seed": seed, "split_seeded": seeded, "num_test": 500}  # fmt: skip
    (folder / f"seed{seed}.json").write_text(json.dumps(record))


def test_the_report_puts_informative_targets_first_and_says_why_the_others_are_not(tmp_path):
    """Three targets, 5 init-probe seeds: a separates the weightings over spread sources; b's
    sources are saturated; c has fixed splits, so its seeds repeat one draw (only SPoT's seeded
    prompt varies, which must not pass for seed noise: c has one replicate, not five)."""
    rng = np.random.default_rng(0)
    spreads = {"a": [0.3, 0.5, 0.6], "b": [0.9, 0.91, 0.92], "c": [0.2, 0.4, 0.6]}
    for target in ("a", "b", "c"):
        for seed in range(5):
            base = 0.6 + (0.0 if target == "c" else 0.02 * rng.normal())
            for method, gap in (("average", 0.0), ("hgprompt", 0.05), ("single-best", -0.1)):
                _write_run(tmp_path, target, method, "init-probe", seed, base + gap, seeded=target != "c")
            if target == "c":
                _write_run(tmp_path, target, "spot-best", "init-probe", seed, 0.5 + 0.01 * seed, seeded=False)
        entry = {"target": target, "sources": ["s1", "s2", "s3"], "methods": {"hgprompt": [0.2, 0.3, 0.5]},
                 "zero_shot": dict(zip(["s1", "s2", "s3"], spreads[target])), "scaling": {}}  # fmt: skip
        (tmp_path / "weights").mkdir(exist_ok=True)
        (tmp_path / "weights" / f"{target}.json").write_text(json.dumps(entry))
    state = {"command": "evaluate.py --targets a b c", "library": "lib", "backbone": "vit", "img_size": 32,
             "target_names": ["b", "c", "a"], "scaling_target_names": [], "scaling_seeds": 1, "seeds": 5,
             "budget": {"tuned_seeds": 3}, "machine": "test machine"}  # fmt: skip
    path, display = report.write_report(tmp_path, state)
    assert [c for c in display.columns if c in ("a", "b †", "c †")] == ["a", "b †", "c †"]
    verdicts = pd.read_csv(tmp_path / "informative_init-probe.csv", index_col=0)["verdict"]
    assert verdicts["a"] == "informative" and verdicts["b"] == "saturated: zero-shot spread 2.0 < 5 points"
    assert verdicts["c"] == "undetermined: 1 < 5 seeds (distinct split draws)"
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert (runs[runs["target"] == "c"]["draw"] == -1).all() and set(runs[runs["target"] == "a"]["draw"]) == set(range(5))
    paired = pd.read_csv(tmp_path / "paired_init-probe.csv", index_col=0)
    assert paired.loc[["Average", "Single-Best"], "pairs"].tolist() == [5 + 5 + 1] * 2  # c's 5 seeds: 1 draw
    assert paired.loc["SPoT-best", "pairs"] == 1
    assert paired["p (Wilcoxon)"].isna().all()  # overlapping draws: no uncorrected test shown
    assert "corrected resampled t (variance x (1/n + n_test/n_train), n_test/n_train = 0.50)" in path.read_text()
    text = path.read_text()
    main_table = text.split("## Main table, init-probe", 1)[1].split("|", 1)[0]  # its caption, before the table
    assert "each half-width is Nadeau and Bengio's corrected one" in main_table and "1.87 times" in main_table
    assert "seeds: init-probe 5; protocols: init-probe" in text and "Machine: test machine." in text
    alone = pd.read_csv(tmp_path / "paired_informative_init-probe.csv", index_col=0)  # a only: b, c not informative
    assert alone.loc[["Average", "Single-Best"], "pairs"].tolist() == [5, 5] and "SPoT-best" not in alone.index
    assert alone.loc["Average", "HGPrompt - baseline (points)"].startswith("+5.0 [")  # a's gap, undiluted by b and c
    assert alone.loc["Average", "win / tie / loss (targets)"] == "0 / 1 / 0"  # a constant gap: sign test p 0.0625
    assert "HGPrompt against each baseline on the informative targets only (init-probe)" in text
    entry = json.loads((tmp_path / "weights" / "a.json").read_text())  # a's sources saturated too: nothing informative,
    entry["zero_shot"] = {"s1": 0.9, "s2": 0.91, "s3": 0.92}  # so no such table, and the earlier file is gone
    (tmp_path / "weights" / "a.json").write_text(json.dumps(entry))
    report.write_report(tmp_path, state)
    assert not (tmp_path / "paired_informative_init-probe.csv").exists()
    assert "on the informative targets only" not in path.read_text()


def test_the_correction_applies_to_init_probe_draws_of_one_pool_only():
    from hgprompt_ray.transfer.tables import resampling_overlap

    rows = [{"target": t, "method": "average", "protocol": p, "draw": d, "num_test": 500.0}
            for t in ("a", "b") for p in ("init-probe", "tuned") for d in range(3)]  # fmt: skip
    frame = pd.DataFrame(rows)
    assert resampling_overlap(frame[frame["protocol"] == "init-probe"]) == 0.5  # 500 / train800val200
    assert resampling_overlap(frame[frame["protocol"] == "tuned"]) == 0.0  # seeds train on one draw
    assert report._half_width_text(frame[frame["protocol"] == "tuned"]) == ""  # its table's CIs: plain t
    fixed = frame[frame["protocol"] == "init-probe"].assign(draw=-1)
    assert resampling_overlap(fixed) == 0.0  # one fixed split: nothing overlaps (and one replicate)


def test_the_wall_time_of_an_interrupted_evaluation_is_the_runs_sum():
    frame = _frame()  # 13 runs: 6 x 10 s + 6 x 11 s + 1 s
    assert report._wall_text({"seconds": 90.0}, frame) == "1.5 min in all"
    interrupted = "not recorded (an invocation was interrupted); the runs took 2.1 min together"
    assert report._wall_text({}, frame) == interrupted
    chunks = [{"seconds": 60.0}, {"seconds": None}]  # evaluate.json's total then counts only the first
    assert report._wall_text({"seconds": 60.0, "chunks": chunks}, frame) == interrupted
    chunks = [{"seconds": 60.0, "finished": True}, {"seconds": 30.0, "finished": False}]  # saved up to its last result
    assert report._wall_text({"seconds": 90.0, "chunks": chunks}, frame) == (
        "1.5 min in all (1 invocation interrupted: counted up to the last result saved)")
    text = report._chunks_text({"chunks": [{**c, "command": f"evaluate {i}"} for i, c in enumerate(chunks)]})
    assert "# : 1.0 min\n" in text + "\n" and "0.5 min until it was interrupted" in text


def test_the_header_separates_targets_with_results_from_planned_ones():
    """A leave-one-out in progress plans every task; the header names the ones with results."""
    assert report._targets_text(["a", "b"], {"a", "b"}) == "a, b"
    assert report._targets_text(["a", "b", "c"], {"b"}) == "with results: b; planned, no results yet: a, c"
    assert report._targets_text(["a"], set()) == "with results: none yet; planned, no results yet: a"
    assert report._targets_text(["a"], {"a", "z"}) == "a, z"  # a result of an unlisted target is still shown
