"""The main job: every method x prompt x seed under identical streams, into one run dir."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmark.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from benchmark.config import RunConfig, config_to_yaml
from benchmark.factories import build_prior, resolve_device
from benchmark.store import RunStore
from benchmark.trainer import (
    CellHooks,
    CellInterrupted,
    CellResult,
    CellTrainer,
    configure_torch,
    run_cell,
)
from evaluation.clip import load_clip_scorer
from evaluation.clip_spec import resolve_clip_spec
from evaluation.heldout import HeldOutEvaluator, RenderOnlyEvaluator, image_row
from results.provenance import git_commit, package_versions
from results.schema import cell_name, snapshot_name, truth_snapshot_name


def _evaluator(prompt: str, config: RunConfig, device: torch.device, clip=None):
    """GT metrics for world prompts; with a real prior (``sd:PATH``) a prompt the world does
    not know gets held-out renders without metrics."""
    from world.objects import known_prompts

    if config.prior != "world" and prompt not in known_prompts():
        return RenderOnlyEvaluator(config, device)
    return HeldOutEvaluator(prompt, config, device, clip)


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
            self.progress.update(task, completed=done, rate=f"{rate:6.1f} it/s")

        return on_step

    def summary(self, results: list[CellResult], run_dir: Path) -> None:
        from rich.table import Table

        table = Table(title="steinbench summary (held-out PSNR, dB; CLIP score start -> end)")
        clip = any("clip_score" in r.initial for r in results)
        columns = ("method", "prompt", "seed", "PSNR start", "PSNR end", "CLIP")
        for column in (*columns[: 5 + clip], "train s", "status"):
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
            "the last probe step; x compute = (Var x cost)_SDS / (Var x cost)_method per step"
        )
        table.add_column("method")
        for column in overview.columns:
            table.add_column(column, justify="right")
        for method, row in overview.iterrows():
            table.add_row(method, *[str(v) for v in row])
        self.console.print(table)
        for sentence in overview.attrs.get("sentences", []):
            self.console.print(sentence, markup=False, highlight=False)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: the run stopped cleanly (checkpoint written) or was aborted."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class StopRequest:
    """First SIGINT/SIGTERM: finish the current step, write a checkpoint, stop. Second
    SIGINT: abort at once (KeyboardInterrupt). Installed only in the main thread."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, console) -> None:
        self.console = console
        self.requested = False
        self.previous: dict = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print(
            "[yellow]stopping after this step (writing a checkpoint); "
            "press Ctrl-C again to abort now[/yellow]"
        )

    def __call__(self) -> bool:
        return self.requested


@dataclass
class ResumeState:
    """An interrupted run reopened by benchmark.resume: its store (rows loaded), manifest
    and the results of the cells it finished."""

    store: RunStore
    manifest: dict
    completed: list[CellResult]


