"""Streaming moments of per-sample vectors and the statistics the probe reports.

Streamed over the K samples (Chan/Welford in float64, shifted by the first sample), so memory
is O(P) in the P parameters plus O(chunk x P) for one vectorised chunk, never O(K x P):

    var_trace    = sum_p Var_k(g_kp)   (unbiased, 1 / (K - 1))
    log_var      = ln var_trace
    mean_sq_norm = ||mean_k g_k||^2                      plug-in, E = ||mu||^2 + tr Cov / K
    signal_sq    = mean_sq_norm - var_trace / K          unbiased ||mu||^2: the U-statistic
                 = sum_{i != j} <g_i, g_j> / (K (K-1))   (exact identity)
    snr          = signal_sq / var_trace                 unbiased numerator; may be <= 0
    nsr          = var_trace / signal_sq                 +inf ("not resolved") when signal_sq <= 0

The plug-in ratio var_trace / mean_sq_norm tends to K / (1 + K / NSR) and so never exceeds
about K: with K = 16 a true NSR of 25 reads 9.8 and one of 1000 reads 15.8. The U-statistic
removes the V / K term; its standard error is about sqrt(2 / K) tr Cov / sqrt(K) for large
NSR, so an NSR far above K is "not resolved" rather than wrong. Averages over replicates
should average ``snr`` (finite, unbiased numerator) and invert, never average ``nsr``.

The 95% CI of log_var is the studentized bootstrap of benchmark/probe/ci.py (calibrated by
simulation, docs/variance_ci.md); it needs the K x K Gram matrix of the shifted per-sample
vectors, computed exactly when P <= ``gram_dim`` and from a count sketch of dimension
``gram_dim`` otherwise (diagonal always exact; the interval is then rescaled by the exact
var_trace over the sketched one), so its memory is O(K x min(P, gram_dim)).
"""

from __future__ import annotations

import math

import torch

from benchmark.probe.ci import trace_variance_ci_from_gram
from benchmark.probe.draws import generator_from_seed

_HASH_PRIME = 2**31 - 1
_SKETCH_BLOCK = 1 << 20


def count_sketch(rows: torch.Tensor, dim: int) -> torch.Tensor:
    """[n, P] -> [n, dim] count sketch (hashed buckets and signs of the coordinate index):
    E <S a, S b> = <a, b>. Memory O(n x dim + 2^20)."""
    n, total = rows.shape
    out = torch.zeros(n, dim, dtype=torch.float64, device=rows.device)
    for start in range(0, total, _SKETCH_BLOCK):
        index = torch.arange(start, min(total, start + _SKETCH_BLOCK), device=rows.device)
        bucket = ((index * 1_103_515_245 + 12_345) % _HASH_PRIME) % dim
        sign = (((index * 2_147_483_629 + 7) % _HASH_PRIME) % 2) * 2.0 - 1.0
        out.index_add_(1, bucket, rows[:, start : start + index.numel()].double() * sign)
    return out


