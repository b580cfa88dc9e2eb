"""Run one registered method on one target under the VTAB-1k protocol, one budget for all.

See :class:`hgprompt_ray.config.TransferConfig` for the protocol. The selection phase
(:func:`select_setting`) gets train800 and val200 only — the learning rate is chosen there, on
val200 after the whole schedule — and only then does :func:`tune_transfer` refit on
train800val200 with the same schedule and score test. Every method trains for the same epochs. The linear probe (``closed_form``) is fitted by L-BFGS to
convergence instead (C chosen on val200). Every network pass runs under
``models.precision.autocast(config.precision)``.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.models.precision import autocast, resolve_precision
from hgprompt_ray.transfer.linear_probe import linear_probe
from hgprompt_ray.transfer.methods import TransferMethod, get_method
from hgprompt_ray.transfer.methods.common import BuildContext, FeatureCache, prompt_classifier
from hgprompt_ray.transfer.splits import config_splits
from hgprompt_ray.workers.train_prompt import evaluate_accuracy, warmup_cosine

__all__ = [
    "Selection",
    "TransferResult",
    "brief_tune",
    "count_trainable",
    "probe_transfer",
    "select_setting",
    "tune_transfer",
]

logger = logging.getLogger(__name__)
_FAST_GROUP = ("head.*", "*prompt", "*.head.*", "side_alpha")
"""Parameters that learn at the config's ``base_lr`` (the head, the prompts, SideTune's blending
weight, a scalar of the head's kind) in every method."""


class TransferResult(NamedTuple):
    """One run of one method.

    Attributes:
        test_accuracy: top-1 on test after the train800val200 refit.
        val_accuracy: val200 accuracy at the end of the chosen scale's selection fit.
        lr_scale: the chosen learning-rate scale (nan for a closed-form fit).
        epochs: the epochs trained, the budget's (0 for a closed-form fit).
        val_curve: (lr scale, epoch, val200 accuracy) of every selection fit, per epoch.
        loss_curve: (lr scale, epoch, mean training loss over the epoch) of the same fits.
        trainable_parameters: parameters that train (the probe: its weights and biases).
        num_test: test images scored.
        seconds: wall time.
        precision: the resolved precision (``fp32`` or ``bf16``).
        prompt: the final prompt (m, d) of prompt-tuned runs, else None.
    """

    test_accuracy: float
    val_accuracy: float
    lr_scale: float
    epochs: float
    val_curve: list[tuple[float, float, float]]
    loss_curve: list[tuple[float, float, float]]
    trainable_parameters: int
    num_test: int
    seconds: float
    precision: str
    prompt: torch.Tensor | None


class Selection(NamedTuple):
    """The choice made on val200: (scale, epochs of the schedule, val accuracy at its end) and
    the curves behind it."""

    lr_scale: float
    epochs: float
    val_accuracy: float
    val_curve: list[tuple[float, float, float]]
    loss_curve: list[tuple[float, float, float]]


