"""The zero-shot matrix on a tiny real backbone, two folder targets and a two-prompt library."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hgprompt_ray.data.offline import FASHION_MNIST_ENV
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer import linear_probe
from hgprompt_ray.transfer.splits import load_transfer_splits
from launch.zero_shot import main


def _folder(root, colours, per_class=40, seed=0):
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(colours):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 60, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def tiny_library(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    backbone = f"vit_tiny_patch16_224={weights}"
    a = _folder(tmp_path / "redblue", [(180, 60, 60), (60, 60, 180)])
    b = _folder(tmp_path / "darklight", [(60, 60, 60), (190, 190, 190)], seed=1)
    library = PromptLibrary(tmp_path / "lib", create=True)
    for name, source in (("p-redblue", str(a)), ("p-darklight", str(b))):
        library.add(name, torch.randn(3, 192) * 0.1, source_task=source, backbone=backbone, img_size=32)
    return tmp_path, library


def test_matrix_files_and_values(tiny_library):
    root, library = tiny_library
    out = root / "zs"
    assert main(["--prompts", str(library.root), "--out", str(out), "--max-test", "20"]) == 0
    frame = pd.read_parquet(out / "zero_shot.parquet")
    assert set(frame["source"]) == {"p-redblue", "p-darklight", "(none)"}
    assert set(frame["target"]) == {"redblue", "darklight"}
    assert len(frame) == 6 and frame["test_accuracy"].between(0, 1).all()
    assert (frame["test_accuracy"] > 0.8).all()  # colour tasks are easy for any feature
    assert (out / "zero_shot.png").stat().st_size > 1000 and (out / "zero_shot.csv").is_file()
    before = (out / "parts" / "redblue.parquet").stat().st_mtime_ns
    assert main(["--prompts", str(library.root), "--out", str(out), "--max-test", "20"]) == 0  # resumes
    assert (out / "parts" / "redblue.parquet").stat().st_mtime_ns == before


def test_bad_libraries_exit_2(tmp_path, capsys):
    assert main(["--prompts", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    PromptLibrary(tmp_path / "empty", create=True)
    assert main(["--prompts", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_linear_probe_picks_c_on_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(int)
    result = linear_probe((x[:200], y[:200]), (x[200:250], y[200:250]), (x[250:], y[250:]))
    assert result.test_accuracy > 0.9 and result.c in (0.01, 0.1, 1.0, 10.0)


def test_distinct_images_of_overlapping_draws():
    from hgprompt_ray.data.base import ArraySplit, pool_split_indices
    from hgprompt_ray.transfer.zero_shot import distinct_images

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(1300, 8, 8, 3), dtype=np.uint8)
    images[1] = images[0]  # the same pixels twice in the pool: one distinct image
    labels = rng.integers(0, 3, size=1300)
    draws = [{name: ArraySplit(images[pool_split_indices(1300, name, seed)], labels[pool_split_indices(1300, name, seed)])
              for name in ("train800", "val200", "test")} for seed in (0, 1, 2)]  # fmt: skip
    picks, positions = distinct_images(draws)
    assert len(picks) == 1299  # three draws of 1,300 images each cover the pool, less the duplicate
    for draw, where in zip(draws, positions):
        for name, split in draw.items():
            assert len(where[name]) == len(split)
            for i in (0, len(split) // 2, len(split) - 1):
                base, index = picks[where[name][i]]
                assert np.array_equal(np.asarray(base.image(index)), np.asarray(split.image(i)))


def test_several_draws_in_one_pass_equal_one_draw_at_a_time(tiny_library):
    from hgprompt_ray.models import PromptedViT, load_backbone
    from hgprompt_ray.transfer.zero_shot import zero_shot_draws, zero_shot_target

    root, library = tiny_library
    record = library.records()[0]
    backbone = load_backbone(record.backbone, record.img_size)
    prompts = library.load_many(library.names, backbone=record.backbone, embed_dim=backbone.embed_dim)
    model = PromptedViT(backbone, num_prompt_tokens=prompts.shape[1]).eval()
    target = str(root / "redblue")
    together = pd.DataFrame(zero_shot_draws(model, prompts, library.names, target, img_size=32, split_seeds=(0, 1),
                                            max_test=20, progress=False))  # fmt: skip
    assert set(together["split_seed"]) == {0, 1} and len(together) == 2 * 3 and (together["precision"] == "fp32").all()
    for seed in (0, 1):  # against the definition: each split of the draw extracted on its own
        _, splits, labels = load_transfer_splits(target, img_size=32, mean=backbone.pretrained_cfg["mean"],
                                                 std=backbone.pretrained_cfg["std"], split_seed=seed, max_test=20,
                                                 splits=("train800", "val200", "test"))  # fmt: skip
        features = {n: extract_cls_features(model, d, prompts=prompts) for n, d in splits.items()}
        same = together[together["split_seed"] == seed].set_index("source")
        for index, name in enumerate(library.names):
            alone = linear_probe(*[(features[n][index], labels[n]) for n in ("train800", "val200", "test")])
            for column, value in (("val_accuracy", alone.val_accuracy), ("test_accuracy", alone.test_accuracy)):
                assert abs(same.loc[name, column] - value) <= 1 / 20 + 1e-9  # batches differ: one image may flip
    one = pd.DataFrame(zero_shot_target(model, prompts, library.names, target, img_size=32, split_seed=1,
                                        max_test=20, progress=False))  # fmt: skip
    assert (one["split_seed"] == 1).all() and len(one) == 3


def test_more_split_seeds_extend_the_parts(tiny_library):
    root, library = tiny_library
    out = root / "zs"
    base = ["--prompts", str(library.root), "--out", str(out), "--max-test", "20", "--precision", "fp32"]
    assert main(base) == 0
    first = pd.read_parquet(out / "parts" / "redblue.parquet")
    assert main([*base, "--split-seeds", "0", "1"]) == 0
    both = pd.read_parquet(out / "parts" / "redblue.parquet")
    assert sorted(both["split_seed"].unique()) == [0, 1] and len(both) == 2 * len(first)
    pd.testing.assert_frame_equal(both[both["split_seed"] == 0].reset_index(drop=True), first)  # kept, not redone
    assert set(pd.read_parquet(out / "zero_shot.parquet")["split_seed"]) == {0, 1}


def test_parts_from_before_the_split_column_count_as_draw_0(tiny_library):
    root, library = tiny_library
    out = root / "zs"
    base = ["--prompts", str(library.root), "--out", str(out), "--max-test", "20", "--precision", "fp32"]
    assert main(base) == 0
    for part in (out / "parts").glob("*.parquet"):  # as an older version wrote them
        pd.read_parquet(part).drop(columns=["split_seed", "precision"]).to_parquet(part, index=False)
    for _ in range(2):  # extended once, then found complete
        assert main([*base, "--split-seeds", "0", "1"]) == 0
        frame = pd.read_parquet(out / "zero_shot.parquet")
        assert frame.groupby(["target", "split_seed"]).size().to_dict() == {
            (t, s): 3 for t in ("redblue", "darklight") for s in (0, 1)}
        assert frame["split_seed"].dtype.kind == "i"


def _marked_run(root, library, marks):
    """One target's matrix, then each source's accuracy in ``marks`` overwritten in its part file,
    so that a recomputation would show. Returns the rerun's argv and the part file."""
    base = ["--prompts", str(library.root), "--out", str(root / "zs"), "--max-test", "20", "--precision", "fp32",
            "--targets", str(root / "redblue")]  # fmt: skip
    assert main(base) == 0
    part = root / "zs" / "parts" / "redblue.parquet"
    frame = pd.read_parquet(part)
    for source, value in marks.items():
        frame.loc[frame["source"] == source, "test_accuracy"] = value
    frame.to_parquet(part, index=False)
    return base, part


