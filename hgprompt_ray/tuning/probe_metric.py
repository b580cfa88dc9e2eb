"""The trial metric that measures transfer: a probe on the features of the combined prompt.

A trial's weights alpha define the initial target prompt P0 = sum_i alpha_i P_i — what the
method hands to target tuning. The metric is how well P0 transfers, on data the solve did not
use and in units comparable across lambda, M and the objective: one forward pass of P0 over the
extraction's train800 and val200 samples, a logistic probe (``core.probe_head``, fixed l2,
deterministic) fitted on the train800 features and scored on val200 (``val_probe_accuracy``).
The sources' features are never recomputed: only P0 runs.

:class:`ProbeData` holds what that needs (the search's prompts, the preprocessed sample images,
their labels); it is built once per search by one Ray task (:func:`probe_data_task`) and shared
with the trials by ObjectRef. A trial process loads the backbone once and keeps it.

The metric is a deterministic function of P0's bytes and the data, so its results are kept in
``<extraction cache>/probe_metric/<key>.json``; the key is the SHA-256 of P0, the data's
fingerprint (images, labels, class count, the backbone's name and weights, image size, the probe's
l2, :data:`PROBE_METRIC_VERSION`), the device (a GPU's name), the resolved precision and whether
the test diagnostic is asked for. A trial whose P0 another search already scored reads it: the
random-search baseline shares TPE's seeded startup trials (the same configs, the same alpha), so
those ten or so of its 32 trials cost nothing, and results are unchanged. An unreadable entry is
recomputed, and one that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.core.probe_head import fit_probe_head
from hgprompt_ray.models.precision import autocast, resolve_precision

__all__ = ["ProbeData", "probe_accuracy", "probe_data_task"]

PROBE_L2 = 1e-2
"""L2 of the metric's probe (on standardised features)."""
PROBE_METRIC_VERSION = 1
"""Part of every kept result's key: bump it when what the metric computes changes."""
_MODELS: dict[tuple[str, int, int], Any] = {}


class ProbeData(NamedTuple):
    """The inputs of :func:`probe_accuracy` for every trial of a search.

    Attributes:
        backbone: backbone name (``load_backbone``).
        img_size: image size.
        num_classes: the target's classes.
        prompts: the search's prompts, in its order, (K, m, d) float32.
        train_images: train800 samples, preprocessed, (N, 3, H, W) float32; ``train_labels`` (N,).
        val_images: val200 samples, (V, 3, H, W); ``val_labels`` (V,).
        test_images: test samples for the ``test_probe_accuracy`` diagnostic, (T, 3, H, W), or
            None; ``test_labels`` (T,) or None.
        names: the names of ``prompts``, in order (a trial checks them against its statistics').
        precision: the network precision of P0's forward (the extraction's setting; ``auto``
            resolves in each trial for its device: a GPU when the trial holds a GPU share).
        fingerprint: SHA-256 of what the metric reads besides P0, the device and the resolved
            precision (see the module); set by :func:`probe_data_task`. "" (a hand-built
            instance): nothing is kept. Replacing a data field of an instance that has one
            needs ``fingerprint=""`` (or a new one): it is not recomputed.
        cache_dir: where results are kept by key (None: not kept).
    """

    backbone: str
    img_size: int
    num_classes: int
    prompts: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    names: tuple[str, ...] = ()
    precision: str = "auto"
    fingerprint: str = ""
    cache_dir: str | None = None


def probe_data_task(extraction: Any, task: Any, test_samples: int = 0) -> ProbeData:
    """Ray task body: the images of the extraction's drawn train800/val200 samples and its prompts.

    Args:
        extraction: the search's ``ExtractionConfig`` (samples, seeds, prompts, backbone).
        task: the resolved target task.
        test_samples: also this many test images (the seeded subset of ``transfer.splits``) for
            the ``test_probe_accuracy`` diagnostic; 0: none.
    """
    from hgprompt_ray.data import backbone_transform
    from hgprompt_ray.models import load_backbone
    from hgprompt_ray.paths import cache_root
    from hgprompt_ray.prompts import PromptLibrary
    from hgprompt_ray.threads import use_allocated_threads
    from hgprompt_ray.workers.extract import sample_indices
    from hgprompt_ray.workers.extract.keys import backbone_fingerprint

    use_allocated_threads()
    backbone = load_backbone(extraction.backbone, extraction.img_size)
    config = backbone.pretrained_cfg
    transform = backbone_transform(extraction.img_size, config["mean"], config["std"])
    arrays = []
    for split in ("train800", "val200"):
        data = task.split(split, seed=extraction.split_seed, transform=transform)
        chosen = sample_indices(len(data), extraction.num_samples, extraction.sample_seed, split)
        arrays.append(torch.stack([data[int(i)][0] for i in chosen]).numpy())
        arrays.append(np.asarray([int(data.labels[int(i)]) for i in chosen], dtype=np.int64))
    if test_samples:
        data = task.split("test", seed=extraction.split_seed, transform=transform)
        chosen = np.sort(
            np.random.default_rng(0).choice(len(data), min(test_samples, len(data)), replace=False)
        )
        test = [torch.stack([data[int(i)][0] for i in chosen]).numpy()]
        test.append(np.asarray([int(data.labels[int(i)]) for i in chosen], dtype=np.int64))
    library = PromptLibrary(extraction.library)
    names = list(extraction.prompts) or library.names  # empty: every prompt, as the extraction
    prompts = library.load_many(names, backbone=extraction.backbone, embed_dim=backbone.embed_dim)
    data = ProbeData(
        extraction.backbone,
        extraction.img_size,
        int(task.info.num_classes),
        prompts.float().numpy(),
        *arrays,
        *(test if test_samples else (None, None)),
        tuple(names),
        precision=extraction.precision,
    )
    root = Path(extraction.cache_dir).expanduser() if extraction.cache_dir else cache_root() / "extraction"
    fingerprint = _fingerprint(data, backbone_fingerprint(backbone))
    return data._replace(fingerprint=fingerprint, cache_dir=str(root / "probe_metric"))


