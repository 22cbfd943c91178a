"""One self-contained HTML report of one or more run dirs (``python -m benchmark report``).

Self-contained: figures are embedded as base64 PNG ``data:`` URIs and the only CSS is an
inline ``<style>`` block; no scripts, no network. Every piece of user-provided text
(prompts, config values, command lines, failure reasons, paths) goes through
``html.escape``; matplotlib's mathtext is disabled for the same text in figures.

Contents, in order: the title block; the Verdict (analysis/report_verdict.py: per method at
equal compute with CIs and words, NSR vs step and quality vs compute over all prompts and
seeds); notes; the turntables (folded); for prompts that are distributions, mode averaging,
commitment, detail, chroma and instances reached (analysis/report_distributions.py); then,
folded under one <details>: header (runs, manifest: versions, device, commit; config keys that
differ between runs, or the key settings of a single run, and each full config folded), failed
cells, summary tables (quality, gradient variance at fixed steps, convergence and throughput,
paired differences vs SDS), the gradient-variance figures (theta and image space), convergence
figures per eval metric, and render grids (method x checkpoint next to the true object, per run
and prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis.clip_gate import gate_for, is_clip_metric
from analysis.html import FigureJob, esc, frame_html, render_figures, table_html
from analysis.load import load_results
from analysis.runs import RunInfo, config_differences, flatten, load_run_info
from analysis.summary import Summary, eval_metrics, summarize

KEY_SETTINGS = (
    "methods",
    "steps",
    "seeds",
    "backbone",
    "prior",
    "render.height",
    "render.width",
    "eval.every",
    "measure.every",
    "measure.samples",
    "camera.batch_size",
)

FIGURE_SKIP = ("janus_deg",)  # in the tables; its curve repeats the Janus score's
#: metrics drawn per prompt (one row per prompt); every metric is in the overview figure
PER_PROMPT_CONVERGENCE = ("psnr", "quality/psnr")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
       color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.6em; }
h3 { font-size: 1.0em; margin-top: 1.2em; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top;
         white-space: nowrap; }
.scroll { overflow-x: auto; }
h4 { font-size: 0.9em; margin: 10px 0 2px 0; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
td.text { white-space: normal; min-width: 8em; max-width: 70em; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 8px 0 24px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 6px 0; }
.fail { background: #fdecea; border-left: 4px solid #d93025; padding: 6px 10px; }
.meta { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 8px; font-size: 0.8em; overflow-x: auto; }
details { margin: 4px 0; }
details > summary { cursor: pointer; font-weight: 600; margin: 12px 0; }
.figrow { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure.turntable img { image-rendering: pixelated; }
ul.verdict li { margin: 2px 0; }
#verdict td, #verdict th { white-space: normal; min-width: 4.5em; }
"""


def _header(infos: list[RunInfo]) -> str:
    parts = []
    rows = []
    fields = (
        ("run", lambda i: i.run_id),
        ("path", lambda i: i.path),
        ("status", lambda i: i.manifest.get("status", "unknown")),
        ("started", lambda i: i.manifest.get("started")),
        ("finished", lambda i: i.manifest.get("finished")),
        ("command", lambda i: " ".join(map(str, i.manifest.get("command") or []))),
        ("git commit", lambda i: i.manifest.get("git_commit")),
        ("device", lambda i: i.manifest.get("device")),
        ("cuda device", lambda i: i.manifest.get("cuda_device")),
        ("torch threads", lambda i: i.manifest.get("torch_threads")),
        ("platform", lambda i: i.manifest.get("platform")),
        ("methods", lambda i: ", ".join(map(str, i.manifest.get("methods") or []))),
        ("prompts", lambda i: " | ".join(map(str, i.manifest.get("prompts") or []))),
        ("seeds", lambda i: ", ".join(map(str, i.manifest.get("seeds") or []))),
    )
    for name, get in fields:
        rows.append([name, *(get(i) for i in infos)])
    versions = sorted(set().union(*(i.manifest.get("versions", {}) for i in infos)))
    for package in versions:
        rows.append([package, *(i.manifest.get("versions", {}).get(package) for i in infos)])
    parts.append("<h2>Runs</h2>")
    parts.append(table_html(["", *(i.run_id for i in infos)], rows, text_columns=len(infos) + 1))
    for info in infos:
        if not info.manifest:
            parts.append(
                f"<p class='note'>Run {esc(info.run_id)} has no readable manifest.json: "
                "versions, device and failures are unknown.</p>"
            )
        elif not info.finished:
            parts.append(
                f"<p class='note'>Run {esc(info.run_id)} has status "
                f"'{esc(info.manifest.get('status', 'unknown'))}': it did not finish (killed "
                "or still running); its results may be partial.</p>"
            )
    return "\n".join(parts)