def test_a_grown_library_computes_only_the_new_prompts_rows(tiny_library):
    root, library = tiny_library
    base, part = _marked_run(root, library, {"p-redblue": 0.123})
    library.add("p-new", torch.randn(3, 192) * 0.1, source_task=str(root / "redblue"),
                backbone=library.record("p-redblue").backbone, img_size=32)  # fmt: skip
    assert main(base) == 0
    frame = pd.read_parquet(part)
    assert sorted(frame["source"]) == ["(none)", "p-darklight", "p-new", "p-redblue"]
    assert frame.set_index("source").loc["p-redblue", "test_accuracy"] == 0.123  # kept, not redone
    assert frame.set_index("source").loc["p-new", "sha256"] == library.record("p-new").sha256
    assert set(pd.read_parquet(root / "zs" / "zero_shot.parquet")["source"]) == set(frame["source"])


def test_a_prompt_retrained_under_its_name_is_computed_again(tiny_library):
    root, library = tiny_library
    base, part = _marked_run(root, library, {"p-redblue": 0.123, "p-darklight": 0.456})
    record = library.record("p-redblue")
    library.add("p-redblue", torch.randn(3, 192), source_task=record.source_task, backbone=record.backbone,
                img_size=32, overwrite=True)  # fmt: skip
    assert main(base) == 0
    frame = pd.read_parquet(part).set_index("source")
    assert len(frame) == 3 and frame.index.is_unique
    assert frame.loc["p-redblue", "test_accuracy"] != 0.123  # its old row was stale
    assert frame.loc["p-redblue", "sha256"] == library.record("p-redblue").sha256 != record.sha256
    assert frame.loc["p-darklight", "test_accuracy"] == 0.456  # unchanged prompt: kept


