"""Console output of a run: a rich progress bar while running, the per-cell summary table
and the per-method overview at the end (analysis.summary.method_overview).

The tables fit ``WIDTH`` = 100 columns without wrapping a number: the overview's columns are
split over as many tables as it takes (``overview_tables``), a long prompt is cut with an
ellipsis, and a failed cell's reason is printed under the summary table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmark.run.trainer import CellResult

#: terminal tables fit this many columns
WIDTH = 100


def format_rate(steps_per_second: float) -> str:
    """'12.3 it/s', or seconds per step for slow cells ('45.2 s/it'), never '0.0 it/s'.

    >>> format_rate(12.34), format_rate(0.02)
    ('  12.3 it/s', '  50.0 s/it')
    """
    if steps_per_second >= 1.0:
        return f"{steps_per_second:6.1f} it/s"
    return f"{1.0 / max(steps_per_second, 1e-12):6.1f} s/it"


def probe_share(frame) -> dict[str, float] | None:
    """Where the cells' time went, from a run's long-format metrics (analysis.load): ``train``
    = the sum over cells of their last ``train_seconds``, ``eval`` = all ``time/eval``,
    ``probes`` = all ``var/seconds`` (every probe: its variants, the control-variate view and
    the bias check), ``share`` = probes / (train + eval + probes). None without probes.

    >>> import pandas as pd
    >>> rows = [("sds", 0, "var/seconds", 1.0), ("sds", 2, "train_seconds", 2.5),
    ...         ("sds", 1, "train_seconds", 1.0), ("sds", 2, "var/seconds", 2.0),
    ...         ("vsd", 2, "train_seconds", 4.0), ("vsd", 2, "time/eval", 0.5)]
    >>> frame = pd.DataFrame(rows, columns=["method", "step", "metric", "value"])
    >>> frame["run_id"], frame["prompt"], frame["seed"] = "r", "p", 0
    >>> probe_share(frame)
    {'train': 6.5, 'eval': 0.5, 'probes': 3.0, 'share': 0.3}
    """
    probes = float(frame.loc[frame["metric"] == "var/seconds", "value"].sum())
    if probes <= 0:
        return None
    keys = [c for c in ("run_id", "method", "prompt", "seed") if c in frame.columns]
    train_rows = frame[frame["metric"] == "train_seconds"]
    train = float(train_rows.groupby(keys)["value"].max().sum()) if len(train_rows) else 0.0
    evaluation = float(frame.loc[frame["metric"] == "time/eval", "value"].sum())
    total = train + evaluation + probes
    return {"train": train, "eval": evaluation, "probes": probes, "share": probes / total}


def probe_share_line(share: dict[str, float]) -> str:
    """One summary line from ``probe_share``.

    >>> print(probe_share_line({"train": 6.5, "eval": 0.5, "probes": 3.0, "share": 0.3}))
    probe share: 30.0% of the cells' time (probes 3.0 s, training 6.5 s, evaluation 0.5 s)
    """
    return (
        f"probe share: {100 * share['share']:.1f}% of the cells' time (probes "
        f"{share['probes']:.1f} s, training {share['train']:.1f} s, evaluation "
        f"{share['eval']:.1f} s)"
    )


#: the probe's nested variants (benchmark/probe/draws.py), off by default
NESTED_VARIANTS = ("fixed_camera", "fixed_camera_t")


def skipped_line(variants: tuple[str, ...] | list[str]) -> str | None:
    """What the default probe leaves out to keep the main job within 10 minutes on 2 cores,
    and how to add it back; None when every nested variant was measured.

    >>> print(skipped_line(["all"]))
    not measured: the nested variance variants fixed_camera, fixed_camera_t (camera fixed; \
camera and t fixed), left out by default to keep the main job under 10 minutes; the variance \
split gives the eps part (law of total variance); add them with --set \
'measure.variants=[all,fixed_camera,fixed_camera_t]'
    >>> skipped_line(["all", "fixed_camera", "fixed_camera_t"]) is None
    True
    """
    missing = [v for v in NESTED_VARIANTS if v not in variants]
    if not missing:
        return None
    return (
        f"not measured: the nested variance variants {', '.join(missing)} (camera fixed; camera "
        "and t fixed), left out by default to keep the main job under 10 minutes; the variance "
        "split gives the eps part (law of total variance); add them with --set "
        f"'measure.variants=[{','.join(dict.fromkeys([*variants, *NESTED_VARIANTS]))}]'"
    )


class Reporter:
    """Console output: a rich progress bar while running and a summary table at the end."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        # Logs and CI (stderr not a terminal) get the tables' WIDTH instead of rich's 80.
        width = None if sys.stderr.isatty() else WIDTH
        self.console = Console(stderr=True, quiet=quiet, width=width)
        self.progress = None

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def cell(self, method: str, prompt: str, seed: int, steps: int, first: int = 0):
        description = f"{method:<4} | {prompt[:28]:<28} | seed {seed}"
        task = self.progress.add_task(description, total=steps, completed=first, rate="")
        started = time.perf_counter()

        def on_step(done: int) -> None:
            rate = (done - first) / max(time.perf_counter() - started, 1e-9)
            self.progress.update(task, completed=done, rate=format_rate(rate))

        return on_step

    def summary(
        self, results: list[CellResult], run_dir: Path, variants: tuple[str, ...] | None = None
    ) -> None:
        """The end of a run: the cells, the per-method tables, the probe's share of the time,
        what the probe did not measure (``variants``: the probe's, None: not said). Nothing
        with ``quiet`` (not computed either: the tables read the run's metrics back, about
        1.5 s for a tiny run and more for a large one)."""
        if self.console.quiet:
            return
        self.console.print(summary_table(results))
        for r in results:
            if r.status != "ok":
                line = f"{r.method} | {r.prompt} | seed {r.seed}: FAILED at step "
                self.console.print(f"{line}{r.failed_step}: {r.reason}", markup=False)
        self.print_overview(run_dir)
        self.print_probe_share(run_dir)
        skipped = None if variants is None else skipped_line(variants)
        if skipped is not None:
            self.console.print(skipped, markup=False, highlight=False)
        self.console.print(f"results: {run_dir}", markup=False, highlight=False)

    def print_probe_share(self, run_dir: Path) -> None:
        """The ``probe_share`` line of the run's metrics (nothing without probes)."""
        from analysis.load import load_results

        try:
            share = probe_share(load_results([run_dir]))
        except (ValueError, KeyError, FileNotFoundError):
            return
        if share is not None:
            self.console.print(probe_share_line(share), markup=False, highlight=False)

    def print_overview(self, run_dir: Path) -> None:
        """Per-method tables (analysis.summary.method_overview) of the run's metrics."""
        from analysis.load import load_results
        from analysis.summary import method_overview
        from analysis.verdict import load_manifests

        try:
            overview = method_overview(load_results([run_dir]), load_manifests([run_dir]))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            self.console.print(f"(no per-method overview: {exc})")
            return
        self.console.print(OVERVIEW_TITLE, markup=False, highlight=False)
        for table in overview_tables(overview):
            self.console.print(table)
        for sentence in overview.attrs.get("sentences", []):
            self.console.print(sentence, markup=False, highlight=False)


