"""The launchers' shared preamble: flags from config fields, one-line errors, layout rules."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.tuning.spec import SearchSpec
from launch._cli import UsageError, add_config_flags, cli_main, config_kwargs

ROOT = Path(__file__).resolve().parents[2]


def test_flags_come_from_the_config_fields():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, SearchSpec, required=["target"])
    args = parser.parse_args(["--target", "count", "--prompts", "zoo", "--lambda-range", "0.1", "5",
                              "--sources", "a", "b", "--include-target-prompt", "--num-samples", "7"])  # fmt: skip
    spec = SearchSpec(**config_kwargs(args, SearchSpec))
    assert (spec.library, spec.lambda_range, spec.sources, spec.num_samples) == (
        "zoo",
        (0.1, 5.0),
        ("a", "b"),
        7,
    )
    assert spec.include_target_prompt and not spec.resume
    defaults = SearchSpec(**config_kwargs(parser.parse_args(["--target", "x"]), SearchSpec))
    assert defaults == SearchSpec(target="x")  # every default written once, in the config
    flags = {a.dest: a for a in parser._actions}
    assert "command" not in flags  # "cli": False
    for field in dataclasses.fields(SearchSpec):
        if field.name != "command":
            assert flags[field.name].help == field.metadata["help"], field.name
    with pytest.raises(SystemExit):
        parser.parse_args(["--target", "x", "--scheduler", "nope"])  # choices from the metadata


def test_transfer_flags_keep_their_types():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TransferConfig, skip=["task"], defaults={"epochs": 9})
    args = parser.parse_args(["--base-lr", "0.5", "--max-test", "10", "--lr-scales", "0.5", "2"])
    assert (args.epochs, args.base_lr, args.max_test, args.data_root) == (9, 0.5, 10, None)
    assert args.lr_scales == [0.5, 2.0] and args.precision == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])


def test_cli_main_turns_user_errors_into_one_line_and_exit_2(capsys):
    def bad(argv):
        raise InvalidValueError("--x must be positive, but got -1. Fix: pass 1.")

    def usage(argv):
        raise UsageError("no targets")

    assert cli_main(bad)([]) == 2 and cli_main(usage)([]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --x must be positive, but got -1. Fix: pass 1.", "error: no targets"]
    assert cli_main(lambda argv: 0)([]) == 0


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def test_launchers_import_no_launcher_and_touch_no_sys_path():
    launchers = sorted(p for p in (ROOT / "launch").glob("*.py") if not p.name.startswith("_"))
    assert {p.stem for p in launchers} >= {"search", "evaluate", "extract", "zero_shot", "train_sources"}
    for path in launchers:
        others = [
            m for m in _imports(path) if m.startswith("launch.") and not m.split(".")[1].startswith("_")
        ]
        assert not others, (path.name, others)
    for path in [*launchers, *(ROOT / "bench").glob("*.py")]:
        text = path.read_text()
        assert "sys.path.insert" not in text and "noqa: E402" not in text, path.name


def test_no_module_over_450_lines():
    for folder in ("hgprompt_ray", "launch"):
        for path in (ROOT / folder).rglob("*.py"):
            assert len(path.read_text().splitlines()) <= 450, path.relative_to(ROOT)
