"""The verdict: one row per method, at matched states and equal compute, with CIs that
respect the design (seeds nested in prompts) and words only where they hold.

``method_table(df, manifests)`` gives, per method (label) and ``QUANTITIES`` entry, the mean
over its cells with a 95% t CI clustered by prompt (``analysis.stats.clustered_mean_ci``:
seeds averaged within a prompt, then a t interval over prompts; the estimand, in words, is
``analysis.stats.estimand``), and the comparison with SDS:

    paired difference       method - SDS per (prompt, seed) cell (common random numbers),
                            clustered by prompt (quality, log variances, cv_gain)
    ln ratio, matched       NSR: ln(NSR_m / NSR_SDS) at the cell's last probe, both at the same
                            theta and draws (the probe's SDS twin, benchmark/probe/twin.py;
                            ``analysis.compute``); the multipliers add the cost ratio
    one-sample              the bias check: bias_rel = ||mu_m - mu_SDS||^2 / ||mu_SDS||^2,
                            judged only for methods that claim SDS's expectation

and its word from ``analysis.words`` (a minimum effect per quantity from the metric catalogue,
Holm's correction over the whole table): better / worse / within minimum effect / no clear
difference, or for the bias check differs from / matches SDS's mean / unresolved. Seconds
get words only when the run did one cell at a time (manifest ``workers == 1``), else
``indicative``. ``cos_self`` (the mean against the same estimator's fresh draws: resolution,
E ~ 1 / (1 + NSR / K), blind to bias) gets no word; its CI is clipped to [-1, 1]. Cells
without a value (an unresolved NSR, a failed cell, a budget never reached) are counted:
``n_cells`` of ``n_total``.

Variance statistics are taken at each cell's last probe step (step 0 and rows flagged
``var/mu_uninformed`` left out), so the verdict does not depend on ``measure.every``.

``write_summary_csv(run_dir)`` writes ``summary.csv`` (one row per method, module doc of
``summary_frame``); the runner calls it at the end of every run and ``python -m benchmark
report`` writes it beside the report.

>>> verdict_word(Estimate(1.0, 0.2, 1.8, 6), "higher")
'better'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cells import CELL, REFERENCE, add_labels, sort_labels, unfinished_cells
from analysis.compute import equal_compute_table, probe_series
from analysis.convergence import stop_table
from analysis.stats import (
    Estimate,
    cluster_means,
    clustered_mean_ci,
    estimand,
    format_estimate,
)
from analysis.words import assign_words
from results.catalogue import better_direction, minimum_effect


@dataclass(frozen=True)
class Quantity:
    """name: column in summary.csv; source: a logged metric (its value at the cell's last
    step; variance metrics at the last probe) or a column of ``equal_compute_table``; log:
    the source is a per-cell ln ratio vs SDS (multipliers: CI exp of a t CI on the log
    scale); inverse: the source is the reciprocal (snr for nsr), averaged and CI'd on the
    source's scale and inverted, compared through ``ratio_source`` (ln NSR_m / NSR_SDS);
    word: 'diff' (vs SDS), 'bias' (one-sample bias check) or 'none'; seconds: measured in
    wall-clock seconds (words need one cell at a time)."""

    name: str
    source: str
    header: str
    digits: int = 2
    log: bool = False
    #: better-direction when the catalogue knows neither ``name`` nor ``source``
    default_better: str | None = None
    inverse: bool = False
    ratio_source: str | None = None
    word: str = "diff"
    bounds: tuple[float, float] | None = None
    seconds: bool = False


QUANTITIES = (
    Quantity("nsr", "var/all/snr", "NSR", 1, inverse=True, ratio_source="log_nsr_ratio"),
    Quantity("log_var", "var/all/log_var", "log_var"),
    Quantity("update_log_var", "var/all/update_log_var", "upd log_var", 2, False, "lower"),
    Quantity("cv_gain", "var/all/cv_gain", "cv_gain", 2, False, "higher"),
    Quantity("bias_rel", "var/all/bias_rel", "bias vs SDS", 3, word="bias"),
    Quantity("cos_self", "var/all/cos_self", "cos_self", 3, word="none", bounds=(-1.0, 1.0)),
    # the law-of-total-variance split at the last probe (benchmark/probe/split.py)
    *(
        Quantity(f"{part}_{kind}", f"var/split/{part}_{kind}", f"{part} {kind}", 3, word="none")
        for part in ("eps", "t", "camera")
        for kind in ("var", "share")
    ),
    Quantity("psnr", "psnr", "PSNR"),
    Quantity("quality_psnr", "quality/psnr", "ceiling frac", 2, False, "higher"),
    Quantity("clip_score", "clip_score", "CLIP", 1),
    Quantity("compute_multiplier", "log_multiplier", "x compute (NFE)", 2, True),
    Quantity(
        "compute_multiplier_seconds",
        "log_multiplier_seconds",
        "x compute (s)",
        2,
        True,
        seconds=True,
    ),
    Quantity("compute_multiplier_raw", "log_multiplier_raw", "x compute (raw var)", 2, True),
    Quantity("psnr_equal_compute", "psnr_equal_compute", "PSNR @SDS NFE"),
    Quantity("psnr_equal_seconds", "psnr_equal_seconds", "PSNR @SDS s", seconds=True),
    Quantity("stop_steps", "stop/step", "steps to stop", 0),
    Quantity("stop_calls", "stop/calls", "NFE to stop", 0),
    Quantity("nfe_per_step", "nfe/step", "NFE/step", 1),
    Quantity("nfe_model_per_step", "nfe_model/step", "model NFE/step", 1),
    Quantity("seconds_per_step", "seconds/step", "s/step", 3, seconds=True),
)
#: differences vs SDS: psnr at equal compute is compared with SDS's own final PSNR
REFERENCE_SOURCE = {"psnr_equal_compute": "ref_psnr", "psnr_equal_seconds": "ref_psnr"}
#: the terminal table (NSR first) and the report's verdict table
TERMINAL = (
    "nsr",
    "update_log_var",
    "cv_gain",
    "bias_rel",
    "cos_self",
    "psnr",
    "compute_multiplier",
    "compute_multiplier_seconds",
    "psnr_equal_compute",
    "stop_steps",
    "stop_calls",
    "nfe_per_step",
    "seconds_per_step",
)
CLAIMS = "var/claims_sds_mean"


def better(q: Quantity) -> str | None:
    """Better-direction of a summary quantity: the catalogue's row of its name, else of its
    source metric, else ``q.default_better``."""
    return better_direction(q.name) or better_direction(q.source) or q.default_better


def min_effect(q: Quantity) -> float | None:
    """The catalogue's minimum effect of ``q`` (its name's row, else its source's)."""
    value = minimum_effect(q.name)
    return value if value is not None else minimum_effect(q.source)


