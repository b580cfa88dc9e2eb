"""A resumed evaluation's weights entry: what it lacks is computed, what it has is kept."""

from __future__ import annotations

import json

from hgprompt_ray.transfer.method_weights import _cached_entry, _lacks, _merged
from hgprompt_ray.transfer.methods import get_method


def _entry(**changes):
    entry = {
        "target": "t", "split_seed": 0, "sources": ["a", "b"], "methods": {"average": [0.5, 0.5]},
        "per_seed": {"spot-weighted": {"0": [0.9, 0.1]}}, "spot_similarities": {"0": [1.0, 0.0]},
        "search": {}, "scaling": {"2": {"sources": ["a", "b"], "methods": {"average": [0.5, 0.5]}}},
    }  # fmt: skip
    return {**entry, **changes}


def test_a_per_seed_method_is_lacking_until_every_seed_is_there():
    cached = _entry()
    spot = get_method("spot-weighted")
    assert spot.per_seed and not get_method("average").per_seed
    assert not _lacks(cached, spot, [0]) and _lacks(cached, spot, [0, 1])
    assert _lacks(cached, get_method("hgprompt"), [0]) and not _lacks(cached, get_method("average"), [0])
    old = _entry(methods={"spot-weighted": [0.9, 0.1]}, per_seed={})  # written before the method was per seed
    assert _lacks(old, spot, [0])


def test_merge_keeps_what_runs_may_have_used():
    new = _entry(methods={"hgprompt": [0.2, 0.8], "spot-weighted": [0.7, 0.3]},
                 per_seed={"spot-weighted": {"0": [0.7, 0.3], "1": [0.6, 0.4]}},
                 spot_similarities={"0": [0.0, 1.0], "1": [0.5, 0.5]}, search={"lambda": 1.0},
                 scaling={"2": {"sources": ["a", "b"], "methods": {"hgprompt": [0.3, 0.7]}}})  # fmt: skip
    merged = _merged(_entry(), new)
    assert merged["methods"]["average"] == [0.5, 0.5] and merged["methods"]["hgprompt"] == [0.2, 0.8]
    assert merged["per_seed"]["spot-weighted"] == {"0": [0.9, 0.1], "1": [0.6, 0.4]}  # seed 0 as cached
    assert merged["spot_similarities"] == {"0": [1.0, 0.0], "1": [0.5, 0.5]}
    assert merged["search"] == {"lambda": 1.0}
    assert merged["scaling"]["2"]["methods"] == {"average": [0.5, 0.5], "hgprompt": [0.3, 0.7]}
    assert _entry()["scaling"]["2"]["methods"] == {"average": [0.5, 0.5]}  # the cached entry is not mutated


def test_an_entry_over_other_sources_is_recomputed(tmp_path):
    path = tmp_path / "t.json"
    assert _cached_entry(path, ["a", "b"]) is None
    path.write_text(json.dumps(_entry()))
    assert _cached_entry(path, ["a", "b"])["methods"] == {"average": [0.5, 0.5]}
    assert _cached_entry(path, ["a", "b", "c"]) is None  # a prompt added to the library since
