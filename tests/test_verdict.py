"""Equal compute and the verdict (analysis/compute.py, analysis/verdict.py) on synthetic
long-format results whose multipliers and equal-compute PSNRs are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.compute import cost_table, equal_compute_table, value_at_budget
from analysis.stats import Estimate
from analysis.verdict import method_table, summary_frame, terminal_frame, verdict_word

SEEDS = (0, 1, 2, 3)


def _cell(method, seed, nfe, depth, seconds, var, psnr_slope, flag0=False, signal=1.0):
    """Rows of one cell: 100 steps, eval every 50, probe at 0/50/100; the unbiased squared
    norm of the mean gradient is ``signal`` x var / 4 (so NSR = 4 / signal, scale-free) unless
    ``signal`` is None (then ||mu||^2 = the jitter: NSR = var at steps > 0)."""
    rows = []
    jitter = 1.0 + 0.01 * seed

    def add(step, metric, value):
        rows.append(("r", method, "a snowman", seed, step, metric, float(value)))

    for step in range(1, 101):
        add(step, "n_evals", nfe * step)
        if depth:
            add(step, "n_evals_depth", depth * step)
        add(step, "train_seconds", seconds * step)
    for step in (0, 50, 100):
        add(step, "psnr", 10 + psnr_slope * step * jitter)
        var_trace = var * jitter * (3.0 if step == 0 else 1.0)
        mu_sq = jitter if signal is None else signal * var_trace / 4.0
        add(step, "var/all/var_trace", var_trace)
        add(step, "var/all/snr", mu_sq / var_trace)
        add(step, "var/all/nsr", var_trace / mu_sq)
        add(step, "var/all/log_var", math.log(var))
        if flag0 and step == 0:
            add(step, "var/mu_uninformed", 1.0)
    return rows


def _results(ssd_var=1.0, ssd_signal=None):
    """SDS var 4 with ||mu||^2 = 1 (NSR 4); SSD var ``ssd_var`` with ||mu||^2 = 1 unless
    ``ssd_signal`` (module doc of _cell)."""
    rows = []
    for seed in SEEDS:
        rows += _cell("sds", seed, 1, 0, 0.1, 4.0, psnr_slope=0.1, signal=None)
        rows += _cell("ssd", seed, 1, 1, 0.2, ssd_var, 0.2, flag0=True, signal=ssd_signal)
    return pd.DataFrame(
        rows, columns=["run_id", "method", "prompt", "seed", "step", "metric", "value"]
    )


MANIFESTS = {
    "r": {
        "cost_model": {
            "sds": {"per_step": {"prior": 1}},
            "ssd": {"per_step": {"prior": 1, "depth": 1}},
        }
    }
}


def test_cost_per_step_by_kind_and_the_model():
    cost = cost_table(_results(), MANIFESTS)
    ssd = cost.xs("ssd", level="method").iloc[0]
    assert ssd["nfe_prior/step"] == 1 and ssd["nfe_depth/step"] == 1 and ssd["nfe/step"] == 2
    assert ssd["nfe_model/step"] == 2 and ssd["seconds/step"] == pytest.approx(0.2)


def test_multiplier_and_psnr_at_equal_compute_are_exact():
    """NSR 4 vs 1 (same ||mu||) at twice the cost per step: multiplier 4 / 2 = 2 (NFE and
    seconds); SSD reaches SDS's 100 NFE at step 50: PSNR 10 + 0.2 * 50 (x the seed's
    jitter)."""
    table = equal_compute_table(_results(), MANIFESTS).set_index(["method", "seed"])
    for seed in SEEDS:
        assert table.loc[("ssd", seed), "log_multiplier"] == pytest.approx(math.log(2))
        assert table.loc[("ssd", seed), "log_multiplier_seconds"] == pytest.approx(math.log(2))
        assert table.loc[("ssd", seed), "log_multiplier_raw"] == pytest.approx(math.log(2))
        assert table.loc[("sds", seed), "log_multiplier"] == pytest.approx(0.0)
        jitter = 1.0 + 0.01 * seed
        assert table.loc[("ssd", seed), "psnr_equal_compute"] == pytest.approx(10 + 10 * jitter)
        assert table.loc[("ssd", seed), "ref_psnr"] == pytest.approx(10 + 10 * jitter)


def test_multiplier_is_scale_free_and_the_raw_one_is_not():
    """SSD = SDS's gradient scaled by 1/4 (var / 16, ||mu||^2 / 16: the same NSR 4) at twice
    the cost: the multiplier is the cost ratio 1/2; the raw-variance multiplier rewards the
    small gradient with 16 / 2 = 8."""
    table = equal_compute_table(_results(ssd_var=0.25, ssd_signal=1.0), MANIFESTS)
    ssd = table.set_index(["method", "seed"]).xs("ssd", level="method")
    assert np.allclose(ssd["log_multiplier"], math.log(0.5))
    assert np.allclose(ssd["log_multiplier_raw"], math.log(8.0))


def test_unresolved_nsr_gives_no_multiplier_and_an_open_nsr_ci():
    """An snr whose mean is <= 0 (NSR not resolved) gives NaN multipliers, and the NSR's CI
    over replicates reaches inf when the snr CI reaches 0."""
    df = _results()
    ssd_snr = (df["method"] == "ssd") & (df["metric"] == "var/all/snr")
    df.loc[ssd_snr, "value"] = np.where(df.loc[ssd_snr, "seed"] % 2 == 0, -0.02, 0.01)
    table = equal_compute_table(df, MANIFESTS).set_index(["method", "seed"])
    assert np.isnan(table.loc[("ssd", 0), "log_multiplier"])
    assert np.isfinite(table.loc[("ssd", 1), "log_multiplier"])
    estimates, cells = method_table(df, MANIFESTS)
    nsr = estimates.set_index(["label", "quantity"]).loc[("ssd", "nsr")]
    assert nsr["mean"] == np.inf and nsr["hi"] == np.inf  # mean snr -0.005


def test_value_at_budget_interpolates_and_says_never_reached():
    curve = pd.DataFrame({"x": [0.0, 10.0, 30.0], "value": [1.0, 2.0, 4.0]})
    assert value_at_budget(curve, 20.0) == 3.0
    assert np.isnan(value_at_budget(curve, 31.0))


def test_words_follow_the_better_direction():
    assert verdict_word(Estimate(-1, -2, -0.5, 4), "lower") == "better"
    assert verdict_word(Estimate(-1, -2, -0.5, 4), "higher") == "worse"
    assert verdict_word(Estimate(0.1, -2, 0.5, 4), "higher") == "no clear difference"
    assert verdict_word(Estimate(1.2, 1.1, 1.3, 4), "higher", null=1.0) == "better"


def test_method_table_summary_csv_and_terminal():
    estimates, cells = method_table(_results(ssd_var=8.0), MANIFESTS)
    frame = summary_frame(estimates, cells).set_index("method")
    # var 4 vs 8 at twice the cost: multiplier 0.25, a CI of width 0 (same for every seed)
    assert frame.loc["ssd", "compute_multiplier"] == pytest.approx(0.25)
    assert frame.loc["ssd", "compute_multiplier_verdict"] == "worse"  # CI [0.25, 0.25]
    assert frame.loc["sds", "compute_multiplier_verdict"] == "reference"
    assert frame.loc["ssd", "nsr_verdict"] == "worse"  # 16 vs 8 on every pair
    assert frame.loc["ssd", "psnr_vs_sds"] > 0 and frame.loc["ssd", "psnr_verdict"] == "better"
    assert frame.loc["ssd", "cells"] == 4 and np.isnan(frame.loc["ssd", "cv_gain"])
    terminal = terminal_frame(estimates, cells)
    assert list(terminal.columns)[:2] == ["cells", "NSR"]


def test_lever_runs_are_paired_with_the_base_sds():
    """A lever run whose SDS has NSR 1 at the same cost: multiplier 4 against the base."""
    from analysis.compute import lever_table

    base = _results()
    lever = base[base["method"] == "sds"].copy()
    lever.loc[lever["metric"] == "var/all/var_trace", "value"] /= 4.0
    lever.loc[lever["metric"] == "var/all/snr", "value"] *= 4.0
    lever["run_id"] = "lever"
    _, table = lever_table(base, {"k4": lever})
    row = table.set_index("label").loc["sds+k4"]
    assert row["compute_multiplier"] == pytest.approx(4.0)
    assert row["compute_multiplier_seconds"] == pytest.approx(4.0)


def _trajectories(probe_steps, twin=True, workers=1):
    """3 prompts x 2 seeds of SDS and VSD over 150 steps: NSR rises as a run converges
    (snr = s0 / (1 + step / 10)), VSD's trajectory converges faster (its own-state NSR is
    higher) but at the same theta its NSR is 0.8 x SDS's (the twin's ``sds_snr``)."""
    rows = []
    for p, prompt in enumerate(("a", "b", "c")):
        for seed in (0, 1):
            jitter = 1.0 + 0.05 * p + 0.01 * seed
            for method, speed, nfe in (("sds", 1.0, 1), ("vsd", 2.0, 2)):

                def add(step, metric, value, method=method, prompt=prompt, seed=seed):
                    rows.append(("r", method, prompt, seed, step, metric, float(value)))

                for step in range(1, 151):
                    add(step, "n_evals", nfe * step)
                    add(step, "train_seconds", 0.1 * nfe * step)
                for step in (0, 50, 100, 150):
                    add(step, "psnr", 10 + 0.05 * speed * step * jitter)
                for step in probe_steps:
                    sds_snr = jitter / (1.0 + speed * step / 10.0)
                    snr = sds_snr / 0.8 if method == "vsd" else sds_snr
                    add(step, "var/all/snr", snr)
                    add(step, "var/all/var_trace", 1.0 / snr)
                    if twin and method == "vsd" and step == probe_steps[-1]:
                        add(step, "var/all/sds_snr", sds_snr)
                        add(step, "var/all/sds_var_trace", 1.0 / sds_snr)
    df = pd.DataFrame(
        rows, columns=["run_id", "method", "prompt", "seed", "step", "metric", "value"]
    )
    return df, {"r": {"workers": workers}}


@pytest.mark.parametrize("twin", [True, False])
def test_verdict_does_not_move_with_the_probe_schedule(twin):
    """Same trajectories probed at the end only (R1) or every 25 steps (R2): one verdict.
    With the twin the NSR ratio is the estimator's alone: exactly 0.8 (VSD / SDS at the same
    theta), multiplier (1 / 0.8) x (1 / 2) = 0.625."""
    frames = []
    for schedule in ((0, 150), tuple(range(0, 151, 25))):
        df, manifests = _trajectories(schedule, twin=twin)
        estimates, cells = method_table(df, manifests)
        frames.append(summary_frame(estimates, cells).set_index("method"))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    vsd = frames[0].loc["vsd"]
    if twin:
        assert vsd["nsr_vs_sds"] == pytest.approx(0.8)
        assert vsd["compute_multiplier"] == pytest.approx(0.625)
        assert vsd["nsr_verdict"] == "better" and vsd["compute_multiplier_verdict"] == "worse"
    assert vsd["estimand"].startswith("the mean over prompts")


def test_seconds_words_need_one_cell_at_a_time_and_unresolved_cells_are_counted():
    df, manifests = _trajectories((0, 150))
    shared = {"r": {"workers": 2}}
    worded = summary_frame(*method_table(df, manifests)).set_index("method").loc["vsd"]
    indicative = summary_frame(*method_table(df, shared)).set_index("method").loc["vsd"]
    assert worded["compute_multiplier_seconds_verdict"] in ("better", "worse")
    assert indicative["compute_multiplier_seconds_verdict"] == "indicative"
    assert indicative["compute_multiplier_verdict"] == worded["compute_multiplier_verdict"]
    # one VSD cell's snr unresolved (<= 0): counted, not silently dropped
    mask = (df["method"] == "vsd") & (df["prompt"] == "a") & (df["seed"] == 0)
    mask &= (df["metric"] == "var/all/snr") & (df["step"] == 150)
    df.loc[mask, "value"] = -0.01
    estimates, cells = method_table(df, manifests)
    row = summary_frame(estimates, cells).set_index("method").loc["vsd"]
    assert row["compute_multiplier_vs_sds_n"] == 5 and row["cells"] == 6
    terminal = terminal_frame(estimates, cells)
    assert "(5/6 resolved)" in terminal.loc["vsd", "x compute (NFE)"]


def test_cos_self_ci_stays_in_bounds_and_gets_no_word():
    df, manifests = _trajectories((0, 150))
    extra = df[df["metric"] == "var/all/snr"].assign(metric="var/all/cos_self")
    extra["value"] = np.where(extra["seed"] == 0, 0.999, 0.2)
    estimates, _ = method_table(pd.concat([df, extra]), manifests)
    cos = estimates[estimates["quantity"] == "cos_self"]
    assert (cos["lo"] >= -1).all() and (cos["hi"] <= 1).all()
    assert set(cos["verdict"]) <= {"n/a", "reference"}
