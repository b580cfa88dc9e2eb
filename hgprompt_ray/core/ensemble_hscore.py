"""Exact ensemble H-score H(alpha) = H(sum_i alpha_i f_i) from N-independent statistics.

For M prompts with centred target features X_k (N x d) and labels y, every quantity the H-score
needs is a polynomial in alpha whose coefficients are computed once:

* covariance: S(alpha) = X(alpha)^T X(alpha) / N = sum_kl alpha_k alpha_l S_kl,
  S_kl = X_k^T X_l / N                                         (M x M x d x d)
* class means: D(alpha) = sum_k alpha_k D_k, D_k[c] = mu^k_c - mu^k  (M x C x d)
* Ledoit-Wolf needs sum_n ||x_n(alpha)||^4, and ||x_n(alpha)||^2 = alpha^T G_n alpha with
  G_n[k, l] = <x^k_n, x^l_n>; so sum_n ||x_n||^4 = sum_klmp alpha_k alpha_l alpha_m alpha_p T_klmp,
  T_klmp = sum_n G_n[k, l] G_n[m, p]                            (M x M x M x M)

One evaluation costs O(M^2 d^2 + d^3 + M^4) and does not depend on N.

**Two ways to hold them for a library of K prompts.** :func:`ensemble_statistics` computes every
pair block at once: K^2 d^2 + K^4 float64 (47 GB at K = 200, d = 384), the right form for a small
library. :class:`OnDemandHStatistics` keeps only the K prompts' centred features (K N d, linear in
K) and builds the statistics of the M prompts a trial asks for when it asks, from pair blocks it
computes on first use and keeps in a bounded least-recently-used cache (shared by every trial
that runs in the same process). Both give the same :class:`EnsembleHStatistics` for a subset, up
to the rounding of the matrix products (a test checks 1e-12).

**How shrinkage applies to the combined covariance.** The regularised score is the Ledoit-Wolf
H-score of the combined features f(alpha) = sum_i alpha_i f_i, exactly: the shrinkage a(alpha)
is re-estimated for every alpha from the statistics above (scikit-learn's formula), not fixed
per prompt or interpolated, so the result equals ``regularized_h_score(sum_i alpha_i f_i, y)``.

Shape conventions: M prompts, N samples, d feature width, C classes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import check_features_labels, to_numpy
from hgprompt_ray.core.hscore import _shrink, trace_solve
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "EnsembleHStatistics",
    "OnDemandHStatistics",
    "ensemble_h_score",
    "ensemble_h_score_torch",
    "ensemble_statistics",
    "per_source_h_scores",
]


class EnsembleHStatistics(NamedTuple):
    """N-independent statistics of M prompts' features on one labelled sample set.

    Attributes:
        second_moment: S_kl = X_k^T X_l / N of the centred features, (M, M, d, d) float64.
        deviations: class mean minus overall mean per prompt, (M, C, d) float64.
        class_counts: samples per class, (C,) int64.
        fourth_moment: T_klmp = sum_n G_n[k, l] G_n[m, p], (M, M, M, M) float64.
        num_samples: N.
    """

    second_moment: np.ndarray
    deviations: np.ndarray
    class_counts: np.ndarray
    fourth_moment: np.ndarray
    num_samples: int

    @property
    def num_prompts(self) -> int:
        return int(self.second_moment.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.second_moment.shape[-1])

    def full(self) -> EnsembleHStatistics:
        """Every prompt's statistics (itself; :class:`OnDemandHStatistics` builds them)."""
        return self

    def subset(self, indices: Any) -> EnsembleHStatistics:
        """Statistics of the prompts at ``indices`` (in that order)."""
        idx = _check_indices(indices, self.num_prompts)
        return EnsembleHStatistics(
            second_moment=self.second_moment[np.ix_(idx, idx)],
            deviations=self.deviations[idx],
            class_counts=self.class_counts,
            fourth_moment=self.fourth_moment[np.ix_(idx, idx, idx, idx)],
            num_samples=self.num_samples,
        )