OVERVIEW_TITLE = (
    "per method: mean [95% t CI] over prompts x seeds; theta-space variance at the last probe "
    "step; x compute = (NSR x cost)_SDS / (NSR x cost)_method per step"
)


def summary_table(results: list[CellResult], width: int = WIDTH):
    """One row per cell: held-out PSNR start -> end, CLIP start -> end, quality (fraction of
    the PSNR gap to the ceiling closed), training seconds, status; within ``width`` columns,
    the prompt cut with an ellipsis where it must be (as the progress bar's)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    nan = float("nan")
    clip = any("clip_score" in r.initial for r in results)
    quality = any("quality/psnr" in r.final for r in results)
    rows = []
    for r in results:
        psnr = f"{r.initial.get('psnr', nan):.2f} -> {r.final.get('psnr', nan):.2f}"
        clip_cell = (
            f"{r.initial.get('clip_score', nan):.1f} -> {r.final.get('clip_score', nan):.1f}"
        )
        rows.append(
            [
                r.method,
                r.prompt,
                str(r.seed),
                psnr,
                *[clip_cell][: int(clip)],
                *[f"{r.final.get('quality/psnr', nan):.2f}"][: int(quality)],
                f"{r.train_seconds:.1f}",
                "ok" if r.status == "ok" else f"FAILED@{r.failed_step}",
            ]
        )
    headers = ["seed", "PSNR", *["CLIP"][: int(clip)], *["quality"][: int(quality)]]

    def build(prompt_width: int) -> Table:
        table = Table(
            title="steinbench summary (held-out PSNR, dB, start -> end; CLIP score start -> "
            "end; quality: fraction of the PSNR gap to the ceiling closed)",
            box=box.SIMPLE_HEAD,
            collapse_padding=True,
        )
        table.add_column("method", no_wrap=True)
        table.add_column("prompt", no_wrap=True, overflow="ellipsis", max_width=prompt_width)
        for column in (*headers, "train s", "status"):
            table.add_column(column, justify="right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        return table

    scratch = Console(width=10 * width)
    prompt_width = max([len("prompt"), *(len(r.prompt) for r in results)])
    while prompt_width > 12 and scratch.measure(build(prompt_width)).maximum > width:
        prompt_width -= 1
    return build(prompt_width)


def overview_tables(overview, width: int = WIDTH) -> list:
    """The per-method overview (a frame: one row per method, one column per quantity) as
    rich tables of at most ``width`` columns, each with the method column and as many of the
    quantity columns, in order, as fit unwrapped (a frame that fits is one table)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    def build(columns: list[str]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, collapse_padding=True)
        table.add_column("method", no_wrap=True)
        for column in columns:
            table.add_column(str(column), justify="right", no_wrap=True)
        for method, row in overview.iterrows():
            table.add_row(str(method), *[str(row[c]) for c in columns])
        return table

    scratch = Console(width=10 * width)
    chunks: list[list[str]] = [[]]
    for column in overview.columns:
        if chunks[-1] and scratch.measure(build([*chunks[-1], column])).maximum > width:
            chunks.append([])
        chunks[-1].append(column)
    return [build(chunk) for chunk in chunks if chunk]
