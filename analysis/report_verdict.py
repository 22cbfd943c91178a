"""The report's "Verdict" section and the turntables (analysis/report.py puts them first).

Verdict: one row per method at matched states and equal compute
(``analysis.verdict.method_table``) with 95% t CIs clustered by prompt, the estimand in words,
words only where they hold (a minimum effect per quantity, Holm's correction over the table,
seconds worded only when cells ran one at a time), unresolved cells counted in every column,
a sentence per method, the NSR-vs-step and quality-vs-compute figures.

Turntables: per cell, an animated GIF of the final checkpoint's held-out ring (``eval.n_views``
views at 360 / n degree steps, the snapshot PNG already in the run) beside the true object's
renders at the same cameras, embedded as a base64 ``data:`` URI (no renderer is run).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from analysis.cells import sort_labels
from analysis.html import esc, safe_figure, table_html
from analysis.runs import RunInfo
from analysis.stats import Estimate, format_estimate
from analysis.verdict import method_table, one_cell_at_a_time, resolved, verdict_sentence

#: (quantity, column title, what to show: "mean", "diff" (the comparison with SDS) or "both")
VERDICT_COLUMNS = (
    ("compute_multiplier", "x compute (NSR x NFE)", "mean"),
    ("compute_multiplier_seconds", "x compute (NSR x s)", "mean"),
    ("psnr_equal_compute", "dPSNR at SDS's NFE (dB)", "diff"),
    ("psnr_equal_seconds", "dPSNR at SDS's seconds (dB)", "diff"),
    ("nsr", "NSR (last probe); ratio to SDS at the same theta", "both"),
    ("bias_rel", "bias vs SDS's mean (bias_rel)", "mean"),
    ("eps_share", "eps share of tr Var (law of total variance)", "mean"),
    ("psnr", "final PSNR (dB); minus SDS's", "both"),
    ("nfe_per_step", "NFE/step (model)", "mean"),
    ("seconds_per_step", "s/step", "mean"),
)
DIGITS = {"nsr": 1, "nfe_per_step": 1, "seconds_per_step": 3, "bias_rel": 3}
for _part in ("eps", "t", "camera"):
    DIGITS[f"{_part}_share"] = 2


def _text(row: pd.Series, name: str, show: str, digits: int) -> str:
    mean = format_estimate(Estimate(row["mean"], row["lo"], row["hi"], int(row["n"])), digits)
    diff = format_estimate(
        Estimate(row["diff"], row["diff_lo"], row["diff_hi"], int(row["n_pairs"])),
        2 if name == "nsr" else digits,
    )
    if show == "mean" or row["verdict"] == "reference":
        return mean
    if show == "diff":
        return diff
    prefix = "x " if name == "nsr" else ""
    return f"{mean}; {prefix}{diff}"


def verdict_rows(estimates: pd.DataFrame, cells: pd.DataFrame):
    """Header and rows of the verdict table; each cell 'value [lo, hi]' and its word."""
    header = ["method", "cells"] + [title for _, title, _ in VERDICT_COLUMNS]
    rows, sentences = [], []
    for label in sort_labels(cells["label"]):
        ests = estimates[estimates["label"] == label].set_index("quantity")
        mine = cells[cells["label"] == label]
        row = [label, f"{int((~mine['failed']).sum())}/{len(mine)}"]
        for name, _, show in VERDICT_COLUMNS:
            if name not in ests.index:
                row.append("n/a")
                continue
            e = ests.loc[name]
            text = _text(e, name, show, DIGITS.get(name, 2))
            if name == "nfe_per_step":
                model = ests.loc["nfe_model_per_step", "mean"]
                text += f" ({model:.1f})" if np.isfinite(model) else " (model n/a)"
            elif e["verdict"] not in ("n/a",):
                text += f": {e['verdict']}"
            text += resolved(e)
            row.append(text)
        rows.append(row)
        sentences.append(verdict_sentence(label, ests))
    return header, rows, sentences


def verdict_html(df: pd.DataFrame, infos: list[RunInfo], errors: list[str]) -> str:
    """<section id="verdict">: the table, one sentence per method and the two figures."""
    from analysis import verdict_plots

    manifests = {i.run_id: i.manifest for i in infos}
    estimates, cells = method_table(df, manifests)
    header, rows, sentences = verdict_rows(estimates, cells)
    parts = ['<section id="verdict"><h2>Verdict</h2>']
    estimand = estimates["estimand"].iloc[0] if len(estimates) else ""
    seconds = (
        "Seconds: measured one cell at a time (workers = 1), so they get words."
        if one_cell_at_a_time(manifests)
        else "Seconds: measured with cells sharing the cores (workers != 1): indicative only, "
        "no words; rerun with --set workers=1 for a seconds verdict."
    )
    parts.append(
        "<p class='meta'>Each method against SDS on the same prompts and seeds (common random "
        f"numbers). Mean [95% t CI]; the estimand: {esc(estimand)}. "
        "Matched states: NSR (noise-to-signal ratio of the theta-gradient, tr Var / unbiased "
        "||mean||^2, scale-free) rises as a run converges, so each method's NSR is compared "
        "with SDS's at the same theta and draws (the probe's SDS twin at the last probe, not "
        "SDS's own trajectory): the ratio NSR_method / NSR_SDS is the estimator's alone and "
        "does not depend on the probe schedule. x compute = (NSR x cost)_SDS / "
        "(NSR x cost)_method at those states, geometric mean over cells: &gt; 1 reaches SDS's "
        "relative precision with less compute. NSR column: 1 / the mean snr, its CI inverted "
        "(inf: not resolved). Bias check: bias_rel = ||mean_method - mean_SDS||^2 / "
        "||mean_SDS||^2 at the same theta (unbiased), judged only for methods that claim SDS's "
        "expectation. PSNR at SDS's budget: the method's held-out PSNR at SDS's final "
        "cumulative network evaluations (or seconds), minus SDS's final PSNR. Words: a "
        "difference is called better / worse only beyond the quantity's minimum effect (metric "
        "catalogue: 0.5 dB, 10% for ratios, 0.05 for bias_rel) after Holm's correction over "
        "every word in the table; 'within minimum effect' when the CI is inside it (also "
        "Holm-corrected); else 'no clear difference'. (k/N resolved): only k of the N cells "
        f"have a value (an unresolved NSR, a failed cell, a budget never reached). {seconds}"
        "</p>"
    )
    parts.append(table_html(header, rows, text_columns=1))
    parts.append(
        "<ul class='verdict'>" + "".join(f"<li>{esc(s)}</li>" for s in sentences) + "</ul>"
    )
    parts.append("<div class='figrow'>")
    parts.append(
        safe_figure(
            lambda: verdict_plots.plot_nsr_vs_step(df),
            "NSR vs step: 1 / the mean unbiased snr over all prompts and seeds, band: its 95% t "
            "CI inverted; SSD's step-0 rows flagged mu-uninformed are left out.",
            "NSR vs step",
            errors,
        )
    )
    parts.append(
        safe_figure(
            lambda: verdict_plots.plot_quality_vs_compute(df),
            "Held-out PSNR vs cumulative network evaluations and training seconds: mean over all "
            "prompts and seeds at each checkpoint, band: 95% t CI; x: the cells' mean cost.",
            "quality vs compute",
            errors,
        )
    )
    parts.append("</div></section>")
    return "\n".join(parts)


def _tiles(path, n: int | None = None) -> list[np.ndarray]:
    from PIL import Image

    with Image.open(path) as image:
        row = np.asarray(image.convert("RGB"))
    size = row.shape[0]
    count = row.shape[1] // size if n is None else n
    return [row[:, i * size : (i + 1) * size] for i in range(count)]


def turntable_gif(final_png, truth_png, scale: int = 3, ms: int = 250) -> bytes:
    """Animated GIF: frame i = the final asset's held-out view i | the truth's view i."""
    from PIL import Image

    final = _tiles(final_png)
    truth = _tiles(truth_png, len(final)) if truth_png else [np.zeros_like(f) for f in final]
    frames = []
    for a, b in zip(final, truth, strict=False):
        pair = np.concatenate([a, np.full((a.shape[0], 2, 3), 255, np.uint8), b], 1)
        image = Image.fromarray(pair).resize(
            (pair.shape[1] * scale, pair.shape[0] * scale), Image.NEAREST
        )
        frames.append(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return out.getvalue()


def turntables_html(df: pd.DataFrame, infos: list[RunInfo], errors: list[str]) -> str:
    """Per cell: the final asset turning next to the truth (folded)."""
    figures = []
    for info in infos:
        cells = df.loc[df["run_id"] == info.run_id, ["method", "prompt", "seed"]].drop_duplicates()
        for cell in cells.itertuples(index=False):
            steps = info.snapshot_steps(cell.method, cell.prompt, int(cell.seed))
            if not steps:
                continue
            try:
                gif = turntable_gif(
                    info.snapshot(cell.method, cell.prompt, int(cell.seed), steps[-1]),
                    info.truth(cell.prompt),
                )
            except (OSError, ValueError) as exc:
                errors.append(f"turntable of {cell.method} / {cell.prompt} failed: {exc}")
                continue
            data = base64.b64encode(gif).decode("ascii")
            caption = f"{cell.method} | {cell.prompt} | seed {cell.seed} | step {steps[-1]}"
            figures.append(
                f'<figure class="turntable"><img alt="turntable {esc(caption)}" '
                f'src="data:image/gif;base64,{data}"><figcaption>{esc(caption)}'
                "<br>left: final asset, right: truth</figcaption></figure>"
            )
    if not figures:
        return ""
    return (
        "<details><summary>Turntables of the final assets next to the truth "
        f"({len(figures)} cells)</summary><div class='figrow'>"
        + "".join(figures)
        + "</div></details>"
    )
