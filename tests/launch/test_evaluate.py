"""launch/evaluate.py end to end on a tiny backbone: every method, the report, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer.methods import get_method, method_names, registered
from hgprompt_ray.transfer.report import RESULT_COLUMNS, _chunks_text, _wall_text
from hgprompt_ray.workers.feature_store import STORE_NAME, STORE_NAMESPACE
from launch.evaluate import TIME_LIMIT_EXIT, main
from tests.launch.conftest import shared_cluster
from tests.workers.conftest import DEPTH, EMBED_DIM

ray = pytest.importorskip("ray")


def _argv(config, out, *extra):
    return [
        "--targets", config.target,
        "--prompts", config.library,
        "--output", str(out),
        "--seeds", "2",
        "--epochs", "1",
        "--max-steps", "3",  # a few steps per fit: the test checks the plumbing, not convergence
        "--lr-scales", "1",
        "--base-lr", "0.4",
        "--max-test", "60",
        "--spot-steps", "2",
        "--search-trials", "4",
        "--samples", "48",
        "--gradient-samples", "12",
        "--scaling-sizes", "2",
        "--no-dashboard",
        "--num-cpus", "2",
        "--cpus-per-job", "1",  # two tiny runs at a time: they gain nothing from a second thread
        "--cache-dir", config.cache_dir,
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_evaluate_end_to_end_and_resume(extraction_setup, tmp_path, capsys):
    shared_cluster()
    out = tmp_path / "report"
    names = method_names()
    probed = [m for m in names if "init-probe" in get_method(m).protocols]  # the weightings + the linear probe
    assert len(probed) >= 9 and "linear-probe" in probed and "vpt" not in probed
    # every registered method x 1 seed (tuned: --tuned-seeds) + the probed ones x 2 seeds
    # (init-probe), and the scaling point's 3 methods under each protocol
    runs = len(names) + 2 * len(probed) + 2 * 3
    argv = _argv(extraction_setup, out, "--protocol", "tuned", "init-probe", "--tuned-seeds", "1")
    assert main(argv) == 0
    first = capsys.readouterr().out
    # every draw's searches released their tables: nothing of the evaluation stays pinned
    store = ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
    tables = set()  # what each search's extraction put in the store (the cluster is the directory's)
    for best in (out / "searches").glob("*/best.json"):
        extraction = json.loads(best.read_text())["extraction"]
        tables |= {k for split in extraction["feature_keys"].values() for k in split.values()}
        tables.add(extraction["gradient_key"])
    assert len(tables) > 3 * 2 and not tables & set(ray.get(store.keys.remote()))
    assert f"({runs} runs this time, {runs} in all)" in first
    results = pd.read_csv(out / "results.csv")
    assert tuple(results.columns) == RESULT_COLUMNS
    assert set(results["method"]) == set(names) and set(results["protocol"]) == {"tuned", "init-probe"}
    assert set(results[results["protocol"] == "init-probe"]["method"]) == set(probed)
    assert results.groupby(["method", "protocol"]).size().to_dict() == {
        **{(m, "tuned"): 1 for m in names}, **{(m, "init-probe"): 2 for m in probed}}
    assert results["test_accuracy"].between(0, 1).all() and (results["wall_seconds"] > 0).all()
    assert (results[results["method"] == "linear-probe"]["test_accuracy"] > 0.75).all()
    weights = json.loads((out / "weights" / "data.json").read_text())
    assert weights["sources"] == ["p0", "p1", "p2"]
    for method in registered():
        if method.weights is not None:
            alpha = weights["methods"][method.name]
            assert len(alpha) == 3 and abs(sum(alpha) - 1) < 1e-6, method.name
    assert sum(weights["methods"]["single-best"]) == 1 and max(weights["methods"]["single-best"]) == 1
    best = max(weights["zero_shot_val"], key=weights["zero_shot_val"].get)  # val200, never test
    assert weights["methods"]["single-best"][weights["sources"].index(best)] == 1
    search = json.loads((out / "searches" / "data" / "best.json").read_text())
    assert weights["methods"]["hgprompt"] == [search["alpha"][s] for s in weights["sources"]]
    recorded = json.loads((out / "runs" / "data" / "hgprompt" / "seed0.json").read_text())
    assert recorded["job"]["weights"] == weights["methods"]["hgprompt"]
    randomly = json.loads((out / "searches" / "data@random" / "search.json").read_text())
    assert randomly["arguments"]["sampler"] == "random"  # the same search, random sampling
    random_best = json.loads((out / "searches" / "data@random" / "best.json").read_text())
    assert weights["methods"]["search-random"] == [random_best["alpha"][s] for s in weights["sources"]]
    assert 0 < recorded["epochs"] <= 1 and recorded["lr_scale"] == 1 and recorded["num_test"] == 60
    assert recorded["trainable_parameters"] == 4 * EMBED_DIM + 2 * EMBED_DIM + 2
    full = json.loads((out / "runs" / "data" / "full" / "seed0.json").read_text())
    assert full["trainable_parameters"] > 300_000 and full["precision"] in ("bf16", "fp32")
    assert len(weights["scaling"]["2"]["sources"]) == 2
    scaled = json.loads((out / "searches" / "data@2" / "best.json").read_text())["extraction"]
    assert scaled["stats"]["gradients_from"] == search["extraction"]["gradient_key"]  # no gradient pass
    runs_frame = pd.read_csv(out / "runs.csv")
    scaling = {m.name for m in registered() if m.scaling}
    assert set(runs_frame[~runs_frame["main"]]["method"]) == scaling
    report = (out / "report.md").read_text()
    assert "python launch/evaluate.py --targets" in report
    assert "seeds: tuned 1, init-probe 2; protocols: tuned, init-probe" in report
    labels = [get_method(m).display_label() for m in names]
    for label in (*labels, "Where HGPrompt does not win", "Learning curve of VPT from scratch"):
        assert label in report, label
    table = pd.read_csv(out / "main_table.csv", index_col=0)
    assert list(table.index) == labels and "PARTIAL-1" in labels and "MLP-3" in labels
    # 2 init-probe seeds cannot show a target informative: its column is marked, with the reason
    assert {"Params", "Wall s/run", "data †", "Average"} <= set(table.columns)
    assert "† marks a target not shown to be informative" in report
    assert table.loc["Linear probe", "Fit"] == "closed form"
    spearman = pd.read_csv(out / "spearman.csv", index_col=0)  # values: tests/transfer/test_report.py
    assert list(spearman.index) == ["data", "Average"] and "HGPrompt" in spearman.columns
    assert "## Scaling with the number of sources" in report
    ablation = pd.read_csv(out / "ablation.csv", index_col=0)
    assert list(ablation.index) == ["neither (uniform)", "H only", "alignment only", "both (HGPrompt)"]
    subset = [weights["sources"].index(s) for s in search["subset"]]  # the ablation's rows: one subset
    for method in ("search-uniform", "search-h-only", "align-only"):
        alpha = weights["methods"][method]
        assert all(alpha[i] == 0 for i in range(3) if i not in subset), method
    assert weights["methods"]["search-uniform"] == [1 / len(subset) if i in subset else 0 for i in range(3)]
    for image in ("scaling.png", "tsne.png", "weights_data.png", "learning_curve.png"):
        with Image.open(out / image) as png:
            assert png.format == "PNG" and png.width > 200

    # init-probe (the contract): seed 1 is split draw 1 with its own weights, so no
    # choice reads an image of that draw's test split
    other = json.loads((out / "weights" / "data~split1.json").read_text())
    for tag, split in (("data", 0), ("data~split1", 1)):  # both draws' zero-shot columns, one pass
        assert pd.read_parquet(out / "zero_shot" / f"{tag}.parquet")["split_seed"].unique().tolist() == [split]
    assert (weights["split_seed"], other["split_seed"]) == (0, 1)
    for folder, split in (("data", 0), ("data~split1", 1)):  # each draw's own search
        assert json.loads((out / "searches" / folder / "search.json").read_text())["arguments"]["split_seed"] == split
    searched = json.loads((out / "searches" / "data~split1" / "best.json").read_text())
    assert other["methods"]["hgprompt"] == [searched["alpha"][s] for s in other["sources"]]
    for seed in (0, 1):
        record = json.loads((out / "runs" / "data" / "hgprompt~init-probe" / f"seed{seed}.json").read_text())
        assert record["split_seed"] == seed and record["closed_form"] and record["epochs"] == 0
        assert record["job"]["weights"] == (weights if seed == 0 else other)["methods"]["hgprompt"]
        assert record["trainable_parameters"] == EMBED_DIM + 1  # the probe: binary logistic regression
    for text in ("## Main table, init-probe", "HGPrompt against each baseline (init-probe)",
                 "Do the weightings differ on each target? (init-probe)", "## Main table, tuned",
                 "## Scaling with the number of sources (init-probe)"):  # fmt: skip
        assert text in report, text
    paired = pd.read_csv(out / "paired_init-probe.csv", index_col=0)
    assert set(paired.index) == {get_method(m).display_label() for m in probed if m != "hgprompt"}
    assert (paired["pairs"] == 2).all()
    probe_table = pd.read_csv(out / "main_table_init-probe.csv", index_col=0)
    assert probe_table.loc["Linear probe", "Fit"] == "probe on the bare backbone"
    assert probe_table.loc["HGPrompt", "Fit"] == "probe on P0's features"

    (out / "runs" / "data" / "attempt" / "seed0.json").unlink()  # a run lost (e.g. killed job)
    # weights written before a method was registered (a resumed evaluation after the registry
    # grew): that method's weights are computed, the search resumes without a new trial
    stale = {**weights, "methods": {k: v for k, v in weights["methods"].items() if k != "search-uniform"}}
    stale["methods"]["average"] = [1.0, 0.0, 0.0]  # a marker: what the entry has is kept, not recomputed
    (out / "weights" / "data.json").write_text(json.dumps(stale))
    (out / "runs" / "data" / "search-uniform" / "seed0.json").unlink()
    trials = pd.read_csv(out / "searches" / "data" / "trials.csv")
    assert main(argv) == 0
    assert f"(2 runs this time, {runs} in all)" in capsys.readouterr().out
    assert (out / "runs" / "data" / "attempt" / "seed0.json").is_file()
    assert json.loads((out / "weights" / "data.json").read_text())["methods"] == {
        **weights["methods"], "average": [1.0, 0.0, 0.0]}
    pd.testing.assert_frame_equal(pd.read_csv(out / "searches" / "data" / "trials.csv"), trials)
    state = json.loads((out / "evaluate.json").read_text())
    assert len(state["chunks"]) == 2 and state["runs"] == runs and "Ray: 2 CPUs" in state["machine"]
    assert state["seconds"] == pytest.approx(sum(c["seconds"] for c in state["chunks"]))
    assert [c["finished"] for c in state["chunks"]] == [True, True]  # each chunk's checkpoints, then its end
    # --max-minutes: the chunk ends at its first step boundary past the limit, exit 75, recorded as such
    assert main([*argv, "--max-minutes", "1e-6"]) == TIME_LIMIT_EXIT
    assert "stopped at --max-minutes 1e-06" in capsys.readouterr().out
    stopped = json.loads((out / "evaluate.json").read_text())["chunks"][-1]
    assert stopped["stopped"] == "--max-minutes 1e-06" and stopped["finished"] is False
    after = json.loads((out / "evaluate.json").read_text())
    assert "until its time limit (--max-minutes 1e-06)" in _chunks_text(after)
    assert "interrupted" not in _wall_text(after, pd.DataFrame())  # stopped by design, not cut
    assert main([*argv, "--max-minutes", "0"]) == 2
    assert "--max-minutes 0: must be positive" in capsys.readouterr().err
    assert main(["--report-only", "--output", str(out)]) == 0
    capsys.readouterr()
    assert main([*argv, "--epochs", "2"]) == 2  # another budget: refused, kept
    assert "holds an evaluation with another budget" in capsys.readouterr().err
    assert main([*argv, "--partial-k", "2"]) == 2  # a method's setting is budget too
    capsys.readouterr()
    # the protocols may differ between chunks (same budget): tuned alone finds its runs done
    assert main(_argv(extraction_setup, out, "--tuned-seeds", "1")) == 0
    assert f"(0 runs this time, {len(names) + 3} in all)" in capsys.readouterr().out
    assert json.loads((out / "evaluate.json").read_text())["chunks"][-1]["protocols"] == ["tuned"]
    assert len(list((out / "runs").glob("**/*.json"))) == runs


def test_the_init_probe_contract_plans_a_csv_target(extraction_setup, tiny_setup, tmp_path):
    """``--methods hgprompt average single-best --protocol init-probe --seeds 3`` on a CSV target
    (the run itself is the end-to-end test's, on a folder target: both resolve to a task)."""
    from hgprompt_ray.transfer.plan import EvaluationSettings, plan_evaluation

    root, _ = tiny_setup
    table = tmp_path / "target.csv"  # paths relative to the CSV's folder
    pngs = sorted((root / "data").glob("*/*.png"))
    table.write_text("path,label\n" + "".join(f"{os.path.relpath(p, tmp_path)},{p.parent.name}\n" for p in pngs))
    settings = EvaluationSettings(library=extraction_setup.library, output=str(tmp_path / "out"), seeds=3,
                                  methods=("hgprompt", "average", "single-best"), protocols=("init-probe",))  # fmt: skip
    plan = plan_evaluation(settings, {"max_test": 60}, [str(table)])
    assert plan.tasks[str(table)].info.num_classes == 2 and plan.sources[str(table)] == ("p0", "p1", "p2")
    assert settings.protocol_methods("init-probe") == ("average", "single-best", "hgprompt")
    assert "protocols" not in plan.budget and plan.settings.protocols == ("init-probe",)  # chunks may differ


def test_bad_inputs(extraction_setup, tmp_path, capsys):
    one = PromptLibrary(tmp_path / "one", create=True)
    source = PromptLibrary(extraction_setup.library)
    one.add("p0", source.load("p0"), source_task="random", backbone=extraction_setup.backbone, img_size=32)
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    cases = {
        "unknown target": (["--targets", "no-such-task"], "--targets 'no-such-task'"),
        "too few sources": (["--prompts", str(one.root)], "at least 2"),
        "scaling size": (["--scaling-sizes", "1", "7"], "--scaling-sizes [1] must be at least 2"),
        "epochs": (["--epochs", "0"], "--epochs must be a positive integer"),
        "partial k": (["--partial-k", str(DEPTH + 1)], f"partial_k must be an integer in [1, {DEPTH}] (the backbone has {DEPTH} blocks), but got {DEPTH + 1}. Pass --partial-k {DEPTH}."),
        "adapter reduction": (["--adapter-reduction", "0"], "adapter_reduction must be an integer >= 1"),
        "distillation weight": (["--panda-distill-weight", "-1"], "panda_distill_weight must be a finite number >= 0, but got -1.0"),
        "seeds": (["--seeds", "0"], "--seeds must be a positive integer"),
        "scaling seeds": (["--scaling-seeds", "3"], "--scaling-seeds 3 exceeds --seeds 2"),
        "tuned seeds": (["--tuned-seeds", "3"], "--tuned-seeds 3 exceeds --seeds 2 (it lowers the tuned protocol's count). Fix: pass --seeds 3"),
        "used output": (["--output", str(used)], "already holds other files"),
        "protocol without methods": (["--methods", "vpt", "full", "--protocol", "init-probe"],
                                     "--protocol init-probe: none of --methods ['vpt', 'full'] has it"),  # fmt: skip
    }
    for name, (extra, message) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        assert main(_argv(extraction_setup, out, *extra)) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert not out.exists() or name == "used output"
    assert (used / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit):  # argparse's own error for a protocol that does not exist
        main(_argv(extraction_setup, tmp_path / "out-protocol", "--protocol", "probe"))
    assert "invalid choice: 'probe'" in capsys.readouterr().err
    assert main(["--report-only", "--output", str(tmp_path / "none")]) == 2
    assert "holds no evaluation" in capsys.readouterr().err


def test_leave_one_out_uses_every_task_of_the_zoo_and_never_its_own_prompt(tmp_path):
    from hgprompt_ray.data import related_tasks
    from hgprompt_ray.transfer.plan import EvaluationSettings, plan_evaluation

    plan = plan_evaluation(EvaluationSettings(output=str(tmp_path / "loo")), {}, None, leave_one_out=True)
    library = plan.library
    tasks = sorted({r.source_task for r in library.records()})
    assert sorted(plan.targets) == tasks and len(tasks) == 11
    matrix = pd.read_parquet(plan.zero_shot)  # the shipped matrix orders them: widest source spread first
    matrix = matrix[matrix["split_seed"] == 0] if "split_seed" in matrix else matrix
    spreads = [matrix[(matrix["target"] == t) & matrix["source"].isin(plan.sources[t])]["test_accuracy"].agg(np.ptp)
               for t in plan.targets]  # fmt: skip
    assert spreads == sorted(spreads, reverse=True) and spreads[0] > spreads[-1] + 0.05
    for target in tasks:
        own = {r.name for r in library.records() if r.source_task == target}
        same_images = {r.name for r in library.records() if r.source_task in related_tasks(target)}
        assert own and not (own | same_images) & set(plan.sources[target])
        assert len(plan.sources[target]) == len(library) - len(own) - len(same_images)
    assert len(plan.sources["digits-parity"]) == len(library) - 3  # digits, digits-high: the same images
    assert plan.scaling_targets == plan.targets[:1]
    library_order = plan_evaluation(EvaluationSettings(output=str(tmp_path / "loo2"), zero_shot=str(tmp_path / "none")),
                                    {}, None, leave_one_out=True)  # no matrix: name order  # fmt: skip
    assert list(library_order.targets) == tasks


def test_leave_one_out_keeps_a_task_without_data_here_as_a_source_only(tmp_path, monkeypatch):
    """The v2 zoo has a Fashion-MNIST prompt; where its Debian package is missing, --leave-one-out
    runs over the other tasks and still offers that prompt to each of them."""
    from hgprompt_ray.data.offline import FASHION_MNIST_ENV
    from hgprompt_ray.paths import DEFAULT_LIBRARY
    from hgprompt_ray.transfer.plan import EvaluationSettings, plan_evaluation

    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "absent"))
    library = PromptLibrary(os.path.join(os.path.dirname(DEFAULT_LIBRARY), "offline-v2"))
    fashion = [r.name for r in library.records() if r.source_task.startswith("fashion")]
    assert fashion
    settings = EvaluationSettings(library=str(library.root), output=str(tmp_path / "loo"))
    plan = plan_evaluation(settings, {}, None, leave_one_out=True)
    assert not any(t.startswith("fashion") for t in plan.targets) and "count" in plan.targets
    assert set(fashion) <= set(plan.sources["count"])


