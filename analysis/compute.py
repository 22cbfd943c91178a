"""Equal compute (docs/manual.md, "Equal compute and the verdict"; CARV): cost per step,
variance x cost, quality at SDS's budget. Per cell (run, method, prompt, seed), from the
long-format results:

    nfe_<kind>/step     network evaluations per step by kind (prior: ``n_evals``, phi:
                        ``n_evals_phi``, depth: ``n_evals_depth``), the slope of the
                        cumulative counter between its first and last logged step
    nfe/step            their sum;  nfe_model/step  the registry's cost model recorded in the
                        manifest (``cost_model``), so measured and model can be compared
    seconds/step        train_seconds at the last step / last step

and against the SDS cell of the same (prompt, seed) (common random numbers):

    compute_multiplier  (NSR_SDS c_SDS) / (NSR_m c_m), c = nfe/step, NSR the noise-to-signal
                        ratio of the theta-gradient (probe variant ``all``): the compute
                        each needs to estimate its own mean gradient to the same relative
                        precision (NSR / B with B draws), so it is scale-free. Matched
                        states: both NSRs are read at the cell's last probe, at the same
                        theta and on the same draws (the probe's SDS twin,
                        ``var/all/sds_snr``), so the ratio is the estimator's alone and does
                        not depend on the probe schedule:
                        ln multiplier = ln snr_m - ln sds_snr + ln c_SDS - ln c_m, NaN
                        (unresolved, counted) when an snr is <= 0. Without the twin (old runs)
                        the paired SDS cell's snr at the last probe step both have stands in
                        (``matched_states`` 0: each on its own trajectory).
                        > 1: the method reaches SDS's relative precision with less compute.
    log_nsr_ratio       ln(NSR_m / NSR_SDS) at those states (the NSR column's ratio)
    compute_multiplier_seconds   the same with c = seconds/step
    compute_multiplier_raw       diagnostic only: (Var_SDS c_SDS) / (Var_m c_m) with the raw
                        trace variance. It rewards an estimator for a small gradient (a
                        method that scales its gradient by s gains s^2), so it is never the
                        headline
    psnr_equal_compute  the method's PSNR at SDS's final cumulative NFE, linearly interpolated
                        along its PSNR-vs-cumulative-NFE curve (eval checkpoints; 0 at step 0);
                        NaN when the method never spends that budget
    psnr_equal_seconds  the same against cumulative training seconds

The per-method CI of a multiplier is exp of the t CI (``analysis.stats.mean_ci``) of the
per-cell log multipliers over replicates (prompts x seeds).

>>> curve = pd.DataFrame({"x": [0.0, 100.0, 200.0], "value": [10.0, 14.0, 16.0]})
>>> float(value_at_budget(curve, 150.0)), bool(np.isnan(value_at_budget(curve, 250.0)))
(15.0, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.cells import (
    CELL,
    COST_COUNTERS,
    REFERENCE,
    add_labels,
    cumulative_calls,
    reference_labels,
)

VAR_METRIC = "var/all/var_trace"
SNR_METRIC = "var/all/snr"
#: SDS at the same theta and draws as the cell's own probe (benchmark/probe/probe.py)
TWIN_SNR_METRIC = "var/all/sds_snr"
TWIN_VAR_METRIC = "var/all/sds_var_trace"
FLAG_METRIC = "var/mu_uninformed"


def _series(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """CELL + step + value of one metric, last row per (cell, step), sorted by step."""
    rows = df.loc[df["metric"] == metric, [*CELL, "step", "value"]]
    return rows.groupby([*CELL, "step"], as_index=False)["value"].last().sort_values("step")


def _slope(rows: pd.DataFrame) -> float:
    """Per-step rate of a cumulative counter (rows of one cell: step, value)."""
    rows = rows[rows["step"] > 0]
    if rows.empty:
        return np.nan
    first, last = rows.iloc[0], rows.iloc[-1]
    if last["step"] == first["step"]:
        return float(last["value"]) / float(last["step"])
    return float(last["value"] - first["value"]) / float(last["step"] - first["step"])


def model_cost(manifest: dict, method: str) -> float:
    """The registry's network evaluations per step of ``method`` from a run manifest
    (``cost_model[method]['per_step']``, summed over kinds), NaN when not recorded."""
    base = method.split("+")[0]  # lever_table's 'sds+k4' is the run's 'sds'
    per_step = (manifest.get("cost_model") or {}).get(base, {}).get("per_step")
    return float(sum(per_step.values())) if per_step else np.nan


def cost_table(df: pd.DataFrame, manifests: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per cell (CELL index): nfe_<kind>/step, nfe/step, nfe_model/step,
    seconds/step (module docstring)."""
    cells = df.groupby(CELL).size().index
    out = pd.DataFrame(index=cells)
    total = pd.Series(0.0, index=cells)
    for kind, metric in COST_COUNTERS.items():
        rates = _series(df, metric).groupby(CELL)[["step", "value"]].apply(_slope)
        rate = rates.reindex(cells).fillna(0.0) if len(rates) else pd.Series(0.0, index=cells)
        out[f"nfe_{kind}/step"] = rate
        total = total + rate
    out["nfe/step"] = total
    manifests = manifests or {}
    out["nfe_model/step"] = [
        model_cost(manifests.get(run, {}), method) for run, method, *_ in cells
    ]
    seconds = _series(df, "train_seconds").groupby(CELL).last()
    out["seconds/step"] = (
        (seconds["value"] / seconds["step"]).reindex(cells) if len(seconds) else np.nan
    )
    return out


