"""The registry of transfer methods: one :class:`TransferMethod` per module of this package.

As peft's ``register_peft_method`` and timm's ``@register_model`` do, every method is declared
once, in its own module, by :func:`register_method`; evaluation, the report and the command line
read :func:`registered` and nothing else. A method declares:

* ``kind`` — a ``weighting`` (ensemble weights alpha over the source prompts: the target prompt
  starts at P0 = sum_i alpha_i P_i, then VPT-tunes) or a ``tuning`` (a way of adapting the frozen
  backbone: its own trainable modules, built by ``build``);
* what it trains (``trains``: glob patterns over the classifier's parameter names, checked by the
  contract tests) and what its choices may read (``reads``: only ``train800`` and ``val200`` and
  what was computed from them — a test walks every method);
* which protocols apply (``protocols``: a weighting supports the ``init-probe`` protocol, a
  probe on P0's features, and ``tuned``; so does the closed-form linear probe, whose P0 is the
  bare backbone; any other tuning method only ``tuned``);
* where it appears (the main table or the ablation table, the scaling curve), its paper, and
  its own settings (a frozen config dataclass whose fields become ``--<method>-...`` flags).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "ALLOWED_READS",
    "PROTOCOLS",
    "MethodKind",
    "TransferMethod",
    "get_method",
    "method_names",
    "register_method",
    "registered",
]

PROTOCOLS = ("init-probe", "tuned")
"""``init-probe``: a logistic probe on features under the initial prompt P0; ``tuned``: VTAB-1k."""
ALLOWED_READS = ("train800", "val200", "sources", "zero-shot val200", "search")
"""What a method's choices may read: the target's train800 and val200, the source prompts, the
zero-shot matrix's val200 column, and the HGPrompt search (itself fitted on train800, scored on
val200). Never test."""
_REGISTRY: dict[str, TransferMethod] = {}


class MethodKind(str, enum.Enum):
    """What a method is."""

    WEIGHTING = "weighting"
    """Weights over the source prompts; the target prompt starts at sum_i alpha_i P_i."""
    TUNING = "tuning"
    """A way of adapting the frozen backbone to the target (its own trainable parameters)."""


@dataclass(frozen=True)
class TransferMethod:
    """One registered method (module docstring).

    Attributes:
        name: the command-line and file name (``--methods NAME``, ``runs/<target>/<name>/``).
        label: the name in tables.
        kind: weighting or tuning.
        paper: the method's paper, cited in tables and the report.
        trains: glob patterns (``fnmatch``) of the parameter names that train, over the module
            ``build`` returns; a callable ``(settings, depth) -> patterns`` where they depend on
            them. Empty for a closed-form fit.
        trains_text: the same in words, for the report.
        reads: what its choices (weights, source, epochs, learning rate) read; a subset of
            :data:`ALLOWED_READS`.
        weights: ``(inputs, seed) -> alpha`` over the sources (``methods.inputs.WeightingInputs``);
            weightings have one, a tuning method may (PANDA's transferability weights).
        build: ``(context) -> nn.Module`` for a tuning method (``methods.common.BuildContext``);
            weightings tune with VPT's classifier from P0.
        settings: the config dataclass of the method's own settings (None: none).
        base_lr: base learning rate at batch 256 of the trained parameters other than the head and
            the prompt (None: the transfer config's ``base_lr``).
        closed_form: fitted in closed form (the linear probe), not by the epoch budget.
        table: ``main`` or ``ablation``.
        ablation_row: its row in the ablation table, if any.
        scaling: also run on the scaling curve's source subsets.
        per_seed: its weights differ per seed (SPoT's briefly tuned target prompt).
        needs: inputs it needs computed (``search``, ``random-search``, ``spot``, ``probe``).
        tsne: its tuned prompt is one panel of the report's t-SNE figure.
        order: position in tables.
    """

    name: str
    label: str
    kind: MethodKind
    paper: str
    trains: tuple[str, ...] | Callable[[Any, int], tuple[str, ...]]
    trains_text: str
    reads: tuple[str, ...]
    weights: Callable[..., Any] | None = None
    build: Callable[..., Any] | None = None
    settings: type | None = None
    base_lr: float | None = None
    closed_form: bool = False
    table: str = "main"
    ablation_row: str | None = None
    scaling: bool = False
    per_seed: bool = False
    needs: tuple[str, ...] = ()
    tsne: bool = False
    order: int = 100
    protocols: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", MethodKind(self.kind))
        if not self.protocols:
            default = PROTOCOLS if self.kind is MethodKind.WEIGHTING or self.closed_form else ("tuned",)
            object.__setattr__(self, "protocols", default)
        bad_reads = [r for r in self.reads if r not in ALLOWED_READS]
        if bad_reads:
            raise InvalidValueError(
                invalid_value(f"{self.name}.reads", bad_reads, f"must be among {list(ALLOWED_READS)}",
                              "A method's choices never read test.")  # fmt: skip
            )
        if any(p not in PROTOCOLS for p in self.protocols):
            raise InvalidValueError(invalid_value(f"{self.name}.protocols", self.protocols, f"must be among {PROTOCOLS}", ""))
        if self.kind is MethodKind.WEIGHTING and self.weights is None:
            raise InvalidValueError(invalid_value(f"{self.name}.weights", None, "is required for a weighting", ""))
        if self.kind is MethodKind.TUNING and self.build is None and not self.closed_form:
            raise InvalidValueError(invalid_value(f"{self.name}.build", None, "is required for a tuning method", ""))
        if self.kind is MethodKind.TUNING and not self.closed_form and "init-probe" in self.protocols:
            raise InvalidValueError(
                invalid_value(f"{self.name}.protocols", self.protocols, "must not hold init-probe for a trained "
                              "tuning method (it has no initial prompt)", "")  # fmt: skip
            )
        if self.table not in ("main", "ablation"):
            raise InvalidValueError(invalid_value(f"{self.name}.table", self.table, "must be 'main' or 'ablation'", ""))

    @property
    def is_weighting(self) -> bool:
        return self.kind is MethodKind.WEIGHTING

    def trainable_patterns(self, settings: Any, depth: int) -> tuple[str, ...]:
        """The glob patterns of the parameters that train, for ``settings`` and a backbone ``depth``."""
        return tuple(self.trains(settings, depth)) if callable(self.trains) else tuple(self.trains)

    def display_label(self, settings: Any = None) -> str:
        """The label with the settings filled in (``PARTIAL-{partial_k}`` -> ``PARTIAL-1``)."""
        settings = self.default_settings() if settings is None else settings
        if settings is None:
            return self.label
        values = settings if isinstance(settings, dict) else dataclasses.asdict(settings)
        return self.label.format(**values)

    def default_settings(self) -> Any:
        """The method's settings at their defaults (None without settings)."""
        return None if self.settings is None else self.settings()


def register_method(method: TransferMethod) -> TransferMethod:
    """Add ``method`` to the registry (a second method of the same name is an error)."""
    if method.name in _REGISTRY and _REGISTRY[method.name] != method:
        raise InvalidValueError(invalid_value("TransferMethod.name", method.name, "is registered twice", "Rename one."))
    _REGISTRY[method.name] = method
    return method


def registered(table: str | None = None, kind: MethodKind | str | None = None) -> tuple[TransferMethod, ...]:
    """Every registered method in table order (optionally only one table or one kind)."""
    _load()
    methods = sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name))
    if table is not None:
        methods = [m for m in methods if m.table == table]
    if kind is not None:
        methods = [m for m in methods if m.kind is MethodKind(kind)]
    return tuple(methods)


def method_names(table: str | None = None, kind: MethodKind | str | None = None) -> tuple[str, ...]:
    """The names of :func:`registered` methods."""
    return tuple(m.name for m in registered(table, kind))


def get_method(name: str) -> TransferMethod:
    """The method called ``name``; an error naming the registered ones otherwise."""
    _load()
    if name not in _REGISTRY:
        raise InvalidValueError(invalid_value("method", name, f"must be one of {list(method_names())}",
                                              "Pick a registered method (hgprompt_ray/transfer/methods/)."))  # fmt: skip
    return _REGISTRY[name]


def labels(names: Sequence[str]) -> list[str]:
    """The table labels of ``names``."""
    return [get_method(n).label for n in names]


def _load() -> None:
    """Import every member module of the package (each registers itself)."""
    import importlib
    import pkgutil

    import hgprompt_ray.transfer.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in ("registry", "common", "inputs"):
            importlib.import_module(f"{package.__name__}.{module.name}")