def verdict_word(diff: Estimate, direction: str | None, null: float = 0.0) -> str:
    """'better' / 'worse' / 'no clear difference' from a 95% CI alone (no minimum effect,
    no multiplicity correction: the table's words come from ``analysis.words``)."""
    if direction is None or np.isnan(diff.lo) or np.isnan(diff.hi):
        return "n/a"
    if diff.lo > null:
        return "better" if direction == "higher" else "worse"
    if diff.hi < null:
        return "worse" if direction == "higher" else "better"
    return "no clear difference"


def one_cell_at_a_time(manifests: dict[str, dict] | None) -> bool:
    """Every run ran one cell at a time (``workers == 1`` in its manifest): only then are
    seconds a verdict; otherwise they are indicative (cells shared the cores)."""
    return bool(manifests) and all(m.get("workers") == 1 for m in manifests.values())


def cell_values(df: pd.DataFrame, manifests: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per cell: CELL + label + failed + claims + every QUANTITIES source (+ ref_psnr,
    log_nsr_ratio, matched_states)."""
    df = df if "label" in df.columns else add_labels(df)
    table = equal_compute_table(df, manifests).set_index(CELL)
    stops = stop_table(df).set_index(CELL)  # where the run's stop rule fired (NaN: never)
    table = table.join(stops[["stop/step", "stop/calls"]], how="left")
    failed = df[df["metric"] == "failed"].groupby(CELL).size()
    table["failed"] = table.index.isin(failed.index)
    table["unfinished"] = unfinished_cells(table.index, manifests)
    for source in [q.source for q in QUANTITIES] + [CLAIMS]:
        if source in table.columns:
            continue
        if source.startswith("var/"):
            rows = probe_series(df, source)
        else:
            rows = df[df["metric"] == source]
        last = rows.sort_values("step").groupby(CELL)["value"].last()
        table[source] = last.reindex(table.index) if len(last) else np.nan
        if not source.startswith("var/"):
            table.loc[table["failed"], source] = np.nan
    return table.reset_index()


def method_table(
    df: pd.DataFrame, manifests: dict[str, dict] | None = None, reference: str = REFERENCE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(estimates, cells): estimates has one row per (label, quantity) with mean, lo, hi, n
    (prompts behind the CI), n_cells / n_total (cells with a value / all), diff, diff_lo,
    diff_hi, n_pairs (cells compared), verdict, p_beyond_holm, p_within_holm; cells is
    ``cell_values``."""
    from analysis.clip_gate import gate_for

    cells = cell_values(df, manifests)
    ref_labels = _pairs(cells, reference)
    gate = gate_for(df, manifests)
    seconds_ok = one_cell_at_a_time(manifests)
    # a CLIP that failed its ranking checks is no quality measure: left out of the verdict
    quantities = [
        q
        for q in QUANTITIES
        if not (q.name == "clip_score" and gate is not None and not gate.quality)
    ]
    rows = []
    for label in sort_labels(cells["label"]):
        mine = cells[cells["label"] == label]
        ref_label = ref_labels.get(label)
        ref = cells[cells["label"] == ref_label] if ref_label else None
        merged = None
        if ref is not None:
            merged = mine.merge(ref, on=["prompt", "seed"], suffixes=("", "_ref"))
        for q in quantities:
            rows.append(_estimate(q, label, mine, merged, label == ref_label, seconds_ok))
    table = pd.DataFrame(rows)
    if table.empty:
        return table, cells
    tested = table[["t_mean", "t_lo", "t_hi", "t_n", "delta", "direction", "kind", "verdict"]]
    tested = tested.rename(columns=lambda c: c[2:] if c.startswith("t_") else c)
    worded = assign_words(tested)
    table["verdict"] = worded["verdict"].to_numpy()
    table["p_beyond_holm"] = worded["p_beyond_holm"].to_numpy()
    table["p_within_holm"] = worded["p_within_holm"].to_numpy()
    return table, cells


def _pairs(cells: pd.DataFrame, reference: str) -> dict[str, str]:
    from analysis.compute import reference_pairs

    return reference_pairs(cells, reference)


def _finite(values) -> int:
    return int(np.isfinite(np.asarray(values, dtype=float)).sum())


def _estimate(
    q: Quantity, label: str, mine: pd.DataFrame, merged, is_ref: bool, seconds_ok: bool
) -> dict:
    values = mine[q.source].to_numpy(float)
    prompts = mine["prompt"].to_numpy()
    est = clustered_mean_ci(values, prompts)
    row = dict(label=label, quantity=q.name, n_total=len(mine), n_cells=_finite(values))
    direction = better(q)
    delta = min_effect(q)
    tested = Estimate(np.nan, np.nan, np.nan, 0)
    n_pairs = 0
    if q.log:
        mean = Estimate(*(float(np.exp(v)) for v in (est.mean, est.lo, est.hi)), est.n)
        row.update(mean=mean.mean, lo=mean.lo, hi=mean.hi, n=est.n)
        tested, n_pairs, diff = est, row["n_cells"], mean
    elif q.inverse:
        row.update(mean=_reciprocal(est.mean), lo=_reciprocal(est.hi), hi=_reciprocal(est.lo))
        row["n"] = est.n
        ratios = mine[q.ratio_source].to_numpy(float) if q.ratio_source in mine else values * 0
        tested = clustered_mean_ci(ratios, prompts)
        n_pairs = _finite(ratios)
        diff = Estimate(*(float(np.exp(v)) for v in (tested.mean, tested.lo, tested.hi)), 0)
        direction = better_direction(q.name) or "lower"  # the ratio NSR_m / NSR_SDS
    else:
        lo, hi = est.lo, est.hi
        if q.bounds is not None and np.isfinite(lo) and np.isfinite(hi):
            lo, hi = max(lo, q.bounds[0]), min(hi, q.bounds[1])
        row.update(mean=est.mean, lo=lo, hi=hi, n=est.n)
        diff = Estimate(np.nan, np.nan, np.nan, 0)
        if q.word == "bias":
            tested, n_pairs, diff = est, row["n_cells"], est
        elif merged is not None and len(merged):
            # psnr at equal compute vs the paired SDS cell's final PSNR (a column of the row)
            ref_column = REFERENCE_SOURCE.get(q.name, q.source + "_ref")
            with np.errstate(invalid="ignore"):
                d = merged[q.source].to_numpy(float) - merged[ref_column].to_numpy(float)
            tested = clustered_mean_ci(d, merged["prompt"].to_numpy())
            n_pairs, diff = _finite(d), tested
    row.update(diff=diff.mean, diff_lo=diff.lo, diff_hi=diff.hi, n_pairs=n_pairs)
    claims = mine[CLAIMS].to_numpy(float) if CLAIMS in mine else np.array([np.nan])
    if is_ref:
        verdict = "reference"
    elif q.seconds and not seconds_ok:
        verdict = "indicative"
    elif q.word == "none" or delta is None or direction is None:
        verdict = "n/a"
    elif q.word == "bias" and not np.nanmax(np.append(claims, 0.0)) > 0:
        verdict = "no claim" if row["n_cells"] else "n/a"
    else:
        verdict = ""  # tested in method_table (Holm over the whole table)
    row.update(
        t_mean=tested.mean,
        t_lo=tested.lo,
        t_hi=tested.hi,
        t_n=tested.n,
        delta=delta,
        direction=direction,
        kind="bias" if q.word == "bias" else "diff",
        verdict=verdict,
        estimand=estimand(len(cluster_means(values, prompts))),
    )
    return row


def _reciprocal(value: float) -> float:
    return 1.0 / value if value > 0 else (np.inf if np.isfinite(value) else np.nan)


def resolved(e) -> str:
    """'' or ' (k/N resolved)' when only k of the N cells have a compared value."""
    total = int(e["n_total"])
    k = int(e["n_cells"] if e["verdict"] in ("reference", "n/a") else e["n_pairs"])
    if k == 0 and e["verdict"] in ("reference", "n/a"):
        return ""  # not measured for this method (SDS has no bias check against itself)
    return f" ({k}/{total} resolved)" if k < total else ""


def summary_frame(estimates: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per method (label) with ``cells`` (all), ``cells_ok`` (finished
    without failing), ``cells_unfinished`` (a killed run's cells still training), ``estimand``
    (what the CIs are about, in words) and per quantity q: q, q_lo, q_hi (mean and 95% CI,
    clustered by prompt), q_n (prompts behind the CI), q_cells (cells with a value),
    q_vs_sds, q_vs_sds_lo, q_vs_sds_hi (the comparison with SDS: paired difference; for nsr
    the ratio NSR_m / NSR_SDS at matched states; for multipliers the ratio itself; for
    bias_rel the figure itself), q_vs_sds_n (cells compared), q_p (Holm-adjusted p of the
    word) and q_verdict (better / worse / within minimum effect / no clear difference /
    indicative / reference / n/a; the bias check: differs from / matches SDS's mean /
    unresolved / no claim)."""
    out = []
    for label in sort_labels(cells["label"]):
        mine = cells[cells["label"] == label]
        ests = estimates[estimates["label"] == label]
        row: dict[str, object] = {
            "method": label,
            "cells": len(mine),
            "cells_ok": int((~mine["failed"] & ~mine["unfinished"]).sum()),
            "cells_unfinished": int(mine["unfinished"].sum()),
            "estimand": ests["estimand"].iloc[0] if len(ests) else "",
        }
        for est in ests.itertuples(index=False):
            q = est.quantity
            row.update({q: est.mean, f"{q}_lo": est.lo, f"{q}_hi": est.hi, f"{q}_n": est.n})
            row.update({f"{q}_cells": est.n_cells, f"{q}_vs_sds": est.diff})
            row.update({f"{q}_vs_sds_lo": est.diff_lo, f"{q}_vs_sds_hi": est.diff_hi})
            row.update({f"{q}_vs_sds_n": est.n_pairs, f"{q}_verdict": est.verdict})
            p = est.p_within_holm if est.verdict == "within minimum effect" else est.p_beyond_holm
            row[f"{q}_p"] = p
        out.append(row)
    return pd.DataFrame(out)


def terminal_frame(estimates: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The per-method table the CLI prints: 'mean [lo, hi]' per TERMINAL quantity (NSR
    first) with '(k/N resolved)' when cells lack a value; ``frame.attrs['sentences']``: the
    verdict at equal compute in words, per method, and the estimand."""
    digits = {q.name: q.digits for q in QUANTITIES}
    headers = {q.name: q.header for q in QUANTITIES}
    rows, sentences = {}, []
    for label in sort_labels(cells["label"]):
        mine = cells[cells["label"] == label]
        ok = int((~mine["failed"] & ~mine["unfinished"]).sum())
        row = {"cells": f"{ok}/{len(mine)} ok"}
        ests = estimates[estimates["label"] == label].set_index("quantity")
        for name in TERMINAL:
            e = ests.loc[name]
            text = format_estimate(Estimate(e["mean"], e["lo"], e["hi"], int(e["n"])), digits[name])
            if name == "nfe_per_step":  # measured (cost model); the CI is in summary.csv
                model = ests.loc["nfe_model_per_step", "mean"]
                text = f"{e['mean']:.1f} (model {model:.1f})" if np.isfinite(model) else text
            elif name == "seconds_per_step" and np.isfinite(e["mean"]):
                text = f"{e['mean']:.3f}"
            if name in ("stop_steps", "stop_calls") and e["n_cells"] < len(mine):
                text = "not fired" if e["n_cells"] == 0 else text
                text += f" ({int(e['n_cells'])}/{len(mine)} fired)"
                row[headers[name]] = text
            else:
                row[headers[name]] = text + resolved(e)
        rows[label] = row
        sentences.append(verdict_sentence(label, ests))
    if len(estimates):
        sentences.append("CIs: " + estimates["estimand"].iloc[0] + ".")
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "method"
    frame.attrs["sentences"] = sentences  # the verdict in words, printed under the table
    return frame


def verdict_sentence(label: str, ests: pd.DataFrame) -> str:
    """One line in words: the method vs SDS at matched states and equal compute (ests:
    quantity-indexed rows)."""
    m = ests.loc["compute_multiplier"]
    if m["verdict"] == "reference":
        return f"{label} is the reference (multiplier 1 by definition)."
    q = ests.loc["psnr_equal_compute"]
    nsr = ests.loc["nsr"]
    mult = format_estimate(Estimate(m["mean"], m["lo"], m["hi"], int(m["n"])), 2)
    ratio = format_estimate(Estimate(nsr["diff"], nsr["diff_lo"], nsr["diff_hi"], 1), 2)
    dq = format_estimate(Estimate(q["diff"], q["diff_lo"], q["diff_hi"], int(q["n_pairs"])), 2)
    text = (
        f"{label} vs SDS at the same states: NSR ratio {ratio} ({nsr['verdict']}{resolved(nsr)})"
        f"; at equal compute NSR x NFE {m['verdict']} (multiplier {mult}{resolved(m)}); "
        f"quality at SDS's network evaluations {q['verdict']} ({dq} dB{resolved(q)})"
    )
    if "bias_rel" in ests.index and ests.loc["bias_rel", "verdict"] not in ("n/a", "no claim"):
        b = ests.loc["bias_rel"]
        fig = format_estimate(Estimate(b["mean"], b["lo"], b["hi"], int(b["n"])), 3)
        text += f"; bias check: {b['verdict']} (bias_rel {fig})"
    return text + "."


def load_manifests(run_dirs) -> dict[str, dict]:
    """run_id -> manifest of each run dir (empty when unreadable)."""
    from analysis.runs import load_run_info

    out = {}
    for path in run_dirs:
        info = load_run_info(path)
        out[info.run_id] = info.manifest
    return out


def write_summary_csv(run_dirs, out: str | Path) -> Path:
    """summary.csv of ``run_dirs`` at ``out`` (atomic); returns the path."""
    from analysis.load import load_results
    from results.atomic import atomic_write_text

    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    df = load_results(run_dirs)
    estimates, cells = method_table(df, load_manifests(run_dirs))
    frame = summary_frame(estimates, cells)
    return atomic_write_text(out, frame.to_csv(index=False, float_format="%.6g"))
