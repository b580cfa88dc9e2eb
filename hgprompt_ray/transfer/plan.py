"""What one evaluation is: :class:`EvaluationSettings` in, a checked :class:`EvaluationPlan` out.

``launch/evaluate.py`` makes its flags from these fields (and from :class:`TransferConfig`'s),
then calls :func:`plan_evaluation`, which checks everything before Ray starts: the library is
intact and of one backbone, image size and prompt length; every target resolves (once) and has
at least two sources besides its own prompt; the scaling sizes fit; the output folder is free
or holds the same evaluation (same budget, same library: a rerun resumes it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.data import eligible_sources, readable_here
from hgprompt_ray.errors import IntegrityError, InvalidValueError, require_positive_flag
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import PromptLibrary, open_library
from hgprompt_ray.transfer.evaluation import EVALUATION_STATE
from hgprompt_ray.transfer.methods import PROTOCOLS, get_method, method_names
from hgprompt_ray.tuning.plan import resolve_available
from search_spaces.hgprompt import METRICS

logger = logging.getLogger(__name__)

__all__ = [
    "BUDGET_FIELDS",
    "SEED_COUNTS",
    "STATE_FILE",
    "EvaluationPlan",
    "EvaluationSettings",
    "library_label",
    "plan_evaluation",
]

STATE_FILE = EVALUATION_STATE  # evaluate.json (defined with the Ray-free job code: launch/run_jobs.py writes it too)
TRANSFER_BUDGET = (
    "epochs", "lr_scales", "batch_size", "base_lr", "weight_decay", "warmup_fraction", "max_steps", "max_test",
    "split_seed", "precision",
)  # fmt: skip
SETTINGS_BUDGET = (
    "search_metric", "spot_steps", "search_trials", "samples", "gradient_samples", "seeds", "scaling_sizes", "scaling_seeds",
    "tuned_seeds",
)  # fmt: skip
BUDGET_FIELDS = TRANSFER_BUDGET + SETTINGS_BUDGET
"""What must match for a rerun to resume an evaluation folder (recorded in ``evaluate.json``).
The protocols and methods may differ between invocations (each run is stored under its method
and protocol): e.g. init-probe for every target, then tuned for a few. So may the seed counts
(``SEED_COUNTS``): a rerun with more seeds adds their runs and keeps the finished ones."""
SEED_COUNTS = ("seeds", "tuned_seeds")
"""Budget fields a rerun may change: seed k's runs and weights do not depend on how many seeds
there are (an init-probe seed's split draw is ``split_seed + k``; SPoT's prompt is per seed)."""


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation's own settings (the tuning budget is a :class:`TransferConfig`)."""

    library: str = field(
        default=DEFAULT_LIBRARY, metadata={"help": "prompt library (default: the zoo)", "flag": "--prompts"}
    )
    output: str = field(default="reports/evaluation", metadata={"help": "report folder (reruns resume)"})
    seeds: int = field(default=3, metadata={"help": "seeds per (method, target)"})
    tuned_seeds: int | None = field(
        default=None,
        metadata={"help": "seeds of the tuned protocol when fewer than --seeds (init-probe is cheap, tuned is not)"},
    )
    methods: tuple[str, ...] = field(
        default=method_names(),
        metadata={"help": "methods to run (default: every registered one)", "nargs": "+", "choices": list(method_names())},
    )
    no_ablation: bool = field(default=False, metadata={"help": "skip the ablation-only runs (alignment only)"})
    protocols: tuple[str, ...] = field(
        default=("tuned",),
        metadata={
            "help": "tuned: the VTAB-1k protocol (every method, the epoch budget); init-probe: a logistic probe "
            "on train800 features under the initial prompt P0 (weightings and the linear probe; seed k draws "
            "train800/val200 with split seed + k)",
            "nargs": "+",
            "choices": list(PROTOCOLS),
            "flag": "--protocol",
        },
    )
    search_metric: str = field(
        default="val-probe",
        metadata={"help": "trial metric of each HGPrompt search (see launch/search.py --metric)"},
    )
    spot_steps: int = field(default=8, metadata={"help": "steps of SPoT's brief target tuning"})
    search_trials: int = field(default=32, metadata={"help": "Tune trials of each HGPrompt search"})
    samples: int = field(default=256, metadata={"help": "search: N samples per split"})
    gradient_samples: int = field(default=64, metadata={"help": "search: per-sample gradients"})
    scaling_sizes: tuple[int, ...] = field(
        default=(3, 5, 7),
        metadata={
            "help": "source counts of the scaling curve (all sources are always a point; none: skip)",
            "nargs": "*",
        },
    )
    scaling_targets: tuple[str, ...] | None = field(
        default=None, metadata={"help": "default: the first target", "nargs": "*"}
    )
    scaling_seeds: int = field(default=1, metadata={"help": "seeds per scaling point"})
    zero_shot: str | None = field(
        default=None, metadata={"help": "zero-shot Parquet (default: <prompts>/zero_shot)"}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "extraction cache (default: <cache root>/extraction)"}
    )
    cpus_per_job: int | None = field(default=None, metadata={"help": "default: min(4, cluster CPUs)"})
    gpus_per_job: float | None = field(default=None, metadata={"help": "default: 1 if the cluster has GPUs"})

    def __post_init__(self) -> None:
        for name in ("seeds", "spot_steps", "search_trials", "samples", "gradient_samples", "scaling_seeds"):
            require_positive_flag(name.replace("_", "-"), getattr(self, name))
        if self.cpus_per_job is not None:
            require_positive_flag("cpus-per-job", self.cpus_per_job)
        for name in ("methods", "scaling_sizes", "protocols"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.scaling_targets is not None:
            object.__setattr__(self, "scaling_targets", tuple(self.scaling_targets))
        if self.search_metric not in METRICS:
            raise InvalidValueError(
                f"--search-metric must be one of {list(METRICS)}, but got {self.search_metric!r}. "
                "Fix: pass --search-metric val-probe."
            )
        unknown = [m for m in self.methods if m not in method_names()]
        if unknown:
            raise InvalidValueError(f"--methods {unknown} are unknown. Fix: choose from {list(method_names())}.")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise InvalidValueError(
                f"--protocol {list(self.protocols)} must be among {list(PROTOCOLS)}. Fix: pass --protocol tuned "
                "and/or init-probe."
            )
        object.__setattr__(self, "protocols", tuple(dict.fromkeys(self.protocols)))
        for protocol in self.protocols:
            if not self.protocol_methods(protocol):
                raise InvalidValueError(
                    f"--protocol {protocol}: none of --methods {list(self.methods)} has it (init-probe needs an "
                    "initial prompt: a weighting, or the linear probe's bare backbone). Fix: add such methods, "
                    "e.g. --methods hgprompt average single-best linear-probe."
                )
        if self.tuned_seeds is not None:
            require_positive_flag("tuned-seeds", self.tuned_seeds)
            if self.tuned_seeds > self.seeds:
                raise InvalidValueError(
                    f"--tuned-seeds {self.tuned_seeds} exceeds --seeds {self.seeds} (it lowers the tuned protocol's "
                    f"count). Fix: pass --seeds {self.tuned_seeds}, or a lower --tuned-seeds."
                )
        if self.scaling_seeds > self.seeds:
            raise InvalidValueError(
                f"--scaling-seeds {self.scaling_seeds} exceeds --seeds {self.seeds} (the full-size point reuses "
                "the main runs). Fix: lower --scaling-seeds."
            )

    def seeds_of(self, protocol: str) -> int:
        """Seeds per (method, target) under ``protocol``: ``tuned_seeds`` for tuned when given."""
        return self.tuned_seeds if protocol == "tuned" and self.tuned_seeds is not None else self.seeds

    def protocol_methods(self, protocol: str) -> tuple[str, ...]:
        """The methods of :attr:`all_methods` that have ``protocol`` (the others are skipped there)."""
        return tuple(m for m in self.all_methods if protocol in get_method(m).protocols)

    @property
    def all_methods(self) -> tuple[str, ...]:
        """The methods to run, in the registry's order (without the ablation-only ones with
        ``no_ablation``)."""
        chosen = set(self.methods)
        return tuple(m for m in method_names() if m in chosen and not (self.no_ablation and get_method(m).table == "ablation"))


@dataclass(frozen=True)
class EvaluationPlan:
    """A checked evaluation.

    Attributes:
        settings: the evaluation's settings.
        transfer: the tuning budget (``task`` is the first target; jobs ``replace`` it).
        library: the opened library.
        backbone, img_size: the library's.
        targets: the targets as given; ``tasks`` and ``sources`` are keyed by them.
        scaling_targets: the targets that get a scaling curve.
        output: the report folder.
        zero_shot: the zero-shot matrix file.
        method_settings: each method's settings (its config dataclass; methods without settings
            are absent).
    """

    settings: EvaluationSettings
    transfer: TransferConfig
    library: PromptLibrary
    backbone: str
    img_size: int
    targets: tuple[str, ...]
    tasks: dict[str, Any]
    sources: dict[str, tuple[str, ...]]
    scaling_targets: tuple[str, ...]
    output: Path
    zero_shot: Path
    method_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def budget(self) -> dict[str, Any]:
        """The settings a resumed run must share (JSON-ready), the methods' own included."""
        values = {**asdict(self.transfer), **asdict(self.settings)}
        budget = {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in BUDGET_FIELDS}
        budget["method_settings"] = {name: asdict(s) for name, s in sorted(self.method_settings.items())}
        budget["tuned_seeds"] = self.settings.seeds_of("tuned")  # --tuned-seeds 3 --seeds 3 = no flag
        return budget

    def target_name(self, target: str) -> str:
        """The registry name of ``target``."""
        return str(self.tasks[target].info.name)


def library_label(path: Path) -> str:
    """The library as recorded in evaluate.json: relative to the working directory when inside it
    (a committed report resumes from another clone), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def plan_evaluation(
    settings: EvaluationSettings,
    transfer: dict[str, Any],
    targets: list[str] | None,
    leave_one_out: bool = False,
    data_root: str | None = None,
    method_settings: dict[str, Any] | None = None,
) -> EvaluationPlan:
    """Check an evaluation (module docstring); raises InvalidValueError naming the flag and the fix.

    Args:
        settings: the evaluation's settings.
        transfer: the :class:`TransferConfig` fields of the budget (``task`` comes from the targets).
        targets: task names, folders or CSVs; or None with ``leave_one_out``.
        leave_one_out: every source task of the library whose data is here is a target.
        data_root: the VTAB data folder.
        method_settings: method name -> its settings (default: every method's defaults).
    """
    for name in ("epochs", "batch_size", "max_test", "max_steps"):
        if transfer.get(name) is not None:
            require_positive_flag(name.replace("_", "-"), transfer[name])
    # every registered method's settings (not only the chosen ones'), so that chunks choosing other
    # --methods share one budget
    chosen_settings = {m: get_method(m).default_settings() for m in method_names()}
    chosen_settings.update({m: s for m, s in (method_settings or {}).items() if m in chosen_settings})
    chosen_settings = {m: s for m, s in chosen_settings.items() if s is not None}
    library = open_library(settings.library)
    records = library.records()
    configurations = {(r.backbone, r.img_size, r.num_tokens) for r in records}
    if len(configurations) != 1:
        raise InvalidValueError(
            f"prompt library {library.root} mixes backbones/sizes/lengths {sorted(configurations)}. "
            "Fix: evaluate with a library of one backbone, image size and prompt length."
        )
    backbone, img_size, _ = configurations.pop()
    depth_checked = [m for m in chosen_settings if callable(get_method(m).trains)]
    if depth_checked:  # e.g. PARTIAL-k's k against the backbone's depth, before anything runs
        from hgprompt_ray.models import load_backbone

        depth = len(load_backbone(backbone, img_size).blocks)
        for name in depth_checked:
            get_method(name).trainable_patterns(chosen_settings[name], depth)
    if leave_one_out:  # a task whose data is missing here stays a source but is not a target
        targets, unreadable = readable_here(sorted({r.source_task for r in records}), data_root=data_root)
        for name, reason in unreadable.items():
            logger.warning("--leave-one-out: %s is not a target, its data is not here (its prompt stays a source): %s",
                           name, reason)  # fmt: skip
        if not targets:
            raise InvalidValueError(f"--leave-one-out: no task of {library.root} can be read here: {unreadable}. "
                                    "Fix: install or point --data-root at the tasks' data.")  # fmt: skip
    elif targets:
        targets = list(dict.fromkeys(targets))
    else:
        raise InvalidValueError("no targets. Fix: pass --targets NAME ... or --leave-one-out.")
    tasks, sources = {}, {}
    for target in targets:
        try:
            task = resolve_available(target, data_root)
        except FileNotFoundError as error:
            raise InvalidValueError(f"--targets {target!r}: {error}") from error
        except InvalidValueError as error:
            text = str(error)
            raise InvalidValueError(
                text if "not available" in text else f"--targets {target!r}: {text}"
            ) from error
        # not its own prompt nor those of its images under any labels; the library's order
        usable = tuple(eligible_sources(task.info.name, {r.name: r.source_task for r in records}))
        if len(usable) < 2:
            raise InvalidValueError(
                f"target {target!r} has {len(usable)} source prompt(s) once its own prompt and those "
                "of tasks on the same images are left out; "
                "an ensemble needs at least 2. Fix: add prompts to the library."
            )
        tasks[target], sources[target] = task, usable
        if "init-probe" in settings.protocols and settings.seeds > 1 and not task.split_is_seeded:
            logger.warning("%s has fixed splits (%s): its %d init-probe seeds repeat one draw and will agree",
                           target, getattr(task, "SPLIT_PROTOCOL", "not seeded"), settings.seeds)  # fmt: skip
    zero_shot = Path(settings.zero_shot) if settings.zero_shot else library.root / "zero_shot" / "zero_shot.parquet"
    if leave_one_out:
        targets = _widest_spread_first(targets, tasks, records, zero_shot)
    scaling_targets = settings.scaling_targets
    if scaling_targets is None:  # the first target; in a folder that has them, its scaling targets
        recorded = _recorded_scaling_targets(Path(settings.output).expanduser())
        scaling_targets = tuple(targets[:1] if recorded is None else
                                [t for t in targets if tasks[t].info.name in recorded])  # fmt: skip
    unknown = [t for t in scaling_targets if t not in targets]
    if unknown:
        raise InvalidValueError(
            f"--scaling-targets {unknown} are not among the targets {targets}. Fix: pick from them."
        )
    bad = [n for n in settings.scaling_sizes if n < 2]
    if bad:
        raise InvalidValueError(f"--scaling-sizes {bad} must be at least 2 (an ensemble). Fix: drop them.")
    for target in scaling_targets:  # sizes of all its sources or more: the full point covers them
        count = len(sources[target])
        dropped = [n for n in settings.scaling_sizes if n >= count]
        if dropped:
            logger.info("scaling curve of %s: sizes %s dropped (it has %d sources, always a point)", target, dropped, count)
    plan = EvaluationPlan(
        settings=settings,
        transfer=TransferConfig(
            **{
                **transfer,
                "task": targets[0],
                "backbone": backbone,
                "img_size": img_size,
                "data_root": data_root,
            }
        ),
        library=library,
        backbone=backbone,
        img_size=img_size,
        targets=tuple(targets),
        tasks=tasks,
        sources=sources,
        scaling_targets=scaling_targets,
        output=Path(settings.output).expanduser(),
        zero_shot=zero_shot,
        method_settings=chosen_settings,
    )
    _check_output(plan)
    return plan


def _widest_spread_first(targets: list[str], tasks: dict[str, Any], records: list[Any], matrix: Path) -> list[str]:
    """``--leave-one-out``'s order: the targets whose eligible sources spread the most zero-shot
    first, as the report's screen ranks them (``screening.zero_shot_screen`` on
    ``zero_shot.read_matrix``: split draw 0's spread of test accuracies, the spread of the draw
    means where draw 0 lacks a source), since only a target where the sources differ can separate
    weightings (#20: informative targets first). Targets the screen does not cover follow in name
    order, and the saturated ones (spread under ``INFORMATIVE``'s 5 points: they cannot be
    informative) come last, widest first, since an unscreened target still may be informative.
    The order only schedules the chunks: no method reads test. A matrix still being computed
    counts by its ``parts/``."""
    from hgprompt_ray.transfer.screening import zero_shot_screen
    from hgprompt_ray.transfer.tables import spread_reaches_bar
    from hgprompt_ray.transfer.zero_shot import read_matrix

    rows = read_matrix(matrix, {r.name: r.sha256 for r in records})
    if rows.empty:
        return targets
    screen = zero_shot_screen(rows, {r.name: r.source_task for r in records})
    if screen.empty:
        return targets
    spread = screen["spread (draw 0)"].fillna(screen["spread of draw means"]).to_dict()

    def rank(target: str) -> tuple[int, float]:  # candidates, then unscreened, then saturated
        value = spread.get(tasks[target].info.name)
        if value is None:
            return 1, 0.0
        return (0 if spread_reaches_bar(value) else 2), -value

    return sorted(targets, key=rank)


def _recorded_scaling_targets(output: Path) -> list[str] | None:
    """The scaling targets (names) of the evaluation in ``output``, or None when it has none recorded:
    a later chunk of targets adds no scaling curve of its own unless --scaling-targets asks."""
    state = output / STATE_FILE
    if not state.is_file():
        return None
    try:
        names = json.loads(state.read_text()).get("scaling_target_names")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # _check_output reports it
    return None if names is None else list(names)


def _check_output(plan: EvaluationPlan) -> None:
    output, state = plan.output, plan.output / STATE_FILE
    if state.is_file():
        try:
            previous = json.loads(state.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IntegrityError(
                f"{state} is not readable JSON ({error}). Fix: restore it or choose a new --output."
            ) from error
        budget = {
            "search_metric": "val-h",  # evaluations before --search-metric
            **previous.get("budget", {}),
        }
        budget.pop("protocols", None)  # in the budget of evaluations before chunks
        if budget.get("tuned_seeds") is None:  # evaluations before --tuned-seeds
            budget["tuned_seeds"] = budget.get("seeds")
        fixed = [k for k in plan.budget if k not in SEED_COUNTS]
        same_budget = all(budget.get(k) == plan.budget[k] for k in fixed) and set(budget) - set(SEED_COUNTS) == set(fixed)
        if not same_budget or previous.get("library") != library_label(plan.library.root):
            raise InvalidValueError(
                f"--output {output} holds an evaluation with another budget or library "
                f"({previous.get('budget')}). Fix: rerun with the same settings to resume, or choose a new --output."
            )
    elif output.exists() and any(output.iterdir()):
        raise InvalidValueError(f"--output {output} already holds other files. Fix: choose a new --output.")
