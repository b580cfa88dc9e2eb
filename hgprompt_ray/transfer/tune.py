"""Tune a target prompt (+ head) from an initial prompt under the VTAB-1k protocol.

See :class:`hgprompt_ray.config.TransferConfig` for the protocol and the recipe. Three kinds of
run share it: ``prompt`` (VPT-shallow from a given or a fresh prompt: HGPrompt, Average,
Single-Best, SPoT, the ablations, VPT from scratch), ``attempt`` (ATTEMPT's attentional
mixture of the frozen sources) and ``probe`` (a linear probe on the frozen backbone: C chosen
on val200, refit on train800val200).
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hgprompt_ray.config import TransferConfig
from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.transfer.attempt import AttemptClassifier
from hgprompt_ray.transfer.linear_probe import linear_probe
from hgprompt_ray.transfer.splits import config_splits
from hgprompt_ray.workers.train_prompt import evaluate_accuracy, warmup_cosine

__all__ = ["RUN_KINDS", "TransferResult", "brief_tune", "tune_transfer"]

logger = logging.getLogger(__name__)
RUN_KINDS = ("prompt", "attempt", "probe")


class TransferResult(NamedTuple):
    """One tuned run.

    Attributes:
        test_accuracy: top-1 on test after the final (train800val200) fit.
        val_accuracy: the best val200 accuracy of the train800 fit.
        selected_steps: s*, the step count chosen on val200 (0 for a probe).
        val_curve: (step, val200 accuracy) pairs of the train800 fit.
        train_loss: mean loss of the final fit's last quarter of steps (nan for a probe).
        num_test: test images scored.
        seconds: wall time.
        prompt: the final prompt (m, d) (None for a probe or ATTEMPT).
    """

    test_accuracy: float
    val_accuracy: float
    selected_steps: int
    val_curve: list[tuple[int, float]]
    train_loss: float
    num_test: int
    seconds: float
    prompt: torch.Tensor | None


def _batches(dataset: Any, batch_size: int, generator: torch.Generator) -> Any:
    """An endless stream of shuffled batches (a fresh permutation per pass)."""
    drop_last = len(dataset) > batch_size  # a one-image batch would break the head's BatchNorm
    while True:
        yield from DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last
        )


def _classifier(
    kind: str,
    backbone: Any,
    config: TransferConfig,
    num_classes: int,
    num_prompt_tokens: int,
    initial: torch.Tensor | None,
    sources: torch.Tensor | None,
) -> nn.Module:
    torch.manual_seed(config.seed)
    model = PromptedViT(backbone, num_prompt_tokens, num_classes=num_classes)
    linear = nn.Linear(model.embed_dim, num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    # MAE's linear-probe head: a BatchNorm without affine parameters standardises the features
    # (cumulative statistics, momentum=None), so a few AdamW steps suffice; the raw CLS features
    # of a ViT have large shared offsets that a zero-initialised head needs many steps to undo.
    model.head = nn.Sequential(nn.BatchNorm1d(model.embed_dim, affine=False, momentum=None), linear)
    generator = torch.Generator().manual_seed(config.seed)
    model.reset_prompt(generator)
    if initial is not None:
        model.set_prompt(initial)
    if kind == "attempt":
        if sources is None:
            raise InvalidValueError(invalid_value("sources", None, "are required for ATTEMPT", ""))
        return AttemptClassifier(model, sources)
    return model


def _fit(
    classifier: nn.Module,
    dataset: Any,
    steps: int,
    config: TransferConfig,
    device: torch.device,
    evaluate_at: tuple[int, ...] = (),
    val_dataset: Any = None,
) -> tuple[list[float], list[tuple[int, float]]]:
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = round(config.warmup_fraction * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    stream = _batches(dataset, config.batch_size, generator)
    classifier.train()
    for step in range(1, steps + 1):
        images, labels = next(stream)
        loss = loss_fn(classifier(images.to(device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step in evaluate_at:
            curve.append((step, evaluate_accuracy(classifier, val_dataset, config.eval_batch_size, device)))
            classifier.train()
    return losses, curve


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tune_transfer(
    config: TransferConfig,
    kind: str = "prompt",
    *,
    initial: torch.Tensor | None = None,
    sources: torch.Tensor | None = None,
    num_prompt_tokens: int | None = None,
    backbone: Any = None,
) -> TransferResult:
    """Run the VTAB-1k protocol for one method on one target.

    Args:
        config: target, budget and seeds.
        kind: ``"prompt"``, ``"attempt"`` or ``"probe"``.
        initial: the initial prompt (m, d); None draws VPT's uniform init with ``config.seed``.
        sources: (K, m, d) frozen source prompts (``"attempt"`` only).
        num_prompt_tokens: m when ``initial`` is None (default: the sources' m).
        backbone: a loaded backbone to reuse (default: ``load_backbone(config.backbone, ...)``).
    """
    if kind not in RUN_KINDS:
        raise InvalidValueError(invalid_value("kind", kind, f"must be one of {list(RUN_KINDS)}", ""))
    start = time.perf_counter()
    device = _device()
    backbone = backbone if backbone is not None else load_backbone(config.backbone, config.img_size)
    backbone = backbone.to(device)
    task, datasets, labels = config_splits(config, backbone)
    num_test = int(len(labels["test"]))
    if kind == "probe":
        return _probe(backbone, datasets, labels, config, num_test, start)
    if initial is not None:
        tokens = int(initial.shape[0])
    elif sources is not None:
        tokens = int(sources.shape[1])
    elif num_prompt_tokens is not None:
        tokens = num_prompt_tokens
    else:
        raise InvalidValueError(
            invalid_value("num_prompt_tokens", None, "is required without initial or sources", "Pass m.")
        )
    num_classes = task.info.num_classes

    def build() -> nn.Module:
        return _classifier(kind, backbone, config, num_classes, tokens, initial, sources).to(device)

    classifier = build()
    _, curve = _fit(
        classifier,
        datasets["train800"],
        config.steps,
        config,
        device,
        evaluate_at=config.eval_steps,
        val_dataset=datasets["val200"],
    )
    best_step, best_val = max(curve, key=lambda item: (item[1], -item[0]))
    classifier = build()
    losses, _ = _fit(classifier, datasets["train800val200"], best_step, config, device)
    test_accuracy = evaluate_accuracy(classifier, datasets["test"], config.eval_batch_size, device)
    prompt = None
    if kind == "prompt":
        prompt = classifier.prompt.detach().cpu().clone()  # type: ignore[union-attr]
    tail = losses[-max(1, len(losses) // 4) :]
    return TransferResult(
        float(test_accuracy),
        float(best_val),
        int(best_step),
        [(int(s), float(a)) for s, a in curve],
        float(np.mean(tail)),
        num_test,
        time.perf_counter() - start,
        prompt,
    )


def _probe(
    backbone: Any,
    datasets: dict[str, Any],
    labels: dict[str, np.ndarray],
    config: TransferConfig,
    num_test: int,
    start: float,
) -> TransferResult:
    bare = PromptedViT(backbone, num_prompt_tokens=0).eval()
    features = {
        s: extract_cls_features(bare, datasets[s], batch_size=config.eval_batch_size)
        for s in ("train800", "val200", "test")
    }
    chosen = linear_probe(*[(features[s], labels[s]) for s in ("train800", "val200", "test")])
    final_train = (
        np.concatenate([features["train800"], features["val200"]]),
        np.concatenate([labels["train800"], labels["val200"]]),
    )
    final = linear_probe(
        final_train,
        (features["val200"], labels["val200"]),
        (features["test"], labels["test"]),
        grid=(chosen.c,),
    )
    return TransferResult(
        final.test_accuracy,
        chosen.val_accuracy,
        0,
        [],
        float("nan"),
        num_test,
        time.perf_counter() - start,
        None,
    )


def brief_tune(
    config: TransferConfig, num_prompt_tokens: int, steps: int, backbone: Any = None
) -> torch.Tensor:
    """SPoT's target embedding: a prompt tuned from VPT's init on train800 for a few steps.

    Shape:
        returns: (m, d).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidValueError(invalid_value("steps", steps, "must be a positive integer", "e.g. 8."))
    device = _device()
    backbone = backbone if backbone is not None else load_backbone(config.backbone, config.img_size)
    backbone = backbone.to(device)
    task, datasets, _ = config_splits(config, backbone, ("train800",))
    classifier = _classifier("prompt", backbone, config, task.info.num_classes, num_prompt_tokens, None, None)
    classifier = classifier.to(device)
    _fit(classifier, datasets["train800"], steps, config, device)
    return classifier.prompt.detach().cpu().clone()  # type: ignore[union-attr]