def run_benchmark(
    config: RunConfig,
    methods: list[str],
    prompts: list[str],
    argv: list[str] | None = None,
    quiet: bool = False,
    report: bool = True,
    resume: ResumeState | None = None,
    run_id: str | None = None,
    before_step: Callable[[int], None] | None = None,
) -> tuple[Path, list[CellResult]]:
    """Run every (method, prompt, seed) cell; returns the run directory and cell results.

    With ``report`` the run dir also gets report.html (analysis.report) at the end. Every
    ``config.checkpoint_every`` steps (and on Ctrl-C) the running cell is checkpointed to
    ``checkpoints/<cell>.pt`` and the metrics are flushed; the manifest lists finished cells
    as they finish. With ``resume`` (benchmark.resume.open_run) finished cells are skipped
    and an interrupted cell continues from its checkpoint, bit-identically on CPU. ``run_id``
    names a new run dir (default: a new timestamped id; sweeps pass their cell id);
    ``before_step`` is called before every training step (a test hook for fault injection).
    """
    device = resolve_device(config.device)
    configure_torch(config.threads)
    prior = build_prior(config, prompts, device)
    clip = load_clip_scorer(resolve_clip_spec(config.eval.clip, config.prior), device)
    evaluators = {p: _evaluator(p, config, device, clip) for p in prompts}

    if resume is None:
        store = RunStore(config.out, run_id)
        store.write_text("config.yaml", config_to_yaml(config))
        manifest = {
            "run_id": store.run_id,
            "command": argv if argv is not None else sys.argv,
            "started": datetime.now(UTC).isoformat(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "device": str(device),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "methods": methods,
            "prompts": prompts,
            "seeds": config.seeds,
            "cost_model": cost_model(config, methods, prior),
            "cells": [],
        }
        results: list[CellResult] = []
    else:
        store, manifest = resume.store, resume.manifest
        results = list(resume.completed)
        manifest.setdefault("resumed", []).append(
            {"at": datetime.now(UTC).isoformat(), "command": argv, "git_commit": git_commit()}
        )
    manifest.update(status="running", pid=os.getpid(), host=platform.node())
    store.write_json("manifest.json", manifest)
    if config.eval.snapshots:
        for prompt, evaluator in evaluators.items():
            if evaluator.truth is None:
                continue
            store.save_image(truth_snapshot_name(prompt), image_row(evaluator.truth["rgb"]))

    finished = {cell_name(r.method, r.prompt, r.seed) for r in results}
    status = "interrupted"
    reporter = Reporter(quiet)
    try:
        with reporter, StopRequest(reporter.console) as stop:
            for method in methods:
                for prompt in prompts:
                    for seed in config.seeds:
                        name = cell_name(method, prompt, seed)
                        if name in finished:
                            checkpoint_path(store.path, name).unlink(missing_ok=True)
                            continue
                        if stop():
                            raise CellInterrupted(0)
                        results.append(
                            _run_one_cell(
                                config,
                                method,
                                prompt,
                                seed,
                                prior,
                                device,
                                evaluators[prompt],
                                store,
                                reporter,
                                stop,
                                before_step,
                            )
                        )
                        store.flush_metrics()
                        manifest["cells"] = [asdict(r) for r in results]
                        store.write_json("manifest.json", manifest)
                        checkpoint_path(store.path, name).unlink(missing_ok=True)
        status = "finished"
    except (CellInterrupted, KeyboardInterrupt) as exc:
        raise RunInterrupted(store.path) from exc
    finally:
        # Ctrl-C or a crash: keep every row logged so far and say how the run ended.
        store.flush_metrics()
        manifest.update(
            status=status,
            finished=datetime.now(UTC).isoformat(),
            cells=[asdict(r) for r in results],
        )
        store.write_json("manifest.json", manifest)
    write_run_summary(store.path, reporter.console)
    reporter.summary(results, store.path)
    if report:
        from analysis.report import write_run_report

        write_run_report(store.path, reporter.console)
    return store.path, results


def cost_model(config: RunConfig, methods: list[str], prior) -> dict[str, dict]:
    """The registry's network evaluations per step and image by kind (``nfe_per_step``),
    times the batch size, per method: analysis compares them with the measured counters."""
    from benchmark.factories import method_config
    from estimators.registry import METHODS

    batch = config.camera.batch_size
    out = {}
    for method in methods:
        per_image = METHODS[method].nfe_per_step(method_config(config, method), prior)
        per_step = {kind: count * batch for kind, count in per_image.items()}
        out[method] = {"per_image": per_image, "batch_size": batch, "per_step": per_step}
    return out


def write_run_summary(run_dir: Path, console) -> Path | None:
    """``run_dir/summary.csv`` (analysis.verdict); a failure is a warning, never a failed run."""
    from analysis.verdict import write_summary_csv

    try:
        return write_summary_csv([run_dir], run_dir / "summary.csv")
    except Exception as exc:  # noqa: BLE001 - the run's results are already safe on disk
        console.print(f"warning: could not write summary.csv ({type(exc).__name__}: {exc})")
        return None


def _run_one_cell(
    config, method, prompt, seed, prior, device, evaluator, store, reporter, stop, before_step
) -> CellResult:
    """One cell into ``store``: from its checkpoint if there is one, else from step 0."""
    name = cell_name(method, prompt, seed)
    ckpt_file = checkpoint_path(store.path, name)
    start = load_checkpoint(ckpt_file, device) if ckpt_file.exists() else None
    # Rows past the checkpoint (or all rows, without one) are replayed by the resumed cell.
    store.drop_rows(method, prompt, seed, after_step=start.step if start else -1)
    trainer = CellTrainer(config, method, prompt, seed, prior, device)

    def evaluate(backbone, step):
        metrics, renders = evaluator(backbone)
        if config.eval.snapshots:
            store.save_image(snapshot_name(method, prompt, seed, step), image_row(renders))
        return metrics

    def log(step, metrics):
        store.log(method, prompt, seed, step, metrics)

    def save(checkpoint):
        store.flush_metrics()  # rows first: rows past a checkpoint are dropped on resume
        save_checkpoint(ckpt_file, checkpoint)

    hooks = CellHooks(
        on_step=reporter.cell(method, prompt, seed, config.steps, start.step if start else 0),
        checkpoint=save,
        checkpoint_every=config.checkpoint_every,
        stop_requested=stop,
        before_step=before_step,
    )
    return run_cell(trainer, evaluate, log, hooks=hooks, resume=start)
