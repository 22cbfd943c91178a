"""Small runs for notebooks and tests: ``small_run(out_dir)`` trains a tiny configuration
through ``benchmark.run.runner.run_benchmark`` and returns the run dir; ``compare_variants``
trains several estimator settings of the tiny configuration in-process (one shared prior)
and returns their long-format results.

They live in the harness (benchmark/), not in analysis/, which only reads results files.

Default tiny config: 16x16 renders, a 16^3 voxel grid with 24 samples per ray, a world prior
of 8 x 2 reference views, 2 held-out views, evaluation and variance probe (K = 8 samples)
every ``every`` steps. A 2-method x 1-prompt x 2-seed run of 20 steps takes ~10-30 s on 2
busy cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

#: the one tiny world of every small check (these runs, ``regress``'s golden configuration,
#: the ceiling tests): 16x16 renders, a 16^3 voxel grid with 24 samples per ray, a world
#: prior of 8 azimuths x 2 elevations of reference views without supersampling
TINY_WORLD = (
    "render.height=16",
    "render.width=16",
    "voxel.resolution=16",
    "voxel.n_samples=24",
    "world.n_azimuth=8",
    "world.elevations=[0,30]",
    "world.supersample=1",
)
TINY_OVERRIDES = (
    *TINY_WORLD,
    "eval.n_views=2",
    "measure.samples=8",
    "measure.bootstrap=100",
)


def tiny_config(
    methods: Sequence[str] = ("sds", "ssd"),
    steps: int = 20,
    seeds: Sequence[int] = (0, 1),
    every: int = 10,
    out: str | Path = "runs",
    overrides: Sequence[str] = (),
):
    """The resolved RunConfig of a tiny run (``overrides`` are ``--set`` strings, applied
    after the tiny defaults)."""
    from benchmark.run.config import load_config

    sets = [*TINY_OVERRIDES, f"eval.every={every}", f"measure.every={every}", *overrides]
    return load_config(
        None, sets, methods=list(methods), steps=steps, seeds=list(seeds), out=str(out)
    )


def small_run(
    out_dir: str | Path,
    methods: Sequence[str] = ("sds", "ssd"),
    prompts: Sequence[str] = ("a red sphere",),
    steps: int = 20,
    seeds: Sequence[int] = (0, 1),
    every: int = 10,
    overrides: Sequence[str] = (),
    report: bool = False,
) -> Path:
    """Run the tiny config and return ``out_dir/<run_id>``.

    Args:
        methods: registered method names (``estimators.registry.METHODS``).
        prompts: prompts the world knows (``python -m benchmark prompts``); they are not
            validated here beyond what the world prior does.
        every: evaluation and variance-probe interval (steps).
        overrides: extra ``--set`` strings, e.g. ``("ssd.baseline=constant",)``.
        report: also write report.html into the run dir.
    """
    from benchmark.run.factories import validate_methods
    from benchmark.run.runner import run_benchmark

    config = tiny_config(methods, steps, seeds, every, out_dir, overrides)
    methods = validate_methods(list(methods))
    path, _ = run_benchmark(
        config, methods, list(prompts), argv=["small_run"], quiet=True, report=report
    )
    return Path(path)


def compare_variants(
    variants: dict[str, tuple[str, Sequence[str]]],
    prompts: Sequence[str] = ("a red sphere",),
    steps: int = 20,
    seeds: Sequence[int] = (0,),
    every: int = 10,
    overrides: Sequence[str] = (),
):
    """Train several configurations of the tiny setup in-process, sharing one world prior
    and one held-out evaluator per prompt (building the prior dominates a tiny run), and
    return their long-format results (the columns of metrics.parquet) with ``method`` set to
    the variant name, so that ``summarize`` and the plots treat variants as methods.

    Args:
        variants: name -> (method, extra ``--set`` overrides of that variant), e.g.
            ``{"sds": ("sds", ()), "ssd constant": ("ssd", ("ssd.baseline=constant",))}``.
            Variants may change estimator settings only (``sds.*``, ``vsd.*``, ``ssd.*``,
            ``measure.*``): the prior and evaluation are built from the first variant.
        overrides: ``--set`` strings applied to every variant.
    Returns:
        DataFrame; ``.attrs["errors"]`` maps a variant name to the error that stopped it (a
        variant whose variance probe fails is retrained without the probe).
    """
    import pandas as pd

    from benchmark.run.factories import build_prior, resolve_device
    from benchmark.run.trainer import configure_torch
    from evaluation.heldout import HeldOutEvaluator
    from results.schema import METRIC_COLUMNS

    configs = {
        name: tiny_config([method], steps, seeds, every, "unused", [*overrides, *extra])
        for name, (method, extra) in variants.items()
    }
    first = next(iter(configs.values()))
    device = resolve_device(first.device)
    configure_torch(first.threads)
    prior = build_prior(first, list(prompts), device)
    evaluators = {p: HeldOutEvaluator(p, first, device) for p in prompts}
    rows: list[tuple] = []
    errors: dict[str, str] = {}
    for name, config in configs.items():
        method = variants[name][0]
        for prompt in prompts:
            for seed in config.seeds:
                cell_rows = _train_cell(
                    config, method, prompt, seed, prior, device, evaluators, name
                )
                if isinstance(cell_rows, Exception) and config.measure.every > 0:
                    # e.g. a probe that cannot serve this estimator: keep the training curve
                    errors[name] = f"{type(cell_rows).__name__}: {cell_rows}"
                    config = dataclasses.replace(
                        config, measure=dataclasses.replace(config.measure, every=0)
                    )
                    errors[name] += " (retrained without the variance probe)"
                    cell_rows = _train_cell(
                        config, method, prompt, seed, prior, device, evaluators, name
                    )
                if isinstance(cell_rows, Exception):
                    errors[name] = f"{type(cell_rows).__name__}: {cell_rows}"
                    continue
                rows.extend(cell_rows)
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).astype(
        {"seed": "int64", "step": "int64", "value": "float64"}
    )
    frame.attrs["errors"] = errors
    return frame


def _train_cell(config, method, prompt, seed, prior, device, evaluators, name):
    """Rows of one in-process cell, or the exception that stopped it."""
    from benchmark.run.trainer import CellTrainer, run_cell

    rows: list[tuple] = []

    def evaluate(backbone, step):
        return evaluators[prompt](backbone)[0]

    def log(step, metrics):
        rows.extend(("variants", name, prompt, seed, step, k, float(v)) for k, v in metrics.items())

    try:
        run_cell(CellTrainer(config, method, prompt, seed, prior, device), evaluate, log)
    except Exception as exc:  # noqa: BLE001 - reported per variant, the others still run
        return exc
    return rows
