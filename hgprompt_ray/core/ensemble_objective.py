"""The solver's objective, -h_weight * H(alpha) + (lam / scale) * L_align(alpha), with its gradient
written out, for a batch of weight vectors: the same numbers as the reference formulas
(``ensemble_h_score_torch``, ``alignment_loss_torch``), evaluated near their FLOP count.

Shapes: M prompts, d feature width, C classes, p gradient coordinates, P = M (M + 1) / 2 prompt
pairs, q = d (d + 1) / 2 entries of a symmetric d x d matrix's lower triangle, S weight vectors
(the solver's starts, evaluated together).

**H(alpha).** S(alpha) = sum_P w_P B_P with w_kl = alpha_k alpha_l and the pair blocks
B_kk = S_kk, B_kl = S_kl + S_kl^T (k < l) of ``TorchEnsembleH``. Each B_P is symmetric, so only
its lower triangle is stored: (P, q) float64, 156 MB at M = 11, d = 768 instead of 311 MB, read
once per evaluation for all S starts together by one (S, P) x (P, q) product.

Ledoit-Wolf needs S(alpha) only through t = tr S, s2 = ||S||_F^2 and the fourth moment f4 (the
shrinkage a is scikit-learn's, ``hscore._shrink``), and for a < 1

    (1 - a) tr( ((1 - a) S + a mu I)^-1 K ) = tr( (S + c I)^-1 K ),   c = a mu / (1 - a),

with K = D^T W D, D = sum_k alpha_k D_k the class-mean deviations, W = diag(n_c / (N - 1)),
mu = t / d. So each start costs one Cholesky factorisation of S + c I (all starts in one batched
call) and one solve Z = (S + c I)^-1 D^T with C right-hand sides; H = sum_c w_c d_c . z_c. (a = 1 gives
H = 0; the plain form, ``regularized=False``, is tr((N/(N-1) S)^-1 K), i.e. c = 0.)

The gradient, by hand instead of autograd: with E = Z W Z^T (rank C) and e = tr E,

    dH = <G, dS> - e c_f df4 + 2 <W Z^T, dD>,   G = -E - e (c_t I + 2 c_s S),

where c_t, c_s, c_f are the partial derivatives of c in t, s2 and f4 (scalars). The pair
weights' gradient <G, B_P> is a second product (S, q) x (q, P) (off-diagonal entries counted
twice), the only other pass over the blocks; then d w_kl / d alpha is exact and cheap.

**L_align(alpha)** (the paper's uncentred form; ``alignment`` module). With
u_ci = v_ci - vbar_c = <R_c, E_i(alpha)>, E_i = (e_i - alpha)(e_i - alpha)^T - F,
F = sum_j alpha_j (e_j - alpha)(e_j - alpha)^T, the loss is 1/M sum_i sum_c u_ci^2 =
1/M sum_i ||R_p pack(E_i)||^2, R_p the (p, P) matrix of the R_c's upper triangles and pack()
the matching P entries of E_i (off-diagonal ones doubled). With the thin QR R_p = Q T, that is
1/M sum_i ||T pack(E_i)||^2: the (P, P) triangle T, computed once, replaces the (p, M, M) R in
every evaluation, which then costs O(M^2 P^2) instead of O(p M^2) and still sums squares of
computed residuals (no cancellation of a Gram form).

**Precision and libraries, chosen.** Everything is float64: the statistics must be (design), a
single start's step is bound by reading the pair blocks, not by arithmetic (float32 blocks would
halve that but perturb S(alpha) at 1e-7 relative, the size of the solver's KKT tolerance), and a
float32 Cholesky with float64 refinement would save about 1 ms a start at d = 768 for an extra
failure mode. Sums that decide the shrinkage (||S||_F^2 over d^2 / 2 entries) use torch's
cascade summation, not a BLAS dot: the dot's rounding, amplified by the shrinkage, made the
objective ten times noisier and the solver's path measurably longer. All large operations run
in torch's one thread pool (MKL): scipy's LAPACK factors a single d = 768 matrix twice as fast
here, but its OpenBLAS threads busy-wait after each call and, alternating with torch's OpenMP
threads on two cores shared with other processes, made a batched evaluation 3 to 8 times slower.

A start whose matrix is not positive definite (rank-deficient S without shrinkage) falls back to
the reference evaluation (pseudo-inverse, autograd) for that start.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hgprompt_ray.core.alignment import alignment_loss_torch
from hgprompt_ray.core.ensemble_hscore import EnsembleHStatistics, TorchEnsembleH, ensemble_h_score_torch

__all__ = ["EnsembleObjective"]

_SOLVED, _FLAT, _FALLBACK = 0, 1, 2
"""A start's status in ``h_score_and_grad``: Cholesky solved; shrinkage 1 (H = 0); not positive
definite (the reference evaluation takes over)."""


class EnsembleObjective:
    """-h_weight * H(alpha) + (lam / scale) * L_align(alpha) for batches of weights (module doc).

    Args:
        stats: the ensemble H-score statistics of the M prompts.
        second_moment: the gradients' uncentred second moments R, (p, M, M), or None for no
            alignment term.
        lam: lambda >= 0.
        scale: the alignment divisor (``alignment_scale``, or 1 for the raw loss).
        h_weight: weight of the H term (0: alignment alone; then H is not prepared).
        regularized: Ledoit-Wolf H (True) or the plain form.

    Calling the object on (S, M) float64 weights returns the (S,) objective values as a tensor
    differentiable in the weights (the gradient is computed with the values and handed back by
    autograd), which is what ``minimize_on_simplex`` needs.
    """

    def __init__(
        self,
        stats: EnsembleHStatistics,
        second_moment: np.ndarray | None,
        lam: float,
        scale: float,
        h_weight: float = 1.0,
        regularized: bool = True,
    ) -> None:
        self.stats = stats
        self.num_prompts = m = stats.num_prompts
        self.dim = d = stats.feature_dim
        self.h_weight = float(h_weight)
        self.lam = float(lam)
        self.scale = float(scale)
        self.regularized = bool(regularized)
        self.num_samples = stats.num_samples
        rows, cols = np.triu_indices(m)
        self._rows, self._cols = torch.from_numpy(rows), torch.from_numpy(cols)
        self._pair_factor = torch.from_numpy(np.where(rows == cols, 1.0, 2.0))  # (P,)
        self._reference: TorchEnsembleH | None = None
        self.fallbacks = 0  # evaluations that took the reference path (matrix not positive definite)
        self._work: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if self.h_weight != 0:
            low_r, low_c = np.tril_indices(d)
            self._tril = low_r * d + low_c  # flat positions of the lower triangle, row-major
            self._tril_index = torch.from_numpy(self._tril)
            self._diagonal = torch.from_numpy(np.flatnonzero(low_r == low_c))  # positions in (q,)
            self._entry_factor = torch.from_numpy(np.where(low_r == low_c, 1.0, 2.0))  # (q,)
            self._blocks = _packed_pair_blocks(stats.second_moment, rows, cols, self._tril)  # (P, q)
            self._block_traces = self._blocks[:, self._diagonal].sum(dim=1)  # tr B_P: (P,)
            self._block_gram = _gram(self._blocks, self._entry_factor)  # <B_P, B_Q>: (P, P)
            self._deviations = torch.from_numpy(np.array(stats.deviations, dtype=np.float64))
            self._class_weights = torch.from_numpy(stats.class_counts.astype(np.float64)) / (
                stats.num_samples - 1
            )
            self._fourth = torch.from_numpy(np.array(stats.fourth_moment, dtype=np.float64)).reshape(
                m * m, -1
            )
        self._second_moment = None if second_moment is None or lam == 0 else second_moment
        if self._second_moment is not None:
            packed = np.asarray(self._second_moment)[:, rows, cols]  # (p, P)
            self._triangle = torch.from_numpy(np.linalg.qr(packed, mode="r"))  # (min(p, P), P)

    # ------------------------------------------------------------------ the batched objective
    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """Objective values, (S,), differentiable in ``alpha`` (S, M)."""
        result: torch.Tensor = _Precomputed.apply(alpha, self)
        return result

    def value_and_grad(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective (S,), gradient (S, M)) at float64 weights (S, M)."""
        a = alpha.detach().to(torch.float64)
        values = torch.zeros(a.shape[0], dtype=torch.float64)
        grads = torch.zeros_like(a)
        if self.h_weight != 0:
            h, h_grad = self.h_score_and_grad(a)
            values -= self.h_weight * h
            grads -= self.h_weight * h_grad
        if self._second_moment is not None:
            loss, loss_grad = self.alignment_and_grad(a)
            values += (self.lam / self.scale) * loss
            grads += (self.lam / self.scale) * loss_grad
        return values, grads

    def terms(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, H, raw L_align) at weights (S, M); H is computed even when h_weight is 0,
        L_align by the reference formula on R (its value is reported)."""
        a = alpha.detach().to(torch.float64)
        if self.h_weight != 0:
            h = self.h_score_and_grad(a)[0]
        else:
            h = ensemble_h_score_torch(self.stats, a, regularized=self.regularized)
        if self._second_moment is None:
            raw = torch.zeros_like(h)
        else:
            raw = alignment_loss_torch(torch.from_numpy(np.asarray(self._second_moment)), a)
        return -self.h_weight * h + (self.lam / self.scale) * raw, h, raw

    # ------------------------------------------------------------------ H
    def h_score_and_grad(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H(alpha) and its gradient, (S,) and (S, M), by the module docstring's formulas."""
        num_starts, m, n, d = alpha.shape[0], self.num_prompts, self.num_samples, self.dim
        packed, mats, factor, info = self._work_buffers(num_starts)
        pair_weights = alpha[:, self._rows] * alpha[:, self._cols]  # (S, P)
        torch.mm(pair_weights, self._blocks, out=packed)  # lower triangles of S(alpha): (S, q)
        trace = pair_weights @ self._block_traces  # tr S(alpha)
        gram_weights = pair_weights @ self._block_gram  # <S(alpha), B_P>: (S, P)
        frobenius = (gram_weights * pair_weights).sum(dim=1)  # ||S(alpha)||_F^2
        products = (alpha[:, :, None] * alpha[:, None, :]).reshape(num_starts, m * m)
        fourth_left, fourth_right = products @ self._fourth, products @ self._fourth.T
        fourth = (fourth_left * products).sum(dim=1)
        shifts = [
            self._shift(float(trace[s]), float(frobenius[s]), float(fourth[s]), n) for s in range(num_starts)
        ]
        shift, c_t, c_s, c_f, scale = torch.tensor(
            [[0.0 if c[0] is None else c[0], *c[1:]] for c in shifts], dtype=torch.float64
        ).unbind(dim=1)
        # S(alpha) + c I (times s) in the work buffer; LAPACK reads only the lower triangle
        mats.index_copy_(1, self._tril_index, packed)
        if bool((scale != 1.0).any()):
            mats *= scale[:, None]
        mats[:, :: d + 1] += shift[:, None]
        torch.linalg.cholesky_ex(mats.view(num_starts, d, d), out=(factor, info))
        mixed = torch.einsum("sk,kcd->scd", alpha, self._deviations)  # D(alpha): (S, C, d)
        half = torch.linalg.solve_triangular(factor, mixed.transpose(1, 2), upper=False)
        solved = torch.linalg.solve_triangular(factor.mT, half, upper=True)  # Z: (S, d, C)
        weighted = solved * self._class_weights  # Z W
        values = (mixed.transpose(1, 2) * weighted).sum(dim=(1, 2))
        e_trace = (weighted * solved).sum(dim=(1, 2))
        # E = Z W Z^T, its lower triangle (off-diagonal entries doubled), then <E, B_P> for all P
        torch.bmm(weighted, solved.transpose(1, 2), out=mats.view(num_starts, d, d))
        torch.index_select(mats, 1, self._tril_index, out=packed)
        packed *= self._entry_factor
        pair_grads = -scale[:, None] * (packed @ self._blocks.T)
        pair_grads -= (e_trace * c_t)[:, None] * self._block_traces
        pair_grads -= (2.0 * e_trace * c_s)[:, None] * gram_weights
        grads = 2.0 * torch.einsum("kcd,sdc->sk", self._deviations, weighted)
        fourth_grads = -e_trace * c_f
        status = torch.where(info == 0, _SOLVED, _FALLBACK)
        status[torch.tensor([c[0] is None for c in shifts])] = _FLAT
        unsolved = status != _SOLVED  # shrinkage 1 (H = 0, flat) or the reference's evaluation below
        values[unsolved], grads[unsolved], pair_grads[unsolved], fourth_grads[unsolved] = 0.0, 0.0, 0.0, 0.0
        for s in torch.nonzero(status == _FALLBACK).flatten().tolist():
            values[s], grads[s] = self._reference_h(alpha[s])
        symmetric = torch.zeros(num_starts, m, m, dtype=torch.float64)
        symmetric[:, self._rows, self._cols] = pair_grads
        symmetric[:, self._cols, self._rows] = pair_grads
        symmetric = symmetric + torch.diag_embed(torch.diagonal(symmetric, dim1=1, dim2=2))
        grads += torch.einsum("skl,sl->sk", symmetric, alpha)
        fourth_matrix = (fourth_left + fourth_right).reshape(num_starts, m, m)
        fourth_alpha = torch.einsum("skl,sl->sk", fourth_matrix + fourth_matrix.transpose(1, 2), alpha)
        grads += fourth_grads[:, None] * fourth_alpha
        return values, grads

    def _work_buffers(self, num_starts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Buffers kept between evaluations (S x d x d temporaries would be allocated, and in a VM
        page-faulted, at every call): packed (S, q), matrices (S, d * d), Cholesky factors
        (S, d, d) in LAPACK's column-major layout, info (S,)."""
        if self._work is None or self._work[0].shape[0] < num_starts:
            d, entries = self.dim, self._blocks.shape[1]
            self._work = (
                torch.empty(num_starts, entries, dtype=torch.float64),
                torch.empty(num_starts, d * d, dtype=torch.float64),
                torch.empty(num_starts, d, d, dtype=torch.float64).mT,
                torch.empty(num_starts, dtype=torch.int32),
            )
        packed, mats, factor, info = self._work
        return packed[:num_starts], mats[:num_starts], factor[:num_starts], info[:num_starts]

    def _shift(
        self, trace: float, frobenius: float, fourth: float, n: int
    ) -> tuple[float | None, float, float, float, float]:
        """(c, dc/dt, dc/ds2, dc/df4, s): H = tr((s S + c I)^-1 K); c None when the shrinkage is 1.

        ``hscore._shrink`` written in the scalars t, s2, f4 (scikit-learn's Ledoit-Wolf).
        """
        d = self.dim
        if not self.regularized:
            return 0.0, 0.0, 0.0, 0.0, n / (n - 1)
        if d == 1:  # scikit-learn applies no shrinkage to a single feature
            return 0.0, 0.0, 0.0, 0.0, 1.0
        mu = trace / d
        beta = (fourth / n - frobenius) / (d * n)
        delta = (frobenius - 2.0 * mu * trace + d * mu * mu) / d
        if min(beta, delta) == 0 or delta <= 0:  # no shrinkage, constant
            return 0.0, 0.0, 0.0, 0.0, 1.0
        if beta >= delta:  # shrinkage min(beta, delta) / delta = 1: H = 0
            return None, 0.0, 0.0, 0.0, 1.0
        a = beta / delta
        shift = a * mu / (1.0 - a)
        by_a, by_mu = mu / (1.0 - a) ** 2, a / (1.0 - a)
        by_delta = -a / delta  # da / d delta
        c_t = by_a * by_delta * (-2.0 * trace / (d * d)) + by_mu / d
        c_s = by_a * (-1.0 / (delta * d * n) + by_delta / d)
        c_f = by_a / (delta * d * n * n)
        return shift, c_t, c_s, c_f, 1.0

    def _reference_h(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H and its gradient at one point by the reference (pseudo-inverse fallback, autograd)."""
        self.fallbacks += 1
        if self._reference is None:
            self._reference = TorchEnsembleH.from_statistics(self.stats)
        point = alpha.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = ensemble_h_score_torch(self._reference, point, regularized=self.regularized)
            (grad,) = torch.autograd.grad(value, point)
        return value.detach(), grad

    # ------------------------------------------------------------------ L_align
    def alignment_and_grad(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw L_align(alpha) and its gradient, (S,) and (S, M), from the QR triangle T."""
        m = self.num_prompts
        total = alpha.sum(dim=1)
        offsets = torch.eye(m, dtype=torch.float64) - alpha[:, None, :]  # rows e_i - alpha: (S, M, M)
        outer = offsets[:, :, :, None] * offsets[:, :, None, :]  # V_i: (S, M, M, M)
        mixed = torch.einsum("si,sijk->sjk", alpha, outer)  # F
        differences = outer - mixed[:, None]  # E_i
        packed = differences[:, :, self._rows, self._cols] * self._pair_factor  # (S, M, P)
        residuals = packed @ self._triangle.T  # (S, M, r)
        loss = (residuals * residuals).sum(dim=(1, 2)) / m
        packed_grad = (2.0 / m) * residuals @ self._triangle  # dL / d pack(E_i): (S, M, P)
        gamma = torch.zeros(alpha.shape[0], m, m, m, dtype=torch.float64)  # dL / dE_i, symmetric
        gamma[:, :, self._rows, self._cols] = packed_grad
        gamma[:, :, self._cols, self._rows] = packed_grad
        gamma_sum = gamma.sum(dim=1)
        centre = (1.0 - total)[:, None] * alpha  # sum_j alpha_j (e_j - alpha)
        grad = -2.0 * torch.einsum("sijk,sik->sj", gamma, offsets)
        grad -= torch.einsum("sjk,skl,sjl->sj", offsets, gamma_sum, offsets)
        grad += 2.0 * torch.einsum("sjk,sk->sj", gamma_sum, centre)
        return loss, grad

    # ------------------------------------------------------------------ cost
    def cost(self, num_starts: int = 1) -> dict[str, float]:
        """FLOPs and bytes read from memory of one evaluation at ``num_starts`` points.

        Counts the terms that scale with d or p (the rest is O(M^5) per start); a Cholesky
        factorisation is d^3 / 3, a solve with C right-hand sides 2 d^2 C, E = Z W Z^T 2 d^2 C.
        """
        m, d = self.num_prompts, self.dim
        pairs, entries = m * (m + 1) // 2, d * (d + 1) // 2
        flops, bytes_read = 0.0, 0.0
        if self.h_weight != 0:
            classes = self.stats.class_counts.size
            blocks = 2.0 * pairs * entries * num_starts  # one pass: combine or contract
            per_start = d**3 / 3 + 4.0 * d * d * classes + 6.0 * entries
            flops += 2 * blocks + per_start * num_starts
            bytes_read += 2 * 8.0 * pairs * entries  # the blocks, twice (S(alpha), then <G, B_P>)
        return {"flops": flops, "bytes": bytes_read}


class _Precomputed(torch.autograd.Function):
    """Values with their gradient computed in the forward pass (``EnsembleObjective``)."""

    @staticmethod
    def forward(ctx: Any, alpha: torch.Tensor, objective: EnsembleObjective) -> torch.Tensor:
        values, grads = objective.value_and_grad(alpha)
        ctx.save_for_backward(grads)
        return values

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grads,) = ctx.saved_tensors
        return grad_output[:, None] * grads, None


def _gram(blocks: torch.Tensor, entry_factor: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """<B_P, B_Q> = sum of the entrywise products of the full matrices, from the lower triangles.

    Summed chunk by chunk (then a cascade sum over the chunks) rather than as one dot product of
    d (d + 1) / 2 terms: the norms it gives decide the shrinkage, and a long dot's rounding
    would show in the objective.

    Shape:
        blocks: (P, q); entry_factor: (q,) 1 on the diagonal, 2 off it; returns (P, P).
    """
    parts = [
        (blocks[:, i : i + chunk] * entry_factor[i : i + chunk]) @ blocks[:, i : i + chunk].T
        for i in range(0, blocks.shape[1], chunk)
    ]
    return torch.stack(parts).sum(dim=0)


def _packed_pair_blocks(
    second: np.ndarray, rows: np.ndarray, cols: np.ndarray, tril: np.ndarray
) -> torch.Tensor:
    """Lower triangles of B_kk = S_kk and B_kl = S_kl + S_kl^T, one row per pair k <= l.

    Shape:
        second: (M, M, d, d); returns (P, q) float64.
    """
    d = second.shape[-1]
    blocks = np.empty((rows.size, tril.size), dtype=np.float64)
    for index, (row, col) in enumerate(zip(rows, cols)):
        block = np.asarray(second[row, col], dtype=np.float64)
        if row == col:
            blocks[index] = block.reshape(-1)[tril]
        else:
            blocks[index] = (block + block.T).reshape(d * d)[tril]
    return torch.from_numpy(blocks)