def _fingerprint(data: ProbeData, weights: str) -> str:
    """SHA-256 over the metric's inputs other than P0 (arrays by dtype, shape and bytes), the
    backbone's weights' fingerprint ``weights`` and the code's version."""
    digest = hashlib.sha256(json.dumps([data.backbone, weights, data.img_size, data.num_classes,
                                        data.precision, PROBE_L2, PROBE_METRIC_VERSION]).encode())  # fmt: skip
    for array in (data.train_images, data.train_labels, data.val_images, data.val_labels,
                  data.test_images, data.test_labels):  # fmt: skip
        if array is None:
            digest.update(b"|none")
        else:
            contiguous = np.ascontiguousarray(array)
            digest.update(f"|{contiguous.dtype.str}{contiguous.shape}|".encode())
            digest.update(memoryview(contiguous).cast("B"))
    return digest.hexdigest()


def _model(data: ProbeData) -> Any:
    from hgprompt_ray.models import PromptedViT, load_backbone

    device = "cuda" if torch.cuda.is_available() else "cpu"  # a trial sees a GPU only if it holds a share
    key = (data.backbone, data.img_size, int(data.prompts.shape[1]), device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = PromptedViT(load_backbone(data.backbone, data.img_size), key[2]).eval().to(device)
    return _MODELS[key]


@torch.inference_mode()
def _features(
    model: Any, images: np.ndarray, prompt: torch.Tensor, precision: str, batch_size: int = 64
) -> np.ndarray:
    device = next(model.parameters()).device
    prompt = prompt.to(device)
    with autocast(precision, device), warnings.catch_warnings():
        # ``images`` is a read-only view of the object store (zero copy); the forward only reads
        # it, so torch's warning about non-writable arrays is noise in every trial's log
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        chunks = [
            model.forward_features(
                torch.from_numpy(images[i : i + batch_size]).to(device), prompt.unsqueeze(0)
            )[0]
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(chunks).float().cpu().double().numpy()


def probe_accuracy(data: ProbeData, subset: Any, alpha: Any, test: bool = False) -> Any:
    """val200 accuracy of a probe fitted on train800 features of P0 = sum_k alpha_k P_subset[k];
    with ``test``, the pair (val accuracy, test accuracy) of the same probe.

    Shape:
        subset: (M,) positions into ``data.prompts``; alpha: (M,) on the simplex.
    """
    prompts = torch.from_numpy(np.asarray(data.prompts)[np.asarray(subset)])
    weights = torch.as_tensor(np.asarray(alpha, dtype=np.float64), dtype=prompts.dtype)
    combined = torch.einsum("k,kmd->md", weights, prompts)
    path = _cache_path(data, combined, test)
    if path is not None and path.is_file():
        try:
            kept = json.loads(path.read_text())
            return (float(kept["val"]), float(kept["test"])) if test else float(kept["val"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable (e.g. a foreign file): recomputed and rewritten below
    result = _probe(data, combined, test)
    if path is not None:
        try:
            atomic_write_json(path, {"val": result[0], "test": result[1]} if test else {"val": result})
        except OSError as error:
            warnings.warn(f"val-probe result not kept in {path.parent}: {error}", stacklevel=2)
    return result


def _cache_path(data: ProbeData, combined: torch.Tensor, test: bool) -> Path | None:
    """Where the metric of P0 = ``combined`` on ``data`` is kept (None: no cache)."""
    if not (data.cache_dir and data.fingerprint):
        return None
    cuda = torch.cuda.is_available()  # as _model: the forward's device
    device = f"cuda:{torch.cuda.get_device_name(0)}" if cuda else "cpu"
    precision = resolve_precision(data.precision, "cuda" if cuda else "cpu")
    digest = hashlib.sha256(f"{data.fingerprint}|{device}|{precision}|test={bool(test)}|".encode())
    digest.update(memoryview(np.ascontiguousarray(combined.numpy())).cast("B"))
    return Path(data.cache_dir) / f"{digest.hexdigest()}.json"


def _probe(data: ProbeData, combined: torch.Tensor, test: bool) -> Any:
    """:func:`probe_accuracy` computed: P0's forwards, the probe, its val (and test) accuracy."""
    model = _model(data)
    train = _features(model, data.train_images, combined, data.precision)
    val = _features(model, data.val_images, combined, data.precision)
    head = fit_probe_head(train, data.train_labels, data.num_classes, l2=PROBE_L2)
    weight, bias = head.folded(torch.float64)
    predicted = (torch.from_numpy(val) @ weight.T + bias).argmax(1).numpy()
    accuracy = float((predicted == data.val_labels).mean())
    if not test:
        return accuracy
    if data.test_images is None:
        raise ValueError("probe_accuracy(test=True) needs ProbeData built with test_samples > 0")
    scores = torch.from_numpy(_features(model, data.test_images, combined, data.precision)) @ weight.T + bias
    return accuracy, float((scores.argmax(1).numpy() == data.test_labels).mean())