class StreamingMoments:
    """Mean and unbiased variance of n samples of a flat vector, streamed over chunks.

    Chan/Welford merge in float64 on d_k = x_k - x_1 (shifted by the first sample: no
    cancellation when the mean dominates, exactly zero variance for identical samples).
    With ``gram_dim`` > 0 it also keeps ||d_k||^2 and d_k (count-sketched to ``gram_dim``
    when D > gram_dim) for the Gram matrix the bootstrap needs; ``capacity`` (the number of
    samples) is then required. Work buffers are allocated once and reused (fresh large
    allocations cost page faults that dominate on small CPU machines).
    """

    def __init__(self, gram_dim: int = 0, capacity: int | None = None) -> None:
        if gram_dim > 0 and capacity is None:
            raise ValueError("a Gram matrix needs the number of samples (capacity)")
        self.gram_dim = gram_dim
        self.capacity = capacity
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.mean_shifted: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.sq_norms: list[torch.Tensor] = []
        self.sketches: list[torch.Tensor] = []
        self._rows: torch.Tensor | None = None  # [capacity, D] exact shifted samples
        self._work: torch.Tensor | None = None

    def _buffer(self, n_b: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        if self._work is None or self._work.shape[0] < n_b:
            self._work = torch.empty(n_b, dim, dtype=torch.float64, device=like.device)
        return self._work[:n_b]

    def update(self, batch: torch.Tensor) -> None:
        """batch [n_b, D]."""
        batch = batch.detach()
        n_b, dim = batch.shape
        if self.shift is None:
            self.shift = batch[0].to(torch.float64, copy=True)
            self.mean_shifted = torch.zeros_like(self.shift)
            self.m2 = torch.zeros_like(self.shift)
            if 0 < dim <= self.gram_dim:
                self._rows = self.shift.new_empty(self.capacity, dim)
        if self._rows is not None:
            if self.n + n_b > self.capacity:
                raise ValueError(f"more than capacity={self.capacity} samples")
            d = self._rows[self.n : self.n + n_b]
        else:
            d = self._buffer(n_b, dim, batch)
        d.copy_(batch).sub_(self.shift)
        if self.gram_dim > 0:
            self.sq_norms.append(torch.linalg.vecdot(d, d))
            if self._rows is None:
                self.sketches.append(count_sketch(d, self.gram_dim))
        mean_b = d.mean(0)
        centred = (
            torch.sub(d, mean_b, out=self._buffer(n_b, dim, batch))
            if self._rows is not None
            else d.sub_(mean_b)
        )
        m2_b = centred.square_().sum(0)
        n = self.n + n_b
        delta = mean_b.sub_(self.mean_shifted)
        self.mean_shifted.add_(delta, alpha=n_b / n)
        self.m2.add_(m2_b).add_(delta.square_(), alpha=self.n * n_b / n)
        self.n = n

    @property
    def mean(self) -> torch.Tensor:
        return self.shift + self.mean_shifted

    def variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance [D]."""
        return self.m2 / (self.n - 1)

    def var_trace(self, part: slice | list[slice] | None = None) -> float:
        if part is None:
            return float(self.m2.sum()) / (self.n - 1)
        parts = part if isinstance(part, list) else [part]
        return sum(float(self.m2[s].sum()) for s in parts) / (self.n - 1)

    def gram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(||d_k||^2 [n], Gram <d_k, d_l> [n, n]) with the exact diagonal."""
        rows = self._rows[: self.n] if self._rows is not None else torch.cat(self.sketches)
        sq = torch.cat(self.sq_norms)
        gram = rows @ rows.T
        gram.diagonal().copy_(sq)
        return sq, gram


def bootstrap_var_traces(
    sq_norms: torch.Tensor, gram: torch.Tensor, n_boot: int, generator: torch.Generator
) -> torch.Tensor:
    """var_trace of ``n_boot`` resamples (with replacement) of the K samples, [n_boot].

    For counts c_b (multinomial, sum K): var_b = (c_b . ||d||^2 - c_b^T Gram c_b / K) / (K - 1).
    """
    k = sq_norms.shape[0]
    index = torch.randint(0, k, (n_boot, k), generator=generator)
    counts = torch.zeros(n_boot, k, dtype=torch.float64).scatter_add_(
        1, index, torch.ones(n_boot, k, dtype=torch.float64)
    )
    counts = counts.to(gram.device)
    quad = torch.einsum("bk,kl,bl->b", counts, gram, counts)
    return ((counts @ sq_norms - quad / k) / (k - 1)).clamp_min(0.0)


def _log(value: float) -> float:
    return math.log(value) if value > 0 else float("-inf")


def ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return float("nan") if num == 0 else float("inf")


def signal_statistics(mean_sq: float, var_trace: float, n: int, prefix: str = "") -> dict:
    """signal_sq, snr, nsr from the plug-in ||mean||^2 of ``n`` samples and the unbiased
    var_trace (module doc): signal_sq = mean_sq - var_trace / n is unbiased for ||mu||^2.

    >>> signal_statistics(5.0, 16.0, 16)["nsr"]
    4.0
    >>> signal_statistics(0.5, 16.0, 16)["nsr"]
    inf
    """
    signal = mean_sq - var_trace / n
    if var_trace == 0:
        nsr, snr = (0.0, math.inf) if signal > 0 else (math.nan, math.nan)
    else:
        nsr, snr = (var_trace / signal if signal > 0 else math.inf), signal / var_trace
    return {f"{prefix}signal_sq": signal, f"{prefix}snr": snr, f"{prefix}nsr": nsr}


def summarize(
    moments: StreamingMoments,
    prefix: str,
    n_boot: int,
    bootstrap_seed: int,
    groups: dict[str, list[slice]] | None = None,
) -> dict[str, float]:
    """var_trace, log_var, mean_sq_norm, signal_sq, snr, nsr (+ bootstrap CI, per-group
    var_trace)."""
    var_trace = moments.var_trace()
    mean_sq = float(moments.mean.square().sum())
    out = {
        f"{prefix}var_trace": var_trace,
        f"{prefix}log_var": _log(var_trace),
        f"{prefix}mean_sq_norm": mean_sq,
        **signal_statistics(mean_sq, var_trace, moments.n, prefix),
    }
    if n_boot > 0 and moments.sq_norms:
        sq, gram = moments.gram()
        var_gram, lo, hi = trace_variance_ci_from_gram(
            sq, gram, n_boot=n_boot, generator=generator_from_seed(bootstrap_seed)
        )
        scale = var_trace / var_gram if var_gram > 0 else 1.0  # 1 unless count-sketched
        out[f"{prefix}log_var_lo"] = _log(lo * scale)
        out[f"{prefix}log_var_hi"] = _log(hi * scale)
    for name, parts in (groups or {}).items():
        out[f"{prefix}var_trace/{name}"] = moments.var_trace(parts)
    return out