def cumulative_cost(df: pd.DataFrame) -> pd.DataFrame:
    """CELL + step + nfe (cumulative, all kinds: ``cells.cumulative_calls``) + seconds
    (cumulative train_seconds, carried forward like the counters)."""
    calls = cumulative_calls(df).rename(columns={"value": "nfe"})
    seconds = _series(df, "train_seconds").rename(columns={"value": "seconds"})
    if calls.empty and seconds.empty:
        return pd.DataFrame(columns=[*CELL, "step", "nfe", "seconds"])
    keys = [*CELL, "step"]
    if calls.empty:
        return seconds.assign(nfe=0.0)[[*keys, "nfe", "seconds"]]
    if seconds.empty:
        return calls.assign(seconds=np.nan)
    wide = calls.merge(seconds, on=keys, how="outer").set_index(keys).sort_index()
    wide = wide.groupby(level=list(range(len(CELL)))).ffill()
    wide["nfe"] = wide["nfe"].fillna(0.0)
    wide["seconds"] = wide["seconds"].fillna(0.0)
    return wide.reset_index()


def quality_curve(df: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """CELL + label + step + value (``metric`` at eval checkpoints) + nfe + seconds
    (cumulative cost at that step; 0 at step 0)."""
    df = df if "label" in df.columns else add_labels(df)
    rows = df.loc[df["metric"] == metric, [*CELL, "label", "step", "value"]]
    rows = rows.groupby([*CELL, "label", "step"], as_index=False)["value"].last()
    merged = rows.merge(cumulative_cost(df), on=[*CELL, "step"], how="left")
    merged.loc[merged["step"] == 0, ["nfe", "seconds"]] = 0.0
    return merged.sort_values("step")


def value_at_budget(curve: pd.DataFrame, budget: float, x: str = "x") -> float:
    """``value`` of a monotone cost curve (columns x, value) linearly interpolated at
    ``budget``; NaN when the curve never reaches the budget (or it is not finite)."""
    curve = curve[np.isfinite(curve[x]) & np.isfinite(curve["value"])].sort_values(x)
    if curve.empty or not np.isfinite(budget) or budget > float(curve[x].iloc[-1]) + 1e-9:
        return np.nan
    return float(np.interp(budget, curve[x].to_numpy(float), curve["value"].to_numpy(float)))


def probe_series(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """CELL + step + value of a probe metric at steps > 0, rows flagged mu-uninformed
    dropped."""
    rows = _series(df, metric)
    rows = rows[rows["step"] > 0]
    flags = _series(df, FLAG_METRIC)
    if len(flags):
        flagged = flags[flags["value"] > 0][[*CELL, "step"]].assign(flag=True)
        rows = rows.merge(flagged, on=[*CELL, "step"], how="left")
        rows = rows[rows["flag"].isna()].drop(columns="flag")
    return rows


def reference_pairs(cells: pd.DataFrame, reference: str = REFERENCE) -> dict[str, str]:
    """label -> the SDS label it is paired with (same run, else the only SDS in the data)."""
    pairs, _ = reference_labels(cells, reference)
    for label in cells.loc[cells["method"] == reference, "label"].unique():
        pairs[label] = label
    return pairs


def equal_compute_table(
    df: pd.DataFrame, manifests: dict[str, dict] | None = None, reference: str = REFERENCE
) -> pd.DataFrame:
    """One row per cell: CELL + label + cost_table columns + log_multiplier (NFE),
    log_multiplier_seconds, psnr_equal_compute, psnr_equal_seconds, budget_nfe, budget_seconds
    (SDS's final cumulative NFE / seconds) and ref_psnr (the paired SDS cell's final PSNR)."""
    df = df if "label" in df.columns else add_labels(df)
    cost = cost_table(df, manifests)
    labels = df.groupby(CELL)["label"].first()
    cells = cost.assign(label=labels).reset_index()
    pairs = reference_pairs(cells, reference)
    curves = quality_curve(df, "psnr")
    by_cell = {key: rows for key, rows in curves.groupby(CELL)}
    var_by_cell = {
        name: {key: rows.set_index("step")["value"] for key, rows in series.groupby(CELL)}
        for name, series in (
            ("snr", probe_series(df, SNR_METRIC)),
            ("var", probe_series(df, VAR_METRIC)),
            ("sds_snr", probe_series(df, TWIN_SNR_METRIC)),
            ("sds_var", probe_series(df, TWIN_VAR_METRIC)),
        )
    }
    index = {(lab, p, s): key for key, lab, p, s in _keys(cells)}
    out = []
    for row in cells.itertuples(index=False):
        key = tuple(getattr(row, c) for c in CELL)
        record = {c: getattr(row, c) for c in [*CELL, "label"]}
        ref_key = index.get((pairs.get(row.label), row.prompt, row.seed))
        record.update(_versus(key, ref_key, cost, var_by_cell, by_cell))
        out.append(record)
    table = pd.DataFrame(out)
    return table.merge(cost.reset_index(), on=CELL, how="left") if len(table) else table


def _keys(cells: pd.DataFrame):
    for row in cells.itertuples(index=False):
        yield tuple(getattr(row, c) for c in CELL), row.label, row.prompt, row.seed


def _versus(key, ref_key, cost, var_by_cell, curves) -> dict[str, float]:
    nan = dict.fromkeys(
        (
            "log_multiplier",
            "log_multiplier_raw",
            "log_multiplier_seconds",
            "psnr_equal_compute",
            "psnr_equal_seconds",
            "budget_nfe",
            "budget_seconds",
            "ref_psnr",
            "log_nsr_ratio",
            "matched_states",
        ),
        np.nan,
    )
    if ref_key is None:
        return nan
    out = dict(nan)
    d, matched = _matched_log_ratio(key, ref_key, var_by_cell, "snr", "sds_snr")
    d_raw, _ = _matched_log_ratio(key, ref_key, var_by_cell, "var", "sds_var")
    d_raw = -d_raw  # raw: (Var_SDS c_SDS) / (Var_m c_m)
    out["matched_states"] = matched
    out["log_nsr_ratio"] = -d
    for name, column, gain in (
        ("log_multiplier", "nfe/step", d),
        ("log_multiplier_seconds", "seconds/step", d),
        ("log_multiplier_raw", "nfe/step", d_raw),
    ):
        c_ref, c_me = float(cost.loc[ref_key, column]), float(cost.loc[key, column])
        if np.isfinite(gain) and c_ref > 0 and c_me > 0:
            out[name] = gain + np.log(c_ref) - np.log(c_me)
    curve, ref_curve = curves.get(key), curves.get(ref_key)
    if curve is not None and ref_curve is not None and len(ref_curve):
        last = ref_curve.iloc[-1]
        out["ref_psnr"] = float(last["value"])
        for name, x, budget in (
            ("psnr_equal_compute", "nfe", "budget_nfe"),
            ("psnr_equal_seconds", "seconds", "budget_seconds"),
        ):
            out[budget] = float(last[x])
            out[name] = value_at_budget(curve, float(last[x]), x)
    return out


def _at_last(series: pd.Series | None, step: int | None = None) -> float:
    """The value at ``step`` (default: the last step) of a per-step series, NaN if absent."""
    if series is None or series.empty:
        return np.nan
    step = int(series.index.max()) if step is None else step
    return float(series.get(step, np.nan))


def _log_ratio_of(a: float, b: float) -> float:
    """ln(a / b), NaN unless both are positive and finite (an unresolved snr)."""
    ok = np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0
    return float(np.log(a / b)) if ok else np.nan


def _matched_log_ratio(key, ref_key, series, own: str, twin: str) -> tuple[float, float]:
    """(ln own_m / own_SDS, matched): at the cell's last probe against its SDS twin (same
    theta, same draws; matched 1), else at the last probe step the cell and its paired SDS
    cell share (matched 0); the SDS cell itself: (0, 1)."""
    mine = series[own].get(key)
    if key == ref_key:
        return (0.0 if np.isfinite(_at_last(mine)) else np.nan), 1.0
    twin_series = series[twin].get(key)
    if twin_series is not None and not twin_series.empty and mine is not None:
        step = int(twin_series.index.max())
        return _log_ratio_of(_at_last(mine, step), _at_last(twin_series, step)), 1.0
    ref = series[own].get(ref_key)
    if mine is None or ref is None:
        return np.nan, np.nan
    common = mine.index.intersection(ref.index)
    if common.empty:
        return np.nan, np.nan
    step = int(common.max())
    return _log_ratio_of(_at_last(mine, step), _at_last(ref, step)), 0.0


def lever_table(base: pd.DataFrame, levers: dict[str, pd.DataFrame], manifests=None):
    """Compute multipliers of lever runs against the base run's SDS: each lever run's method
    m is renamed ``m+<lever>`` and paired with the base SDS cell of the same prompt and seed.
    Returns (per-cell equal_compute_table, per-label mean/lo/hi of exp(log multipliers))."""
    from analysis.stats import mean_ci

    frames = [base]
    for name, df in levers.items():
        frames.append(df.assign(method=df["method"] + "+" + name))
    cells = equal_compute_table(add_labels(pd.concat(frames, ignore_index=True)), manifests)
    rows = []
    for label, part in cells.groupby("label", sort=False):
        row = {"label": label, "cells": len(part)}
        for column in ("log_multiplier", "log_multiplier_seconds"):
            est = mean_ci(part[column].to_numpy(float))
            name = column.replace("log_multiplier", "compute_multiplier")
            row.update(
                {name: np.exp(est.mean), f"{name}_lo": np.exp(est.lo), f"{name}_hi": np.exp(est.hi)}
            )
        row["nfe/step"] = float(part["nfe/step"].mean())
        row["seconds/step"] = float(part["seconds/step"].mean())
        rows.append(row)
    return cells, pd.DataFrame(rows)
