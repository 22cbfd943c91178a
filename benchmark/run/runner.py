"""The main job: every method x prompt x seed under identical streams, into one run dir."""

from __future__ import annotations

import copy
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmark.run.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_trainer_state,
    save_checkpoint,
)
from benchmark.run.config import RunConfig, config_to_yaml
from benchmark.run.factories import build_backbone, build_optimizer, build_prior, resolve_device
from benchmark.run.parallel_cells import (
    cell_workers,
    resumed_workers,
    run_cells,
    threads_per_cell,
)
from benchmark.run.reporter import Reporter, format_rate  # noqa: F401 - format_rate re-exported
from benchmark.run.runlock import RunLock
from benchmark.run.store import RunStore
from benchmark.run.trainer import (
    CellHooks,
    CellInterrupted,
    CellResult,
    CellTrainer,
    configure_torch,
    run_cell,
)
from benchmark.streams import RandomStreams
from core.errors import UserError
from evaluation.ceiling import ceiling_log_metrics, quality_ceiling, quality_metrics
from evaluation.clip import load_clip_scorer
from evaluation.clip_spec import resolve_clip_spec
from evaluation.heldout import HeldOutEvaluator, RenderOnlyEvaluator, image_row
from results.atomic import remove_stale_temp_files
from results.provenance import git_commit, package_versions
from results.schema import cell_name, snapshot_name, truth_snapshot_name


def _evaluator(prompt: str, config: RunConfig, device: torch.device, clip=None):
    """GT metrics for world prompts; with a real prior (``sd:PATH``) a prompt the world does
    not know gets held-out renders without metrics."""
    from world.distributions import all_prompts

    if config.prior != "world" and prompt not in all_prompts():
        return RenderOnlyEvaluator(config, device)
    return HeldOutEvaluator(prompt, config, device, clip)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: the run stopped cleanly (checkpoint written) or was aborted."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class StopRequest:
    """First SIGINT/SIGTERM: finish the current step, write a checkpoint, stop. Second
    SIGINT: abort at once (KeyboardInterrupt). Installed only in the main thread."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, console, message: str | None = None) -> None:
        self.console = console
        self.message = message or "stopping after this step (writing a checkpoint)"
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
        self.console.print(f"[yellow]{self.message}; press Ctrl-C again to abort now[/yellow]")

    def __call__(self) -> bool:
        return self.requested


@dataclass
class ResumeState:
    """An interrupted run reopened by benchmark.run.resume: its store (rows loaded), manifest,
    the results of the cells it finished and the run dir's lock (held)."""

    store: RunStore
    manifest: dict
    completed: list[CellResult]
    lock: RunLock | None = None


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
    as they finish. With ``resume`` (benchmark.run.resume.open_run) finished cells are skipped
    and an interrupted cell continues from its checkpoint, bit-identically on CPU. ``run_id``
    names a new run dir (default: a new timestamped id; sweeps pass their cell id);
    ``before_step`` is called before every training step (a test hook for fault injection).
    """
    device = resolve_device(config.device)
    cell_workers(config, device)  # workers > 1 with a real prior: an error before any work
    configure_torch(config.threads)
    prior = build_prior(config, prompts, device)
    clip = load_clip_scorer(resolve_clip_spec(config.eval.clip, config.prior), device)
    evaluators = {p: _evaluator(p, config, device, clip) for p in prompts}
    ceilings = _ceilings(config, evaluators, device, quiet)

    if resume is None:
        try:
            store = RunStore(config.out, run_id)
        except OSError as exc:
            raise UserError(f"cannot create a run dir in {config.out}: {_os_reason(exc)}") from None
        lock = RunLock(store.path).acquire()
    else:
        store, lock = resume.store, resume.lock or RunLock(resume.store.path).acquire()
    try:
        return _run_locked(
            config, methods, prompts, argv, quiet, report, resume, before_step,
            device, prior, evaluators, store, ceilings,
        )  # fmt: skip
    finally:
        lock.release()


def _ceilings(config, evaluators, device, quiet: bool) -> dict[str, dict]:
    """Quality ceilings (evaluation/ceiling.py), cached per config, computed on a cache
    miss with a progress line (stderr, at most every 10 s) and the stop handler installed
    first: Ctrl-C / SIGTERM stops the fit (``CeilingStopped``, exit 130; no run dir exists
    yet, so nothing is lost)."""
    wanted = [p for p, e in evaluators.items() if config.eval.ceiling and e.truth is not None]
    if not wanted:
        return {}
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)

    def progress(prompt: str):
        def say(k: int, steps: int) -> None:
            text = f"quality ceiling of '{prompt}': fit step {k:,} of {steps:,}"
            console.print(text, markup=False, highlight=False)

        return say

    with StopRequest(console, "stopping the quality ceiling's fit") as stop:
        return {
            p: quality_ceiling(
                p,
                config,
                device,
                build_backbone,
                build_optimizer,
                RandomStreams,
                stop=stop,
                progress=progress(p),
            )  # fmt: skip
            for p in wanted
        }


def clip_manifest(evaluators: dict) -> dict | None:
    """The run's CLIP scorer and what its checks found (evaluation/clip_checks.py), for the
    report's gate: CLIP is shown as quality only when ``checks["passed"]``. None without CLIP."""
    for evaluator in evaluators.values():
        clip = getattr(evaluator, "clip", None)
        if clip is not None:
            return {"name": clip.name, "checks": clip.checks}
    return None


