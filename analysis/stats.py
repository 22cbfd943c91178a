"""Confidence intervals over independent replicates (prompts x seeds): Student t intervals.

Every CI in the report is the 95% t interval of the mean over replicates (``mean_ci``),

    mean +- t_{(1+level)/2, n-1} s / sqrt(n),     s the sample sd (ddof 1),

and a method comparison is the t interval of the mean of the paired differences a_i - b_i
(same seed and prompt, i.e. the same random streams: common random numbers). Measured by
simulation (tests/test_replicate_stats.py, docs/variance_ci.md), at n = 12 the t interval
covers 0.95 for normal data (the percentile bootstrap it replaces: 0.91; scipy's BCa 0.91),
0.96 for t(3) data (0.89; BCa 0.87) and 0.86 for log-normal(0, 1) data (0.83; BCa 0.85).

Infinite values (log variance of an exactly zero variance) have no sd: when a sample holds
any, ``mean_ci`` falls back to the percentile bootstrap (``bootstrap_mean``: resampling with
replacement, ``n_boot`` resamples, ``numpy.random.default_rng(seed)``, quantiles with
``method="inverted_cdf"``, which keeps infinities well defined), so the same data always give
the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over n samples with its CI [lo, hi] (NaN when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int


def _mean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean that treats a column of equal infinities as that infinity (no inf - inf)."""
    with np.errstate(invalid="ignore"):
        return np.mean(values, axis=axis)


