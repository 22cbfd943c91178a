"""The ground-truth-free convergence signals (``conv/*``) and the stop rule, read from results.

Per cell (run, method, prompt, seed), from the long-format rows:

    stop_table          the step where the run's stop rule fired (``stop/fired``) and the
                        cumulative network calls of every network there (``n_calls``, as
                        analysis/summary.py); NaN where it never fired
    trajectories        one row per evaluation after step 0: the cell's quality and every
                        logged signal. Quality is the exact quality fraction (``quality/psnr``,
                        world only) or, in runs without the ceiling, the held-out PSNR gain
                        psnr - psnr(step 0): within a cell the fraction is (psnr - psnr_0) /
                        (ceiling - psnr_0), an increasing affine map of that gain, so both give
                        the same ranks (Spearman) and the same fractions of the final value
    spearman            rank correlation (average ranks for ties) of two sequences
    truth_step          the first evaluation where quality reaches a fraction of the cell's
                        final quality (its value at the last evaluation): the step a stop rule
                        should find; NaN when the final quality is not positive
    replay_rule         the step where a rule (results/stop_rule.py) fires on a cell's logged
                        signals: the same decision the training loop takes, with any thresholds
    validation_cells    per cell: Spearman of each signal (and of the step itself, the clock
                        baseline every monotone signal matches) with quality along the
                        trajectory, the rule's step and quality there, the steps to 80% / 95%
                        of the final quality

Signals fall as quality rises, so a useful signal has a Spearman correlation near -1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.cells import CALLS, CELL, with_calls
from results.stop_rule import SIGNALS, StopRule, StopState, parse_stop_rule

QUALITY = "quality/psnr"
#: the fractions of the final quality whose steps a stop rule is compared with
TRUTH_FRACTIONS = (0.8, 0.95)


def stop_table(df: pd.DataFrame) -> pd.DataFrame:
    """CELL + ``stop/step`` + ``stop/calls`` for every cell of ``df`` (NaN: never fired)."""
    df = with_calls(df)
    cells = df.groupby(CELL).size().index
    out = pd.DataFrame(index=cells, columns=["stop/step", "stop/calls"], dtype=float)
    fired = df[df["metric"] == "stop/fired"].groupby(CELL)["step"].min()
    out.loc[fired.index, "stop/step"] = fired.astype(float)
    calls = df[df["metric"] == CALLS].set_index([*CELL, "step"])["value"]
    for cell, step in fired.items():
        key = (*cell, step)
        out.loc[cell, "stop/calls"] = float(calls.get(key, np.nan)) if step > 0 else 0.0
    return out.reset_index()


def stop_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``steps to stop`` and ``calls to stop`` per cell (indexed by CELL), as the summary
    shows them."""
    stops = stop_table(df).set_index(CELL)
    return stops.rename(columns={"stop/step": "steps to stop", "stop/calls": "calls to stop"})


def quality_rows(df: pd.DataFrame) -> pd.DataFrame:
    """CELL + step + value of the cell's quality (module doc: quality/psnr, else the PSNR
    gain over step 0), metric ``quality``."""
    rows = df[df["metric"] == QUALITY]
    if rows.empty:
        psnr = df[df["metric"] == "psnr"]
        start = psnr[psnr["step"] == 0].groupby(CELL)["value"].first().rename("start")
        rows = psnr.merge(start.reset_index(), on=CELL)
        rows = rows.assign(value=rows["value"] - rows["start"])
    return rows[[*CELL, "step", "value"]].assign(metric="quality")


def trajectories(df: pd.DataFrame) -> pd.DataFrame:
    """CELL + step + quality + conv/<signal> columns, evaluations after step 0 only."""
    names = ["quality", *(f"conv/{s}" for s in SIGNALS)]
    rows = df[df["metric"].isin(names[1:-1])]
    rows = pd.concat([rows, quality_rows(df), probe_signal_ratio(df)], ignore_index=True)
    rows = rows[rows["step"] > 0]
    if rows.empty:
        return pd.DataFrame(columns=[*CELL, "step", *names])
    wide = rows.pivot_table(index=[*CELL, "step"], columns="metric", values="value", aggfunc="last")
    wide = wide.reindex(columns=[n for n in names if n in wide.columns]).reset_index()
    return wide.sort_values([*CELL, "step"]).reset_index(drop=True)


