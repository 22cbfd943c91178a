"""The main job: every method x prompt x seed under identical streams, into one run dir."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

from benchmark.config import RunConfig, config_to_yaml
from benchmark.errors import UserError
from benchmark.evaluation import HeldOutEvaluator, RenderOnlyEvaluator, image_row, slug
from benchmark.results import RunStore
from benchmark.trainer import CellResult, CellTrainer, configure_torch, run_cell

PACKAGES = ("torch", "diffusers", "nerfacc", "numpy", "pandas", "steinbench")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def build_prior(config: RunConfig, prompts: list[str], device: torch.device):
    if config.prior == "world":
        from world.prior import WorldPrior

        cam = config.camera
        return WorldPrior(
            prompts,
            config.render.height,
            config.render.width,
            distance=0.5 * (cam.distance_range[0] + cam.distance_range[1]),
            fovy=0.5 * (cam.fovy_range[0] + cam.fovy_range[1]),
            config=config.world,
            device=device,
        )
    if config.prior.startswith("sd:"):
        return build_sd_prior(config, prompts, device)
    raise UserError(f"unknown prior '{config.prior}'")


def build_sd_prior(config: RunConfig, prompts: list[str], device: torch.device):
    """``--prior sd:PATH``: a local diffusers Stable Diffusion directory (priors/stable_diffusion);
    a missing, incomplete or wrong directory and over-long prompts are one-line user errors."""
    from priors.stable_diffusion import StableDiffusionPrior, WeightsError, parse_prior

    _, path = parse_prior(config.prior)
    try:
        prior = StableDiffusionPrior(path, config.sd, device, prompts)
    except (WeightsError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if "ssd" in config.methods and config.ssd.baseline != "constant":
        from benchmark.methods import geometry_estimator

        geometry_estimator(prior, config)  # load (and cache) the depth model before any cell
    return prior


def _evaluator(prompt: str, config: RunConfig, device: torch.device):
    """GT metrics for world prompts; with a real prior (``sd:PATH``) a prompt the world does
    not know gets held-out renders without metrics."""
    from world.objects import known_prompts

    if config.prior != "world" and prompt not in known_prompts():
        return RenderOnlyEvaluator(config, device)
    return HeldOutEvaluator(prompt, config, device)


class Reporter:
    """Console output: a rich progress bar while running and a summary table at the end."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)
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

    def cell(self, method: str, prompt: str, seed: int, steps: int):
        description = f"{method:<4} | {prompt[:28]:<28} | seed {seed}"
        task = self.progress.add_task(description, total=steps, rate="")
        started = time.perf_counter()

        def on_step(done: int) -> None:
            rate = done / max(time.perf_counter() - started, 1e-9)
            self.progress.update(task, completed=done, rate=f"{rate:6.1f} it/s")

        return on_step

    def summary(self, results: list[CellResult], run_dir: Path) -> None:
        from rich.table import Table

        table = Table(title="steinbench summary (held-out PSNR, dB)")
        for column in ("method", "prompt", "seed", "PSNR start", "PSNR end", "train s", "status"):
            table.add_column(column, justify="left" if column in ("method", "prompt") else "right")
        for r in results:
            table.add_row(
                r.method,
                r.prompt,
                str(r.seed),
                f"{r.initial.get('psnr', float('nan')):.2f}",
                f"{r.final.get('psnr', float('nan')):.2f}",
                f"{r.train_seconds:.1f}",
                "ok" if r.status == "ok" else f"FAILED at step {r.failed_step}: {r.reason}",
            )
        self.console.print(table)
        self.console.print(f"results: {run_dir}")


def run_benchmark(
    config: RunConfig,
    methods: list[str],
    prompts: list[str],
    argv: list[str] | None = None,
    quiet: bool = False,
    report: bool = True,
) -> tuple[Path, list[CellResult]]:
    """Run every (method, prompt, seed) cell; returns the run directory and cell results.
    With ``report`` the run dir also gets report.html (analysis.report) at the end."""
    device = resolve_device(config.device)
    configure_torch(config.threads)
    prior = build_prior(config, prompts, device)
    evaluators = {p: _evaluator(p, config, device) for p in prompts}

    store = RunStore(config.out)
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
        "status": "running",
    }
    store.write_json("manifest.json", manifest)
    if config.eval.snapshots:
        for prompt, evaluator in evaluators.items():
            if evaluator.truth is None:
                continue
            store.save_image(f"truth_{slug(prompt)}.png", image_row(evaluator.truth["rgb"]))

    results: list[CellResult] = []
    status = "interrupted"
    try:
        with Reporter(quiet) as reporter:
            for method in methods:
                for prompt in prompts:
                    for seed in config.seeds:
                        trainer = CellTrainer(config, method, prompt, seed, prior, device)
                        name = f"{method}_{slug(prompt)}_s{seed}"

                        def evaluate(backbone, step, _ev=evaluators[prompt], _name=name):
                            metrics, renders = _ev(backbone)
                            if config.eval.snapshots:
                                store.save_image(f"{_name}_step{step:05d}.png", image_row(renders))
                            return metrics

                        def log(step, metrics, _m=method, _p=prompt, _s=seed):
                            store.log(_m, _p, _s, step, metrics)

                        on_step = reporter.cell(method, prompt, seed, config.steps)
                        results.append(run_cell(trainer, evaluate, log, on_step))
                        store.flush_metrics()
        status = "finished"
    finally:
        # Ctrl-C or a crash: keep every completed cell's rows and say how the run ended.
        store.flush_metrics()
        manifest.update(
            status=status,
            finished=datetime.now(UTC).isoformat(),
            cells=[asdict(r) for r in results],
        )
        store.write_json("manifest.json", manifest)
    reporter.summary(results, store.path)
    if report:
        from analysis.report import write_run_report

        write_run_report(store.path, reporter.console)
    return store.path, results