def _config(infos: list[RunInfo]) -> str:
    parts = ["<h2>Configuration</h2>"]
    differences = config_differences(infos)
    if len(infos) > 1:
        if differences:
            parts.append("<h3>Config keys that differ between runs</h3>")
            parts.append(
                table_html(
                    ["key", *(i.run_id for i in infos)],
                    [[k, *map(_value, v)] for k, v in differences.items()],
                    text_columns=len(infos) + 1,
                )
            )
        else:
            parts.append("<p>All runs have the same configuration.</p>")
    flat = [flatten(i.config) for i in infos]
    keys = [k for k in KEY_SETTINGS if any(k in f for f in flat)]
    parts.append("<h3>Key settings</h3>")
    header = ["key", *(i.run_id for i in infos)]
    rows = [[k, *(_value(f.get(k)) for f in flat)] for k in keys]
    methods = list(dict.fromkeys(m for i in infos for m in i.manifest.get("methods") or []))
    for method in methods:
        rows.append(
            [
                f"{method} settings",
                *(
                    ", ".join(
                        f"{k[len(method) + 1 :]}={_value(v)}"
                        for k, v in f.items()
                        if k.startswith(method + ".")
                    )
                    for f in flat
                ),
            ]
        )
    parts.append(table_html(header, rows, text_columns=len(header)))
    for info in infos:
        import yaml

        text = yaml.safe_dump(info.config, sort_keys=False) if info.config else "(no config.yaml)"
        parts.append(
            f"<details><summary>Full resolved config of {esc(info.run_id)}</summary>"
            f"<pre>{esc(text)}</pre></details>"
        )
    return "\n".join(parts)


def _value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return "" if value is None else str(value)


def _failures(infos: list[RunInfo], df: pd.DataFrame) -> str:
    rows = []
    for info in infos:
        for cell in info.failed_cells:
            rows.append(
                [
                    info.run_id,
                    cell.get("method"),
                    cell.get("prompt"),
                    cell.get("seed"),
                    cell.get("failed_step"),
                    cell.get("reason"),
                ]
            )
    listed = {(r[0], r[1], r[2], r[3]) for r in rows}
    failed = df[df["metric"] == "failed"]
    for row in failed.itertuples(index=False):
        if (row.run_id, row.method, row.prompt, row.seed) not in listed:
            rows.append(
                [row.run_id, row.method, row.prompt, row.seed, row.step, "(no reason recorded)"]
            )
    parts = ["<h2>Failed cells</h2>"]
    if not rows:
        parts.append("<p>None: every cell finished.</p>")
    else:
        parts.append(
            f"<p class='fail'>{len(rows)} cell(s) failed; cells that logged their failure are "
            "left out of the final-metric means.</p>"
        )
        parts.append(
            table_html(["run", "method", "prompt", "seed", "failed at step", "reason"], rows, 3)
        )
    return "\n".join(parts)