def test_matrix_files_are_the_matrix_then_its_parts_that_exist(tmp_path):
    from hgprompt_ray.transfer.zero_shot import matrix_files

    matrix = tmp_path / "zero_shot" / "zero_shot.parquet"
    assert matrix_files(matrix) == []  # no folder at all: nothing, no error
    (matrix.parent / "parts").mkdir(parents=True)
    for name in ("count.parquet", "blur.parquet", "notes.txt"):
        (matrix.parent / "parts" / name).write_bytes(b"")
    parts = [matrix.parent / "parts" / n for n in ("blur.parquet", "count.parquet")]
    assert matrix_files(matrix) == parts  # a run still going: its parts, sorted, parquet only
    matrix.write_bytes(b"")
    assert matrix_files(matrix) == [matrix, *parts]  # the finished matrix first


def test_stale_rows_reads_the_checksums_and_keeps_rows_from_before_them():
    from hgprompt_ray.transfer.zero_shot import NO_PROMPT, stale_rows

    checksums = {"a": "1", "b": "2"}
    assert stale_rows(pd.DataFrame(), checksums, [0, 1]) == (["a", "b"], [0, 1])
    rows = pd.DataFrame({"source": ["a", "b", NO_PROMPT, "a", NO_PROMPT], "split_seed": [0, 0, 0, 1, 1],
                         "sha256": ["1", "old", "", "1", ""]})  # fmt: skip
    assert stale_rows(rows, checksums, [0, 1]) == (["b"], [0, 1])  # b: retrained on 0, missing on 1
    assert stale_rows(rows, {"a": "1"}, [0, 1]) == ([], [])
    legacy = rows.drop(columns="sha256")  # no checksums recorded: what is there is kept
    assert stale_rows(legacy, checksums, [0]) == ([], [])
    assert stale_rows(legacy[legacy["source"] != NO_PROMPT], checksums, [0]) == (["a", "b"], [0])


