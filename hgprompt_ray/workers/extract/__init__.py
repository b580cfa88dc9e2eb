"""Distributed extraction: prompt-sharded Ray Train workers compute features and gradient
statistics, publish them as Arrow tables in the object store, and cache them as Parquet.

Data flow (``extract(config)`` on the driver):

1. The driver resolves the target and the prompts, draws the sample indices of each split
   (``sample_seed``), fingerprints the backbone weights, and derives a content address for every
   output: one feature table per (prompt, split) and one gradient table for the prompt set.
   Everything already in the Parquet cache is not recomputed; a prompt subset's gradient table
   is cut from a cached superset's (same samples, head and precision: ``cache.derive_gradients``).
   When all of it is cached no worker starts at all. The target is resolved once, here: the
   plan carries the resolved task to the workers, which never resolve the target by name again.
2. Otherwise a ``TorchTrainer`` starts ``num_workers`` workers. Rank r takes the prompts at
   positions r, r + W, r + 2W, ... (a deterministic shard), loads the backbone and its prompts
   onto its device and, per split, runs the samples once per batch with all its prompts in one
   K-prompt forward (the patch embedding is computed once per batch). Each finished table is
   written to the cache (atomically) and handed to the detached :class:`FeatureStore` actor,
   which owns it, so it outlives the worker.
3. Gradients: one head defines the loss of every prompt's g^i_j (``core.probe_head``: by default
   a logistic head fitted on rank 0 on the bare backbone's features of samples disjoint from the
   gradient samples, 2-fold cross-fitted, and broadcast to every rank); each rank computes
   per-sample gradients wrt its prompts (one batched backward per batch), at the resolved precision.
   L_align needs the M x M second moments of all prompts' gradients at each coordinate, which no
   single prompt shard has, so after each batch the ranks all-gather the (B, M, p) gradients and
   each rank folds only its 1/W of the p coordinates into Welford moments (``core.alignment``;
   mean and M2, from which the uncentred R follows exactly). Nothing ever holds M x N x p; each
   rank holds M x M x p / W moments. Rank 0 gathers the coordinate shards into one table, whose
   metadata records the head's held-out accuracy and each prompt's mean gradient norm.
4. A worker that dies is restarted by ``FailureConfig``; the restarted group finds the tables
   already cached and computes only the rest (the gradient pass restarts from its beginning).
   The computation is deterministic for a given world size, so the result is bit-identical to
   an undisturbed run.
5. The driver makes sure every table is in the store and in its own cache (tables made on other
   nodes are written to the driver's cache from the store) and returns an :class:`Extraction`:
   the keys, the ObjectRefs for trials and zero-copy numpy views.

Modules: ``keys`` (fingerprints, sample draws, the key digest), ``cache`` (the Parquet cache),
``plan`` (step 1), ``worker`` (steps 2-4, the Ray Train loop), ``handle`` (step 5 and
:func:`extract`).
"""

from __future__ import annotations

from hgprompt_ray.workers.extract.cache import ExtractionCache
from hgprompt_ray.workers.extract.handle import Extraction, extract
from hgprompt_ray.workers.extract.keys import (
    EXTRACTION_CODE_VERSION,
    backbone_fingerprint,
    sample_indices,
    target_fingerprint,
)
from hgprompt_ray.workers.extract.plan import ExtractionPlan, make_plan
from hgprompt_ray.workers.extract.worker import extract_worker

__all__ = [
    "EXTRACTION_CODE_VERSION",
    "Extraction",
    "ExtractionCache",
    "ExtractionPlan",
    "backbone_fingerprint",
    "extract",
    "extract_worker",
    "make_plan",
    "sample_indices",
    "target_fingerprint",
]
