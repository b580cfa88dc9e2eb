"""Find the best prompt ensemble for a target: extraction, then Ray Tune + Optuna over lambda,
M and the prompt subset, each trial an alpha solve. The product's main command.

    python launch/search.py --target digits-parity                      # the shipped offline zoo
    python launch/search.py --target ./my_images --output runs/mine     # a folder of class folders
    python launch/search.py --target svhn --prompts zoo_vtab --backbone vit_base_patch16_224.augreg_in21k \
        --img-size 224 --samples 800 --gradient-samples 800 --num-samples 200 --address auto
    python launch/search.py --target digits-parity --output runs/x --resume   # after a kill

Bad input is one line on stderr, exit 2, nothing written. The console shows the dashboard line,
a progress line per stage and the final table; Ray's and Tune's full output goes to
``<output>/search.log``. The results (``best.json``, ``trials.parquet``/``.csv``, ``alpha.png``,
``search_curve.png``, ``search.json``) are described in ``hgprompt_ray.tuning.run``.
"""

from __future__ import annotations

import argparse
import os
import sys

from hgprompt_ray.tuning import SearchFailedError, SearchSpec, plan_search, run_search
from hgprompt_ray.tuning.outputs import summary_lines
from launch._cli import add_config_flags, cli_main, command_line, config_kwargs, configure_logging
from launch._ray import add_ray_flags, check_address, start_ray

LOG_FILE = "search.log"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, SearchSpec, required=["target"])
    add_ray_flags(parser)
    parser.add_argument("--verbose", action="store_true", help="print every log line, not only progress")
    parser.add_argument(
        "--smoke-test", action="store_true", help="tiny sizes: N=48, 12 gradient samples, 4 trials"
    )
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(None)
    spec = SearchSpec(**config_kwargs(args, SearchSpec, command=command_line("search.py", argv)))
    plan = plan_search(spec.smoke() if args.smoke_test else spec)  # every check, before Ray starts
    check_address(args.address)
    log_file = plan.output / LOG_FILE
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if start_ray(args, log_file) is None:  # a cluster that cannot start: nothing written
        return 2
    configure_logging(log_file, verbose=args.verbose)
    try:
        result = run_search(plan)
    except SearchFailedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n" + "\n".join(summary_lines(result.best, result.best["metric"], result.seconds)))
    print(f"results in {result.output}: best.json, trials.parquet, trials.csv, alpha.png, search_curve.png")
    return 0


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())
