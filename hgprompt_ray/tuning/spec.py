"""What one search is: :class:`SearchSpec`, a frozen config that validates itself.

A notebook user builds it directly; ``launch/search.py`` generates its flags from the fields'
help metadata (``metadata["flag"]`` where the flag is not ``--<field-name>``) and
``launch/evaluate.py`` builds one per target. Checks that need the disk or the library (the
target exists, the prompts match, the output folder is free) happen in
:func:`hgprompt_ray.tuning.plan.plan_search`; the checks here need nothing but the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hgprompt_ray.errors import InvalidValueError, require_positive_flag
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.tuning.screening import SCREENING_SCORES
from search_spaces import hgprompt as space

__all__ = ["DEFAULT_LIBRARY", "SCHEDULERS", "SearchSpec"]

SCHEDULERS = ("fifo", "asha")


@dataclass(frozen=True)
class SearchSpec:
    """One HGPrompt search: target, library, backbone, extraction and search settings."""

    target: str = field(metadata={"help": "task name, ImageFolder directory or path,label CSV"})
    library: str = field(
        default=DEFAULT_LIBRARY,
        metadata={"help": "prompt library (default: the shipped zoo)", "flag": "--prompts"},
    )
    backbone: str | None = field(default=None, metadata={"help": "backbone name (default: the library's)"})
    img_size: int | None = field(default=None, metadata={"help": "image size (default: the library's)"})
    sources: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "search over these prompts only (default: all)", "nargs": "+", "metavar": "NAME"},
    )
    include_target_prompt: bool = field(
        default=False, metadata={"help": "keep the prompt trained on the target itself"}
    )
    num_samples: int = field(default=32, metadata={"help": "Tune trials"})
    max_concurrent: int | None = field(
        default=None, metadata={"help": "concurrent trials (default: the cluster's CPUs)"}
    )
    lambda_range: tuple[float, float] = field(
        default=space.LAMBDA_RANGE,
        metadata={"help": "log-uniform range of lambda (LOW HIGH)", "nargs": 2, "metavar": "X"},
    )
    min_prompts: int = field(default=space.MIN_PROMPTS, metadata={"help": "smallest M"})
    max_prompts: int | None = field(default=None, metadata={"help": "largest M (default: all prompts)"})
    screen_top: int | None = field(
        default=None,
        metadata={
            "help": "screening: rank every source by --screen-metric on its train800 features and "
            "search only the best K' (default: no screening)",
            "metavar": "K'",
        },
    )
    screen_metric: str = field(
        default="h-score",
        metadata={
            "help": "per-prompt transferability score that ranks the sources for --screen-top and "
            f"ranked-slots: {', '.join(SCREENING_SCORES)}"
        },
    )
    subset_space: str = field(
        default="auto",
        metadata={
            "help": "how trials encode the subset: scores (one per prompt), ranked-slots (M slots over "
            f"the screening ranking; scales to hundreds of prompts), auto (scores up to "
            f"{space.SCORES_MAX_PROMPTS} searched prompts)"
        },
    )
    statistics: str = field(
        default="auto",
        metadata={
            "help": "form of the feature statistics: all-pairs (every pair block precomputed, K^2 d^2 "
            "memory), on-demand (each trial builds its own prompts' blocks, memory linear in K), "
            "auto (all pairs when they fit --statistics-budget-gb and cost no more; logged)"
        },
    )
    statistics_budget_gb: float = field(
        default=space.STATISTICS_BUDGET_GB,
        metadata={"help": "memory budget of all-pairs statistics for --statistics auto, GB"},
    )
    scheduler: str = field(
        default="fifo", metadata={"help": "Tune scheduler (asha: early stopping)", "choices": SCHEDULERS}
    )
    metric: str = field(
        default=space.DEFAULT_METRIC,
        metadata={
            "help": "what the search maximises on val200: val-probe (a probe on the combined prompt's "
            "features) or val-h (the ensemble's H-score; cheap, blind to the alignment term)",
        },
    )
    objective: str = field(
        default="both",
        metadata={
            "help": "terms of each solve: both (-H + lambda L_align), h-only (lambda = 0), align-only",
        },
    )
    sampler: str = field(
        default="tpe", metadata={"help": "Optuna sampler: tpe, or random (the random-search baseline)"}
    )
    report_test: int = field(
        default=0,
        metadata={
            "help": "also report each trial's probe accuracy on this many test images (a diagnostic "
            "for measuring the trial metric; never used to choose; 0: off)"
        },
    )
    samples: int = field(default=256, metadata={"help": "N target samples per split for extraction"})
    gradient_samples: int = field(default=64, metadata={"help": "samples for per-sample gradients"})
    workers: int = field(default=1, metadata={"help": "Ray Train extraction workers"})
    precision: str = field(
        default="auto",
        metadata={
            "help": "network precision of extraction and the probe metric: auto (bf16 where the "
            "hardware has it natively), fp32 or bf16",
            "choices": ["auto", "fp32", "bf16"],
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the sample draw, TPE and the solver"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train800/val200 draw"})
    data_root: str | None = field(default=None, metadata={"help": "VTAB data folder"})
    download: bool = field(default=False, metadata={"help": "fetch a missing VTAB dataset (needs a network)"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "extraction cache (default: <cache root>/extraction)"}
    )
    output: str | None = field(
        default=None, metadata={"help": "results folder (default runs/search-<target>)"}
    )
    resume: bool = field(default=False, metadata={"help": "continue the search in --output"})
    command: str = field(
        default="", metadata={"help": "the command line that started the search (recorded)", "cli": False}
    )

    def __post_init__(self) -> None:
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "lambda_range", tuple(float(v) for v in self.lambda_range))
        for name in ("num_samples", "samples", "gradient_samples", "workers"):
            require_positive_flag(name.replace("_", "-"), getattr(self, name), example=4)
        if self.max_concurrent is not None:
            require_positive_flag("max-concurrent", self.max_concurrent, example=4)
        if self.screen_top is not None:
            require_positive_flag("screen-top", self.screen_top, example=32)
        budget = self.statistics_budget_gb
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (0 < budget < math.inf):
            raise InvalidValueError(
                f"--statistics-budget-gb must be a positive number of GB, but got {budget!r}. "
                f"Fix: e.g. --statistics-budget-gb {space.STATISTICS_BUDGET_GB:g}."
            )
        low, high = self.lambda_range if len(self.lambda_range) == 2 else (math.nan, math.nan)
        if not (0 < low < high):
            raise InvalidValueError(
                f"--lambda-range must be two numbers 0 < LOW < HIGH (log-uniform), but got {low} {high}. "
                f"Fix: e.g. --lambda-range {space.LAMBDA_RANGE[0]} {space.LAMBDA_RANGE[1]}."
            )
        if self.scheduler not in SCHEDULERS:
            raise InvalidValueError(
                f"--scheduler must be one of {list(SCHEDULERS)}, but got {self.scheduler!r}. Fix: pass fifo or asha."
            )
        if (
            isinstance(self.report_test, bool)
            or not isinstance(self.report_test, int)
            or self.report_test < 0
        ):
            raise InvalidValueError(
                f"--report-test must be a non-negative integer, but got {self.report_test}. Fix: e.g. --report-test 0."
            )
        for name, choices in (
            ("metric", space.METRICS),
            ("objective", space.OBJECTIVES),
            ("sampler", space.SAMPLERS),
            ("screen_metric", SCREENING_SCORES),
            ("subset_space", space.SUBSET_SPACES),
            ("statistics", space.STATISTICS_MODES),
        ):
            if getattr(self, name) not in choices:
                flag = name.replace("_", "-")
                raise InvalidValueError(
                    f"--{flag} must be one of {list(choices)}, but got {getattr(self, name)!r}. "
                    f"Fix: pass e.g. --{flag} {next(iter(choices))}."
                )
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                flag = name.replace("_", "-")
                raise InvalidValueError(
                    f"--{flag} must be a non-negative integer, but got {value}. Fix: e.g. --{flag} 0."
                )

    def smoke(self) -> SearchSpec:
        """Tiny sizes for a quick check: N=48, 12 gradient samples, 4 trials."""
        from dataclasses import replace

        return replace(self, samples=48, gradient_samples=12, num_samples=4)
