"""Escaped HTML building blocks of the report: text, tables, embedded figures."""

from __future__ import annotations

import base64
import html
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd


def esc(value: object) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def table_html(
    header: Sequence[object], rows: Iterable[Sequence[object]], text_columns: int = 1
) -> str:
    """A table with every cell escaped; the first ``text_columns`` columns left-aligned."""

    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return (
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def frame_html(frame: pd.DataFrame) -> str:
    """A (multi-)indexed display DataFrame as an escaped table."""
    if frame.empty:
        return "<p class='meta'>(empty)</p>"
    names = [n or "" for n in frame.index.names]
    rows = []
    for index, values in frame.iterrows():
        index = index if isinstance(index, tuple) else (index,)
        rows.append([*index, *("" if pd.isna(v) else v for v in values)])
    return table_html([*names, *frame.columns], rows, text_columns=len(names))


def figure_html(fig, caption: str, alt: str, colors: int | None = 256) -> str:
    """<figure> with the PNG embedded as a data URI (``colors``: see plots.figure_png)."""
    from analysis.plot_style import figure_png

    data = base64.b64encode(figure_png(fig, colors=colors)).decode("ascii")
    return (
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def safe_figure(make, caption: str, alt: str, errors: list[str], colors: int | None = 256) -> str:
    """Build one figure; a failure becomes a visible note instead of losing the report."""
    try:
        fig = make()
        return figure_html(fig, caption, alt, colors)
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still useful
        errors.append(f"figure '{alt}' failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return f"<p class='fail'>{esc(errors[-1])}</p>"


@dataclass(frozen=True)
class FigureJob:
    """A figure to build and embed later (``safe_figure``'s arguments, minus ``errors``)."""

    make: Callable
    caption: str
    alt: str
    colors: int | None = 256


_JOBS: list[FigureJob] = []  # the forked workers' view of the jobs (inherited memory)


def _figure_worker_init() -> None:
    """A forked figure worker dies on SIGTERM, as the pool expects when it stops idle workers:
    a Python-level SIGTERM handler inherited from the caller (a run's StopRequest, ray's
    driver) kept it alive, and the pool's join then waited for it forever."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _render_job(index: int) -> tuple[str, list[str]]:
    errors: list[str] = []
    job = _JOBS[index]
    return safe_figure(job.make, job.caption, job.alt, errors, job.colors), errors


def figure_workers() -> int:
    """Processes for ``render_figures``: STEINBENCH_REPORT_WORKERS, else the CPUs this
    process may use (at most 4)."""
    value = os.environ.get("STEINBENCH_REPORT_WORKERS")
    if value is not None and value.strip().isdigit():
        return max(1, int(value))
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def render_figures(
    jobs: Sequence[FigureJob], errors: list[str], workers: int | None = None
) -> list[str]:
    """The ``<figure>`` HTML of each job, in order (failures as notes, appended to
    ``errors``). Matplotlib draws on one core, so with ``workers`` > 1 the jobs are drawn in
    forked processes (POSIX; the output is byte-identical to drawing them here); otherwise,
    or when a pool cannot start, one after the other."""
    import multiprocessing

    workers = figure_workers() if workers is None else workers
    if workers > 1 and len(jobs) > 1 and "fork" in multiprocessing.get_all_start_methods():
        global _JOBS
        _JOBS = list(jobs)
        try:
            context = multiprocessing.get_context("fork")
            with context.Pool(min(workers, len(jobs)), _figure_worker_init) as pool:
                results = pool.map(_render_job, range(len(jobs)), chunksize=1)
                pool.close()  # the workers end on the pool's sentinels, no SIGTERM needed
                pool.join()
        except OSError:
            results = None
        finally:
            _JOBS = []
        if results is not None:
            for _, errs in results:
                errors.extend(errs)
            return [html for html, _ in results]
    return [safe_figure(j.make, j.caption, j.alt, errors, j.colors) for j in jobs]
