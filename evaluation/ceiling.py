"""Quality ceiling: the direct photometric fit of a backbone to the true renders.

No score-distillation estimator can do better, on average, than fitting the same backbone
straight to the true object with the same optimiser, learning rates, steps, resolution,
camera distribution and random streams. The fit minimises, at step k with the cameras
c_k ~ the training distribution drawn from the cell's ``camera`` stream,

    L_k(theta) = 0.5 ||render_theta(c_k) - truth(c_k)||^2 / B      (RGB in [0, 1], [B, 3, H, W])

with the run's Adam (betas, eps) and the backbone's per-group learning rates, from the
backbone's initial parameters (``init`` stream, step 0). Its held-out metrics at the last step
are the ceiling of the cell: ``ceiling/psnr`` and ``ceiling/iou`` (mask IoU). For a prompt with
several instances (world/distributions.py) the backbone is fitted to each instance in turn and
the ceiling is the best instance's fit (highest held-out best-instance PSNR). Progress of a
cell is then the fraction of the gap from its initial render to that ceiling,

    quality = (m - m_0) / (m_ceiling - m_0)         (0 at the start, 1 at the ceiling)

for m = held-out PSNR (``quality/psnr``) and mask IoU (``quality/iou``); NaN where the ceiling
does not lie above the start (no gap to close). Steps / calls / seconds to a fraction
(analysis/summary.py: 50% and 80%) are never below the start.

One fit costs about one SDS cell's training (plus a true render per step), so it is computed
once per configuration and cached as JSON in ``$STEINBENCH_CACHE/ceilings/<sha256>.json``
(default ``~/.cache/steinbench``), keyed by everything the fit depends on (``ceiling_key``).
The fit always uses the streams of seed ``CEILING_SEED``: for the voxel grid (zero initial
parameters) every seed starts from the same render; for randomly initialised backbones the
quality of a cell uses the cell's own start.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.cameras import Cameras
from results.atomic import atomic_write_bytes
from world.distributions import instances
from world.renderer import render_object

if TYPE_CHECKING:
    from backbones.base import Backbone

#: the run config (benchmark.run.config.RunConfig); evaluation/ does not import benchmark/
RunConfig = Any
#: streams_for(seed, prompt) -> an object whose generator(name, step) is that cell's stream
#: (benchmark.streams.RandomStreams)
StreamsFactory = Callable[[int, str], Any]

#: bump when the fit or its metrics change, so old cache entries miss
CEILING_VERSION = 1
#: the random streams of the fit (camera draws and initial parameters)
CEILING_SEED = 0
#: cameras per true-render batch of the fit's targets
RENDER_BATCH = 64
#: held-out metric -> (ceiling metric name, quality metric name)
QUALITY_METRICS = {
    "psnr": ("ceiling/psnr", "quality/psnr"),
    "mask_iou": ("ceiling/iou", "quality/iou"),
}


#: ceilings of the default configuration, shipped so a fresh machine's main job needs no fit
SHIPPED_DIR = Path(__file__).resolve().parent / "assets" / "ceilings"


def cache_dir() -> Path:
    """``$STEINBENCH_CACHE/ceilings`` (default ``~/.cache/steinbench/ceilings``)."""
    root = os.environ.get("STEINBENCH_CACHE") or Path.home() / ".cache" / "steinbench"
    return Path(root) / "ceilings"


def quality_fraction(value: float, start: float, ceiling: float) -> float:
    """Fraction of the gap from ``start`` to ``ceiling`` closed by ``value``.

    (value - start) / (ceiling - start); NaN when ceiling <= start or any input is not finite.

    >>> quality_fraction(17.0, 12.0, 22.0)
    0.5
    """
    gap = ceiling - start
    if not (math.isfinite(value) and math.isfinite(start) and math.isfinite(gap)) or gap <= 0:
        return float("nan")
    return (value - start) / gap


def quality_metrics(
    metrics: dict[str, float], start: dict[str, float], ceiling: dict[str, float]
) -> dict[str, float]:
    """``quality/psnr`` and ``quality/iou`` of held-out ``metrics`` given the cell's start
    metrics and the ceiling's (both keyed like the held-out metrics: psnr, mask_iou)."""
    out = {}
    for metric, (_, name) in QUALITY_METRICS.items():
        if metric in metrics and metric in start and metric in ceiling:
            out[name] = quality_fraction(metrics[metric], start[metric], ceiling[metric])
    return out


def ceiling_log_metrics(ceiling: dict[str, float]) -> dict[str, float]:
    """The ceiling as logged once per cell: ``ceiling/psnr``, ``ceiling/iou``."""
    return {name: ceiling[m] for m, (name, _) in QUALITY_METRICS.items() if m in ceiling}


