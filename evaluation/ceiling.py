"""Quality ceiling: the direct photometric fit of a backbone to the true renders.

No score-distillation estimator can do better, on average, than fitting the same backbone
straight to the true object with the same optimiser, learning rates, steps, resolution,
camera distribution and random streams. The fit minimises, at step k with the cameras
c_k ~ the training distribution drawn from the cell's ``camera`` stream,

    L_k(theta) = 0.5 ||render_theta(c_k) - truth(c_k)||^2 / B      (RGB in [0, 1], [B, 3, H, W])

with the run's Adam (betas, eps) and the backbone's per-group learning rates, from the
backbone's initial parameters (``init`` stream, step 0). Its held-out metrics at the last step
are the ceiling of the cell: ``ceiling/psnr`` and ``ceiling/iou`` (mask IoU). For a prompt with
several instances (world/distributions.py) the backbone is fitted to each of its first N
instances in turn (N = ``eval.ceiling_instances``, 0: all) and the ceiling is the best fit
(highest held-out best-instance PSNR). With N below the number of instances the ceiling is a
lower bound on the best of all instances (each fit costs a cell; the detail prompts' instances
differ in spots and proportions, so their fits differ by tenths of a dB: docs/world.md).
Progress of a cell is then the fraction of the gap from its initial render to that ceiling,

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
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.cameras import Cameras
from results.atomic import atomic_write_bytes
from world.distributions import DISTRIBUTIONS, instances
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


class CeilingStopped(KeyboardInterrupt):
    """A stop (Ctrl-C / SIGTERM) was requested while a ceiling was being fitted: nothing of
    the fit is kept (no run dir exists yet; a resume fits it again)."""


def photometric_fit(
    backbone: Backbone,
    optimizer: torch.optim.Optimizer,
    targets: Iterable[tuple[Cameras, torch.Tensor]],
    height: int,
    width: int,
    stop: Callable[[], bool] | None = None,
) -> Backbone:
    """Adam steps k = 0..K-1 of L_k = 0.5 ||render(c_k) - truth_k||^2 / B (module docstring).

    Args:
        targets: K pairs (c_k, truth_k): B training cameras and their true RGB
            [B, 3, H, W] in [0, 1] (any iterable: ``streamed_targets`` makes them on demand).
        stop: checked before every step; True raises ``CeilingStopped``.
    Returns:
        ``backbone``, fitted in place.
    """
    state = backbone.initialize_state()
    for step, (cams, truth) in enumerate(targets):
        if stop is not None and stop():
            raise CeilingStopped(f"stopped while fitting the quality ceiling (step {step})")
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


def streamed_targets(
    steps: int,
    draw: Callable[[int], Cameras],
    render: Callable[[Cameras], torch.Tensor],
    chunk: int = RENDER_BATCH,
) -> Iterator[tuple[Cameras, torch.Tensor]]:
    """(c_k, truth_k) for k = 0..steps-1, drawn and rendered as the fit consumes them.

    The cameras of consecutive steps are rendered ``chunk`` at a time: the same slices as
    rendering the flat list of every step's cameras in chunks, so the targets are the same,
    while memory holds at most ``chunk`` + B cameras and their renders, whatever ``steps``.

    >>> from core.cameras import orbit_cameras
    >>> cams = [orbit_cameras(3, (float(k),), 2.5, 40.0) for k in range(5)]
    >>> pairs = list(streamed_targets(5, cams.__getitem__, lambda c: c.c2w[:, :3, 3], chunk=4))
    >>> [len(c) for c, _ in pairs], all(torch.equal(c.position, t) for c, t in pairs)
    ([3, 3, 3, 3, 3], True)
    """
    waiting: deque[Cameras] = deque()  # drawn steps not yet handed out
    unrendered: list[Cameras] = []  # cameras not yet rendered, in flat order
    n_unrendered, k = 0, 0
    truth = None  # rendered targets of ``waiting``'s cameras, in flat order
    while k < steps or waiting:
        while k < steps and n_unrendered < chunk:
            cams = draw(k)
            waiting.append(cams)
            unrendered.append(cams)
            n_unrendered += len(cams)
            k += 1
        if n_unrendered >= chunk or (k == steps and n_unrendered):
            flat = Cameras.cat(unrendered)
            n = min(chunk, n_unrendered)
            out = render(flat[0:n])
            truth = out if truth is None or len(truth) == 0 else torch.cat([truth, out])
            unrendered = [flat[n:]] if n < n_unrendered else []
            n_unrendered -= n
        while waiting and truth is not None and len(waiting[0]) <= len(truth):
            cams = waiting.popleft()
            yield cams, truth[: len(cams)]
            truth = truth[len(cams) :]


def ceiling_key(prompt: str, config: RunConfig, device: torch.device) -> dict:
    """Everything the fit's result depends on (JSON-able); its sha256 names the cache file."""
    backbone_config = getattr(config, config.backbone)
    key = {
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
    if config.backbone != "voxel":  # the true renders' background (the voxel's is in its
        key["background"] = list(config.voxel.background)  # backbone_config already)
    many = prompt in DISTRIBUTIONS and len(DISTRIBUTIONS[prompt].instances) > 1
    if many:  # one-object prompts keep their keys (the shipped entries); a prompt the world
        # does not know still has a key
        key["instances"] = len(fitted_instances(prompt, config.eval.ceiling_instances))
    return key


def fitted_instances(prompt: str, cap: int) -> tuple:
    """The instances the ceiling of ``prompt`` fits: the first ``cap`` (0: all).

    >>> spots = "a red ball with white spots"
    >>> len(fitted_instances(spots, 4)), len(fitted_instances(spots, 0))
    (4, 16)
    >>> len(fitted_instances("a red sphere", 4))
    1
    """
    every = instances(prompt)
    return every if cap <= 0 else every[:cap]


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def compute_ceiling(
    prompt: str,
    config: RunConfig,
    device: torch.device,
    make_backbone: Callable[[RunConfig, torch.device, torch.Generator], Backbone],
    make_optimizer: Callable[[Backbone, RunConfig], torch.optim.Optimizer],
    streams_for: StreamsFactory,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Run the photometric fit of ``prompt`` and return its held-out metrics (``psnr``,
    ``mask_iou``, ...), the start's (``start/psnr``, ...), ``seconds`` and ``instances``
    (how many were fitted: ``fitted_instances``). No cache.

    The targets are streamed step by step (``streamed_targets``); ``stop`` is checked before
    every step (``CeilingStopped``); ``progress(k, steps)`` is called at step 0 and then at
    most every 10 s."""
    from evaluation.heldout import HeldOutEvaluator

    started = time.perf_counter()
    evaluator = HeldOutEvaluator(prompt, config, device)
    best: dict[str, float] | None = None
    fitted = fitted_instances(prompt, config.eval.ceiling_instances)
    for obj in fitted:
        out = _fit_one(obj, prompt, config, device, make_backbone, make_optimizer, streams_for,
                       evaluator, stop, progress)  # fmt: skip
        if best is None or out["psnr"] > best["psnr"]:
            best = out
    assert best is not None
    best["seconds"] = time.perf_counter() - started
    best["instances"] = float(len(fitted))
    return best


def _fit_one(
    obj, prompt, config, device, make_backbone, make_optimizer, streams_for, evaluator,
    stop=None, progress=None,
):  # fmt: skip
    """The photometric fit to one object (an instance of ``prompt``), scored by ``evaluator``."""
    streams = streams_for(CEILING_SEED, prompt)
    backbone = make_backbone(config, device, streams.generator("init", 0))
    optimizer = make_optimizer(backbone, config)
    height, width, steps = config.render.height, config.render.width, config.steps
    start, _ = evaluator(backbone)

    # every step's cameras from the camera stream, as the trainer draws them, and their true
    # renders RENDER_BATCH cameras at a time (one sphere-tracing pass each), made as the fit
    # consumes them: memory does not grow with the steps
    batch = config.camera.batch_size

    def draw(k: int) -> Cameras:
        return config.camera.sample(batch, streams.generator("camera", k))

    def render(cams: Cameras) -> torch.Tensor:
        return render_object(
            obj,
            cams,
            height,
            width,
            supersample=config.world.supersample,
            background=config.voxel.background,
        )["rgb"]

    pairs = streamed_targets(steps, draw, render)
    reported = [time.perf_counter()]

    def counted(pairs):
        for k, (cams, truth) in enumerate(pairs):
            if progress is not None and (k == 0 or time.perf_counter() - reported[0] >= 10):
                progress(k, steps)
                reported[0] = time.perf_counter()
            yield cams.to(device), truth.to(device)

    with torch.enable_grad():
        photometric_fit(backbone, optimizer, counted(pairs), height, width, stop)
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
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """The cached ceiling of ``prompt`` under ``config`` (``compute_ceiling`` on a miss).

    The entry ``<cache>/<sha256 of ceiling_key>.json`` holds the key and the metrics. An
    entry that does not parse, is not an object, holds another key (a hash collision or a
    hand edit) or metrics that are missing, not numbers or not finite is ignored with a
    warning and the ceiling recomputed (and the entry replaced). A cache folder that cannot
    be created or written (read-only, full, ``STEINBENCH_CACHE`` naming a file) is a warning:
    the ceiling is computed without caching. ``stop`` / ``progress``: ``compute_ceiling``.
    """
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    folder = cache_dir() if cache is None else Path(cache)
    key = ceiling_key(prompt, config, device)
    name = f"{key_hash(key)}.json"
    # the user's cache first; with the default cache also the entries shipped for the
    # default configuration (evaluation/assets/ceilings, computed by this code on CPU)
    for path in (folder / name, *((SHIPPED_DIR / name,) if cache is None else ())):
        metrics = read_entry(path, key, warn)
        if metrics is not None:
            return metrics
    path = folder / name
    writable = _usable_folder(folder, warn)
    metrics = compute_ceiling(
        prompt, config, device, make_backbone, make_optimizer, streams_for, stop, progress
    )
    if writable:
        text = json.dumps({"key": key, "metrics": metrics}, indent=1, sort_keys=True)
        try:
            atomic_write_bytes(path, text.encode("utf-8"))
        except OSError as exc:
            warn(f"could not cache the quality ceiling in {folder} ({_reason(exc)}); it is used "
                 "for this run only")  # fmt: skip
    return metrics


def read_entry(path: Path, key: dict, warn: Callable[[str], None]) -> dict[str, float] | None:
    """The metrics of cache entry ``path`` if it is a valid entry for ``key``, else None
    (a missing file silently; anything else unusable with a warning)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        if not isinstance(exc, NotADirectoryError):  # a cache root naming a file: said later
            warn(f"ignoring the unreadable ceiling cache entry {path} ({_reason(exc)})")
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        warn(f"ignoring the ceiling cache entry {path}: not valid JSON; computing it again")
        return None
    problem = entry_problem(entry, json.loads(json.dumps(key)))
    if problem is not None:
        if problem != "another key":  # a hash collision or an older entry: no warning
            warn(f"ignoring the ceiling cache entry {path}: {problem}; computing it again")
        return None
    return {k: float(v) for k, v in entry["metrics"].items()}


def entry_problem(entry: Any, key: dict) -> str | None:
    """What makes a parsed cache entry unusable for ``key`` (None: usable).

    >>> entry_problem({"key": {"a": 1}, "metrics": {"psnr": 20.0, "mask_iou": 0.5}}, {"a": 1})
    >>> entry_problem({"key": {"a": 1}, "metrics": {"psnr": float("nan")}}, {"a": 1})
    'metric psnr is not a finite number'
    >>> entry_problem([1, 2], {"a": 1})
    'not a JSON object with key and metrics'
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
        return "not a JSON object with key and metrics"
    if entry.get("key") != key:
        return "another key"
    metrics = entry["metrics"]
    for name, value in metrics.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            return f"metric {name} is not a finite number"
    missing = [m for m in QUALITY_METRICS if m not in metrics]
    if missing:
        return f"metrics {', '.join(missing)} missing"
    return None


def _usable_folder(folder: Path, warn: Callable[[str], None]) -> bool:
    """Create ``folder`` and check that a file can be written in it; a warning if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError as exc:
        warn(f"cannot use the ceiling cache {folder} ({_reason(exc)}); the quality ceiling "
             "is computed without caching")  # fmt: skip
        return False


def _reason(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__}"