class _Indexed(Dataset):  # type: ignore[type-arg]
    """(image, label, index): the index lets a method keep per-image state (PANDA's teacher)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        image, label = self.dataset[index]
        return image, label, index


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def count_trainable(module: nn.Module) -> int:
    """Parameters with ``requires_grad`` (the VPT paper's 'tuned parameters')."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _optimizer(classifier: nn.Module, method: TransferMethod, config: TransferConfig, scale: float) -> Any:
    fast, other = [], []
    for name, parameter in classifier.named_parameters():
        if parameter.requires_grad:
            quick = method.base_lr is None or any(fnmatch.fnmatchcase(name, p) for p in _FAST_GROUP)
            (fast if quick else other).append(parameter)
    groups = [{"params": fast, "lr": config.learning_rate * scale}]
    if other:
        groups.append({"params": other, "lr": float(method.base_lr or 0) * config.batch_size / 256.0 * scale})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _loss(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    custom = getattr(classifier, "training_loss", None)
    if custom is not None:
        return custom(images, labels, indices)  # type: ignore[no-any-return]
    return nn.functional.cross_entropy(classifier(images), labels)


def _fit(
    classifier: nn.Module,
    dataset: Any,
    epochs: float,
    method: TransferMethod,
    config: TransferConfig,
    scale: float,
    device: torch.device,
    on_epoch: Callable[[float, float], None] | None = None,
) -> None:
    """AdamW with warmup and cosine decay for ``epochs`` epochs (capped at ``config.max_steps``);
    ``on_epoch(epoch, mean loss)`` after every epoch and after the last step."""
    generator = torch.Generator().manual_seed(config.seed)
    drop_last = len(dataset) > config.batch_size  # a one-image batch would break the head's BatchNorm
    loader = DataLoader(_Indexed(dataset), batch_size=config.batch_size, shuffle=True, generator=generator,
                        drop_last=drop_last)  # fmt: skip
    per_epoch = len(loader)
    total = max(1, round(epochs * per_epoch))
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer = _optimizer(classifier, method, config, scale)
    warmup = round(config.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    classifier.train()
    step, losses = 0, []
    while step < total:
        for images, labels, indices in loader:
            with autocast(config.precision, device):
                loss = _loss(classifier, images.to(device), labels.to(device), indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.item()))
            step += 1
            if on_epoch is not None and (step % per_epoch == 0 or step == total):
                on_epoch(step / per_epoch, float(np.mean(losses[-(((step - 1) % per_epoch) + 1) :])))
                classifier.train()
            if step >= total:
                break


def _accuracy(classifier: nn.Module, dataset: Any, config: TransferConfig, device: torch.device) -> float:
    # evaluate_accuracy opens its own autocast (fp32 by default): pass the training's precision
    return float(evaluate_accuracy(classifier, dataset, config.eval_batch_size, device,  # type: ignore[arg-type]
                                   config.precision))  # fmt: skip


def select_setting(
    build: Callable[[], nn.Module],
    method: TransferMethod,
    config: TransferConfig,
    train800: Any,
    val200: Any,
    device: torch.device,
) -> Selection:
    """Fit on train800 at every scale of ``config.lr_scales`` for the budget's epochs and keep the
    scale with the best val200 accuracy at the end of its schedule (ties: the earlier scale of the
    grid). Every method trains for the same epochs (the VTAB-1k protocol selects hyperparameters,
    not a stopping epoch): an epoch picked mid-schedule, at a high learning rate, is not the model
    a refit reproduces. val200 is also scored after every epoch, for the learning curve only.
    Reads train800 and val200 only (it is never given test)."""
    val_curve: list[tuple[float, float, float]] = []
    loss_curve: list[tuple[float, float, float]] = []
    for scale in config.lr_scales:
        classifier = build()

        def score(epoch: float, loss: float, scale: float = scale, classifier: nn.Module = classifier) -> None:
            val_curve.append((scale, epoch, _accuracy(classifier, val200, config, device)))
            loss_curve.append((scale, epoch, loss))
            logger.info("%s %s seed %d: lr x%g, epoch %.2f/%g: train loss %.3f, val200 %.3f", config.task,
                        method.name, config.seed, scale, epoch, config.epochs, loss, val_curve[-1][2])  # fmt: skip

        _fit(classifier, train800, config.epochs, method, config, scale, device, on_epoch=score)
    order = {s: i for i, s in enumerate(config.lr_scales)}
    last = {s: (s, e, a) for s, e, a in val_curve}  # each scale's final score (after the last step)
    scale, epochs, accuracy = max(last.values(), key=lambda item: (item[2], -order[item[0]]))
    return Selection(scale, epochs, accuracy, val_curve, loss_curve)


def tune_transfer(
    config: TransferConfig,
    method: str | TransferMethod,
    *,
    settings: Any = None,
    initial: torch.Tensor | None = None,
    sources: torch.Tensor | None = None,
    weights: Any = None,
    num_prompt_tokens: int | None = None,
    backbone: Any = None,
) -> TransferResult:
    """Run the protocol (module docstring) for one method on one target.

    Args:
        config: target, budget, seeds and precision.
        method: a registered method or its name.
        settings: the method's settings (default: its defaults).
        initial: a weighting's initial prompt P0 (m, d).
        sources: the frozen source prompts (K, m, d) (ATTEMPT, PANDA).
        weights: the method's weights over the sources (PANDA's transferability).
        num_prompt_tokens: m when neither ``initial`` nor ``sources`` gives it.
        backbone: a loaded backbone to reuse (never modified).
    """
    method = get_method(method) if isinstance(method, str) else method
    settings = method.default_settings() if settings is None else settings
    start = time.perf_counter()
    device = _device()
    precision = resolve_precision(config.precision, device)
    backbone = (backbone if backbone is not None else load_backbone(config.backbone, config.img_size)).to(device)
    task, datasets, labels = config_splits(config, backbone)
    num_test = int(len(labels["test"]))
    if method.closed_form:
        accuracy, val, parameters = _probe(backbone, datasets, labels, config, device)
        return TransferResult(accuracy, val, math.nan, 0, [], [], parameters, num_test,
                              time.perf_counter() - start, precision, None)  # fmt: skip
    tokens = _tokens(initial, sources, num_prompt_tokens)
    context = BuildContext(backbone, int(task.info.num_classes), tokens, config.seed, settings, initial, sources,
                           None if weights is None else np.asarray(weights, dtype=np.float64),
                           FeatureCache())  # one run's fits share the frozen features  # fmt: skip

    def build() -> nn.Module:
        model = prompt_classifier(context) if method.is_weighting else method.build(context)  # type: ignore[misc]
        return model.to(device)

    chosen = select_setting(build, method, config, datasets["train800"], datasets["val200"], device)
    logger.info("%s %s seed %d: refit on train800val200 at lr x%g for %g epochs (val200 %.3f)", config.task,
                method.name, config.seed, chosen.lr_scale, config.epochs, chosen.val_accuracy)  # fmt: skip
    classifier = build()
    _fit(classifier, datasets["train800val200"], config.epochs, method, config, chosen.lr_scale, device)
    test_accuracy = _accuracy(classifier, datasets["test"], config, device)
    prompt = classifier.prompt if isinstance(classifier, PromptedViT) else None  # VPT and the weightings
    return TransferResult(
        test_accuracy, chosen.val_accuracy, chosen.lr_scale, chosen.epochs, chosen.val_curve, chosen.loss_curve,
        count_trainable(classifier), num_test, time.perf_counter() - start, precision,
        None if prompt is None else prompt.detach().cpu().clone(),
    )  # fmt: skip


def _tokens(initial: torch.Tensor | None, sources: torch.Tensor | None, num_prompt_tokens: int | None) -> int:
    if initial is not None:
        return int(initial.shape[0])
    if sources is not None:
        return int(sources.shape[1])
    if num_prompt_tokens is not None:
        return int(num_prompt_tokens)
    raise InvalidValueError(
        invalid_value("num_prompt_tokens", None, "is required without initial or sources", "Pass m.")
    )


def _probe(
    backbone: Any,
    datasets: dict[str, Any],
    labels: dict[str, np.ndarray],
    config: TransferConfig,
    device: Any,
    prompt: torch.Tensor | None = None,
) -> tuple[float, float, int]:
    """A logistic probe on frozen CLS features under ``prompt`` (None: the bare backbone): C
    chosen on val200 after fits on train800, refit on train800val200 with it, scored on test.
    Returns (test accuracy, val accuracy, the probe's parameters)."""
    tokens = 0 if prompt is None else int(prompt.shape[0])
    model = PromptedViT(backbone, num_prompt_tokens=tokens).eval()
    stacked = None if prompt is None else prompt.detach().to(device=device, dtype=torch.float32)[None]
    with autocast(config.precision, device):
        features = {s: extract_cls_features(model, datasets[s], prompts=stacked, batch_size=config.eval_batch_size)
                    for s in ("train800", "val200", "test")}  # fmt: skip
    if stacked is not None:  # (K=1, N, d) -> (N, d)
        features = {s: f[0] if f.ndim == 3 else f for s, f in features.items()}
    chosen = linear_probe(*[(features[s], labels[s]) for s in ("train800", "val200", "test")])
    final_train = (
        np.concatenate([features["train800"], features["val200"]]),
        np.concatenate([labels["train800"], labels["val200"]]),
    )
    final = linear_probe(final_train, (features["val200"], labels["val200"]), (features["test"], labels["test"]),
                         grid=(chosen.c,))  # fmt: skip
    classes = len(np.unique(final_train[1]))
    parameters = (features["train800"].shape[1] + 1) * (classes if classes > 2 else 1)
    return final.test_accuracy, chosen.val_accuracy, int(parameters)


def probe_transfer(
    config: TransferConfig, prompt: torch.Tensor | None = None, backbone: Any = None
) -> TransferResult:
    """The ``init-probe`` protocol: a logistic probe on the target's features under the initial
    prompt P0 (``prompt``, (m, d); None: the bare backbone, which is the linear probe).

    Nothing trains but the probe: C in ``linear_probe.PROBE_GRID`` is chosen on val200 after fits
    on train800, the probe is refitted on train800val200 with it and scored on test. The
    evaluation gives seed k the train800/val200 draw ``split_seed + k``, since the probe itself is
    deterministic. The test subset is fixed where the dataset has its own test split; on a pool
    (the offline suite, a folder or a CSV) test is what the draw leaves over, so it moves with k.
    """
    start = time.perf_counter()
    device = _device()
    precision = resolve_precision(config.precision, device)
    backbone = (backbone if backbone is not None else load_backbone(config.backbone, config.img_size)).to(device)
    _, datasets, labels = config_splits(config, backbone)
    accuracy, val, parameters = _probe(backbone, datasets, labels, config, device, prompt)
    return TransferResult(accuracy, val, math.nan, 0, [], [], parameters, int(len(labels["test"])),
                          time.perf_counter() - start, precision, None)  # fmt: skip


def brief_tune(
    config: TransferConfig, num_prompt_tokens: int, steps: int, backbone: Any = None
) -> torch.Tensor:
    """SPoT's target embedding: a prompt tuned from VPT's init on train800 for a few steps.

    Shape:
        returns: (m, d).
    """
    import dataclasses

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidValueError(invalid_value("steps", steps, "must be a positive integer", "e.g. 8."))
    device = _device()
    backbone = (backbone if backbone is not None else load_backbone(config.backbone, config.img_size)).to(device)
    task, datasets, _ = config_splits(config, backbone, ("train800",))
    context = BuildContext(backbone, int(task.info.num_classes), num_prompt_tokens, config.seed)
    classifier = prompt_classifier(context).to(device)
    capped = dataclasses.replace(config, max_steps=steps, epochs=steps)  # every epoch has >= 1 step
    _fit(classifier, datasets["train800"], capped.epochs, get_method("vpt"), capped, 1.0, device)
    return classifier.prompt.detach().cpu().clone()  # type: ignore[union-attr]
