"""launch/evaluate.py end to end on a tiny backbone: every method, the report, resume, bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer.methods import get_method, method_names, registered
from hgprompt_ray.transfer.report import RESULT_COLUMNS
from launch.evaluate import main
from tests.workers.conftest import DEPTH, EMBED_DIM

ray = pytest.importorskip("ray")


def _argv(config, out, *extra):
    return [
        "--targets", config.target,
        "--prompts", config.library,
        "--output", str(out),
        "--seeds", "2",
        "--epochs", "2",
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
    out = tmp_path / "report"
    names = method_names()
    runs = 2 * len(names) + 3  # every registered method x 2 seeds + the scaling point's 3 methods
    try:
        assert main(_argv(extraction_setup, out)) == 0
        first = capsys.readouterr().out
        assert f"({runs} runs this time, {runs} in all)" in first
        results = pd.read_csv(out / "results.csv")
        assert tuple(results.columns) == RESULT_COLUMNS
        assert set(results["method"]) == set(names) and set(results["protocol"]) == {"tuned"}
        assert (results.groupby("method").size() == 2).all()
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
        recorded = json.loads((out / "runs" / "data" / "hgprompt" / "seed1.json").read_text())
        assert recorded["job"]["weights"] == weights["methods"]["hgprompt"]
        assert recorded["epochs"] in (1, 2) and recorded["lr_scale"] == 1 and recorded["num_test"] == 60
        assert recorded["trainable_parameters"] == 4 * EMBED_DIM + 2 * EMBED_DIM + 2
        full = json.loads((out / "runs" / "data" / "full" / "seed0.json").read_text())
        assert full["trainable_parameters"] > 300_000 and full["precision"] in ("bf16", "fp32")
        assert len(weights["scaling"]["2"]["sources"]) == 2
        runs_frame = pd.read_csv(out / "runs.csv")
        scaling = {m.name for m in registered() if m.scaling}
        assert set(runs_frame[~runs_frame["main"]]["method"]) == scaling
        report = (out / "report.md").read_text()
        assert "python launch/evaluate.py --targets" in report
        labels = [get_method(m).display_label() for m in names]
        for label in (*labels, "Where HGPrompt does not win", "Learning curve of VPT from scratch"):
            assert label in report, label
        table = pd.read_csv(out / "main_table.csv", index_col=0)
        assert list(table.index) == labels and "PARTIAL-1" in labels and "MLP-3" in labels
        assert {"Params", "Wall s/run", "data", "Average"} <= set(table.columns)
        assert table.loc["Linear probe", "Fit"] == "closed form"
        spearman = pd.read_csv(out / "spearman.csv", index_col=0)  # values: tests/transfer/test_report.py
        assert list(spearman.index) == ["data", "Average"] and "HGPrompt" in spearman.columns
        assert "## Scaling with the number of sources" in report
        ablation = pd.read_csv(out / "ablation.csv", index_col=0)
        assert list(ablation.index) == ["neither (uniform)", "H-ensemble (= H only)", "alignment only", "both (HGPrompt)"]
        for image in ("scaling.png", "tsne.png", "weights_data.png", "learning_curve.png"):
            with Image.open(out / image) as png:
                assert png.format == "PNG" and png.width > 200

        (out / "runs" / "data" / "attempt" / "seed0.json").unlink()  # a run lost (e.g. killed job)
        assert main(_argv(extraction_setup, out)) == 0
        assert f"(1 runs this time, {runs} in all)" in capsys.readouterr().out
        assert (out / "runs" / "data" / "attempt" / "seed0.json").is_file()
        assert main(["--report-only", "--output", str(out)]) == 0
        capsys.readouterr()
        assert main(_argv(extraction_setup, out, "--epochs", "3")) == 2  # another budget: refused, kept
        assert "holds an evaluation with another budget" in capsys.readouterr().err
        assert main(_argv(extraction_setup, out, "--partial-k", "2")) == 2  # a method's setting is budget too
        capsys.readouterr()
        assert len(list((out / "runs").glob("**/*.json"))) == runs
    finally:
        ray.shutdown()


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
        "scaling size": (["--scaling-sizes", "7"], "--scaling-sizes [7] must lie in [2, 3]"),
        "epochs": (["--epochs", "0"], "--epochs must be a positive integer"),
        "partial k": (["--partial-k", str(DEPTH + 1)], f"partial_k must be an integer in [1, {DEPTH}] (the backbone has {DEPTH} blocks), but got {DEPTH + 1}. Pass --partial-k {DEPTH}."),
        "adapter reduction": (["--adapter-reduction", "0"], "adapter_reduction must be an integer >= 1"),
        "distillation weight": (["--panda-distill-weight", "-1"], "panda_distill_weight must be a finite number >= 0, but got -1.0"),
        "seeds": (["--seeds", "0"], "--seeds must be a positive integer"),
        "scaling seeds": (["--scaling-seeds", "3"], "--scaling-seeds 3 exceeds --seeds 2"),
        "used output": (["--output", str(used)], "already holds other files"),
    }
    for name, (extra, message) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        assert main(_argv(extraction_setup, out, *extra)) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert not out.exists() or name == "used output"
    assert (used / "notes.txt").read_text() == "keep me"
    assert main(["--report-only", "--output", str(tmp_path / "none")]) == 2
    assert "holds no evaluation" in capsys.readouterr().err


def test_leave_one_out_uses_every_task_of_the_zoo_and_never_its_own_prompt(tmp_path):
    from hgprompt_ray.data import related_tasks
    from hgprompt_ray.transfer.plan import EvaluationSettings, plan_evaluation

    plan = plan_evaluation(EvaluationSettings(output=str(tmp_path / "loo")), {}, None, leave_one_out=True)
    library = plan.library
    tasks = sorted({r.source_task for r in library.records()})
    assert list(plan.targets) == tasks and len(tasks) == 11
    for target in tasks:
        own = {r.name for r in library.records() if r.source_task == target}
        same_images = {r.name for r in library.records() if r.source_task in related_tasks(target)}
        assert own and not (own | same_images) & set(plan.sources[target])
        assert len(plan.sources[target]) == len(library) - len(own) - len(same_images)
    assert len(plan.sources["digits-parity"]) == len(library) - 3  # digits, digits-high: the same images
    assert plan.scaling_targets == tuple(tasks[:1])
