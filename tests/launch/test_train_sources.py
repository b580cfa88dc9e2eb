"""launch/train_sources.py end to end on a tiny backbone: library written, reruns skip, overwrite retrains."""

from __future__ import annotations

import pytest

from hgprompt_ray.prompts import PromptLibrary
from launch.train_sources import main
from tests.launch.conftest import shared_cluster
from tests.workers.conftest import EMBED_DIM

ray = pytest.importorskip("ray")


def test_trains_into_a_library_and_skips_existing(tiny_setup, tmp_path):
    shared_cluster()
    _, config = tiny_setup
    out = tmp_path / "zoo"
    argv = [
        "--tasks",
        config.task,
        "--out",
        str(out),
        "--backbone",
        config.backbone,
        "--img-size",
        "32",
        "--num-prompt-tokens",
        "2",
        "--epochs",
        "1",
        "--num-cpus",
        "2",
        "--storage",
        str(tmp_path / "runs"),
    ]
    assert main(argv) == 0
    library = PromptLibrary(out)
    assert library.names == ["data"]
    record = library.record("data")
    assert (record.num_tokens, record.embed_dim, record.img_size) == (2, EMBED_DIM, 32)
    assert record.source_accuracy is not None and record.source_accuracy > 0.7
    assert record.extra["epochs"] == 1 and "launch/train_sources.py" in record.extra["command"]
    assert 0.0 <= record.extra["val_accuracy"] <= 1.0 and record.extra["train_seconds"] > 0
    written = (out / "data.safetensors").stat().st_mtime_ns
    assert main(argv) == 0  # already in the library: nothing is retrained or rewritten
    assert (out / "data.safetensors").stat().st_mtime_ns == written
    assert PromptLibrary(out).record("data") == record
    assert main([*argv, "--overwrite", "--seed", "1"]) == 0
    assert PromptLibrary(out).record("data").sha256 != record.sha256
