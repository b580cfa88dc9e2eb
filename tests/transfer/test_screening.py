"""The zero-shot screen of a library's targets, and its section in the evaluation report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hgprompt_ray.data import eligible_sources, related_tasks
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer import report
from hgprompt_ray.transfer.screening import write_screen, zero_shot_screen

TASKS = {"pa": "a", "pa2": "a-relabelled", "pb": "b", "pc": "c", "pd": "d"}


def _eligible(target, source_tasks):
    excluded = {target, *{"a": ("a-relabelled",), "a-relabelled": ("a",)}.get(target, ())}
    return [name for name, task in source_tasks.items() if task not in excluded]


def _matrix():
    """Target a on draws 0-2 (pd lacks draw 2), target b on draw 0 only (a stale duplicate row of pc
    at a smaller test subset, which does not count)."""
    rows = []
    accuracy = {("a", 0): {"pa": 0.99, "pa2": 0.98, "pb": 0.50, "pc": 0.70, "pd": 0.60, "(none)": 0.55},
                ("a", 1): {"pa": 0.99, "pa2": 0.98, "pb": 0.52, "pc": 0.62, "pd": 0.60, "(none)": 0.57},
                ("a", 2): {"pa": 0.99, "pa2": 0.98, "pb": 0.10, "pc": 0.90},
                ("b", 0): {"pa": 0.80, "pa2": 0.805, "pb": 0.95, "pc": 0.82, "pd": 0.81, "(none)": 0.90}}  # fmt: skip
    for (target, draw), column in accuracy.items():
        rows += [{"source": s, "target": target, "test_accuracy": v, "split_seed": draw, "num_test": 500}
                 for s, v in column.items()]  # fmt: skip
    rows.append({"source": "pc", "target": "b", "test_accuracy": 0.2, "split_seed": 0, "num_test": 100})
    return pd.DataFrame(rows)


def test_eligible_sources_leave_out_the_target_and_its_images_under_other_labels():
    registry = {"p4": "dsprites-shape", "p1": "digits", "p2": "digits-parity", "p3": "count", "p5": "digits-high"}
    assert eligible_sources("digits-high", registry) == ["p4", "p3"]  # the registry's image sets, its order
    assert "digits" in related_tasks("digits-high")
    assert eligible_sources("my-folder", registry) == list(registry)  # a user's task shares no images
    assert _eligible("a", TASKS) == ["pb", "pc", "pd"]


def test_the_screen_computes_spreads_over_complete_draws_only():
    screen = zero_shot_screen(_matrix(), TASKS, _eligible)
    a = screen.loc["a"]
    assert (a["sources"], a["draws"]) == (3, 2)  # draw 2 lacks pd: left out (its 80-point spread too)
    assert a["spread (draw 0)"] == pytest.approx(20.0)
    assert a["spread of draw means"] == pytest.approx(66.0 - 51.0)  # pc's mean 66, pb's 51
    assert a["per-draw spread"] == pytest.approx((20 + 10) / 2)
    assert np.isfinite(a["± (95%)"]) and a["± (95%)"] > 0
    assert (a["best source"], a["worst source"]) == ("pc", "pb")
    assert a["bare backbone"] == pytest.approx(56.0) and a["best - bare"] == pytest.approx(10.0)
    assert a["screen"] == "candidate: spread >= 5 points"
    b = screen.loc["b"]  # pb is b's own prompt: the spread is over pa, pa2, pc, pd (pc at 500 test images)
    assert (b["sources"], b["draws"]) == (4, 1) and b["spread (draw 0)"] == pytest.approx(2.0)
    assert np.isnan(b["± (95%)"]) and b["best - bare"] == pytest.approx(82.0 - 90.0)
    assert b["screen"] == "saturated: spread 2.0 < 5 points"
    assert list(screen.index) == ["a", "b"]  # the widest draw-0 spread first


def test_a_target_waits_for_every_eligible_source(tmp_path):
    """A source without a row on a target (a prompt added after the matrix) could only narrow its
    spread: the target is not screened until the rows are there; fewer than 2 sources: no row."""
    frame = _matrix()
    screen = zero_shot_screen(frame[~((frame["target"] == "b") & (frame["source"] == "pa2"))], TASKS, _eligible)
    assert list(screen.index) == ["a"]
    assert zero_shot_screen(frame, {"pa": "a", "pb": "b"}, _eligible).empty
    all_nan = frame.assign(test_accuracy=np.where(frame["source"] == "pd", np.nan, frame["test_accuracy"]))
    assert zero_shot_screen(all_nan, TASKS, _eligible).empty  # pd's rows hold no number: no complete draw
    assert write_screen(frame.iloc[:0], TASKS, tmp_path, _eligible).empty and not (tmp_path / "screen.csv").exists()
    written = write_screen(frame, TASKS, tmp_path, _eligible)
    assert pd.read_csv(tmp_path / "screen.csv", index_col=0).index.tolist() == written.index.tolist()
    assert "| a | 3 | 2 | 20.0 |" in (tmp_path / "screen.md").read_text()


def test_the_report_screens_every_target_of_the_librarys_matrix(tmp_path):
    """A library of five prompts whose matrix covers targets a and b; the evaluation ran a only:
    the report's screen has both, a with its init-probe verdict, b with none yet. (User task names
    share no images in the registry, so pa2 is a source of a here.)"""
    library = PromptLibrary(tmp_path / "lib", create=True)
    for name, task in TASKS.items():
        library.add(name, torch.randn(2, 8), source_task=task, backbone="vit", img_size=32)
    (library.root / "zero_shot" / "parts").mkdir(parents=True)
    matrix = _matrix()  # a's rows in the matrix, b's in the part of a matrix run still going
    matrix[matrix["target"] == "a"].to_parquet(library.root / "zero_shot" / "zero_shot.parquet")
    matrix[matrix["target"] == "b"].to_parquet(library.root / "zero_shot" / "parts" / "b.parquet")
    out = tmp_path / "eval"
    rng = np.random.default_rng(0)
    for seed in range(5):
        for method, gap in (("average", 0.0), ("hgprompt", 0.1), ("single-best", -0.1)):
            folder = out / "runs" / "a" / f"{method}~init-probe"
            folder.mkdir(parents=True, exist_ok=True)
            job = {"target_name": "a", "method": method, "protocol": "init-probe", "seed": seed, "scale": None,
                   "sources": ["pb", "pc", "pd"]}  # fmt: skip
            accuracy = 0.6 + gap + 0.01 * rng.normal()
            (folder / f"seed{seed}.json").write_text(json.dumps({
                "schema_version": 3, "job": job, "test_accuracy": accuracy, "val_accuracy": accuracy,
                "seconds": 3.0, "key": f"a/{method}/seed{seed}", "trainable_parameters": 10,
                "closed_form": True, "split_seed": seed, "split_seeded": True, "num_test": 500}))  # fmt: skip
    (out / "weights").mkdir()
    (out / "weights" / "a.json").write_text(json.dumps(
        {"target": "a", "sources": ["pb", "pc", "pd"], "methods": {"hgprompt": [0.2, 0.3, 0.5]},
         "zero_shot": {"pb": 0.5, "pc": 0.7, "pd": 0.6}, "scaling": {}}))  # fmt: skip
    state = {"command": "evaluate.py --targets a", "library": str(library.root), "backbone": "vit", "img_size": 32,
             "target_names": ["a"], "scaling_target_names": [], "scaling_seeds": 1, "seeds": 5,
             "budget": {"tuned_seeds": 3}, "machine": "test machine"}  # fmt: skip
    (out / "zero_shot").mkdir()  # the evaluation's own columns: target c, outside the matrix, and a's draw 0 again
    own = {"pa": 0.4, "pa2": 0.9, "pb": 0.5, "pc": 0.6, "pd": 0.7, "(none)": 0.45}
    pd.DataFrame([{"source": s, "target": "c", "test_accuracy": v, "split_seed": 0, "num_test": 500} for s, v in own.items()]
                 ).to_parquet(out / "zero_shot" / "c.parquet")  # fmt: skip
    pd.DataFrame([{"source": s, "target": "a", "test_accuracy": 0.3, "split_seed": 0, "num_test": 500} for s in own]
                 ).to_parquet(out / "zero_shot" / "a.parquet")  # fmt: skip
    path, _ = report.write_report(out, state)
    screen = pd.read_csv(out / "screen.csv", index_col=0)
    assert screen.loc["c", "spread (draw 0)"] == pytest.approx(50.0) and screen.loc["c", "best source"] == "pa2"
    assert screen.loc["c", "init-probe verdict"] == "no init-probe runs yet"
    assert screen.loc["a", "best"] == pytest.approx(98.0)  # the matrix's draw 0 of a, not the folder's copy
    assert "The rows of c (targets or draws the library's matrix lacks) come from" in path.read_text()
    assert screen.loc["a", "init-probe verdict"] == "informative"
    assert screen.loc["b", "init-probe verdict"] == "no init-probe runs yet"
    assert screen.loc["a", "sources"] == 4 and screen.loc["a", "best source"] == "pa2"  # the library's tasks
    assert screen.loc["b", "spread (draw 0)"] == pytest.approx(2.0)  # b's part is read
    assert "the zero-shot screen of" in path.read_text()
    manifest = (library.root / "manifest.json").read_text()
    (library.root / "manifest.json").write_text("{not json")  # an unreadable library: no section, no crash
    path, _ = report.write_report(out, state)
    assert "zero-shot screen" not in path.read_text() and not (out / "screen.csv").exists()
    (library.root / "manifest.json").write_text(manifest)
    report.write_report(out, state)
    assert (out / "screen.csv").is_file()
    library.add("pe", torch.randn(2, 8), source_task="e", backbone="vit", img_size=32)  # no rows yet
    path, _ = report.write_report(out, state)  # every target waits for pe's rows
    assert "zero-shot screen" not in path.read_text() and not (out / "screen.csv").exists()


def test_a_spread_of_exactly_the_bar_reads_the_same_in_the_screen_and_the_verdict():
    """Accuracies are counts over a test set: 0.968 - 0.918 is 5 points, but 4.999999999999993 in
    floating point (fashion-coarse's draw 0). The screen, the leave-one-out's order and the report's
    verdict share one comparison, so the same accuracies never read "candidate" in one table and
    "saturated" in another."""
    from hgprompt_ray.transfer.tables import informative_table, spread_reaches_bar

    spread = 100 * (0.968 - 0.918)
    assert spread < 5.0 and spread_reaches_bar(spread)  # the rounding this guards against
    assert not spread_reaches_bar(4.8)  # the next spread down at 500 test images is saturated
    zero_shot = {"pb": 0.968, "pc": 0.918, "pd": 0.93, "(none)": 0.95}
    matrix = pd.DataFrame([{"source": s, "target": "a", "test_accuracy": v, "split_seed": 0, "num_test": 500}
                           for s, v in zero_shot.items()])  # fmt: skip
    screen = zero_shot_screen(matrix, TASKS, _eligible)
    assert screen.loc["a", "screen"] == "candidate: spread >= 5 points"
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([{"target": "a", "method": method, "protocol": "init-probe", "seed": draw, "draw": draw,
                          "main": True, "test_accuracy": 0.9 + 0.01 * rng.normal()}
                         for method in ("average", "hgprompt", "single-best") for draw in range(5)])  # fmt: skip
    verdict = informative_table(runs, "init-probe", zero_shot_spread={"a": spread}).loc["a", "verdict"]
    assert verdict.startswith("weightings within seed noise")  # judged on its ANOVA, not called saturated
    below = informative_table(runs, "init-probe", zero_shot_spread={"a": 100 * (0.966 - 0.918)})
    assert below.loc["a", "verdict"] == "saturated: zero-shot spread 4.8 < 5 points"
