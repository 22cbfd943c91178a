"""Console output of a run: a rich progress bar while running, the per-cell summary table
and the per-method overview at the end (analysis.summary.method_overview)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmark.run.trainer import CellResult


def format_rate(steps_per_second: float) -> str:
    """'12.3 it/s', or seconds per step for slow cells ('45.2 s/it'), never '0.0 it/s'.

    >>> format_rate(12.34), format_rate(0.02)
    ('  12.3 it/s', '  50.0 s/it')
    """
    if steps_per_second >= 1.0:
        return f"{steps_per_second:6.1f} it/s"
    return f"{1.0 / max(steps_per_second, 1e-12):6.1f} s/it"


class Reporter:
    """Console output: a rich progress bar while running and a summary table at the end."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        # Logs and CI (stderr not a terminal) get wide tables instead of rich's 80 columns.
        width = None if sys.stderr.isatty() else 160
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

    def summary(self, results: list[CellResult], run_dir: Path) -> None:
        from rich.table import Table

        table = Table(
            title="steinbench summary (held-out PSNR, dB; CLIP score start -> end; quality: "
            "fraction of the PSNR gap to the ceiling closed)"
        )
        clip = any("clip_score" in r.initial for r in results)
        quality = any("quality/psnr" in r.final for r in results)
        columns = ("method", "prompt", "seed", "PSNR start", "PSNR end", "CLIP")
        for column in (*columns[: 5 + clip], *["quality"][: int(quality)], "train s", "status"):
            table.add_column(column, justify="left" if column in ("method", "prompt") else "right")
        for r in results:
            clip_cell = [
                f"{r.initial.get('clip_score', float('nan')):.1f} -> "
                f"{r.final.get('clip_score', float('nan')):.1f}"
            ]
            table.add_row(
                r.method,
                r.prompt,
                str(r.seed),
                f"{r.initial.get('psnr', float('nan')):.2f}",
                f"{r.final.get('psnr', float('nan')):.2f}",
                *clip_cell[: int(clip)],
                *[f"{r.final.get('quality/psnr', float('nan')):.2f}"][: int(quality)],
                f"{r.train_seconds:.1f}",
                "ok" if r.status == "ok" else f"FAILED at step {r.failed_step}: {r.reason}",
            )
        self.console.print(table)
        self.print_overview(run_dir)
        self.console.print(f"results: {run_dir}")

    def print_overview(self, run_dir: Path) -> None:
        """Per-method table (analysis.summary.method_overview) of the run's metrics."""
        from rich.table import Table

        from analysis.load import load_results
        from analysis.summary import method_overview
        from analysis.verdict import load_manifests

        try:
            overview = method_overview(load_results([run_dir]), load_manifests([run_dir]))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            self.console.print(f"(no per-method overview: {exc})")
            return
        table = Table(
            title="per method: mean [95% t CI] over prompts x seeds; theta-space variance at "
            "the last probe step; x compute = (NSR x cost)_SDS / (NSR x cost)_method per step"
        )
        table.add_column("method")
        for column in overview.columns:
            table.add_column(column, justify="right")
        for method, row in overview.iterrows():
            table.add_row(method, *[str(v) for v in row])
        self.console.print(table)
        for sentence in overview.attrs.get("sentences", []):
            self.console.print(sentence, markup=False, highlight=False)