def ensemble_statistics(features: Any, labels: Any) -> EnsembleHStatistics:
    """Precompute the statistics of M prompts' features on one sample set.

    Args:
        features: the M prompts' features on the same N samples.
        labels: the N labels (any integers).

    Shape:
        features: (M, N, d); labels: (N,).
    """
    stack = to_numpy(features, "features")
    if stack.ndim != 3:
        raise InvalidValueError(
            invalid_value(
                "features.shape", stack.shape, "must be (M, N, d)", "Stack one (N, d) block per prompt."
            )
        )
    num_prompts, num_samples, dim = stack.shape
    if num_prompts < 1:
        raise InvalidValueError(invalid_value("features.shape[0] (M)", num_prompts, "must be at least 1", ""))
    checked = [
        check_features_labels(stack[k], labels, features_name=f"features[{k}]") for k in range(num_prompts)
    ]
    codes, counts = checked[0][1], checked[0][2]
    x = np.stack([c[0] for c in checked])  # (M, N, d) float64
    x -= x.mean(axis=1, keepdims=True)
    tensor = torch.from_numpy(x)
    second = _second_moment(tensor)
    one_hot = torch.zeros(counts.size, num_samples, dtype=torch.float64)
    one_hot[torch.from_numpy(codes), torch.arange(num_samples)] = 1.0
    # class sums by one product per prompt; the overall mean is zero after centring
    deviations = (
        torch.matmul(one_hot, tensor) / torch.from_numpy(counts.astype(np.float64))[:, None]
    ).numpy()
    gram = torch.bmm(tensor.transpose(0, 1), tensor.permute(1, 2, 0)).reshape(num_samples, -1)  # (N, M M)
    fourth = (gram.T @ gram).reshape((num_prompts,) * 4).numpy()
    return EnsembleHStatistics(
        second_moment=second,
        deviations=deviations,
        class_counts=counts,
        fourth_moment=fourth,
        num_samples=int(num_samples),
    )