def bootstrap_mean(
    values,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Estimate:
    """Mean of ``values`` (NaN dropped) and the percentile-bootstrap CI of the mean.

    Args:
        values: 1-D array-like of per-seed values.
    Returns:
        Estimate(mean, lo, hi, n); lo = hi = NaN when fewer than 2 values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(_mean(x))
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_boot, n))
    means = _mean(x[index], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method="inverted_cdf")
    return Estimate(mean, float(lo), float(hi), n)


def mean_ci(
    values,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Estimate:
    """Mean of ``values`` (NaN dropped) and its Student t CI (see the module doc).

    ``n_boot`` and ``seed`` are used only by the percentile-bootstrap fallback for samples
    with infinite values.

    >>> est = mean_ci([1.0, 2.0, 3.0, 4.0])
    >>> round(est.mean, 3), round(est.lo, 3), round(est.hi, 3), est.n
    (2.5, 0.446, 4.554, 4)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if not np.isfinite(x).all():
        return bootstrap_mean(x, n_boot=n_boot, seed=seed, level=level)
    n = int(x.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"), n)
    from scipy import stats  # ~0.3 s import, kept out of ``import analysis``

    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * float(x.std(ddof=1)) / np.sqrt(n)
    return Estimate(mean, float(mean - half), float(mean + half), n)


def paired_difference(
    a,
    b,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Estimate:
    """Mean of a_i - b_i over pairs (same seed) with the t CI over pairs (``mean_ci``).

    ``a`` and ``b`` must be aligned (element i of both comes from the same seed); pairs with
    a NaN on either side are dropped.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    with np.errstate(invalid="ignore"):
        diff = a - b
    return mean_ci(diff, n_boot=n_boot, seed=seed, level=level)


def format_estimate(est: Estimate, digits: int = 2) -> str:
    """'12.34 [11.90, 12.80]', or '12.34' without a CI, or 'n/a'."""
    if est.n == 0 or np.isnan(est.mean):
        return "n/a"
    text = f"{est.mean:.{digits}f}"
    if not (np.isnan(est.lo) or np.isnan(est.hi)):
        text += f" [{est.lo:.{digits}f}, {est.hi:.{digits}f}]"
    return text


# --------------------------------------------------------------------- the design's structure
#: the estimand of every clustered CI, in words (summary.csv's ``estimand`` column, the report)
ESTIMAND_PROMPTS = (
    "the mean over prompts (equal weight), prompts a sample: seeds averaged within a prompt, "
    "t interval over prompts"
)
ESTIMAND_ONE_PROMPT = "the mean over seeds of this one prompt (no claim beyond it)"


def cluster_means(values, clusters) -> np.ndarray:
    """Mean of the finite-or-infinite, non-NaN ``values`` within each cluster (a cluster
    whose values are all NaN is dropped), in first-seen cluster order.

    >>> cluster_means([1.0, 3.0, 10.0, np.nan], ["a", "a", "b", "c"]).tolist()
    [2.0, 10.0]
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    keys = np.asarray(clusters, dtype=object).ravel()
    if keys.shape != x.shape:
        raise ValueError(f"values and clusters differ in length: {x.size} and {keys.size}")
    out = []
    for key in dict.fromkeys(keys.tolist()):
        part = x[(keys == key) & ~np.isnan(x)]
        if part.size:
            out.append(float(_mean(part)))
    return np.asarray(out, dtype=np.float64)


def clustered_mean_ci(values, clusters, level: float = LEVEL) -> Estimate:
    """Mean and t CI that respect seeds nested in prompts (``clusters``: the prompt of each
    value). With two or more prompts: the seeds are averaged within each prompt first, then
    ``mean_ci`` over the prompt means (``ESTIMAND_PROMPTS``; n = the number of prompts); with
    one prompt, ``mean_ci`` over its seeds (``ESTIMAND_ONE_PROMPT``).

    Pooling the cells as independent replicates instead treats n_prompts x n_seeds as the
    sample size: with an intra-prompt correlation of 0.8 its 95% interval covers ~0.77
    (tests/test_replicate_stats.py simulates both).

    >>> est = clustered_mean_ci([1.0, 1.2, 3.0, 3.2, 5.0, 5.2], list("aabbcc"))
    >>> round(est.mean, 3), est.n
    (3.1, 3)
    """
    means = cluster_means(values, clusters)
    if means.size >= 2:
        return mean_ci(means, level=level)
    x = np.asarray(values, dtype=np.float64).ravel()
    return mean_ci(x, level=level)


def n_clusters(values, clusters) -> int:
    """Prompts with at least one non-NaN value."""
    return int(cluster_means(values, clusters).size)


def estimand(n_prompts: int) -> str:
    """The words of the clustered CI's estimand for ``n_prompts`` prompts."""
    return ESTIMAND_PROMPTS if n_prompts >= 2 else ESTIMAND_ONE_PROMPT


def beyond_pvalue(est: Estimate, delta: float, level: float = LEVEL) -> tuple[float, int]:
    """(p, side): the two-sided p-value that the mean lies beyond the minimum effect
    ``delta`` on the side of its estimate (side +1 above delta, -1 below -delta, 0 none),
    from the t statistic (mean -+ delta) / se with n - 1 degrees of freedom, se recovered from
    the t CI (``est`` from ``mean_ci`` / ``clustered_mean_ci`` at ``level``). NaN without a CI.

    >>> p, side = beyond_pvalue(Estimate(1.0, 0.5, 1.5, 10), 0.0)
    >>> side, p < 0.01
    (1, True)
    """
    if est.n < 2 or not (np.isfinite(est.lo) and np.isfinite(est.hi)):
        return float("nan"), 0
    from scipy import stats

    df = est.n - 1
    se = (est.hi - est.lo) / (2.0 * float(stats.t.ppf(0.5 + level / 2.0, df)))
    if se <= 0:
        side = 1 if est.mean > delta else (-1 if est.mean < -delta else 0)
        return (0.0 if side else 1.0), side
    up = float(stats.t.sf((est.mean - delta) / se, df))
    down = float(stats.t.cdf((est.mean + delta) / se, df))
    side = 1 if up <= down else -1
    return min(1.0, 2.0 * min(up, down)), side


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error <= alpha for any dependence);
    NaN entries stay NaN and are not counted in the family.

    >>> holm([0.01, 0.04, 0.03, np.nan]).round(3).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full_like(p, np.nan)
    index = np.flatnonzero(~np.isnan(p))
    m = index.size
    order = index[np.argsort(p[index], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def within(est: Estimate, delta: float) -> bool:
    """The 95% CI lies inside [-delta, delta] (two one-sided tests at 5%: equivalence).

    >>> within(Estimate(0.1, -0.2, 0.3, 5), 0.5), within(Estimate(0.1, -0.2, 0.6, 5), 0.5)
    (True, False)
    """
    if not (np.isfinite(est.lo) and np.isfinite(est.hi)):
        return False
    return bool(-delta <= est.lo and est.hi <= delta)