def probe_signal_ratio(df: pd.DataFrame) -> pd.DataFrame:
    """CELL + step + value rows of ``conv/probe_signal_ratio`` at the probe's own steps
    after 0: var/all/signal_sq over the cell's step-0 value (the logged rows carry the last
    probe forward to every evaluation; this keeps only fresh values)."""
    rows = df[df["metric"] == "var/all/signal_sq"]
    start = rows[rows["step"] == 0].groupby(CELL)["value"].first().rename("start")
    later = rows[rows["step"] > 0].merge(start.reset_index(), on=CELL)
    ratio = later["value"] / later["start"].where(later["start"] > 0)
    return later[[*CELL, "step"]].assign(metric="conv/probe_signal_ratio", value=ratio)


def spearman(x, y) -> float:
    """Spearman's rank correlation of paired finite values (NaN pairs dropped; NaN with
    fewer than 3 pairs or a constant side).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return math.nan
    ra = pd.Series(a[keep]).rank().to_numpy()
    rb = pd.Series(b[keep]).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def truth_step(steps, quality, fraction: float) -> float:
    """First step where quality >= fraction x final quality (the last value); NaN when the
    final quality is not positive or not finite.

    >>> truth_step([10, 20, 30, 40], [0.2, 0.7, 0.85, 0.9], 0.8)
    30.0
    """
    q = np.asarray(quality, dtype=float)
    if len(q) == 0 or not np.isfinite(q[-1]) or q[-1] <= 0:
        return math.nan
    hit = np.nonzero(q >= fraction * q[-1])[0]
    return float(np.asarray(steps, dtype=float)[hit[0]])


def replay_rule(
    steps, signals: dict[str, np.ndarray], rule: StopRule, patience: int, window: int
) -> float:
    """The step where ``rule`` fires on one cell's evaluations (``signals``: name -> values
    per evaluation, without the ``conv/`` prefix), as the training loop decides it (the rule
    is not checked before ``window`` steps); NaN if it never fires.

    >>> rule = parse_stop_rule("agreement<0.5")
    >>> replay_rule([20, 40, 60, 80], {"agreement": [0.9, 0.4, 0.3, 0.2]}, rule, 2, 20)
    60.0
    """
    state = StopState(patience)
    n = len(steps)
    for i, step in enumerate(steps):
        values = {name: float(v[i]) for name, v in signals.items() if len(v) == n}
        holds = step >= window and rule.holds(values)
        if state.update(int(step), holds):
            return float(step)
    return math.nan


def validation_cells(
    df: pd.DataFrame, rule: str | StopRule, patience: int = 2, window: int = 20
) -> pd.DataFrame:
    """One row per cell with a quality trajectory: ``rho/<signal>`` (and ``rho/step``), the
    replayed rule's ``rule_step``, ``q_at_rule`` (quality there over the final quality),
    ``final_quality``, ``q80_step`` / ``q95_step`` and ``rule_minus_q80`` / ``_q95`` (steps)."""
    rule = parse_stop_rule(rule) if isinstance(rule, str) else rule
    traj = trajectories(df)
    rows = []
    for cell, t in traj.groupby(CELL, sort=False):
        if "quality" not in t or not t["quality"].notna().any():
            continue
        t = t[t["quality"].notna()]
        steps, quality = t["step"].to_numpy(float), t["quality"].to_numpy(float)
        row = dict(zip(CELL, cell, strict=True))
        row["rho/step"] = spearman(steps, quality)
        signals = {}
        for name in SIGNALS:
            column = f"conv/{name}"
            if column in t and t[column].notna().any():
                signals[name] = t[column].to_numpy(float)
                row[f"rho/{name}"] = spearman(signals[name], quality)
        final = quality[-1]
        row["final_quality"] = final
        rule_step = replay_rule(steps, signals, rule, patience, window)
        row["rule_step"] = rule_step
        at = np.nonzero(steps == rule_step)[0]
        row["q_at_rule"] = quality[at[0]] / final if len(at) and final > 0 else math.nan
        for fraction in TRUTH_FRACTIONS:
            name = f"q{round(100 * fraction)}"
            row[f"{name}_step"] = truth_step(steps, quality, fraction)
            row[f"rule_minus_{name}"] = rule_step - row[f"{name}_step"]
        rows.append(row)
    return pd.DataFrame(rows)
