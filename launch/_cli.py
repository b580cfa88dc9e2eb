"""The launchers' shared preamble: error handling, logging, and flags made from config fields.

Every launcher is ``main = cli_main(run)`` over a ``run(argv) -> int``: bad input (a
:class:`UsageError`, a config's ``InvalidValueError``, a damaged file, an unavailable dataset)
is printed as one ``error: ...`` line on stderr with exit code 2, and nothing is written.
:func:`add_config_flags` turns a frozen config dataclass's fields into argparse flags from their
``metadata`` (``help``, and ``flag``/``nargs``/``choices``/``metavar`` where needed), so a
setting's name, default and help are written once, in the config. :func:`configure_logging`
sends the search's progress lines to the console and everything else to a log file.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from hgprompt_ray.data import TaskUnavailableError
from hgprompt_ray.errors import IntegrityError, InvalidValueError

__all__ = [
    "USER_ERRORS",
    "UsageError",
    "add_config_flags",
    "cli_main",
    "command_line",
    "config_kwargs",
    "configure_logging",
]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stdout`` is when a record is emitted (a test's
    captured stream is replaced between tests; a handler holding the old one would fail)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


USER_ERRORS = (UsageError, InvalidValueError, IntegrityError, TaskUnavailableError, FileNotFoundError)


def cli_main(run: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a launcher's ``run``: user errors become one stderr line and exit code 2."""

    @functools.wraps(run)
    def main(argv: list[str] | None = None) -> int:
        try:
            return run(argv)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return main


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python launch/<script> ARGS`` as typed (recorded next to results)."""
    args = sys.argv[1:] if argv is None else argv
    return f"python launch/{script} " + " ".join(shlex.quote(a) for a in args)


def _flag(item: dataclasses.Field) -> str:
    return str(item.metadata.get("flag", "--" + item.name.replace("_", "-")))


def add_config_flags(
    parser: argparse.ArgumentParser | Any,
    config: type,
    *,
    skip: Iterable[str] = (),
    required: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of the dataclass ``config`` (help text from its metadata).

    Args:
        parser: an ``ArgumentParser`` or argument group.
        config: the config dataclass.
        skip: fields that get no flag.
        required: fields whose flag is required.
        defaults: launcher defaults that differ from the config's.
    """
    skip, required, defaults = set(skip), set(required), dict(defaults or {})
    for item in dataclasses.fields(config):
        if item.name in skip or item.metadata.get("cli") is False:
            continue
        kind = str(item.type).replace(" ", "")
        base = kind.removesuffix("|None")
        options: dict[str, Any] = {"dest": item.name, "help": item.metadata.get("help", "")}
        if item.name in required:
            options["required"] = True
        elif item.name in defaults:
            options["default"] = defaults[item.name]
        elif item.default is not dataclasses.MISSING:
            options["default"] = list(item.default) if isinstance(item.default, tuple) else item.default
        if base in ("bool", "<class'bool'>"):
            options["action"] = argparse.BooleanOptionalAction if item.default is True else "store_true"
        else:
            if base.startswith("tuple") and "nargs" not in item.metadata:
                raise TypeError(f"{config.__name__}.{item.name} is a tuple: give it metadata['nargs']")
            element = base.removeprefix("tuple[").split(",")[0].rstrip("]")
            if element in ("float", "<class'float'>"):
                options["type"] = float
            elif element in ("int", "<class'int'>"):
                options["type"] = int
            for key in ("nargs", "choices", "metavar"):
                if key in item.metadata:
                    options[key] = item.metadata[key]
        parser.add_argument(_flag(item), **options)


def config_kwargs(args: argparse.Namespace, config: type, **overrides: Any) -> dict[str, Any]:
    """The fields of ``config`` found in ``args`` (lists become tuples), plus ``overrides``."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if hasattr(args, item.name):
            value = getattr(args, item.name)
            values[item.name] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return values


def configure_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    """Progress lines (and warnings) to the console; everything at INFO to ``log_file``. (The progress
    logger's module imports Ray, so it is imported here: ``launch/run_jobs.py`` runs without Ray.)

    Args:
        log_file: the run folder's log (None: none yet, e.g. before the output folder is checked).
        verbose: also print every INFO line to the console.
    """
    import optuna

    from hgprompt_ray.tuning.progress import PROGRESS_LOGGER

    optuna.logging.disable_default_handler()  # Optuna's lines go through the root logger too
    optuna.logging.enable_propagation()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_hgprompt", False):
            root.removeHandler(handler)
    root.setLevel(logging.INFO)
    console = _Console()
    console.setFormatter(logging.Formatter("%(message)s"))
    if not verbose:
        console.addFilter(lambda record: record.name == PROGRESS_LOGGER or record.levelno >= logging.WARNING)
    console._hgprompt = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setFormatter(logging.Formatter(_FORMAT))
        to_file._hgprompt = True  # type: ignore[attr-defined]
        root.addHandler(to_file)
