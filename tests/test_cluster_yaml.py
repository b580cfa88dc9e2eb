"""cluster.yaml is a valid Ray cluster-launcher config, with token auth on and a private dashboard."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

util = pytest.importorskip("ray.autoscaler._private.util")

CONFIG = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(CONFIG.read_text())


def test_ray_validator_accepts_it(config):
    prepared = util.prepare_config(copy.deepcopy(config))  # fills the AWS defaults as `ray up` does
    util.validate_config(prepared)  # Ray's own JSON-schema and node-type checks
    assert prepared["head_node_type"] == "head"


def test_the_validator_rejects_broken_copies(config):
    import jsonschema  # installed with ray[default]

    broken = util.prepare_config(copy.deepcopy(config))
    broken["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type. must be one of"):
        util.validate_config(broken)
    misspelt = util.prepare_config(copy.deepcopy(config))
    misspelt["setup_comands"] = []
    with pytest.raises(jsonschema.ValidationError):
        util.validate_config(misspelt)


def test_head_and_gpu_workers_with_a_current_ray_image(config):
    types = config["available_node_types"]
    assert set(types) == {"head", "gpu_worker"}
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g5", "g6", "p4", "p5"))
    image = config["docker"]["image"]
    assert image.startswith("rayproject/ray:") and image.endswith("-gpu")
    major, minor = (int(x) for x in image.split(":")[1].split(".")[:2])
    assert (major, minor) >= (2, 56)


def test_token_auth_on_every_node_and_dashboard_not_public(config):
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "~/.ray/auth_token" in config["file_mounts"].values()


def test_setup_installs_this_project(config):
    assert any("pip install" in c and "/home/ray/hgprompt-ray" in c for c in config["setup_commands"])
    assert config["file_mounts"]["/home/ray/hgprompt-ray"] == "."