def _summary(summary: Summary, clip_quality: bool = True) -> str:
    final = lambda q: q.startswith("final ")  # noqa: E731
    is_clip = lambda q: is_clip_metric(q) and not clip_quality  # noqa: E731
    parts = ["<h2>Summary</h2>"]
    parts.append(
        "<p class='meta'>Mean over seeds with a 95% Student t CI over seeds in "
        "brackets; '(n/N)': only n of N seeds have a value. Failed "
        "cells are left out. PSNR thresholds (dB) per prompt: "
        + esc(", ".join(f"{p}: {v:.2f}" for p, v in summary.thresholds.items()))
        + ".</p>"
    )
    groups = (
        ("Quality at the last step", lambda q: final(q) and not is_clip(q)),
        ("CLIP at the last step (a diagnostic, see the notes)", lambda q: final(q) and is_clip(q)),
        (
            "Log gradient variance at fixed steps (variant 'all': camera, t and eps random; "
            "log_var = ln trace Var in theta space, img_log_var in image space)",
            lambda q: "log_var@" in q,
        ),
        (
            "Noise-to-signal ratio at fixed steps (trace Var / ||mean||^2; theta and image space)",
            lambda q: "nsr@" in q,
        ),
        (
            "Convergence and throughput (steps, network calls and training seconds to the PSNR "
            "threshold; steps/s; calls/step)",
            lambda q: not q.startswith("final ") and "log_var@" not in q and "nsr@" not in q,
        ),
    )
    for title, keep in groups:
        quantities = [q for q in summary.quantities if keep(q)]
        if not quantities:
            continue
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append(frame_html(summary.wide(quantities)))
    if not summary.paired.empty:
        parts.append("<h3>Paired differences vs SDS (method - SDS, same seeds)</h3>")
        parts.append(
            "<p class='meta'>Per seed, the method's value minus SDS's value on the same seed "
            "(same random streams), averaged over the seeds both have, with a t CI over "
            "those pairs. A CI that excludes 0 is a difference the seeds agree on.</p>"
        )
        for title, keep in groups:
            quantities = [q for q in summary.quantities if keep(q)]
            frame = summary.wide(quantities, paired=True) if quantities else pd.DataFrame()
            if not frame.empty:
                parts.append(f"<h4>{esc(title.split(' (')[0])}: method - SDS</h4>")
                parts.append(frame_html(frame))
    return "\n".join(parts)


def _figures(df: pd.DataFrame, infos: list[RunInfo], errors: list[str]) -> str:
    from analysis import plots

    parts: list[str | FigureJob] = ["<h2>Gradient variance</h2>"]
    if any(m.startswith("var/") for m in df["metric"].unique()):
        for space in ("theta", "image"):
            parts.append(
                FigureJob(
                    lambda s=space: plots.plot_variance(df, s),
                    f"Log gradient variance vs step, {space} space, one column per randomness "
                    "variant, next to the held-out PSNR of the same runs.",
                    f"gradient variance ({space} space)",
                )
            )
    else:
        parts.append(
            "<p class='note'>No gradient-variance metrics (var/*) in these runs: run with "
            "<code>--set measure.every=N</code> (N &gt; 0) to measure them.</p>"
        )
    parts.append("<h2>Convergence</h2>")
    metrics = [m for m in eval_metrics(df) if m not in FIGURE_SKIP]
    if not metrics:
        parts.append("<p class='note'>No evaluation metrics in these runs.</p>")
    else:
        parts.append(
            FigureJob(
                lambda: plots.plot_convergence_overview(df, metrics),
                "Every evaluation metric vs steps, network calls (all networks: prior, phi, "
                "depth) and training wall-clock, mean over prompts and seeds.",
                "convergence overview",
            )
        )
    if any(m.startswith("conv/") for m in df["metric"].unique()):
        from analysis.convergence_plots import plot_convergence_signals

        parts.append(
            FigureJob(
                lambda: plot_convergence_signals(df),
                "Ground-truth-free convergence signals per prompt vs step (agreement of "
                "consecutive gradients, render change per 100 steps, lag-1 signal over its "
                "start), beside the exact quality fraction where the prompt has one; a cross "
                "marks where the run's stop rule fired.",
                "convergence signals",
            )
        )
    for metric in [m for m in PER_PROMPT_CONVERGENCE if m in metrics]:
        parts.append(
            FigureJob(
                lambda m=metric: plots.plot_convergence(df, m),
                f"{metric} per prompt vs steps, network calls (all networks) and training "
                "wall-clock.",
                f"convergence of {metric}",
            )
        )
    parts.append("<h2>Renders</h2>")
    parts.append(
        "<p class='meta'>Held-out views of each method at checkpoints (lowest seed), next to the "
        "true object.</p>"
    )
    for info in infos:
        prompts = info.manifest.get("prompts") or list(
            dict.fromkeys(df.loc[df["run_id"] == info.run_id, "prompt"])
        )
        if len(infos) > 1:
            parts.append(f"<h3>Run {esc(info.run_id)}</h3>")
        for prompt in prompts:
            parts.append(
                FigureJob(
                    lambda p=prompt, i=info: plots.plot_render_grid(i, p),
                    f"{prompt}: renders at checkpoints",
                    f"renders of {prompt}",
                    colors=None,  # renders keep their exact colours
                )
            )
    jobs = [p for p in parts if isinstance(p, FigureJob)]
    rendered = iter(render_figures(jobs, errors))
    return "\n".join(p if isinstance(p, str) else next(rendered) for p in parts)


