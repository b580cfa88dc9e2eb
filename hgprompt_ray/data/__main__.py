"""``python -m hgprompt_ray.data list | preview TASK --out grid.png``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.data.base import TaskUnavailableError
from hgprompt_ray.data.registry import get_task, list_tasks, resolve_target
from hgprompt_ray.errors import InvalidValueError


def _list(args: argparse.Namespace) -> int:
    header = f"{'task':<22} {'suite':<8} {'classes':>7} {'native':>9} {'train800':>8} {'val200':>6} {'test':>7}  available"
    print(header)
    print("-" * len(header))
    for name in list_tasks(args.suite):
        task = get_task(name, data_root=args.data_root)
        info = task.info
        native = f"{info.native_size[0]}x{info.native_size[1]}"
        available, reason = task.availability()
        sizes = ["-", "-", "-"]
        if available:
            sizes = [str(len(task.split(split))) for split in ("train800", "val200", "test")]
        status = "yes" if available else f"no: {reason}"
        print(
            f"{name:<22} {info.suite:<8} {info.num_classes:>7} {native:>9} {sizes[0]:>8} {sizes[1]:>6} {sizes[2]:>7}  {status}"
        )
    return 0


def _preview(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = resolve_target(args.task, data_root=args.data_root)
    split = task.split(args.split, seed=args.seed)
    count = min(args.rows * args.cols, len(split))
    chosen = np.random.default_rng(args.seed).choice(len(split), size=count, replace=False)
    figure, axes = plt.subplots(args.rows, args.cols, figsize=(1.6 * args.cols, 1.8 * args.rows))
    for axis in np.ravel(axes):
        axis.axis("off")
    for axis, index in zip(np.ravel(axes), chosen):
        axis.imshow(split.image(int(index)))
        axis.set_title(task.info.class_names[split.labels[index]], fontsize=7)
    figure.suptitle(f"{task.name} ({args.split}, seed {args.seed}): {task.info.description}", fontsize=9)
    figure.tight_layout()
    out = Path(args.out)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hgprompt_ray.data", description=__doc__)
    parser.add_argument(
        "--data-root", default=None, help="VTAB data folder (default $HGPROMPT_DATA or ~/data/vtab)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="each task's classes, sizes and availability")
    listing.add_argument("--suite", choices=["offline", "vtab"], default=None)
    preview = commands.add_parser("preview", help="write an image grid of a task")
    preview.add_argument("task", help="a task name, an ImageFolder directory, or a path,label CSV")
    preview.add_argument("--out", required=True)
    preview.add_argument("--split", default="train800")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--rows", type=int, default=4)
    preview.add_argument("--cols", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        return _list(args) if args.command == "list" else _preview(args)
    except (InvalidValueError, TaskUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
