"""The verdict: one row per method at equal compute, with CIs over replicates and plain words.

``method_table(df, manifests)`` gives, per method (label), the mean over its cells (prompts x
seeds) with a 95% t CI (``analysis.stats.mean_ci``) of every ``QUANTITIES`` entry, and the
paired difference with SDS over cells matched by (prompt, seed) (common random numbers) with
its t CI (``paired_difference``), in words by the metric's better-direction from
``results.catalogue``:

    better / worse                 the 95% CI of (method - SDS) excludes 0 on that side
    no difference at 95%           it contains 0

The compute multipliers are relative to SDS already: their CI is exp of the t CI of the
per-cell log multipliers (``analysis.compute``) and their word compares it with 1.
Variance statistics are taken at the last probe step (step 0 and rows flagged
``var/mu_uninformed`` left out); absent metrics (e.g. a probe without ``cv_gain``) are NaN.

``write_summary_csv(run_dir)`` writes ``summary.csv`` (one row per method, module doc of
``summary_frame``); the runner calls it at the end of every run and ``python -m benchmark
report`` writes it beside the report.

>>> verdict_word(Estimate(1.0, 0.2, 1.8, 6), "higher")
'better'
>>> verdict_word(Estimate(-0.1, -0.5, 0.3, 6), "lower")
'no difference at 95%'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cells import CELL, REFERENCE, add_labels, sort_labels
from analysis.compute import equal_compute_table
from analysis.stats import Estimate, format_estimate, mean_ci, paired_difference
from results.catalogue import better_direction


@dataclass(frozen=True)
class Quantity:
    """name: column in summary.csv; source: a logged metric (its value at the cell's last
    step) or a column of ``equal_compute_table``; log: the CI is exp of a t CI on the log
    scale (multipliers); header: the terminal table's column title."""

    name: str
    source: str
    header: str
    digits: int = 2
    log: bool = False
    #: better-direction when the catalogue knows neither ``name`` nor ``source``
    default_better: str | None = None
    #: the source is the reciprocal (snr for nsr): averaged, CI'd and paired on the source's
    #: scale, then inverted (an upper bound of inf: not resolved at 95%)
    inverse: bool = False


QUANTITIES = (
    Quantity("nsr", "var/all/snr", "NSR", 1, inverse=True),
    Quantity("log_var", "var/all/log_var", "log_var"),
    Quantity("update_log_var", "var/all/update_log_var", "upd log_var", 2, False, "lower"),
    Quantity("cv_gain", "var/all/cv_gain", "cv_gain", 2, False, "higher"),
    Quantity("cos_ref", "var/all/cos_ref", "cos_ref", 3),
    Quantity("psnr", "psnr", "PSNR"),
    Quantity("quality_psnr", "quality/psnr", "ceiling frac", 2, False, "higher"),
    Quantity("clip_score", "clip_score", "CLIP", 1),
    Quantity("compute_multiplier", "log_multiplier", "x compute (NFE)", 2, True),
    Quantity("compute_multiplier_seconds", "log_multiplier_seconds", "x compute (s)", 2, True),
    Quantity("compute_multiplier_raw", "log_multiplier_raw", "x compute (raw var)", 2, True),
    Quantity("psnr_equal_compute", "psnr_equal_compute", "PSNR @SDS NFE"),
    Quantity("psnr_equal_seconds", "psnr_equal_seconds", "PSNR @SDS s"),
    Quantity("nfe_per_step", "nfe/step", "NFE/step", 1),
    Quantity("nfe_model_per_step", "nfe_model/step", "model NFE/step", 1),
    Quantity("seconds_per_step", "seconds/step", "s/step", 3),
)
#: differences vs SDS: psnr at equal compute is compared with SDS's own final PSNR
REFERENCE_SOURCE = {"psnr_equal_compute": "ref_psnr", "psnr_equal_seconds": "ref_psnr"}
#: the terminal table (NSR first) and the report's verdict table
TERMINAL = (
    "nsr",
    "update_log_var",
    "cv_gain",
    "cos_ref",
    "psnr",
    "compute_multiplier",
    "compute_multiplier_seconds",
    "psnr_equal_compute",
    "nfe_per_step",
    "seconds_per_step",
)


def better(q: Quantity) -> str | None:
    """Better-direction of a summary quantity: the catalogue's row of its name, else of its
    source metric, else ``q.default_better``."""
    return better_direction(q.name) or better_direction(q.source) or q.default_better


