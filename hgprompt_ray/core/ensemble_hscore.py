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

**How shrinkage applies to the combined covariance.** The regularised score is the Ledoit-Wolf
H-score of the combined features f(alpha) = sum_i alpha_i f_i, exactly: the shrinkage a(alpha)
is re-estimated for every alpha from the statistics above (scikit-learn's formula), not fixed
per prompt or interpolated, so the result equals ``regularized_h_score(sum_i alpha_i f_i, y)``.

Shape conventions: M prompts, N samples, d feature width, C classes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import check_features_labels, to_numpy
from hgprompt_ray.core.hscore import _shrink, trace_solve
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "EnsembleHStatistics",
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

    def subset(self, indices: Any) -> EnsembleHStatistics:
        """Statistics of the prompts at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_prompts:
            raise InvalidValueError(
                invalid_value(
                    "indices",
                    idx.tolist(),
                    f"must be a non-empty list of prompt positions in [0, {self.num_prompts})",
                    "",
                )
            )
        if np.unique(idx).size != idx.size:
            raise InvalidValueError(invalid_value("indices", idx.tolist(), "must not repeat a prompt", ""))
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
