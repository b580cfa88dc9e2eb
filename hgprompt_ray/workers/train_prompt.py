"""Train one VPT prompt (+ linear head) on one task with Ray Train's ``TorchTrainer``.

Recipe (``PromptTrainingConfig``): data-parallel over ``num_workers`` (gloo on CPU, NCCL on
GPU), train800 shuffled per epoch with a seed, AdamW (default) or SGD with momentum 0.9, learning
rate ``base_lr * batch / 256`` with linear warmup and cosine decay per step, cross-entropy. The
backbone is frozen and in eval mode. After every epoch the worker reports train loss and val200
accuracy with a checkpoint (prompt, head, optimizer, scheduler, epoch), so ``FailureConfig``
restarts resume from the last finished epoch. The last report adds test accuracy.

The worker function is thin (CONTRIBUTING.md, "Workers"): dict -> config, then models/data calls, then report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.config import OptimizerName, PromptTrainingConfig
from hgprompt_ray.data import backbone_transform, resolve_target
from hgprompt_ray.models import PromptedViT, autocast, load_backbone, resolve_precision
from hgprompt_ray.models.heads import linear_head
from hgprompt_ray.threads import use_allocated_threads
from hgprompt_ray.workers._trainer import torch_trainer

__all__ = ["TrainedPrompt", "evaluate_accuracy", "train_prompt", "train_prompt_worker", "warmup_cosine"]

logger = logging.getLogger(__name__)
_STATE_FILE = "state.pt"


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def evaluate_accuracy(
    model: PromptedViT, dataset: Any, batch_size: int, device: torch.device, precision: str = "fp32"
) -> float:
    """Top-1 accuracy of the model's head on a labelled dataset (network at ``precision``)."""
    model.eval()
    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with autocast(precision, device):
            logits = model(images.to(device))
        predictions = logits.argmax(dim=1).cpu()
        correct += int((predictions == labels).sum())
        total += int(labels.numel())
    return correct / max(1, total)


def _build(config: PromptTrainingConfig) -> tuple[PromptedViT, dict[str, Any]]:
    backbone = load_backbone(config.backbone, config.img_size)
    task = resolve_target(config.task, data_root=config.data_root)
    transform = backbone_transform(
        config.img_size, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    )
    splits = {
        s: task.split(s, seed=config.split_seed, transform=transform) for s in ("train800", "val200", "test")
    }
    torch.manual_seed(config.seed)
    model = PromptedViT(backbone, config.num_prompt_tokens, num_classes=task.info.num_classes)
    if config.head == "standardised":  # the transfer protocol's head (models/heads.py)
        model.head = linear_head(model.embed_dim, task.info.num_classes)
    return model, splits


def _optimizer(config: PromptTrainingConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(
            parameters, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def _heartbeat(config: PromptTrainingConfig, rank: int, epoch: int) -> None:
    if config.heartbeat_dir:
        atomic_write_json(
            Path(config.heartbeat_dir) / f"{rank}.json",
            {"pid": os.getpid(), "epoch": epoch, "time": time.time()},
        )


def train_prompt_worker(config_dict: dict[str, Any]) -> None:
    """Ray Train worker loop (``train_loop_per_worker``); see the module docstring."""
    import ray.train
    import ray.train.torch

    config = PromptTrainingConfig(**config_dict)
    use_allocated_threads()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    precision = resolve_precision(config.precision, device)
    model, splits = _build(config)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(config, trainable)
    steps_per_epoch = math.ceil(len(splits["train800"]) / (config.batch_size * world))
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, total_steps, round(config.warmup_epochs * steps_per_epoch)),
    )
    start_epoch, resumed_from = 0, -1
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _STATE_FILE, map_location="cpu", weights_only=True)
        model.prompt.data.copy_(state["prompt"])
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = resumed_from = int(state["epoch"]) + 1
        logger.info("rank %d resumes after epoch %d", rank, resumed_from - 1)
    wrapped = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(start_epoch, config.epochs):
        sampler = torch.utils.data.DistributedSampler(
            splits["train800"], num_replicas=world, rank=rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)  # the same order on a rerun: resumption is deterministic
        loader = DataLoader(splits["train800"], batch_size=config.batch_size, sampler=sampler)
        model.train()
        losses = []
        for images, labels in loader:
            with autocast(precision, device):
                logits = wrapped(images.to(device))
            loss = loss_fn(logits.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        val_accuracy = evaluate_accuracy(model, splits["val200"], config.eval_batch_size, device, precision)
        metrics = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_accuracy": val_accuracy,
            "learning_rate": scheduler.get_last_lr()[0],
            "resumed_from_epoch": resumed_from,
            "precision": precision,
        }
        if epoch == config.epochs - 1:
            metrics["test_accuracy"] = evaluate_accuracy(
                model, splits["test"], config.eval_batch_size, device, precision
            )
        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            if rank == 0:
                torch.save(
                    {
                        "prompt": model.prompt.detach().cpu(),
                        "head": model.head.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                    },
                    Path(folder) / _STATE_FILE,
                )
                (Path(folder) / "metrics.json").write_text(json.dumps(metrics))
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=report_checkpoint)
        _heartbeat(config, rank, epoch)


@dataclass(frozen=True)
class TrainedPrompt:
    """What ``train_prompt`` returns.

    Attributes:
        prompt: the learned prompt, (m, d) float32.
        head: the linear head's state dict.
        metrics: the last report (epoch, train_loss, val_accuracy, test_accuracy, ...).
        seconds: wall time of the fit.
        checkpoint_path: where Ray Train stored the final checkpoint.
    """

    prompt: torch.Tensor
    head: dict[str, torch.Tensor]
    metrics: dict[str, Any]
    seconds: float
    checkpoint_path: str


def train_prompt(
    config: PromptTrainingConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool | None = None,
    storage_path: str | Path | None = None,
    name: str | None = None,
    max_failures: int = 2,
    cpus_per_worker: int | None = None,
) -> TrainedPrompt:
    """Fit one prompt with a ``TorchTrainer`` (needs ``ray.init`` done by the caller).

    Args:
        config: the recipe.
        num_workers: data-parallel workers.
        use_gpu: None picks GPUs when the cluster has them.
        storage_path: where runs and checkpoints go (default ``~/ray_results``).
        name: run name; rerunning with the same (storage_path, name) resumes that run.
        max_failures: worker-group restarts allowed (each resumes from the last checkpoint).
        cpus_per_worker: CPUs reserved per worker; Ray sets the worker's ``OMP_NUM_THREADS`` to
            it, so it is torch's thread count. None: an equal share of the cluster's CPUs.
    """
    trainer = torch_trainer(
        train_prompt_worker,
        asdict(config),
        num_workers=num_workers,
        use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker,
        storage_path=storage_path,
        name=name,
        max_failures=max_failures,
        checkpoints_to_keep=2,
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"training {config.task!r} finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / _STATE_FILE, map_location="cpu", weights_only=True)
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
    return TrainedPrompt(state["prompt"], state["head"], metrics, seconds, result.checkpoint.path)