def verdict_word(diff: Estimate, direction: str | None, null: float = 0.0) -> str:
    """'better' / 'worse' / 'no difference at 95%' for a CI of (method - SDS) (or of a
    ratio, with ``null`` = 1); 'n/a' without a CI or a better-direction."""
    if direction is None or np.isnan(diff.lo) or np.isnan(diff.hi):
        return "n/a"
    if diff.lo > null:
        return "better" if direction == "higher" else "worse"
    if diff.hi < null:
        return "worse" if direction == "higher" else "better"
    return "no difference at 95%"


def cell_values(df: pd.DataFrame, manifests: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per cell: CELL + label + failed + every QUANTITIES source (+ ref_psnr)."""
    df = df if "label" in df.columns else add_labels(df)
    table = equal_compute_table(df, manifests).set_index(CELL)
    failed = df[df["metric"] == "failed"].groupby(CELL).size()
    table["failed"] = table.index.isin(failed.index)
    for q in QUANTITIES:
        if q.source in table.columns:
            continue
        rows = df[df["metric"] == q.source]
        if q.source.startswith("var/"):
            rows = rows[rows["step"] > 0]
        last = rows.sort_values("step").groupby(CELL)["value"].last()
        table[q.source] = last.reindex(table.index) if len(last) else np.nan
        if not q.source.startswith("var/"):
            table.loc[table["failed"], q.source] = np.nan
    return table.reset_index()


def method_table(
    df: pd.DataFrame, manifests: dict[str, dict] | None = None, reference: str = REFERENCE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(estimates, cells): estimates has one row per (label, quantity) with mean, lo, hi,
    n, diff, diff_lo, diff_hi, n_pairs, verdict; cells is ``cell_values``."""
    from analysis.clip_gate import gate_for

    cells = cell_values(df, manifests)
    ref_labels = _pairs(cells, reference)
    gate = gate_for(df, manifests)
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
            rows.append(_estimate(q, label, mine, merged, label == ref_label))
    return pd.DataFrame(rows), cells


def _pairs(cells: pd.DataFrame, reference: str) -> dict[str, str]:
    from analysis.compute import reference_pairs

    return reference_pairs(cells, reference)


def _estimate(q: Quantity, label: str, mine: pd.DataFrame, merged, is_ref: bool) -> dict:
    values = mine[q.source].to_numpy(float)
    est = mean_ci(values)
    row = dict(label=label, quantity=q.name, n_total=len(mine))
    if q.log:
        mean = Estimate(*(float(np.exp(v)) for v in (est.mean, est.lo, est.hi)), est.n)
        row.update(mean=mean.mean, lo=mean.lo, hi=mean.hi, n=est.n)
        row.update(diff=mean.mean, diff_lo=mean.lo, diff_hi=mean.hi, n_pairs=est.n)
        row["verdict"] = "reference" if is_ref else verdict_word(est, "higher")
        return row
    if q.inverse:
        return _inverse_estimate(q, row, est, merged, is_ref)
    row.update(mean=est.mean, lo=est.lo, hi=est.hi, n=est.n)
    diff = Estimate(np.nan, np.nan, np.nan, 0)
    if merged is not None and len(merged):
        # psnr at equal compute vs the paired SDS cell's final PSNR (a column of the row)
        ref_column = REFERENCE_SOURCE.get(q.name, q.source + "_ref")
        diff = paired_difference(
            merged[q.source].to_numpy(float), merged[ref_column].to_numpy(float)
        )
    row.update(diff=diff.mean, diff_lo=diff.lo, diff_hi=diff.hi, n_pairs=diff.n)
    row["verdict"] = "reference" if is_ref else verdict_word(diff, better(q))
    return row


def _reciprocal(value: float) -> float:
    return 1.0 / value if value > 0 else (np.inf if np.isfinite(value) else np.nan)


def _inverse_estimate(q: Quantity, row: dict, est: Estimate, merged, is_ref: bool) -> dict:
    """NSR from the mean snr over replicates: NSR = 1 / mean, CI [1 / hi, 1 / lo] (inf when
    the snr CI reaches 0: not resolved); vs SDS: the ratio NSR_m / NSR_SDS with the CI of the
    paired snr difference deciding the word (snr higher = NSR lower)."""
    row.update(mean=_reciprocal(est.mean), lo=_reciprocal(est.hi), hi=_reciprocal(est.lo))
    row["n"] = est.n
    diff = Estimate(np.nan, np.nan, np.nan, 0)
    ratio = np.nan
    if merged is not None and len(merged):
        mine, ref = merged[q.source].to_numpy(float), merged[q.source + "_ref"].to_numpy(float)
        diff = paired_difference(mine, ref)
        keep = np.isfinite(mine) & np.isfinite(ref)
        if keep.any() and mine[keep].mean() > 0:
            ratio = float(ref[keep].mean() / mine[keep].mean())
    row.update(diff=ratio, diff_lo=np.nan, diff_hi=np.nan, n_pairs=diff.n)
    direction = better_direction(q.source) or "higher"
    row["verdict"] = "reference" if is_ref else verdict_word(diff, direction)
    return row


def summary_frame(estimates: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per method (label) with ``cells`` (finished/total) and per
    quantity q: q, q_lo, q_hi, q_n (mean and 95% CI over replicates), q_vs_sds, q_vs_sds_lo,
    q_vs_sds_hi (paired difference with SDS; for multipliers the ratio itself; for nsr the
    ratio NSR_m / NSR_SDS, its word from the paired snr difference) and
    q_verdict (better / worse / no difference at 95% / reference / n/a)."""
    out = []
    for label in sort_labels(cells["label"]):
        mine = cells[cells["label"] == label]
        row: dict[str, object] = {
            "method": label,
            "cells": len(mine),
            "cells_ok": int((~mine["failed"]).sum()),
        }
        for est in estimates[estimates["label"] == label].itertuples(index=False):
            q = est.quantity
            row.update({q: est.mean, f"{q}_lo": est.lo, f"{q}_hi": est.hi, f"{q}_n": est.n})
            row.update({f"{q}_vs_sds": est.diff, f"{q}_vs_sds_lo": est.diff_lo})
            row.update({f"{q}_vs_sds_hi": est.diff_hi, f"{q}_verdict": est.verdict})
        out.append(row)
    return pd.DataFrame(out)


def terminal_frame(estimates: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The per-method table the CLI prints: 'mean [lo, hi]' per TERMINAL quantity (NSR
    first); ``frame.attrs['sentences']``: the verdict at equal compute in words, per method."""
    digits = {q.name: q.digits for q in QUANTITIES}
    headers = {q.name: q.header for q in QUANTITIES}
    rows, sentences = {}, []
    for label in sort_labels(cells["label"]):
        mine = cells[cells["label"] == label]
        row = {"cells": f"{int((~mine['failed']).sum())}/{len(mine)} ok"}
        ests = estimates[estimates["label"] == label].set_index("quantity")
        for name in TERMINAL:
            e = ests.loc[name]
            text = format_estimate(Estimate(e["mean"], e["lo"], e["hi"], int(e["n"])), digits[name])
            if name == "nfe_per_step":  # measured (cost model); the CI is in summary.csv
                model = ests.loc["nfe_model_per_step", "mean"]
                text = f"{e['mean']:.1f} (model {model:.1f})" if np.isfinite(model) else text
            elif name == "seconds_per_step" and np.isfinite(e["mean"]):
                text = f"{e['mean']:.3f}"
            if name == "psnr_equal_compute" and e["n"] < e["n_total"] and e["n"] < len(mine):
                text += f" ({int(e['n'])}/{len(mine)} reach)"
            row[headers[name]] = text
        rows[label] = row
        sentences.append(verdict_sentence(label, ests))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "method"
    frame.attrs["sentences"] = sentences  # the verdict in words, printed under the table
    return frame


def verdict_sentence(label: str, ests: pd.DataFrame) -> str:
    """One line in words: the method vs SDS at equal compute (ests: quantity-indexed rows)."""
    m = ests.loc["compute_multiplier"]
    if m["verdict"] == "reference":
        return f"{label} is the reference (multiplier 1 by definition)."
    q = ests.loc["psnr_equal_compute"]
    mult = format_estimate(Estimate(m["mean"], m["lo"], m["hi"], int(m["n"])), 2)
    dq = format_estimate(Estimate(q["diff"], q["diff_lo"], q["diff_hi"], int(q["n_pairs"])), 2)
    return (
        f"{label} vs SDS at equal compute: NSR x NFE {m['verdict']} "
        f"(multiplier {mult}); quality at SDS's network evaluations {q['verdict']} "
        f"({dq} dB)."
    )


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