def test_a_source_whose_data_is_not_here_is_a_row_but_no_column(tiny_library, monkeypatch, capsys):
    """A library trained elsewhere (here: a Fashion-MNIST prompt without the Debian package) still
    has a matrix: the prompt is scored on the readable targets, and only a named target fails."""
    root, library = tiny_library
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root / "absent"))
    record = library.records()[0]
    library.add("p-fashion", torch.randn(3, 192) * 0.1, source_task="fashion-mnist", backbone=record.backbone,
                img_size=32)  # fmt: skip
    out = root / "zs"
    assert main(["--prompts", str(library.root), "--out", str(out), "--max-test", "20"]) == 0
    frame = pd.read_parquet(out / "zero_shot.parquet")
    assert set(frame["target"]) == {"redblue", "darklight"} and "p-fashion" in set(frame["source"])
    assert not (out / "parts" / "fashion-mnist.parquet").exists()
    capsys.readouterr()
    assert main(["--prompts", str(library.root), "--out", str(out), "--targets", "fashion-mnist"]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    alone = PromptLibrary(root / "fashion-only", create=True)  # nothing readable: a clear refusal
    alone.add("p-fashion", torch.randn(3, 192) * 0.1, source_task="fashion-mnist", backbone=record.backbone, img_size=32)
    assert main(["--prompts", str(alone.root), "--out", str(root / "zs2")]) == 2
    assert "can be read here" in capsys.readouterr().err


def test_linear_probe_fits_with_one_blas_thread_and_restores_the_setting(monkeypatch):
    """The probe's fits are small: a threaded BLAS spends more time on its threads than on them
    (bench/bench_probe_threads.py), so they run with one, and the caller's setting comes back."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info, threadpool_limits

    module = importlib.import_module("hgprompt_ray.transfer.linear_probe")  # the package exports the function
    seen = []
    real_fit = LogisticRegression.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(max((pool["num_threads"] for pool in threadpool_info()), default=1))
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(module.LogisticRegression, "fit", recording_fit)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 8)), rng.integers(0, 2, 120)
    x[:, 0] += 2 * y
    with threadpool_limits(limits=2):
        result = module.linear_probe((x[:80], y[:80]), (x[80:100], y[80:100]), (x[100:], y[100:]))
        after = [pool["num_threads"] for pool in threadpool_info()]
    assert seen == [1] * len(module.PROBE_GRID) and result.test_accuracy > 0.6
    assert after and all(n == 2 for n in after)  # numpy's and scipy's BLAS are loaded here


def test_read_matrix_takes_the_newest_current_rows_fills_its_gaps_from_own_columns_and_orders_the_leave_one_out(tmp_path):
    from types import SimpleNamespace

    from hgprompt_ray.transfer.plan import _widest_spread_first
    from hgprompt_ray.transfer.zero_shot import NO_PROMPT, evaluation_columns, read_matrix

    matrix = tmp_path / "zero_shot" / "zero_shot.parquet"
    records = [SimpleNamespace(name=f"p-{t}", source_task=t, sha256=t) for t in ("a", "b", "c")]  # d: no prompt
    checksums = {r.name: r.sha256 for r in records}
    assert read_matrix(matrix, checksums).empty
    (matrix.parent / "parts").mkdir(parents=True)
    rows = [("p-b", "a", 0.50, "b"), ("p-c", "a", 0.60, "c"), ("p-a", "b", 0.50, "a"), ("p-c", "b", 0.58, "c"),
            ("p-a", "b", 0.99, "retrained"), (NO_PROMPT, "a", 0.4, None),
            ("p-a", "d", 0.70, "a"), ("p-b", "d", 0.72, "b"), ("p-c", "d", 0.71, "c")]  # fmt: skip
    pd.DataFrame(rows, columns=["source", "target", "test_accuracy", "sha256"]).to_parquet(matrix)  # no split_seed
    pd.DataFrame([("p-c", "b", 0.45, "c", 0)], columns=["source", "target", "test_accuracy", "sha256", "split_seed"]
                 ).to_parquet(matrix.parent / "parts" / "b.parquet")  # fmt: skip
    frame = read_matrix(matrix, checksums)
    assert (frame["split_seed"] == 0).all() and len(frame) == 8  # the stale "retrained" row is gone
    assert frame.set_index(["source", "target"]).loc[("p-c", "b"), "test_accuracy"] == 0.45  # the part is newer
    # an evaluation's own columns fill only the (target, draw) pairs the matrix lacks
    own = [tmp_path / "out" / "zero_shot" / f"{n}.parquet" for n in ("b", "b~split1")]
    own[0].parent.mkdir(parents=True)
    pd.DataFrame([("p-a", "b", 0.10, "a", 0), ("p-a", "e", 0.30, "a", 0)],
                 columns=["source", "target", "test_accuracy", "sha256", "split_seed"]).to_parquet(own[0])  # fmt: skip
    pd.DataFrame([("p-a", "b", 0.20, "a", 1), ("p-b", "b", 0.25, "stale", 1)],
                 columns=["source", "target", "test_accuracy", "sha256", "split_seed"]).to_parquet(own[1])  # fmt: skip
    assert evaluation_columns(tmp_path / "out") == own
    both = read_matrix(matrix, checksums, extra=[*own, tmp_path / "out" / "gone.parquet"])
    added = both[both["file"].isin([str(f) for f in own])]
    assert sorted(zip(added["target"], added["split_seed"], added["test_accuracy"])) == [("b", 1, 0.20), ("e", 0, 0.30)]
    assert both.drop(added.index).drop(columns="file").equals(frame.drop(columns="file"))  # the matrix's rows win
    tasks = {t: SimpleNamespace(info=SimpleNamespace(name=t)) for t in ("a", "b", "c", "d")}
    # b spreads 5 points (0.50 vs 0.45), a 10; the stale 0.99 would have put b first; c has no
    # column: it may still be informative, so it goes before d, saturated at 2 points
    assert _widest_spread_first(["d", "c", "b", "a"], tasks, records, matrix) == ["a", "b", "c", "d"]
    assert _widest_spread_first(["b", "a"], tasks, records, tmp_path / "none.parquet") == ["b", "a"]