def test_chunks_of_targets_fill_one_folder(tmp_path):
    """A long evaluation runs as chunks of targets into one folder: each invocation adds its
    targets and its wall time, and the report lists every chunk's command."""
    from hgprompt_ray.transfer.plan import EvaluationSettings, plan_evaluation
    from launch.evaluate import _finished, _state

    settings = EvaluationSettings(output=str(tmp_path / "loo"), methods=("average",), protocols=("init-probe",))
    first = _state(plan_evaluation(settings, {}, ["count", "dsprites-scale"]), "evaluate.py --targets A", "m1")
    assert first["target_names"] == ["count", "dsprites-scale"] and len(first["chunks"]) == 1
    first["chunks"][-1]["seconds"] = 60.0
    (tmp_path / "loo").mkdir()
    (tmp_path / "loo" / "evaluate.json").write_text(json.dumps(first))
    second = _state(plan_evaluation(settings, {}, ["textile", "count"]), "evaluate.py --targets B", "m2")
    assert second["target_names"] == ["count", "dsprites-scale", "textile"]  # count: resumed, not twice
    assert [c["target_names"] for c in second["chunks"]] == [["count", "dsprites-scale"], ["textile", "count"]]
    assert second["started"] == first["started"] and second["machine"] == "m2"
    assert second["scaling_target_names"] == ["count"]  # the first chunk's: one scaling curve in all
    (tmp_path / "loo" / "evaluate.json").write_text(json.dumps(second))
    assert plan_evaluation(settings, {}, ["textile", "count"]).scaling_targets == ("count",)
    assert plan_evaluation(settings, {}, ["textile"]).scaling_targets == ()
    wanted = dataclasses.replace(settings, scaling_targets=("textile",))
    assert plan_evaluation(wanted, {}, ["textile"]).scaling_targets == ("textile",)
    text = _chunks_text(second)
    assert "evaluate.py --targets A\n      # count, dsprites-scale (init-probe): 1.0 min on m1" in text
    assert "evaluate.py --targets B\n      # textile, count (init-probe): did not finish on m2" in text
    assert _chunks_text(first) == "    evaluate.py --targets A"
    # two chunks at once into one folder: the one that ends first keeps the other's record
    plan_c, plan_d = (plan_evaluation(settings, {}, [t]) for t in ("dsprites-location", "dsprites-shape"))
    started = _state(plan_c, "evaluate.py --targets C", "m3")
    (tmp_path / "loo" / "evaluate.json").write_text(json.dumps(started))
    (tmp_path / "loo" / "evaluate.json").write_text(json.dumps(_state(plan_d, "evaluate.py --targets D", "m3")))
    started["chunks"][-1]["seconds"] = 30.0
    done = _finished(plan_c, started)
    assert [c["command"][-1] for c in done["chunks"]] == ["A", "B", "D", "C"] and done["seconds"] == 90.0
    assert {"dsprites-location", "dsprites-shape"} <= set(done["target_names"])
