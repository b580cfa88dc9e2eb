"""The registry is the one list of methods: every module declares one, and evaluation, the
report and the command line read it."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import pytest

import hgprompt_ray.transfer.methods as package
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.transfer.methods import (
    ALLOWED_READS,
    PROTOCOLS,
    MethodKind,
    TransferMethod,
    get_method,
    method_names,
    register_method,
    registered,
)
from hgprompt_ray.transfer.plan import EvaluationSettings

PAPER_BASELINES = {  # the paper's 11 comparisons, VPT's transfer types and this project's extras
    "linear-probe", "full", "partial", "mlp", "bias", "adapter", "sidetune", "vpt", "average", "single-best",
    "spot-best", "spot-weighted", "h-ensemble", "attempt", "panda", "cma-es", "hgprompt", "align-only",
    "search-uniform", "search-h-only",  # the ablation's rows on the search's subset
    "search-random",  # the product's claim: better than random search
}  # fmt: skip


def test_every_member_module_registers_exactly_one_method():
    members = [m.name for m in pkgutil.iter_modules(package.__path__)
               if not m.name.startswith("_") and m.name not in ("registry", "common", "inputs")]  # fmt: skip
    declared = [importlib.import_module(f"{package.__name__}.{m}").METHOD for m in members]
    assert sorted(m.name for m in declared) == sorted(method_names())
    assert set(method_names()) == PAPER_BASELINES
    assert len(set(method_names())) == len(method_names())


def test_declarations():
    for method in registered():
        assert method.paper and method.trains_text and method.label, method.name
        assert set(method.reads) <= set(ALLOWED_READS) and "test" not in " ".join(method.reads)
        if method.kind is MethodKind.WEIGHTING:
            assert method.protocols == PROTOCOLS and method.weights is not None
        elif method.closed_form:  # the linear probe: init-probe of the bare backbone
            assert method.protocols == PROTOCOLS
        else:
            assert method.protocols == ("tuned",) and method.build is not None
    assert get_method("h-ensemble").label == "H-ensemble (= H only)"
    assert "h-only" not in method_names()  # H only is H-ensemble: one method, shown once
    assert [m.name for m in registered(table="ablation")] == ["search-uniform", "search-h-only", "align-only"]
    # the four objectives of the same search over the same sources (the search's subset), in this order
    assert [m.ablation_row for m in registered() if m.ablation_row] == [
        "neither (uniform)", "H only", "alignment only", "both (HGPrompt)"]  # fmt: skip
    assert all("search" in m.needs for m in registered() if m.ablation_row)


def test_bad_declarations_are_refused():
    base = dict(name="x", label="X", kind="tuning", paper="p", trains=(), trains_text="t", reads=())
    with pytest.raises(InvalidValueError, match="never read test"):
        TransferMethod(**{**base, "reads": ("test",)})
    with pytest.raises(InvalidValueError, match="init-probe"):  # a trained tuning method has no P0
        TransferMethod(**{**base, "build": lambda context: None, "protocols": ("init-probe", "tuned")})
    probe = TransferMethod(**{**base, "closed_form": True})  # its P0 is the bare backbone
    assert probe.protocols == ("init-probe", "tuned")
    assert TransferMethod(**{**base, "build": lambda context: None}).protocols == ("tuned",)
    with pytest.raises(InvalidValueError, match="weights"):
        TransferMethod(**{**base, "kind": "weighting"})
    with pytest.raises(InvalidValueError, match="registered twice"):
        register_method(TransferMethod(**{**base, "name": "vpt", "closed_form": True}))
    with pytest.raises(InvalidValueError, match="must be one of"):
        get_method("lora")


def test_the_command_line_and_the_settings_read_the_registry():
    from launch.evaluate import parse_args

    assert EvaluationSettings().methods == method_names()
    with pytest.raises(InvalidValueError, match="unknown"):
        EvaluationSettings(methods=("lora",))
    assert "align-only" not in EvaluationSettings(no_ablation=True).all_methods
    args = parse_args(["--targets", "count", "--methods", "full", "partial", "--partial-k", "2", "--mlp-k", "4"])
    assert args.methods == ["full", "partial"] and args.partial_k == 2 and args.mlp_k == 4
    parser_choices = None
    import launch.evaluate as evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_config_flags(parser, EvaluationSettings)
    for action in parser._actions:
        if action.dest == "methods":
            parser_choices = action.choices
    assert list(parser_choices) == list(method_names())
