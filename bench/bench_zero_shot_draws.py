"""Zero-shot columns of several split draws: one pass over their distinct images vs one draw at a time.

The init-probe protocol's seed k reads the zero-shot column of the train800/val200 draw
``split_seed + k``. On a pool task (offline suite, folders, CSVs) the draws overlap: five draws of
count's 2,000-image pool hold 7,500 images (train800, val200 and a 500-image test subset each)
of at most 2,000 distinct ones. ``zero_shot_draws`` forwards each distinct image once; the
baseline calls ``zero_shot_target`` per draw, as the evaluation did before. Both run in this
process, one after the other, at the same precision; the table reports the ratio of their wall
times (this machine is shared and noisy: only the ratio is meaningful) and the largest
difference between the two arms' accuracies.

Usage:
  python bench/bench_zero_shot_draws.py --target count --draws 5 --prompts 4
  python bench/bench_zero_shot_draws.py --smoke-test
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.precision import resolve_precision
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import open_library
from hgprompt_ray.transfer.zero_shot import zero_shot_draws, zero_shot_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="count")
    parser.add_argument("--draws", type=int, default=5, help="split seeds 0..draws-1")
    parser.add_argument("--prompts", type=int, default=4, help="the library's first N prompts (not the target's)")
    parser.add_argument("--library", default=DEFAULT_LIBRARY)
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke-test", action="store_true", help="2 draws, 1 prompt, 100 test images")
    args = parser.parse_args()
    if args.smoke_test:
        args.draws, args.prompts, args.max_test = 2, 1, 100
    library = open_library(args.library)
    names = [r.name for r in library.records() if r.source_task != args.target][: args.prompts]
    record = library.records()[0]
    backbone = load_backbone(record.backbone, record.img_size)
    prompts = library.load_many(names, backbone=record.backbone, embed_dim=backbone.embed_dim)
    model = PromptedViT(backbone, num_prompt_tokens=prompts.shape[1]).eval()
    common = {"img_size": record.img_size, "max_test": args.max_test, "precision": args.precision, "progress": False}
    seeds = list(range(args.draws))

    start = time.perf_counter()
    alone = pd.concat([pd.DataFrame(zero_shot_target(model, prompts, names, args.target, split_seed=s, **common))
                       for s in seeds])  # fmt: skip
    per_draw = time.perf_counter() - start
    start = time.perf_counter()
    together = pd.DataFrame(zero_shot_draws(model, prompts, names, args.target, split_seeds=seeds, **common))
    one_pass = time.perf_counter() - start

    key = ["source", "split_seed"]
    joined = alone.merge(together, on=key, suffixes=("", "_together"), validate="one_to_one")
    difference = max((joined[c] - joined[f"{c}_together"]).abs().max() for c in ("val_accuracy", "test_accuracy"))
    result = {
        "target": args.target, "draws": args.draws, "prompts": len(names), "max_test": args.max_test,
        "precision": resolve_precision(args.precision), "threads": torch.get_num_threads(),
        "per_draw_seconds": round(per_draw, 1), "one_pass_seconds": round(one_pass, 1),
        "speedup": round(per_draw / one_pass, 2), "max_accuracy_difference": float(difference),
    }  # fmt: skip
    print(pd.DataFrame([result]).to_string(index=False))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
