"""Extract features and gradient statistics of targets under a prompt library (fills the cache).

    python launch/extract.py --targets digits-parity textures           # the shipped zoo
    python launch/extract.py --suite offline --samples 64 --gradient-samples 16
    python launch/extract.py --targets ./my_images --prompts my_lib --workers 2

For each target: the library's prompts (without the one trained on the target itself unless
--include-target-prompt), ``workers.extract`` on Ray Train, then a check that the FeatureStore
serves every table (zero-copy views of each split, the gradient moments). Prints one row per
target: tables, forwards computed, seconds. ``launch/search.py`` with the same --samples,
--gradient-samples and seeds then starts from the cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hgprompt_ray.config import ExtractionConfig  # noqa: E402
from hgprompt_ray.data import TaskUnavailableError, list_tasks, resolve_target  # noqa: E402
from hgprompt_ray.errors import InvalidValueError  # noqa: E402
from hgprompt_ray.prompts import PromptLibrary  # noqa: E402

DEFAULT_LIBRARY = ROOT / "prompt_zoo" / "offline"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=None)
    parser.add_argument("--suite", choices=["offline", "vtab"], default=None)
    parser.add_argument("--prompts", default=str(DEFAULT_LIBRARY))
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--gradient-samples", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--include-target-prompt", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--address", default=None)
    args = parser.parse_args(argv)
    try:
        targets = args.targets or (list_tasks(args.suite) if args.suite else None)
        if not targets:
            raise InvalidValueError("give --targets or --suite. Fix: e.g. --suite offline.")
        library = PromptLibrary(args.prompts)
        pairs = []
        for target in targets:
            task = resolve_target(target, data_root=args.data_root)
            available, reason = task.availability()
            if available:
                pairs.append((target, task))
            elif args.targets:
                raise TaskUnavailableError(f"target {target!r} is not available here: {reason}")
            else:
                print(f"skipping {task.name}: {reason}")
    except (InvalidValueError, TaskUnavailableError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import ray

    from hgprompt_ray.workers.extract import extract

    ray.init(
        address=args.address,
        num_cpus=args.num_cpus if args.address is None else None,
        ignore_reinit_error=True,
    )
    rows = []
    for target, task in pairs:
        records = library.records()
        prompts = tuple(
            r.name for r in records if args.include_target_prompt or r.source_task != task.info.name
        )
        config = ExtractionConfig(
            target=target,
            library=str(library.root),
            prompts=prompts,
            backbone=records[0].backbone,
            img_size=records[0].img_size,
            num_samples=args.samples,
            gradient_samples=args.gradient_samples,
            sample_seed=args.seed,
            split_seed=args.split_seed,
            data_root=args.data_root,
            cache_dir=args.cache_dir,
        )
        start = time.perf_counter()
        result = extract(config, num_workers=args.workers)
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


if __name__ == "__main__":
    sys.exit(main())