def _os_reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _start_manifest(config, methods, prompts, argv, device, store, prior) -> dict:
    return {
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


def _run_locked(
    config, methods, prompts, argv, quiet, report, resume, before_step,
    device, prior, evaluators, store, ceilings,
) -> tuple[Path, list[CellResult]]:  # fmt: skip
    """``run_benchmark`` once the run dir's lock is held: temp files of a killed writer are
    removed (now and at the end), and a write error (disk full, read-only run dir) stops the
    run with one line, the manifest marked failed when it can still be written."""
    remove_stale_temp_files(store.path)
    try:
        if resume is None:
            store.write_text("config.yaml", config_to_yaml(config))
            manifest = _start_manifest(config, methods, prompts, argv, device, store, prior)
            manifest["clip"] = clip_manifest(evaluators)
            results: list[CellResult] = []
        else:
            manifest, results = resume.manifest, list(resume.completed)
            manifest.setdefault("resumed", []).append(
                {"at": datetime.now(UTC).isoformat(), "command": argv, "git_commit": git_commit()}
            )
        manifest.pop("error", None)
        manifest.update(status="running", pid=os.getpid(), host=platform.node())
        store.write_json("manifest.json", manifest)
        if config.eval.snapshots:
            for prompt, evaluator in evaluators.items():
                if evaluator.truth is not None:
                    name = truth_snapshot_name(prompt, prompts)
                    store.save_image(name, image_row(evaluator.truth["rgb"]))
    except OSError as exc:
        raise UserError(f"cannot write the run dir {store.path}: {_os_reason(exc)}") from None

    # Cells are keyed by (method, prompt, seed); file names are unique among the run's prompts.
    finished = {(r.method, r.prompt, r.seed) for r in results}
    cells = [(m, p, s) for m in methods for p in prompts for s in config.seeds]
    rank = {cell: i for i, cell in enumerate(cells)}
    store.cell_order = rank
    for cell in cells:
        if cell in finished:
            checkpoint_path(store.path, cell_name(*cell, prompts)).unlink(missing_ok=True)
    pending = [cell for cell in cells if cell not in finished]
    # a resumed run keeps the thread layout it started with (auto workers: the CPU count)
    workers = (
        cell_workers(config, device)
        if resume is None
        else resumed_workers(config, device, manifest)
    )
    manifest["workers"] = workers
    manifest["threads_per_cell"] = threads_per_cell(config.threads, workers)
    status, write_error = "interrupted", None
    reporter = Reporter(quiet)

    def run_one(cell, should_stop):
        method, prompt, seed = cell
        cell_prior = prior if workers == 1 else copy.copy(prior)  # its own n_evals counter
        return _run_one_cell(
            config, method, prompt, seed, cell_prior, device, evaluators[prompt], store,
            reporter, should_stop, before_step, ceilings.get(prompt), prompts,
        )  # fmt: skip

    def on_done(cell, result):
        results.append(result)
        results.sort(key=lambda r: rank.get((r.method, r.prompt, r.seed), len(rank)))
        store.flush_metrics()
        manifest["cells"] = [asdict(r) for r in results]
        store.write_json("manifest.json", manifest)
        checkpoint_path(store.path, cell_name(*cell, prompts)).unlink(missing_ok=True)

    try:
        with reporter, StopRequest(reporter.console) as stop:
            if workers == 1:
                for cell in pending:
                    if stop():
                        raise CellInterrupted(0)
                    on_done(cell, run_one(cell, stop))
            else:
                prior.prepare(prompts)
                torch.set_num_threads(threads_per_cell(config.threads, workers))
                try:
                    run_cells(pending, run_one, on_done, workers, stop)
                finally:
                    torch.set_num_threads(config.threads)
            # summary.csv before the manifest says finished: a run killed while it is written
            # (seconds) is not finished, and its resume writes it (every cell already listed)
            store.write_json("manifest.json", manifest)
            write_run_summary(store.path, reporter.console)
        status = "finished"
    except OSError as exc:
        status, write_error = "failed", exc
    except (CellInterrupted, KeyboardInterrupt) as exc:
        raise RunInterrupted(store.path) from exc
    finally:
        # Ctrl-C, a crash or a write error: keep every row logged so far, say how it ended.
        closed = _close_run(store, manifest, status, results, write_error)
    if write_error is not None:
        marked = "marked failed" if closed else "could not be updated either"
        raise UserError(
            f"cannot write the run dir {store.path}: {_os_reason(write_error)}; the run "
            f"stopped (manifest {marked}); once writable, continue with: "
            f"python -m benchmark resume {store.path}"
        )
    probing = config.measure.every > 0
    reporter.summary(results, store.path, config.measure.variants if probing else None)
    if report:
        from analysis.report import write_run_report

        write_run_report(store.path, reporter.console)
    return store.path, results


def _close_run(store, manifest, status, results, write_error) -> bool:
    """Flush the rows and write the final manifest (``status``, and the write error if
    any); a temp file left by a failed write is removed. False when a write failed."""
    manifest.update(
        status=status,
        finished=datetime.now(UTC).isoformat(),
        cells=[asdict(r) for r in results],
    )
    if write_error is not None:
        manifest["error"] = f"write error: {_os_reason(write_error)}"
    ok = True
    for write in (store.flush_metrics, lambda: store.write_json("manifest.json", manifest)):
        try:
            write()
        except OSError:
            if write_error is None:
                raise
            ok = False
    remove_stale_temp_files(store.path)
    return ok


def cost_model(config: RunConfig, methods: list[str], prior) -> dict[str, dict]:
    """The registry's network evaluations per step and image by kind (``nfe_per_step``,
    averaged over the run's steps where it changes during a run: ``mean_nfe_per_step``),
    times the batch size, per method: analysis compares them with the measured counters."""
    from benchmark.run.factories import method_config
    from estimators.registry import METHODS

    batch = config.camera.batch_size
    out = {}
    for method in methods:
        per_image = METHODS[method].mean_nfe_per_step(
            method_config(config, method), prior, config.steps
        )
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
    config,
    method,
    prompt,
    seed,
    prior,
    device,
    evaluator,
    store,
    reporter,
    stop,
    before_step,
    ceiling=None,
    among=(),
) -> CellResult:
    """One cell into ``store``: from its checkpoint if there is one, else from step 0.
    ``among``: the run's prompts, which make the cell's file names unique."""
    name = cell_name(method, prompt, seed, among)
    ckpt_file = checkpoint_path(store.path, name)
    start = load_checkpoint(ckpt_file, device, config.steps) if ckpt_file.exists() else None
    trainer = CellTrainer(config, method, prompt, seed, prior, device)
    if start is not None:  # validated and loaded before any row is dropped
        load_trainer_state(trainer, start, ckpt_file)
    # Rows past the checkpoint (or all rows, without one) are replayed by the resumed cell.
    store.drop_rows(method, prompt, seed, after_step=start.step if start else -1)
    initial = dict(start.initial) if start else None

    def evaluate(backbone, step):
        nonlocal initial
        metrics, renders = evaluator(backbone)
        if trainer.convergence is not None:  # render_change between evaluations
            trainer.convergence.observe_renders(step, renders)
        if ceiling is not None:  # quality/* against the cell's own start; ceiling/* once
            initial = metrics if initial is None else initial
            metrics.update(quality_metrics(metrics, initial, ceiling))
            metrics.update(ceiling_log_metrics(ceiling) if step == 0 else {})
        if config.eval.snapshots:
            store.save_image(snapshot_name(method, prompt, seed, step, among), image_row(renders))
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