class OnDemandHStatistics:
    """The ensemble statistics of any subset of K prompts, computed when asked (memory linear in K).

    Holds the K prompts' centred features, float64, and their class-mean deviations (computed
    once, K C d); :meth:`subset` returns the same :class:`EnsembleHStatistics` as
    ``ensemble_statistics(features).subset(indices)``: its pair blocks S_kl = X_k^T X_l / N come
    from a least-recently-used cache bounded by ``cache_bytes`` (computed on a miss, one product
    per row of missing blocks), and its fourth moment from the subset's own per-sample Gram
    matrices (O(N M^2 d + N M^4)). The cache is per process and not pickled: a Ray worker that
    runs several trials reuses the blocks of the earlier ones.

    Args:
        features: the K prompts' features on the same N samples, (K, N, d).
        labels: the N labels.
        cache_bytes: bound of the pair-block cache (blocks of d^2 float64 each).
    """

    def __init__(self, features: Any, labels: Any, cache_bytes: int = 1 << 30) -> None:
        stack = to_numpy(features, "features")
        if stack.ndim != 3 or stack.shape[0] < 1:
            raise InvalidValueError(
                invalid_value(
                    "features.shape",
                    stack.shape,
                    "must be (K, N, d) with K >= 1",
                    "Stack one (N, d) block per prompt.",
                )
            )
        if not (isinstance(cache_bytes, (int, np.integer)) and cache_bytes >= 0):
            raise InvalidValueError(
                invalid_value(
                    "cache_bytes", cache_bytes, "must be a non-negative integer", "Use 0 to cache nothing."
                )
            )
        checked = [
            check_features_labels(stack[k], labels, features_name=f"features[{k}]")
            for k in range(stack.shape[0])
        ]
        codes, counts = checked[0][1], checked[0][2]
        centred = np.stack([c[0] for c in checked])  # (K, N, d) float64
        centred -= centred.mean(axis=1, keepdims=True)
        one_hot = torch.zeros(counts.size, centred.shape[1], dtype=torch.float64)
        one_hot[torch.from_numpy(codes), torch.arange(centred.shape[1])] = 1.0
        self.centred = centred
        self.deviations = (
            torch.matmul(one_hot, torch.from_numpy(centred))
            / torch.from_numpy(counts.astype(np.float64))[:, None]
        ).numpy()
        self.class_counts = counts
        self.num_samples = int(centred.shape[1])
        self.cache_bytes = int(cache_bytes)
        self._blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def num_prompts(self) -> int:
        return int(self.centred.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.centred.shape[-1])

    @property
    def nbytes(self) -> int:
        """Bytes held: the features, the deviations and the cached blocks."""
        return int(
            self.centred.nbytes + self.deviations.nbytes + sum(b.nbytes for b in self._blocks.values())
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_blocks"], state["hits"], state["misses"] = OrderedDict(), 0, 0  # the cache stays local
        return state

    def _pair_blocks(self, idx: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
        """S_kl for every k <= l of ``idx`` (prompt positions), from the cache or computed."""
        wanted = {(int(min(a, b)), int(max(a, b))) for a in idx for b in idx}
        found = {}
        for key in wanted:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
                found[key] = block
        missing = sorted(wanted - found.keys())
        self.hits += len(found)
        self.misses += len(missing)
        rows: dict[int, list[int]] = {}
        for k, col in missing:
            rows.setdefault(k, []).append(col)
        tensor = torch.from_numpy(self.centred)
        dim = self.feature_dim
        for k, cols in rows.items():
            row = tensor[k].T @ tensor[cols].permute(1, 0, 2).reshape(self.num_samples, -1)  # (d, |cols| d)
            row /= self.num_samples
            blocks = row.view(dim, len(cols), dim).transpose(0, 1)
            for position, col in enumerate(cols):
                tile = blocks[position]
                tile = ((tile + tile.T) / 2) if k == col else tile.contiguous()
                found[(k, col)] = tile.numpy()
        block_bytes = dim * dim * 8
        for key in missing:  # cache the new blocks, evicting the least recently used
            if block_bytes > self.cache_bytes:
                break
            while self._blocks and (len(self._blocks) + 1) * block_bytes > self.cache_bytes:
                self._blocks.popitem(last=False)
            self._blocks[key] = found[key]
        return found

    def subset(self, indices: Any) -> EnsembleHStatistics:
        """Statistics of the prompts at ``indices`` (in that order), as ``EnsembleHStatistics``."""
        idx = _check_indices(indices, self.num_prompts)
        blocks = self._pair_blocks(idx)
        m, dim = idx.size, self.feature_dim
        second = np.empty((m, m, dim, dim), dtype=np.float64)
        for a in range(m):
            for b in range(m):
                row_prompt, col_prompt = int(idx[a]), int(idx[b])
                if row_prompt <= col_prompt:
                    second[a, b] = blocks[(row_prompt, col_prompt)]
                else:
                    second[a, b] = blocks[(col_prompt, row_prompt)].T
        chosen = torch.from_numpy(self.centred[idx])  # (m, N, d)
        gram = torch.bmm(chosen.transpose(0, 1), chosen.permute(1, 2, 0)).reshape(self.num_samples, -1)
        fourth = (gram.T @ gram).reshape((m,) * 4).numpy()
        return EnsembleHStatistics(
            second_moment=second,
            deviations=self.deviations[idx],
            class_counts=self.class_counts,
            fourth_moment=fourth,
            num_samples=self.num_samples,
        )

    def full(self) -> EnsembleHStatistics:
        """Every prompt's statistics (the all-pairs form: K^2 d^2 memory)."""
        return self.subset(np.arange(self.num_prompts))


def _check_indices(indices: Any, num_prompts: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= num_prompts:
        raise InvalidValueError(
            invalid_value(
                "indices",
                idx.tolist(),
                f"must be a non-empty list of prompt positions in [0, {num_prompts})",
                "",
            )
        )
    if np.unique(idx).size != idx.size:
        raise InvalidValueError(invalid_value("indices", idx.tolist(), "must not repeat a prompt", ""))
    return idx


def _second_moment(centred: torch.Tensor) -> np.ndarray:
    """S_kl = X_k^T X_l / N for k <= l by one product per prompt row; S_lk = S_kl^T is copied.

    Half the arithmetic of the full (M d) x (M d) product. S_lk is exactly S_kl^T, and S_kk is
    made exactly symmetric ((A + A^T) / 2, a change in the last bit at most).

    Shape:
        centred: (M, N, d) float64; returns (M, M, d, d) float64.
    """
    num_prompts, num_samples, dim = centred.shape
    flat = centred.transpose(0, 1).reshape(num_samples, num_prompts * dim)  # (N, M d)
    second = torch.empty(num_prompts, num_prompts, dim, dim, dtype=torch.float64)
    for k in range(num_prompts):
        row = flat[:, k * dim : (k + 1) * dim].T @ flat[:, k * dim :]  # (d, (M - k) d)
        row /= num_samples
        blocks = row.view(dim, num_prompts - k, dim).transpose(0, 1)  # S_kl, l >= k
        second[k, k:] = blocks
        second[k, k] = (blocks[0] + blocks[0].T) / 2
        second[k + 1 :, k] = blocks[1:].transpose(1, 2)
    return second.numpy()


class TorchEnsembleH(NamedTuple):
    """The statistics as float64 tensors, with the second moments packed for fast evaluation.

    S(alpha) = sum_k alpha_k^2 S_kk + sum_{k<l} alpha_k alpha_l (S_kl + S_kl^T): the M(M+1)/2
    symmetric pair blocks are stacked into one (pairs, d*d) matrix, so S(alpha) for a batch
    of weight vectors is one matrix product that reads the statistics once, and the result is
    exactly symmetric.
    """

    pair_blocks: torch.Tensor  # (M(M+1)/2, d * d)
    pair_rows: torch.Tensor  # (pairs,) k of each pair
    pair_cols: torch.Tensor  # (pairs,) l of each pair, k <= l
    deviations: torch.Tensor  # (M, C, d)
    weights: torch.Tensor  # (C,) n_c / (N - 1)
    fourth: torch.Tensor  # (M, M, M, M)
    num_samples: int
    num_prompts: int
    dim: int

    @classmethod
    def from_statistics(cls, stats: EnsembleHStatistics) -> TorchEnsembleH:
        m, d = stats.num_prompts, stats.feature_dim
        rows, cols = np.triu_indices(m)
        second = stats.second_moment
        blocks = np.empty((rows.size, d * d), dtype=np.float64)
        for index, (row, col) in enumerate(zip(rows, cols)):
            block = second[row, col] if row == col else second[row, col] + second[row, col].T
            blocks[index] = block.reshape(-1)
        # np.array copies: statistics from Ray's object store are read-only zero-copy views
        return cls(
            pair_blocks=torch.from_numpy(blocks),
            pair_rows=torch.from_numpy(rows.astype(np.int64)),
            pair_cols=torch.from_numpy(cols.astype(np.int64)),
            deviations=torch.from_numpy(np.array(stats.deviations, dtype=np.float64, order="C")),
            weights=torch.from_numpy(stats.class_counts.astype(np.float64)) / (stats.num_samples - 1),
            fourth=torch.from_numpy(np.array(stats.fourth_moment, dtype=np.float64, order="C")),
            num_samples=stats.num_samples,
            num_prompts=m,
            dim=d,
        )

    def covariance(self, alpha: torch.Tensor) -> torch.Tensor:
        """S(alpha) = X(alpha)^T X(alpha) / N for a batch of weights.

        Shape:
            alpha: (S, M); returns (S, d, d).
        """
        pair_weights = alpha[:, self.pair_rows] * alpha[:, self.pair_cols]  # (S, pairs)
        return (pair_weights @ self.pair_blocks).view(-1, self.dim, self.dim)


def ensemble_h_score_torch(
    stats: EnsembleHStatistics | TorchEnsembleH, alpha: torch.Tensor, regularized: bool = True
) -> torch.Tensor:
    """Differentiable H(alpha) for one weight vector or a batch of them.

    Args:
        stats: from :func:`ensemble_statistics` (or its tensor view, to skip the conversion).
        alpha: weights; need not be on the simplex (the formula is exact for any alpha).
        regularized: Ledoit-Wolf form (``regularized_h_score``) if True, else the np.cov /
            pseudo-inverse form (``h_score``).

    Shape:
        alpha: (M,) or (S, M); returns a scalar or (S,).
    """
    tensors = stats if isinstance(stats, TorchEnsembleH) else TorchEnsembleH.from_statistics(stats)
    batched = alpha.dim() == 2
    a = (alpha if batched else alpha.unsqueeze(0)).to(torch.float64)
    if a.shape[-1] != tensors.num_prompts:
        raise InvalidValueError(
            invalid_value("alpha.shape", tuple(alpha.shape), f"must end in M={tensors.num_prompts}", "")
        )
    d, n = tensors.dim, tensors.num_samples
    emp = tensors.covariance(a)
    deviations = torch.einsum("sk,kcd->scd", a, tensors.deviations)
    if not regularized:
        result = trace_solve(emp * (n / (n - 1)), deviations, tensors.weights)
    elif d == 1:  # scikit-learn applies no shrinkage to a single feature
        result = trace_solve(emp, deviations, tensors.weights)
    else:
        squared = torch.einsum("sk,sl,klmp->smp", a, a, tensors.fourth)
        fourth = torch.einsum("smp,sm,sp->s", squared, a, a)
        trace = torch.diagonal(emp, dim1=1, dim2=2).sum(dim=1)
        shrinkage, matrix = _shrink(emp, trace, fourth, n)
        result = (1.0 - shrinkage) * trace_solve(matrix, deviations, tensors.weights)
    return result if batched else result[0]


def ensemble_h_score(stats: EnsembleHStatistics, alpha: Any, regularized: bool = True) -> float:
    """H(alpha) as a float (numpy or torch weights).

    Shape:
        alpha: (M,).
    """
    weights = torch.as_tensor(to_numpy(alpha, "alpha"), dtype=torch.float64)
    if weights.dim() != 1:
        raise InvalidValueError(invalid_value("alpha.shape", tuple(weights.shape), "must be (M,)", ""))
    with torch.no_grad():
        return float(ensemble_h_score_torch(stats, weights, regularized=regularized))


def per_source_h_scores(stats: EnsembleHStatistics, regularized: bool = True) -> np.ndarray:
    """Each prompt's own H-score (alpha = e_i), e.g. for H-ensemble-style weights.

    Shape:
        returns: (M,).
    """
    eye = torch.eye(stats.num_prompts, dtype=torch.float64)
    with torch.no_grad():
        return ensemble_h_score_torch(stats, eye, regularized=regularized).numpy()
