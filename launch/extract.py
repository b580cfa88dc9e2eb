"""Extract features and gradient statistics of targets under a prompt library (fills the cache).

    python launch/extract.py --targets digits-parity textures           # the shipped zoo
    python launch/extract.py --suite offline --samples 64 --gradient-samples 16
    python launch/extract.py --targets ./my_images --prompts my_lib --workers 2

For each target: the library's prompts (without the one trained on the target itself unless
--include-target-prompt), ``workers.extract`` on Ray Train (the same ``ExtractionConfig`` as the search builds), then a check that the FeatureStore
serves every table (zero-copy views of each split, the gradient moments). Prints one row per
target: tables, forwards computed, seconds. ``launch/search.py`` with the same --samples,
--gradient-samples and seeds then starts from the cache.
"""

from __future__ import annotations

import argparse
import sys
import time

from hgprompt_ray.data import list_tasks, related_tasks, resolve_target
from hgprompt_ray.prompts import open_library, select_sources
from hgprompt_ray.tuning.plan import extraction_config
from hgprompt_ray.tuning.spec import SearchSpec
from launch._cli import UsageError, add_config_flags, cli_main, config_kwargs, configure_logging
from launch._ray import add_ray_flags, check_address, start_ray

EXTRACTION_FIELDS = ("library", "include_target_prompt", "samples", "gradient_samples", "workers", "seed",
                     "split_seed", "data_root", "cache_dir")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=None, help="task names, folders or CSVs")
    parser.add_argument("--suite", choices=["offline", "vtab"], default=None, help="every available task")
    skip = [f for f in SearchSpec.__dataclass_fields__ if f not in EXTRACTION_FIELDS]
    add_config_flags(parser, SearchSpec, skip=skip)
    add_ray_flags(parser)
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(None, verbose=True)
    targets = args.targets or (list_tasks(args.suite) if args.suite else None)
    if not targets:
        raise UsageError("give --targets or --suite. Fix: e.g. --suite offline.")
    library = open_library(args.library)
    configs = []
    for target in targets:
        task = resolve_target(target, data_root=args.data_root)
        available, reason = task.availability()
        if available:
            spec = SearchSpec(**config_kwargs(args, SearchSpec, target=target))
            selection = select_sources(
                library,
                task.info.name,
                include_target_prompt=args.include_target_prompt,
                related=related_tasks(task.info.name),
            )
            configs.append((task, extraction_config(spec, task, selection)))
        elif args.targets:
            raise UsageError(f"target {target!r} is not available here: {reason}")
        else:
            print(f"skipping {task.info.name}: {reason}")
    check_address(args.address)
    from hgprompt_ray.workers.extract import extract

    if start_ray(args) is None:
        return 2
    rows = []
    for task, config in configs:
        prompts = config.prompts
        start = time.perf_counter()
        result = extract(config, num_workers=args.workers, task=task)
        served = 0
        for split in result.feature_keys:
            views, labels = result.features(split)
            broken = [p for p, v in views.items() if v.shape[0] != len(labels) or v.flags.writeable]
            if broken:
                print(f"error: the store served malformed {split} tables for {broken}", file=sys.stderr)
                return 1
            served += len(views)
        names, moments = result.gradient_moments()
        served += 1
        rows.append(
            (
                task.info.name,
                len(prompts),
                served,
                result.stats["image_prompt_forwards"],
                moments.num_samples,
                time.perf_counter() - start,
            )
        )
    print(f"\n{'target':<22}{'prompts':>8}{'tables':>8}{'forwards':>10}{'grad N':>8}{'seconds':>9}")
    for name, count, served, forwards, gradient_n, seconds in rows:
        print(f"{name:<22}{count:>8}{served:>8}{forwards:>10}{gradient_n:>8}{seconds:>9.0f}")
    print(f"every table served from the FeatureStore for {len(rows)} target(s)")
    return 0


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())