def build_report_html(
    run_dirs: Sequence[str | Path],
    title: str = "steinbench report",
    psnr_threshold: float | None = None,
) -> str:
    """The report of ``run_dirs`` as one HTML string (see module docstring)."""
    import matplotlib

    infos = [load_run_info(p) for p in run_dirs]
    df = load_results([i.path for i in infos])
    errors: list[str] = []
    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        from analysis.report_distributions import distributions_html
        from analysis.report_verdict import turntables_html, verdict_html

        summary = summarize(df, psnr_threshold=psnr_threshold)
        body = [
            f"<h1>{esc(title)}</h1>",
            f"<p class='meta'>Generated {esc(datetime.now(UTC).isoformat(timespec='seconds'))}"
            f" from {len(infos)} run(s): {esc(', '.join(str(i.path) for i in infos))}</p>",
            verdict_html(df, infos, errors),
        ]
        gate = gate_for(df, {i.run_id: i.manifest for i in infos})
        notes = ([gate.note] if gate is not None else []) + list(summary.notes)
        details = [
            _header(infos),
            _config(infos),
            _failures(infos, df),
            _summary(summary, gate is None or gate.quality),
            _figures(df, infos, errors),
        ]
        turntables = turntables_html(df, infos, errors)
        body.append(turntables)
        body.append(distributions_html(df))
        body.append(
            '<details id="details"><summary>Details: runs, configuration, failed cells, '
            "per-prompt tables, paired differences, variance and convergence figures per "
            "prompt, render grids</summary>" + "\n".join(details) + "</details>"
        )
    notes += errors
    if notes:
        body.insert(3, "<h2>Notes</h2>" + "".join(f"<p class='note'>{esc(n)}</p>" for n in notes))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    title: str = "steinbench report",
    psnr_threshold: float | None = None,
) -> Path:
    """Write the report of ``run_dirs`` to ``out`` atomically; returns the path."""
    from results.atomic import atomic_write_text

    text = build_report_html(run_dirs, title=title, psnr_threshold=psnr_threshold)
    return atomic_write_text(out, text)


def write_run_report(run_dir: str | Path, console=None) -> Path | None:
    """``run_dir/report.html`` at the end of ``python -m benchmark run``: prints the path
    (to ``console``, a rich Console, or stderr); a failure is a warning, never a failed run."""
    import sys

    def say(text: str) -> None:
        if console is not None:
            console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr)

    try:
        path = write_report([run_dir], Path(run_dir) / "report.html")
    except Exception as exc:  # noqa: BLE001 - the run's results are already safe on disk
        say(
            f"warning: could not write the report ({type(exc).__name__}: {exc}); "
            f"retry with: python -m benchmark report {run_dir}"
        )
        return None
    say(f"report: {path}")
    return path
