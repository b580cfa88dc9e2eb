"""launch/evaluate.py end to end on a tiny backbone: every method, the report, resume, bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer.evaluation import ABLATION_METHODS, METHOD_LABELS, METHODS
from launch.evaluate import main

ray = pytest.importorskip("ray")


def _argv(config, out, *extra):
    return [
        "--targets", config.target,
        "--prompts", config.library,
        "--output", str(out),
        "--seeds", "2",
        "--steps", "4",
        "--eval-points", "2",
        "--base-lr", "0.4",
        "--max-test", "60",
        "--spot-steps", "2",
        "--search-trials", "4",
        "--samples", "48",
        "--gradient-samples", "12",
        "--scaling-sizes", "2",
        "--no-dashboard",
        "--num-cpus", "2",
        "--cache-dir", config.cache_dir,
        *extra,
    ]  # fmt: skip


def test_evaluate_end_to_end_and_resume(extraction_setup, tmp_path, capsys):
    out = tmp_path / "report"
    try:
        assert main(_argv(extraction_setup, out)) == 0
        first = capsys.readouterr().out
        assert "(25 runs this time, 25 in all)" in first  # 11 methods x 2 seeds + 3 scaling runs
        results = pd.read_csv(out / "results.csv")
        main_runs = results[results["main"]]
        assert set(main_runs["method"]) == set(METHODS) | set(ABLATION_METHODS)
        assert (main_runs.groupby("method").size() == 2).all()
        assert results["test_accuracy"].between(0, 1).all()
        assert (main_runs[main_runs["method"] == "linear-probe"]["test_accuracy"] > 0.75).all()
        weights = json.loads((out / "weights" / "data.json").read_text())
        assert weights["sources"] == ["p0", "p1", "p2"]
        for method, alpha in weights["methods"].items():
            assert len(alpha) == 3 and abs(sum(alpha) - 1) < 1e-6, method
        assert sum(weights["methods"]["single-best"]) == 1 and max(weights["methods"]["single-best"]) == 1
        best = max(weights["zero_shot"], key=weights["zero_shot"].get)
        assert weights["methods"]["single-best"][weights["sources"].index(best)] == 1
        search = json.loads((out / "searches" / "data" / "best.json").read_text())
        assert weights["methods"]["hgprompt"] == [search["alpha"][s] for s in weights["sources"]]
        recorded = json.loads((out / "runs" / "data" / "hgprompt" / "seed1.json").read_text())
        assert recorded["job"]["weights"] == weights["methods"]["hgprompt"]
        assert recorded["selected_steps"] in (2, 4) and recorded["num_test"] == 60
        assert len(weights["scaling"]["2"]["sources"]) == 2
        assert set(results[~results["main"]]["method"]) == {"hgprompt", "average", "spot-best"}
        report = (out / "report.md").read_text()
        assert "python launch/evaluate.py --targets" in report
        for label in ("HGPrompt", "ATTEMPT", "SPoT-best", "Linear probe", "Where HGPrompt does not win"):
            assert label in report
        table = pd.read_csv(out / "main_table.csv", index_col=0)
        assert list(table.index) == ["data", "Average"]
        assert set(table.columns) == {METHOD_LABELS[m] for m in METHODS}
        spearman = pd.read_csv(out / "spearman.csv", index_col=0)  # values: tests/transfer/test_report.py
        assert list(spearman.index) == ["data", "Average"] and "HGPrompt" in spearman.columns
        assert "## Scaling with the number of sources" in report
        ablation = pd.read_csv(out / "ablation.csv", index_col=0)
        assert list(ablation.index) == ["neither (uniform)", "H only", "alignment only", "both (HGPrompt)"]
        for image in ("scaling.png", "tsne.png", "weights_data.png"):
            with Image.open(out / image) as png:
                assert png.format == "PNG" and png.width > 200

        (out / "runs" / "data" / "attempt" / "seed0.json").unlink()  # a run lost (e.g. killed job)
        assert main(_argv(extraction_setup, out)) == 0
        assert "(1 runs this time, 25 in all)" in capsys.readouterr().out
        assert (out / "runs" / "data" / "attempt" / "seed0.json").is_file()
        assert main(["--report-only", "--output", str(out)]) == 0
        capsys.readouterr()
        assert main(_argv(extraction_setup, out, "--steps", "5")) == 2  # another budget: refused, kept
        assert "holds an evaluation with another budget" in capsys.readouterr().err
        assert len(list((out / "runs").glob("**/*.json"))) == 25
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
        "eval points": (["--eval-points", "9"], "--eval-points 9 exceeds --steps 4"),
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
    from hgprompt_ray.transfer.plan import EvaluationSettings, plan_evaluation

    plan = plan_evaluation(EvaluationSettings(output=str(tmp_path / "loo")), {}, None, leave_one_out=True)
    library = plan.library
    tasks = sorted({r.source_task for r in library.records()})
    assert list(plan.targets) == tasks and len(tasks) == 11
    for target in tasks:
        own = {r.name for r in library.records() if r.source_task == target}
        assert own and not own & set(plan.sources[target])
        assert len(plan.sources[target]) == len(library) - len(own)
    assert plan.scaling_targets == tuple(tasks[:1])
