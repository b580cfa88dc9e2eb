"""``python -m hgprompt_ray.prompts``: manage a prompt library from the shell.

  list    LIBRARY                                  table of the library's prompts
  import  LIBRARY FILE --name N --source-task T --backbone B [--img-size S] [--accuracy A]
                                                   add a prompt from .safetensors, .npy or .pt
  import  LIBRARY --from URI [--names N ...] [--overwrite]
                                                   bring in a shared library (a folder, file://,
                                                   s3://...: any pyarrow.fs location)
  export  LIBRARY NAME OUT                         write one prompt to OUT (.safetensors, .npy or .pt)
  export  LIBRARY --to URI [--overwrite]           share the whole library at URI
  verify  LIBRARY                                  sizes, checksums, shapes, stray files (exit 1 on problems)
  migrate LIBRARY                                  rewrite an older manifest in the current schema version
  remove  LIBRARY NAME                             delete a prompt
  report  LIBRARY [--probe-json F...] [--out F]    Markdown table of the library (and a linear
                                                   probe's accuracy per source task, from
                                                   bench/bench_linear_probe.py --json; a later
                                                   file's row for a task wins)

Imported tensors may be (m, d) or (1, m, d); d must equal the backbone's width. ``.pt`` files are
read with ``torch.load(weights_only=True)`` and ``.npy`` with ``allow_pickle=False``: nothing
is unpickled. Writes are atomic; a failed import leaves the library unchanged. Bad input exits
with code 2 and a one-line error.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.prompts.library import PromptLibrary
from hgprompt_ray.prompts.manifest import SCHEMA_VERSION
from hgprompt_ray.prompts.sharing import export_library, import_library

_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")
_ONE_PROMPT_FLAGS = {
    "FILE": "file",
    "--name": "name",
    "--source-task": "source_task",
    "--backbone": "backbone",
}
"""What importing one prompt file needs: flag -> argparse attribute."""


def read_prompt_file(path: Path) -> torch.Tensor:
    """Read a prompt tensor from .safetensors (one tensor, or one named 'prompt'), .npy or .pt."""
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist. Fix: check the path.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            tensors = load_file(str(path))
            if "prompt" in tensors:
                return tensors["prompt"]
            if len(tensors) != 1:
                raise InvalidValueError(
                    f"{path} holds {sorted(tensors)}; expected one tensor or one named 'prompt'. "
                    "Fix: save only the prompt."
                )
            return next(iter(tensors.values()))
        if suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        if suffix in (".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, dict) and len(loaded) == 1:
                loaded = next(iter(loaded.values()))
            if not isinstance(loaded, torch.Tensor):
                raise InvalidValueError(
                    f"{path} holds a {type(loaded).__name__}, not a tensor. Fix: torch.save(prompt_tensor, path)."
                )
            return loaded
    except (SafetensorError, ValueError, OSError, RuntimeError, pickle.UnpicklingError) as error:
        if isinstance(error, InvalidValueError):
            raise
        raise IntegrityError(
            f"{path} could not be read as {suffix} ({error}). Fix: re-export the prompt."
        ) from error
    raise InvalidValueError(f"{path}: unsupported suffix {suffix!r}. Fix: use one of {list(_SUFFIXES)}.")


def _cmd_list(args: argparse.Namespace) -> int:
    library = PromptLibrary(args.library)
    header = (
        f"{'name':<28}{'source task':<22}{'backbone':<26}{'m':>5}{'d':>6}{'img':>6}{'accuracy':>10}  kind"
    )
    print(header)
    print("-" * len(header))
    for record in library.records():
        accuracy = "-" if record.source_accuracy is None else f"{record.source_accuracy:.3f}"
        print(
            f"{record.name:<28}{record.source_task:<22}{record.backbone:<26}{record.num_tokens:>5}"
            f"{record.embed_dim:>6}{record.img_size:>6}{accuracy:>10}  {'synthetic' if record.synthetic else 'trained'}"
        )
    synthetic = sum(record.synthetic for record in library.records())
    print(f"{len(library)} prompt(s) in {library.root}" + (f" ({synthetic} synthetic)" if synthetic else ""))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from hgprompt_ray.models.backbones import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE, backbone_embed_dim

    if args.source is not None:
        return _import_library(args)
    missing = [flag for flag, attr in _ONE_PROMPT_FLAGS.items() if getattr(args, attr) is None]
    if missing or args.names is not None or args.overwrite:
        raise InvalidValueError(
            f"import needs FILE, --name, --source-task and --backbone (missing: {', '.join(missing) or 'none'}), "
            "or --from URI for a whole library (--names and --overwrite go with --from). "
            "Fix: e.g. 'import LIB prompt.npy --name mine --source-task svhn --backbone dinov2-s-imgfocus'."
        )
    tensor = read_prompt_file(Path(args.file))
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    width = backbone_embed_dim(args.backbone)
    if tensor.dim() != 2 or tensor.shape[1] != width:
        raise InvalidValueError(
            f"{args.file} has shape {tuple(tensor.shape)}, but backbone {args.backbone!r} needs (m, {width}) or "
            f"(1, m, {width}). Fix: import prompts trained on this backbone, or name the right --backbone."
        )
    img_size = args.img_size or (OFFLINE_IMG_SIZE if args.backbone == OFFLINE_BACKBONE else 224)
    library = PromptLibrary(args.library, create=True)
    record = library.add(
        args.name,
        tensor.float(),
        source_task=args.source_task,
        backbone=args.backbone,
        img_size=img_size,
        source_accuracy=args.accuracy,
        extra={"imported_from": str(Path(args.file).resolve())},
    )
    print(f"imported {record.name} ({record.num_tokens} x {record.embed_dim}) into {library.root}")
    return 0


def _import_library(args: argparse.Namespace) -> int:
    flags = {**_ONE_PROMPT_FLAGS, "--img-size": "img_size", "--accuracy": "accuracy"}
    given = [flag for flag, attr in flags.items() if getattr(args, attr) is not None]
    if given:
        raise InvalidValueError(
            f"import --from URI brings in a whole library and takes no {', '.join(given)}. "
            "Fix: drop them, or import one prompt file without --from."
        )
    changed = import_library(args.source, args.library, names=args.names, overwrite=args.overwrite)
    print(f"imported {len(changed)} prompt(s) from {args.source} into {args.library}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    library = PromptLibrary(args.library)
    if args.to is not None:
        if args.name is not None or args.out is not None:
            raise InvalidValueError(
                "export --to URI shares the whole library and takes no NAME OUT. Fix: drop them, or "
                "export one prompt with 'export LIBRARY NAME OUT'."
            )
        records = export_library(library, args.to, overwrite=args.overwrite)
        print(f"exported {len(records)} prompt(s) from {library.root} to {args.to}")
        return 0
    if args.name is None or args.out is None or args.overwrite:
        raise InvalidValueError(
            "export needs NAME OUT (one prompt) or --to URI (the whole library; --overwrite goes with "
            "it). Fix: e.g. 'export LIB mine out.safetensors' or 'export LIB --to s3://bucket/zoo'."
        )
    tensor = library.load(args.name)
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidValueError(
            f"output {out}: unsupported suffix {suffix!r}. Fix: use one of {list(_SUFFIXES)}."
        )
    with atomic_path(out) as tmp:
        if suffix == ".safetensors":
            save_file({"prompt": tensor}, str(tmp))
        elif suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, tensor.numpy(), allow_pickle=False)
        else:
            torch.save(tensor, tmp)
    print(f"exported {args.name} to {out}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    library = PromptLibrary(args.library)
    problems = library.verify()
    for line in problems:
        print(f"problem: {line}")
    print(
        f"{len(library)} prompt(s) checked in {library.root}: {'OK' if not problems else f'{len(problems)} problem(s)'}"
    )
    return 1 if problems else 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    library = PromptLibrary(args.library)
    version = library.migrate()
    if version == SCHEMA_VERSION:
        print(f"{library.manifest_path} is already schema version {SCHEMA_VERSION}: nothing to do")
    else:
        print(f"migrated {library.manifest_path} from schema version {version} to {SCHEMA_VERSION}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    PromptLibrary(args.library).remove(args.name)
    print(f"removed {args.name} from {args.library}")
    return 0


def library_report(library: PromptLibrary, probe: dict[str, float] | None = None) -> str:
    """Markdown: one row per prompt with its accuracies, training time and settings."""
    records = library.records()
    lines = [f"# Prompt library `{library.root.name}`", ""]
    commands = sorted({str(r.extra.get("command", "")) for r in records if r.extra.get("command")})
    if commands:
        lines += ["Produced by:", "", *[f"    {c}" for c in commands], ""]
    seconds = sum(float(r.extra.get("train_seconds", 0.0)) for r in records)
    if seconds:
        lines += [f"Training time: {seconds / 60:.1f} min in all ({len(records)} prompts).", ""]
    header = "| prompt | source task | backbone | m | img | val200 | test | linear probe (test) | epochs | seconds |"
    lines += [header, "|" + "---|" * 10]
    for r in records:
        val = r.extra.get("val_accuracy")
        test = "-" if r.source_accuracy is None else f"{r.source_accuracy:.3f}"
        probe_value = None if probe is None else probe.get(r.source_task)
        lines.append(
            f"| {r.name} | {r.source_task} | {r.backbone} | {r.num_tokens} | {r.img_size} | "
            f"{'-' if val is None else f'{float(val):.3f}'} | {test} | "
            f"{'-' if probe_value is None else f'{probe_value:.3f}'} | {r.extra.get('epochs', '-')} | "
            f"{r.extra.get('train_seconds', '-')} |"
        )
    return "\n".join(lines) + "\n"


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    library = PromptLibrary(args.library)
    probe: dict[str, float] | None = None
    if args.probe_json:
        probe = {}
        for path in args.probe_json:  # several runs of the bench (e.g. one per batch of new tasks)
            rows = json.loads(Path(path).read_text(encoding="utf-8"))
            probe.update({row["task"]: float(row["backbone"]) for row in rows})
    text = library_report(library, probe)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hgprompt_ray.prompts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="table of the prompts")
    listing.add_argument("library")
    importing = commands.add_parser("import", help="add a prompt file, or a shared library (--from)")
    importing.add_argument("library")
    importing.add_argument("file", nargs="?", default=None, help="a prompt file (without --from)")
    importing.add_argument("--name", default=None)
    importing.add_argument("--source-task", default=None)
    importing.add_argument("--backbone", default=None)
    importing.add_argument("--img-size", type=int, default=None)
    importing.add_argument("--accuracy", type=float, default=None, help="source accuracy in [0, 1]")
    importing.add_argument("--from", dest="source", default=None, metavar="URI", help="a shared library")
    importing.add_argument("--names", nargs="+", default=None, help="with --from: only these prompts")
    importing.add_argument("--overwrite", action="store_true", help="with --from: replace same-named prompts")
    exporting = commands.add_parser("export", help="write one prompt to a file, or the library to --to")
    exporting.add_argument("library")
    exporting.add_argument("name", nargs="?", default=None)
    exporting.add_argument("out", nargs="?", default=None)
    exporting.add_argument("--to", default=None, metavar="URI", help="share the whole library there")
    exporting.add_argument("--overwrite", action="store_true", help="with --to: replace a library there")
    verifying = commands.add_parser("verify", help="check sizes, checksums and shapes")
    verifying.add_argument("library")
    migrating = commands.add_parser("migrate", help="rewrite the manifest in the current schema version")
    migrating.add_argument("library")
    removing = commands.add_parser("remove", help="delete a prompt")
    removing.add_argument("library")
    removing.add_argument("name")
    reporting = commands.add_parser("report", help="Markdown table of the library")
    reporting.add_argument("library")
    reporting.add_argument(
        "--probe-json", nargs="+", default=None, help="bench/bench_linear_probe.py --json output(s)"
    )
    reporting.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    handlers = {
        "list": _cmd_list,
        "import": _cmd_import,
        "export": _cmd_export,
        "verify": _cmd_verify,
        "migrate": _cmd_migrate,
        "remove": _cmd_remove,
        "report": _cmd_report,
    }
    try:
        return handlers[args.command](args)
    except (InvalidValueError, IntegrityError, OSError, KeyError, TypeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
