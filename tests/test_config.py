"""Configs validate themselves and survive copy, deepcopy and pickle (Ray pickles them)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from hgprompt_ray.config import BackboneConfig, PromptConfig, PromptInit, help_text
from hgprompt_ray.errors import InvalidValueError

CONFIGS = [
    BackboneConfig(),
    BackboneConfig(name="vit_base_patch16_224", img_size=224),
    PromptConfig(),
    PromptConfig(num_tokens=10, init="zeros", dropout=0.1),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_round_trips(config):
    for clone in (copy.copy(config), copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert clone == config and type(clone) is type(config)


@pytest.mark.parametrize("config", CONFIGS)
def test_frozen_and_documented(config):
    first = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, first, None)
    for item in dataclasses.fields(config):
        assert help_text(type(config), item.name), f"{type(config).__name__}.{item.name} has no help"


def test_string_enum_is_normalised():
    assert PromptConfig(init="zeros").init is PromptInit.ZEROS


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (
            lambda: PromptConfig(num_tokens=0),
            r"PromptConfig.num_tokens must be a positive integer, but got 0",
        ),
        (lambda: PromptConfig(num_tokens=True), r"PromptConfig.num_tokens"),
        (
            lambda: PromptConfig(init="gaussian"),
            r"PromptConfig.init must be one of \['vpt_uniform', 'zeros'\]",
        ),
        (lambda: PromptConfig(dropout=1.0), r"PromptConfig.dropout must be in \[0, 1\)"),
        (lambda: BackboneConfig(name=""), r"BackboneConfig.name"),
        (lambda: BackboneConfig(img_size=-5), r"BackboneConfig.img_size must be a positive integer"),
    ],
)
def test_bad_values_name_field_value_and_rule(factory, match):
    with pytest.raises(InvalidValueError, match=match):
        factory()
