"""CIs over replicates (analysis/stats.py): the t interval against scipy's, the paired
difference, and coverage by simulation against the percentile bootstrap it replaces.

Coverage: N_SIM samples of n replicates per setting; binomial sd at 0.95 is 0.0069 at
N_SIM = 1000, so |coverage - 0.95| <= 0.025 is about 3.6 sd.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.stats import bootstrap_mean, mean_ci, paired_difference

N_SIM = 1000


def test_t_interval_matches_scipy():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=13)
    est = mean_ci(x, level=0.9)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=0.9)
    assert (est.mean, est.n) == (pytest.approx(x.mean()), 13)
    assert (est.lo, est.hi) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))


def test_edge_cases():
    assert np.isnan(mean_ci([1.0]).lo) and mean_ci([]).n == 0
    assert mean_ci([2.0, np.nan, 4.0]).n == 2
    assert mean_ci([-np.inf, -np.inf]).mean == -np.inf  # zero variance stays -inf
    est = mean_ci([-np.inf, 1.0, 2.0])  # infinities: percentile-bootstrap fallback
    assert est == bootstrap_mean([-np.inf, 1.0, 2.0]) and est.lo == -np.inf


def test_paired_difference_is_the_interval_of_the_differences():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=20)
    a, b = shared + 0.3 + 0.1 * rng.normal(size=20), shared
    assert paired_difference(a, b) == mean_ci(a - b)
    assert paired_difference(a, b).lo > 0  # pairing removes the shared part
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def _coverage(x: np.ndarray, true: float) -> tuple[float, float]:
    """(t interval, percentile bootstrap) coverage over the rows of x [N_SIM, n]."""
    hit_t = hit_b = 0
    for row in x:
        t, b = mean_ci(row), bootstrap_mean(row, n_boot=400)
        hit_t += t.lo <= true <= t.hi
        hit_b += b.lo <= true <= b.hi
    return hit_t / len(x), hit_b / len(x)


@pytest.mark.parametrize("n", [12, 36])
def test_coverage_normal_and_paired(n):
    rng = np.random.default_rng(n)
    new, old = _coverage(rng.normal(size=(N_SIM, n)), 0.0)
    assert abs(new - 0.95) <= 0.025 and old < new, (new, old)
    # paired by common random numbers: a strong shared part, a small method effect 0.3
    shared = rng.normal(size=(N_SIM, n)) * 3.0
    a, b = shared + 0.3 + 0.5 * rng.normal(size=(N_SIM, n)), shared
    hits = sum(e.lo <= 0.3 <= e.hi for e in map(paired_difference, a, b))
    assert abs(hits / N_SIM - 0.95) <= 0.025


def test_coverage_heavy_tailed():
    rng = np.random.default_rng(7)
    new, old = _coverage(rng.standard_t(3, size=(N_SIM, 12)), 0.0)
    assert new >= 0.93 and old < new, (new, old)


def _nested(rng, n_prompts, n_seeds, icc):
    """value = prompt effect (variance icc) + seed noise (variance 1 - icc), mean 0."""
    prompt = rng.normal(0.0, np.sqrt(icc), n_prompts)
    noise = rng.normal(0.0, np.sqrt(1.0 - icc), (n_prompts, n_seeds))
    values = (prompt[:, None] + noise).ravel()
    clusters = np.repeat(np.arange(n_prompts), n_seeds)
    return values, clusters


@pytest.mark.parametrize("icc", [0.0, 0.8])
def test_clustered_ci_covers_at_any_intra_prompt_correlation(icc):
    """Seeds nested in prompts (6 prompts x 3 seeds), prompts a sample: the clustered t CI
    covers the population mean >= 0.93 at ICC 0 and 0.8 (seen 0.949 / 0.944); pooling the 18
    cells as independent covers 0.954 at ICC 0 but 0.747 at ICC 0.8."""
    from analysis.stats import clustered_mean_ci

    rng = np.random.default_rng(30)
    hits, pooled_hits, reps = 0, 0, 2000
    for _ in range(reps):
        values, clusters = _nested(rng, 6, 3, icc)
        est = clustered_mean_ci(values, clusters)
        hits += est.lo <= 0.0 <= est.hi
        pooled = mean_ci(values)
        pooled_hits += pooled.lo <= 0.0 <= pooled.hi
    assert hits / reps >= 0.93, hits / reps
    if icc == 0.8:
        assert pooled_hits / reps < 0.85, pooled_hits / reps


def test_clustered_ci_is_the_t_interval_of_the_prompt_means():
    from analysis.stats import ESTIMAND_ONE_PROMPT, clustered_mean_ci, estimand

    values = [1.0, 2.0, 4.0, 5.0, 9.0, np.nan]
    clusters = ["a", "a", "b", "b", "c", "c"]
    est = clustered_mean_ci(values, clusters)
    ref = mean_ci([1.5, 4.5, 9.0])
    assert (est.mean, est.lo, est.hi, est.n) == (ref.mean, ref.lo, ref.hi, ref.n)
    one = clustered_mean_ci([1.0, 2.0, 3.0], ["a"] * 3)
    assert one.n == 3 and estimand(1) == ESTIMAND_ONE_PROMPT


def test_holm_and_the_minimum_effect():
    """Under the null with 40 tests, Holm keeps the family-wise error <= 5%;
    a tiny but precise difference is 'within minimum effect', never 'worse'."""
    import pandas as pd

    from analysis.stats import Estimate, holm
    from analysis.words import assign_words

    rng = np.random.default_rng(1)
    from scipy import stats

    any_false = 0
    for _ in range(400):
        p = 2 * stats.norm.sf(np.abs(rng.normal(size=40)))
        any_false += (holm(p) < 0.05).any()
    assert any_false / 400 <= 0.07
    tiny = Estimate(-0.000021, -0.000025, -0.000017, 6)
    table = pd.DataFrame(
        [
            dict(
                mean=tiny.mean,
                lo=tiny.lo,
                hi=tiny.hi,
                n=6,
                delta=0.01,
                direction="higher",
                kind="diff",
                verdict="",
            )
        ]
    )
    assert assign_words(table)["verdict"].iloc[0] == "within minimum effect"
