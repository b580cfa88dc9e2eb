"""Prompt training on a real local Ray cluster: learns, resumes after a real SIGKILL, clear errors."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace

import pytest
import torch

from hgprompt_ray.config import PromptTrainingConfig
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.workers.train_prompt import warmup_cosine
from tests.workers.conftest import EMBED_DIM

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def undisturbed(ray_cluster, tiny_setup, tmp_path_factory):
    """One undisturbed run (4 epochs): the learning check and the kill test's reference."""
    from hgprompt_ray.workers.train_prompt import train_prompt

    _, config = tiny_setup
    return train_prompt(config, storage_path=tmp_path_factory.mktemp("runs"), name="undisturbed")


def test_prompt_learns_well_above_chance(undisturbed, tiny_setup):
    _, config = tiny_setup
    assert undisturbed.metrics["epoch"] == config.epochs - 1 and undisturbed.metrics["resumed_from_epoch"] == -1
    assert undisturbed.metrics["test_accuracy"] > 0.85  # chance is 0.5
    assert undisturbed.prompt.shape == (4, EMBED_DIM) and torch.isfinite(undisturbed.prompt).all()
    initial_bound = (6 / (3 * 16 * 16 + EMBED_DIM)) ** 0.5
    assert undisturbed.prompt.abs().max() > initial_bound  # the prompt itself moved away from its init range


def test_killed_worker_resumes_from_checkpoint_and_matches_undisturbed_run(undisturbed, tiny_setup, tmp_path):
    from hgprompt_ray.workers.train_prompt import train_prompt

    _, config = tiny_setup
    reference = undisturbed
    heartbeat = tmp_path / "heartbeat"
    killed = {}

    def kill_after_second_epoch() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            beat = heartbeat / "0.json"
            if beat.is_file():
                info = json.loads(beat.read_text())
                # Ray Train V2 registers a checkpoint when the controller next polls the worker, so a
                # kill right after the first report can beat it; after epoch 1, epoch 0's is registered.
                if info["epoch"] >= 1:
                    os.kill(info["pid"], signal.SIGKILL)  # a real kill of the Ray Train worker process
                    killed.update(info)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_after_second_epoch, daemon=True)
    watcher.start()
    resumed = train_prompt(
        replace(config, heartbeat_dir=str(heartbeat)), storage_path=tmp_path, name="killed", max_failures=2
    )
    watcher.join(timeout=5)
    assert killed, "the worker was never killed"
    assert resumed.metrics["epoch"] == config.epochs - 1
    assert resumed.metrics["resumed_from_epoch"] >= 1
    torch.testing.assert_close(resumed.prompt, reference.prompt, rtol=1e-5, atol=1e-6)
    assert resumed.metrics["test_accuracy"] == pytest.approx(reference.metrics["test_accuracy"], abs=0.01)


def test_the_standardised_head_trains_with_the_prompt(ray_cluster, tiny_setup, tmp_path):
    """The transfer protocol's head (BatchNorm with running statistics, zero linear) for sources."""
    from hgprompt_ray.workers.train_prompt import train_prompt

    _, config = tiny_setup
    trained = train_prompt(replace(config, head="standardised"), storage_path=tmp_path, name="standardised")
    assert set(trained.head) == {"0.running_mean", "0.running_var", "0.num_batches_tracked", "1.weight", "1.bias"}
    assert int(trained.head["0.num_batches_tracked"]) > 0 and trained.head["1.weight"].abs().sum() > 0
    assert trained.metrics["test_accuracy"] > 0.85  # chance is 0.5


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_prompt_tokens": 0}, r"num_prompt_tokens must be a positive integer, but got 0"),
        ({"epochs": 0}, r"epochs must be a positive integer"),
        ({"optimizer": "lamb"}, r"optimizer must be 'adamw' or 'sgd'"),
        ({"base_lr": -1.0}, r"base_lr must be positive"),
        ({"warmup_epochs": 9.0, "epochs": 2}, r"warmup_epochs must not exceed epochs=2"),
        ({"task": ""}, r"task must be a task name or path"),
        ({"head": "mlp"}, r"head must be one of \['linear', 'standardised'\], but got 'mlp'"),
    ],
)
def test_bad_configs(overrides, match):
    with pytest.raises(InvalidValueError, match=match):
        PromptTrainingConfig(**{"task": "digits", **overrides})


def test_unknown_task_and_backbone_mismatch_fail_before_training(tmp_path, capsys):
    from launch.train_sources import main

    assert main(["--tasks", "no-such-task", "--out", str(tmp_path / "lib")]) == 2
    assert "registered task" in capsys.readouterr().err
    assert not (tmp_path / "lib").exists() or not any((tmp_path / "lib").glob("*.safetensors"))


def test_warmup_cosine_schedule():
    values = [warmup_cosine(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] < 0.01
    assert all(b <= a + 1e-12 for a, b in zip(values[10:], values[11:]))
