"""Train one VPT prompt per source task on Ray Train and write them into a prompt library.

    python launch/train_sources.py --suite offline --out prompt_zoo/offline
    python launch/train_sources.py --tasks digits count textures --out my_zoo --epochs 3
    python launch/train_sources.py --tasks svhn cifar100 --backbone vit_base_patch16_224.augreg_in21k \
        --img-size 224 --num-prompt-tokens 50 --epochs 10 --num-workers 4 --data-root ~/data/vtab

Each task is one ``TorchTrainer`` run (data-parallel over ``--num-workers``, GPU when the cluster
has one), checkpointed every epoch under ``--storage`` and restarted from the last checkpoint
after a worker failure (``--max-failures``). Rerunning the command skips prompts already in the
library (``--overwrite`` retrains them) and resumes an interrupted task's run. The library
records, per prompt, its source test accuracy, val accuracy, seed, epochs, time and this command.
Progress: Ray's console reports per epoch and the Ray dashboard (bound to 127.0.0.1 unless
``--dashboard-host`` says otherwise).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from hgprompt_ray.config import PromptTrainingConfig
from hgprompt_ray.data import list_tasks, resolve_target
from hgprompt_ray.models.backbones import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE
from hgprompt_ray.prompts import PromptLibrary
from launch._cli import UsageError, add_config_flags, cli_main, command_line, config_kwargs, configure_logging
from launch._ray import add_ray_flags, check_address, start_ray

logger = logging.getLogger("train_sources")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=["offline", "vtab"], help="train every available task of a suite")
    parser.add_argument("--tasks", nargs="+", help="task names, ImageFolder directories or CSVs")
    parser.add_argument("--out", required=True, help="prompt library folder (created if missing)")
    recipe = parser.add_argument_group("training recipe (PromptTrainingConfig)")
    add_config_flags(
        recipe,
        PromptTrainingConfig,
        skip=["task", "eval_batch_size", "heartbeat_dir"],
        defaults={"backbone": OFFLINE_BACKBONE, "img_size": OFFLINE_IMG_SIZE},
    )
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per task")
    parser.add_argument("--max-failures", type=int, default=2)
    parser.add_argument("--storage", default=None, help="Ray Train storage (default <out>/.runs)")
    parser.add_argument("--overwrite", action="store_true")
    add_ray_flags(parser)
    args = parser.parse_args(argv)
    if not args.suite and not args.tasks:
        parser.error("give --suite or --tasks")
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(None, verbose=True)
    command = command_line("train_sources.py", argv)
    tasks = args.tasks or list_tasks(args.suite)
    library = PromptLibrary(args.out, create=True)
    plans = []
    for task_name in tasks:
        task = resolve_target(task_name, data_root=args.data_root)
        available, reason = task.availability()
        if not available:
            if args.tasks:
                raise UsageError(f"task {task_name!r} is not available: {reason}")
            logger.warning("skipping %s: %s", task_name, reason)
            continue
        name = task.info.name
        if name in library and not args.overwrite:
            logger.info("skipping %s: already in %s (use --overwrite to retrain)", name, library.root)
            continue
        config = PromptTrainingConfig(**config_kwargs(args, PromptTrainingConfig, task=task_name))
        plans.append((name, config))
    check_address(args.address)
    from hgprompt_ray.workers.train_prompt import train_prompt

    if start_ray(args) is None:
        return 2
    storage = Path(args.storage) if args.storage else Path(args.out) / ".runs"
    summary = []
    for name, config in plans:
        logger.info(
            "training %s (%d epochs, m=%d, %s @ %d px)",
            name,
            config.epochs,
            config.num_prompt_tokens,
            config.backbone,
            config.img_size,
        )
        trained = train_prompt(
            config,
            num_workers=args.num_workers,
            storage_path=storage,
            name=f"{name}-seed{config.seed}",
            max_failures=args.max_failures,
        )
        library.add(
            name,
            trained.prompt,
            source_task=name,
            backbone=config.backbone,
            img_size=config.img_size,
            source_accuracy=trained.metrics["test_accuracy"],
            overwrite=args.overwrite,
            extra={
                "val_accuracy": trained.metrics["val_accuracy"],
                "seed": config.seed,
                "split_seed": config.split_seed,
                "epochs": config.epochs,
                "optimizer": config.optimizer.value,
                "head": config.head,
                "learning_rate": config.learning_rate,
                "train_seconds": round(trained.seconds, 1),
                "num_workers": args.num_workers,
                "command": command,
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        summary.append(
            (name, trained.metrics["val_accuracy"], trained.metrics["test_accuracy"], trained.seconds)
        )
        logger.info("%s: val %.3f test %.3f (%.0f s)", *summary[-1])
    if summary:
        print(f"\n{'task':<22}{'val200':>8}{'test':>8}{'seconds':>9}")
        for name, val, test, seconds in summary:
            print(f"{name:<22}{val:>8.3f}{test:>8.3f}{seconds:>9.0f}")
    print(f"library {library.root}: {len(PromptLibrary(args.out))} prompt(s)")
    return 0


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())