def photometric_fit(
    backbone: Backbone,
    optimizer: torch.optim.Optimizer,
    cameras: list[Cameras],
    truths: list[torch.Tensor],
    height: int,
    width: int,
) -> Backbone:
    """Adam steps k = 0..K-1 of L_k = 0.5 ||render(c_k) - truth_k||^2 / B (module docstring).

    Args:
        cameras: K batches of B training cameras c_k.
        truths: K true RGB batches [B, 3, H, W] in [0, 1], truths[k] seen from cameras[k].
    Returns:
        ``backbone``, fitted in place.
    """
    state = backbone.initialize_state()
    for step, (cams, truth) in enumerate(zip(cameras, truths, strict=True)):
        # as the trainer: densification re-indexes Adam (backbones/base.py, strategy calls)
        state = backbone.step_pre_render(optimizer, state, step)
        info: dict = {}
        rgb = backbone.render(cams, height, width, info=info)["rgb"]
        loss = 0.5 * ((rgb - truth) ** 2).sum() / rgb.shape[0]
        state = backbone.step_pre_backward(optimizer, state, step, info)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state = backbone.step_post_backward(optimizer, state, step, info)
        optimizer.step()
        # free this step's graph now: a live graph keeps each leaf's gradient accumulator with
        # its old shape, and the next step's densification changes the shapes
        del rgb, loss, info
    return backbone


def ceiling_key(prompt: str, config: RunConfig, device: torch.device) -> dict:
    """Everything the fit's result depends on (JSON-able); its sha256 names the cache file."""
    backbone_config = getattr(config, config.backbone)
    return {
        "version": CEILING_VERSION,
        "prompt": prompt,
        "backbone": config.backbone,
        "backbone_config": asdict(backbone_config),
        "render": asdict(config.render),
        "steps": config.steps,
        "camera": asdict(config.camera),
        "optim": asdict(config.optim),
        "eval": {
            "n_views": config.eval.n_views,
            "elevation": config.eval.elevation,
            "azimuth_offset": config.eval.azimuth_offset,
        },
        "supersample": config.world.supersample,
        "seed": CEILING_SEED,
        "device": torch.device(device).type,
    }


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def compute_ceiling(
    prompt: str,
    config: RunConfig,
    device: torch.device,
    make_backbone: Callable[[RunConfig, torch.device, torch.Generator], Backbone],
    make_optimizer: Callable[[Backbone, RunConfig], torch.optim.Optimizer],
    streams_for: StreamsFactory,
) -> dict[str, float]:
    """Run the photometric fit of ``prompt`` and return its held-out metrics (``psnr``,
    ``mask_iou``, ...), the start's (``start/psnr``, ...) and ``seconds``. No cache."""
    from evaluation.heldout import HeldOutEvaluator

    started = time.perf_counter()
    evaluator = HeldOutEvaluator(prompt, config, device)
    best: dict[str, float] | None = None
    for obj in instances(prompt):
        out = _fit_one(obj, prompt, config, device, make_backbone, make_optimizer, streams_for,
                       evaluator)  # fmt: skip
        if best is None or out["psnr"] > best["psnr"]:
            best = out
    assert best is not None
    best["seconds"] = time.perf_counter() - started
    return best


def _fit_one(obj, prompt, config, device, make_backbone, make_optimizer, streams_for, evaluator):
    """The photometric fit to one object (an instance of ``prompt``), scored by ``evaluator``."""
    streams = streams_for(CEILING_SEED, prompt)
    backbone = make_backbone(config, device, streams.generator("init", 0))
    optimizer = make_optimizer(backbone, config)
    height, width, steps = config.render.height, config.render.width, config.steps
    start, _ = evaluator(backbone)

    # every step's cameras from the camera stream, as the trainer draws them; their true
    # renders in batches of RENDER_BATCH cameras (one sphere-tracing pass per batch)
    batch = config.camera.batch_size
    cameras = [config.camera.sample(batch, streams.generator("camera", k)) for k in range(steps)]
    flat = Cameras.cat(cameras) if cameras else None
    truth = torch.cat(
        [
            render_object(
                obj,
                flat[i : i + RENDER_BATCH],
                height,
                width,
                supersample=config.world.supersample,
                background=config.voxel.background,
            )["rgb"]
            for i in range(0, steps * batch, RENDER_BATCH)
        ]
    ).to(device)
    cameras = [c.to(device) for c in cameras]
    with torch.enable_grad():
        photometric_fit(backbone, optimizer, cameras, list(truth.split(batch)), height, width)
    final, _ = evaluator(backbone)
    out = {k: float(v) for k, v in final.items()}
    out.update({f"start/{k}": float(v) for k, v in start.items()})
    return out


def quality_ceiling(
    prompt: str,
    config: RunConfig,
    device: torch.device,
    make_backbone: Callable[[RunConfig, torch.device, torch.Generator], Backbone],
    make_optimizer: Callable[[Backbone, RunConfig], torch.optim.Optimizer],
    streams_for: StreamsFactory,
    cache: Path | None = None,
) -> dict[str, float]:
    """The cached ceiling of ``prompt`` under ``config`` (``compute_ceiling`` on a miss).

    The entry ``<cache>/<sha256 of ceiling_key>.json`` holds the key and the metrics; a file
    whose key differs (a hash collision or a hand edit) or that does not parse is recomputed.
    """
    folder = cache_dir() if cache is None else Path(cache)
    key = ceiling_key(prompt, config, device)
    name = f"{key_hash(key)}.json"
    # the user's cache first; with the default cache also the entries shipped for the
    # default configuration (evaluation/assets/ceilings, computed by this code on CPU)
    for path in (folder / name, *((SHIPPED_DIR / name,) if cache is None else ())):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") == json.loads(json.dumps(key)):
                return dict(entry["metrics"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    path = folder / name
    metrics = compute_ceiling(prompt, config, device, make_backbone, make_optimizer, streams_for)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": key, "metrics": metrics}, indent=1, sort_keys=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return metrics
