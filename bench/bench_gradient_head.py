"""Gradient norms under the shared held-out head vs the earlier per-prompt heads, on a real target.

    python bench/bench_gradient_head.py --target count

Both extractions use the search's default settings (N = 256, 64 gradient samples); the feature
tables are shared (cached), only the gradient pass differs. Prints one table: each prompt's mean
per-sample gradient norm under each head and their ratio, and the shared head's held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import ray

from hgprompt_ray.tuning import SearchSpec, plan_search
from hgprompt_ray.workers.extract import ExtractionCache, extract


def head_record(config, task) -> dict:
    result = extract(config, progress=False, task=task)
    table = ExtractionCache(config.cache_dir).read(result.gradient_key)
    return json.loads(table.schema.metadata[b"hgprompt.gradient_head"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="count")
    args = parser.parse_args()
    plan = plan_search(SearchSpec(target=args.target, output="/tmp/bench-gradient-head-unused"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    shared = head_record(plan.extraction, plan.task)
    old = head_record(replace(plan.extraction, gradient_head="per-prompt"), plan.task)
    print(f"target {args.target}: shared head held-out accuracy {shared['held_out_accuracy']:.3f} "
          f"(folds {shared['fold_held_out_accuracy']})")  # fmt: skip
    print("| prompt | per-prompt heads | shared head | ratio |\n|---|---|---|---|")
    for name in plan.prompts:
        a, b = old["mean_gradient_norm"][name], shared["mean_gradient_norm"][name]
        print(f"| {name} | {a:.4g} | {b:.4g} | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
