"""``summarize(df)``: per method x prompt numbers with t CIs over seeds, and paired
differences against SDS on matching seeds.

Per cell (run, method, prompt, seed) it computes, from the long-format results:

    final <metric>         the eval metric (psnr, ssim, depth_l1, mask_iou, janus, clip*)
                           at the cell's last checkpoint (failed cells are left out)
    log_var@<step>         var/all/log_var (theta space) at fixed measured steps,
    img_log_var@<step>     var/all/img_log_var (image space), and nsr / img_nsr
    steps to psnr>=thr     first eval checkpoint with PSNR >= thr (NaN if never reached),
    calls to psnr>=thr     cumulative network evaluations of every network (``n_calls``:
                           n_evals + n_evals_phi + n_evals_depth) at that step and
    seconds to psnr>=thr   training wall-clock (train_seconds) at that step
    steps/s, calls/step    over the whole cell (last step / train_seconds, n_calls / steps)
    peak memory            any metric named peak_* or mem* (last value), if logged

then the mean over seeds with a 95% Student t CI (``analysis.stats.mean_ci``), and for
every method other than SDS the paired difference (method - SDS) over the seeds both have,
with a t CI over those pairs. Pairing is within a run (same streams, same config);
a run without SDS is paired with the only SDS in the data, if there is exactly one.

Convergence is measured on the quality fraction when the runs logged it (``quality/psnr``,
evaluation/ceiling.py: the fraction of the gap from the cell's initial render to the quality
ceiling, a direct photometric fit): ``steps/calls/seconds to q50`` and ``to q80`` are taken at
the first eval checkpoint after step 0 with quality/psnr >= 0.5 (0.8), so a threshold is never
at or below the start. ``Summary.thresholds`` then holds the dB equivalent of the 80% level
(mean start + 0.8 (ceiling - mean start)) per prompt. Without quality metrics, or with an
explicit ``psnr_threshold`` (dB), the ``... to psnr thr`` columns use a PSNR threshold: the
given one, or per prompt the mean initial PSNR plus 75% of the gain of the best method's mean
final PSNR; a prompt that no method improved gets no threshold (NaN, never the start).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.cells import (
    CALLS,
    CELL,
    REFERENCE,
    add_labels,
    reference_labels,
    sort_labels,
    with_calls,
)
from analysis.stats import DEFAULT_N_BOOT, DEFAULT_SEED, format_estimate, mean_ci
from analysis.stats import paired_difference as paired_estimate

EVAL_METRICS = (
    "psnr",
    "ssim",
    "depth_l1",
    "mask_iou",
    "quality/psnr",
    "quality/iou",
    "janus",
    "janus_deg",
    "clip",
)
AUTO_FRACTION = 0.75
#: quality-fraction levels of the steps / calls / seconds to threshold columns
QUALITY_LEVELS = (0.5, 0.8)


def eval_metrics(df: pd.DataFrame) -> list[str]:
    """Eval metrics present in ``df`` (known names and anything starting with clip)."""
    present = set(df["metric"].unique())
    names = [m for m in EVAL_METRICS if m in present]
    names += sorted(m for m in present if m.startswith("clip") and m not in names)
    return names


def memory_metrics(df: pd.DataFrame) -> list[str]:
    return sorted(m for m in df["metric"].unique() if m.startswith(("peak", "mem")))


def measured_steps(df: pd.DataFrame, metric: str = "var/all/log_var") -> list[int]:
    return sorted(int(s) for s in df.loc[df["metric"] == metric, "step"].unique())


def default_var_steps(df: pd.DataFrame) -> list[int]:
    """First, middle and last measured step (all of them if three or fewer)."""
    steps = measured_steps(df)
    if len(steps) <= 3:
        return steps
    return [steps[0], steps[len(steps) // 2], steps[-1]]


def _last(values: pd.DataFrame) -> pd.Series:
    """Value at the largest step per cell (values: CELL + step + value)."""
    ordered = values.sort_values("step")
    return ordered.groupby(CELL)["value"].last()


def psnr_thresholds(df: pd.DataFrame, threshold: float | None = None) -> dict[str, float]:
    """Per prompt PSNR threshold (see module docstring)."""
    psnr = df[df["metric"] == "psnr"]
    prompts = list(dict.fromkeys(df["prompt"]))
    if threshold is not None:
        return {p: float(threshold) for p in prompts}
    out = {}
    for prompt, rows in psnr.groupby("prompt", sort=False):
        initial = rows.loc[rows["step"] == rows["step"].min(), "value"].mean()
        final = _last(rows[CELL + ["step", "value"]]).groupby(["run_id", "method"]).mean()
        best = float(final.max()) if len(final) else float("nan")
        gain = best - initial
        out[prompt] = float(initial + AUTO_FRACTION * gain) if gain > 0 else float("nan")
    return out


def quality_thresholds(df: pd.DataFrame, level: float = QUALITY_LEVELS[-1]) -> dict[str, float]:
    """Per prompt, the held-out PSNR (dB) at quality fraction ``level``: mean start +
    level (ceiling - mean start)."""
    out = {}
    for prompt, rows in df[df["metric"].isin(["psnr", "ceiling/psnr"])].groupby("prompt"):
        psnr = rows[rows["metric"] == "psnr"]
        start = psnr.loc[psnr["step"] == psnr["step"].min(), "value"].mean()
        ceiling = rows.loc[rows["metric"] == "ceiling/psnr", "value"].mean()
        out[prompt] = float(start + level * (ceiling - start))
    return out


def _to_threshold(
    cell_rows: pd.DataFrame, threshold: float, metric: str = "psnr", after_start: bool = False
) -> dict[str, float]:
    """Steps, calls and seconds until the cell's ``metric`` first reaches ``threshold``
    (with ``after_start``, the first checkpoint after step 0)."""
    psnr = cell_rows[cell_rows["metric"] == metric].sort_values("step")
    hit = psnr[(psnr["value"] >= threshold) & (psnr["step"] > 0 if after_start else True)]
    if hit.empty or not np.isfinite(threshold):
        return {"steps": np.nan, "calls": np.nan, "seconds": np.nan}
    step = int(hit["step"].iloc[0])

    def at(metric: str) -> float:
        if step == 0:
            return 0.0
        values = cell_rows[(cell_rows["metric"] == metric) & (cell_rows["step"] == step)]
        return float(values["value"].iloc[-1]) if len(values) else np.nan

    return {"steps": float(step), "calls": at(CALLS), "seconds": at("train_seconds")}


def cell_table(
    df: pd.DataFrame,
    psnr_threshold: float | None = None,
    var_steps: list[int] | None = None,
) -> tuple[pd.DataFrame, dict[str, float], list[str]]:
    """One row per cell (CELL + label + failed) and one column per quantity.

    Returns (cells, thresholds, quantity names in display order).
    """
    df = with_calls(df if "label" in df.columns else add_labels(df))
    labels = df.groupby(CELL)["label"].first()
    cells = pd.DataFrame(index=labels.index)
    cells["label"] = labels
    failed = df[df["metric"] == "failed"].groupby(CELL).size()
    cells["failed"] = cells.index.isin(failed.index)
    quantities: list[str] = []

    for metric in eval_metrics(df):
        name = f"final {metric}"
        cells[name] = _last(df.loc[df["metric"] == metric, CELL + ["step", "value"]])
        cells.loc[cells["failed"], name] = np.nan
        quantities.append(name)

    steps = default_var_steps(df) if var_steps is None else var_steps
    for stat in ("log_var", "img_log_var", "nsr", "img_nsr"):
        metric = f"var/all/{stat}"
        rows = df[df["metric"] == metric]
        for step in steps:
            name = f"{stat}@{step}"
            cells[name] = rows[rows["step"] == step].groupby(CELL)["value"].last()
            quantities.append(name)

    present = set(df["metric"])
    by_quality = psnr_threshold is None and "quality/psnr" in present
    thresholds = quality_thresholds(df) if by_quality else psnr_thresholds(df, psnr_threshold)
    rows = df[df["metric"].isin(["quality/psnr", CALLS, "train_seconds"])].groupby(CELL)
    for level in QUALITY_LEVELS if by_quality else ():
        hits = {k: _to_threshold(r, level, "quality/psnr", after_start=True) for k, r in rows}
        for part in ("steps", "calls", "seconds"):
            name = f"{part} to q{round(100 * level)}"
            cells[name] = pd.Series({k: v[part] for k, v in hits.items()}, dtype=float)
            quantities.append(name)
    if "psnr" in present and not by_quality:
        hits = {
            key: _to_threshold(rows, thresholds.get(key[2], np.nan))
            for key, rows in df[df["metric"].isin(["psnr", CALLS, "train_seconds"])].groupby(CELL)
        }
        for part in ("steps", "calls", "seconds"):
            name = f"{part} to psnr thr"
            cells[name] = pd.Series({k: v[part] for k, v in hits.items()}, dtype=float)
            quantities.append(name)

    if "stop/fired" in present:  # steps / calls to stop: where the run's stop rule fired
        from analysis.convergence import stop_columns

        stops = stop_columns(df)
        cells[stops.columns] = stops
        quantities += list(stops.columns)

    seconds = _last(df.loc[df["metric"] == "train_seconds", CELL + ["step", "value"]])
    last_step = df[df["metric"] == "train_seconds"].groupby(CELL)["step"].max()
    n_evals = _last(df.loc[df["metric"] == CALLS, CELL + ["step", "value"]])
    if len(seconds):
        cells["steps/s"] = last_step / seconds.where(seconds > 0)
        quantities.append("steps/s")
    if len(n_evals):
        cells["calls/step"] = n_evals / last_step.where(last_step > 0)
        quantities.append("calls/step")
    for metric in memory_metrics(df):
        cells[metric] = _last(df.loc[df["metric"] == metric, CELL + ["step", "value"]])
        quantities.append(metric)

    cells = cells.reset_index()
    for name in quantities:
        if name not in cells:
            cells[name] = np.nan
    return cells, thresholds, quantities


@dataclass
class Summary:
    """Output of ``summarize``.

    Attributes:
        cells: one row per cell (run_id, method, prompt, seed, label, failed, quantities).
        table: long: label, prompt, quantity, mean, lo, hi, n (seeds with a value), n_total.
        paired: long: label, reference, prompt, quantity, mean, lo, hi, n (pairs).
        quantities: quantity names in display order.
        thresholds: PSNR threshold per prompt (dB).
        notes: what was missing or skipped, in words.
    """

    cells: pd.DataFrame
    table: pd.DataFrame
    paired: pd.DataFrame
    quantities: list[str]
    thresholds: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def wide(self, quantities: list[str] | None = None, paired: bool = False) -> pd.DataFrame:
        """Display table: rows (label, prompt), columns quantities, cells 'mean [lo, hi]'
        (with '(n/N)' when only n of N seeds have a value)."""
        source = self.paired if paired else self.table
        wanted = quantities or self.quantities
        source = source[source["quantity"].isin(wanted)]
        if source.empty:
            return pd.DataFrame()
        text = source.apply(_format_row, axis=1, paired=paired)
        frame = source.assign(text=text).pivot_table(
            index=["label", "prompt"], columns="quantity", values="text", aggfunc="first"
        )
        order = sort_labels(frame.index.get_level_values(0))
        prompts = list(dict.fromkeys(self.cells["prompt"]))
        frame = frame.reindex(
            pd.MultiIndex.from_tuples(
                [(label, p) for label in order for p in prompts if (label, p) in frame.index],
                names=["method", "prompt"],
            )
        )
        return frame[[q for q in wanted if q in frame.columns]]


def _format_row(row: pd.Series, paired: bool = False) -> str:
    from analysis.stats import Estimate

    est = Estimate(row["mean"], row["lo"], row["hi"], int(row["n"]))
    digits = 0 if row["quantity"].startswith(("steps to", "calls to")) else 2
    text = format_estimate(est, digits)
    reach = row["quantity"].endswith(("psnr thr", "q50", "q80", "to stop"))
    if text == "n/a" and reach and row.get("n_total", 0):
        return "n/a (no pair reached it)" if paired else f"not reached (0/{int(row['n_total'])})"
    total = row.get("n_total")
    if total is not None and not pd.isna(total) and 0 < row["n"] < total:
        text += f" ({int(row['n'])}/{int(total)})"
    return text


def _is_nsr(quantity: str) -> bool:
    return quantity.startswith(("nsr@", "img_nsr@"))


def nsr_mean_ci(nsr, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED):
    """NSR over seeds by the probe's rule (benchmark/probe/moments.py): average
    1 / nsr (the snr; 0 for an unresolved nsr = inf) and invert, the CI inverted too (an
    upper bound of inf: not resolved). Never the mean of nsr itself.

    >>> est = nsr_mean_ci([2.0, 4.0, float("inf")])
    >>> round(est.mean, 3), est.n
    (4.0, 3)
    """
    from analysis.stats import Estimate

    x = np.asarray(nsr, dtype=np.float64)
    with np.errstate(divide="ignore"):
        snr = np.where(np.isnan(x), np.nan, 1.0 / x)
    est = mean_ci(snr, n_boot=n_boot, seed=seed)

    def inv(v: float) -> float:
        return 1.0 / v if v > 0 else (np.inf if np.isfinite(v) else np.nan)

    return Estimate(inv(est.mean), inv(est.hi), inv(est.lo), est.n)


def _estimate_rows(groups, quantities, n_boot, seed) -> list[dict]:
    rows = []
    for (label, prompt), cells in groups:
        for q in quantities:
            ci = nsr_mean_ci if _is_nsr(q) else mean_ci
            est = ci(cells[q].to_numpy(), n_boot=n_boot, seed=seed)
            rows.append(
                dict(
                    label=label,
                    prompt=prompt,
                    quantity=q,
                    mean=est.mean,
                    lo=est.lo,
                    hi=est.hi,
                    n=est.n,
                    n_total=len(cells),
                )
            )
    return rows


def summarize(
    df: pd.DataFrame,
    psnr_threshold: float | None = None,
    var_steps: list[int] | None = None,
    reference: str = REFERENCE,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> Summary:
    """Summary tables of long-format results (see module docstring)."""
    if df.empty:
        raise ValueError("no results to summarize")
    df = add_labels(df)
    cells, thresholds, quantities = cell_table(df, psnr_threshold, var_steps)
    notes = []
    if not any(m.startswith("var/") for m in df["metric"].unique()):
        notes.append(
            "no gradient-variance metrics (var/*) in these runs: set measure.every > 0 "
            "to measure them; variance columns and figures are left out"
        )
        quantities = [q for q in quantities if "log_var@" not in q and "nsr@" not in q]
    if cells["failed"].any():
        notes.append(
            f"{int(cells['failed'].sum())} failed cell(s) are left out of the final metrics"
        )
    groups = cells.groupby(["label", "prompt"], sort=False)
    table = pd.DataFrame(_estimate_rows(groups, quantities, n_boot, seed))

    pairs, ref_notes = reference_labels(cells, reference)
    notes += ref_notes
    paired_rows = []
    for label, ref_label in pairs.items():
        mine = cells[cells["label"] == label]
        ref = cells[cells["label"] == ref_label]
        merged = mine.merge(ref, on=["prompt", "seed"], suffixes=("", "_ref"))
        for prompt, rows in merged.groupby("prompt", sort=False):
            for q in quantities:
                est = paired_estimate(
                    rows[q].to_numpy(), rows[f"{q}_ref"].to_numpy(), n_boot=n_boot, seed=seed
                )
                paired_rows.append(
                    dict(
                        label=label,
                        reference=ref_label,
                        prompt=prompt,
                        quantity=q,
                        mean=est.mean,
                        lo=est.lo,
                        hi=est.hi,
                        n=est.n,
                        n_total=len(rows),
                    )
                )
    paired = pd.DataFrame(
        paired_rows,
        columns=["label", "reference", "prompt", "quantity", "mean", "lo", "hi", "n", "n_total"],
    )
    if not pairs:
        notes.append(f"no {reference.upper()} cells: paired differences are left out")
    return Summary(cells, table, paired, quantities, thresholds, notes)


def method_overview(df: pd.DataFrame, manifests: dict[str, dict] | None = None) -> pd.DataFrame:
    """The per-method table the CLI prints at the end of a run: one row per method, mean
    [95% t CI] over its cells (prompts x seeds) of NSR (first), the update variance,
    cv_gain, cos_ref, final PSNR, the compute multipliers vs SDS, PSNR at SDS's budget,
    NFE and seconds per step, and the verdict at equal compute
    (``analysis.verdict.terminal_frame``; the same numbers as summary.csv)."""
    from analysis.verdict import method_table, terminal_frame

    estimates, cells = method_table(df, manifests)
    return terminal_frame(estimates, cells)
