"""Gradient-variance probe (DESIGN.md section 4): per-sample gradients at a frozen checkpoint.

At a checkpoint ``step`` theta, the optimiser and the estimator's own state (LoRA, mu) are
frozen: no optimiser step, no ``estimator.update``; what ``grad`` changes anyway is restored
afterwards (the estimator's attribute bindings, then its ``state_dict`` from a snapshot), and
so is the prior's ``n_evals`` counter. K = ``config.samples`` draws of (camera, t, eps)
come from the ``measure`` stream of this step only (never from the estimator), so every
method sees the same K draws at the same step and seed (common random numbers). One sample
is one view: with ``x_k = prior.encode(render(theta, c_k))``,

    G_k = estimator.grad(x_k, t_k, eps_k)            image space, [C, H, W]
    g_k = d/dtheta <x_k, G_k>                        theta space (target trick, batch of 1)

so the training gradient of a batch of B views (loss / B) has covariance Cov(g) / B.
Variants share the draws: ``all`` uses (c_k, t_k, eps_k); ``fixed_camera`` (c_1, t_k,
eps_k); ``fixed_camera_t`` (c_1, t_1, eps_k).

Statistics, streamed over the K samples (Chan/Welford in float64, shifted by the first
sample), so memory is O(P) in the P theta parameters plus O(chunk x P) for one vectorised
chunk, never O(K x P):

    var_trace    = sum_p Var_k(g_kp)   (unbiased, 1 / (K - 1))
    log_var      = ln var_trace
    mean_sq_norm = ||mean_k g_k||^2
    nsr          = var_trace / mean_sq_norm

The 95% CI of log_var is the studentized bootstrap of benchmark/variance/ci.py (calibrated
by simulation, docs/variance_ci.md); it needs the K x K Gram matrix of the shifted per-sample
gradients, computed exactly when P <= ``sketch_dim`` and from a count sketch of dimension
``sketch_dim`` otherwise (diagonal always exact; the interval is then rescaled by the exact
var_trace over the sketched one), so its memory is O(K x min(P, sketch_dim)).

Metric names (flat dict, logged by ``run_cell`` at the evaluation step index):

    var/seconds                        wall time of the whole probe
    var/n_evals                        prior network evaluations of the probe (they are
                                       not added to the training ``n_evals``)
    var/<variant>/var_trace            theta space
    var/<variant>/log_var
    var/<variant>/log_var_lo           95% CI of log_var (when bootstrap > 0)
    var/<variant>/log_var_hi
    var/<variant>/mean_sq_norm
    var/<variant>/nsr
    var/<variant>/var_trace/<group>    per backbone parameter group (``density``, ``color``)
    var/<variant>/img_var_trace        the same in image space (the prior's space: pixels,
    var/<variant>/img_log_var          or latents for a latent prior), on G_k
    var/<variant>/img_log_var_lo
    var/<variant>/img_log_var_hi
    var/<variant>/img_mean_sq_norm
    var/<variant>/img_nsr
    var/<variant>/cos_ref              bias check (reference_samples > 0): cosine and
    var/<variant>/rel_err_ref          ||mean - ref|| / ||ref|| of the K-sample mean
                                       theta-gradient against the mean of reference_samples
                                       fresh draws of the same variant
    var/<variant>/seconds

Vectorisation (``engine``): ``func`` uses torch.func. A shared camera is rendered once and
its vjp is vmapped over the K cotangents; K cameras are rendered in one vmapped forward with
per-sample copies of theta (expanded views, no copy) and one backward that returns the K
gradients, which avoids the O(K^2) cost of K backwards through one batched render.
``autograd`` renders once per camera and runs one backward per sample (retain_graph for a
shared camera). ``auto`` uses ``func`` and falls back to ``autograd`` if a backbone or prior
cannot be vmapped.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.func import functional_call, vjp, vmap

from benchmark.config import MeasureConfig
from benchmark.variance.ci import trace_variance_ci_from_gram
from core.cameras import Cameras, sample_cameras
from estimators.base import EstimatorContext

if TYPE_CHECKING:
    from benchmark.trainer import CellTrainer

# Independent sub-streams of the ``measure`` stream, in a fixed order (never reorder).
_PURPOSES = (
    "camera",
    "timestep",
    "noise",
    "estimator",
    "bootstrap",
    "ref_camera",
    "ref_timestep",
    "ref_noise",
)
_CAMERA_FIELDS = tuple(f.name for f in dataclasses.fields(Cameras))
_HASH_PRIME = 2**31 - 1
_SKETCH_BLOCK = 1 << 20


# ----------------------------------------------------------------------------- draws


@dataclass(frozen=True)
class MeasureDraws:
    """K draws of (camera, t, eps).

    Attributes:
        cameras: K cameras, or 1 camera shared by all K samples (rendered once).
        t: [K] int64 timesteps.
        eps: [K, C, H, W] standard normal noise in the prior's space.
    """

    cameras: Cameras
    t: torch.Tensor
    eps: torch.Tensor

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def shared_camera(self) -> bool:
        return len(self.cameras) == 1

    def variant(self, name: str) -> MeasureDraws:
        """The draws of variant ``name`` (all / fixed_camera / fixed_camera_t)."""
        if name == "all":
            return self
        first = self.cameras[0:1]
        if name == "fixed_camera":
            return MeasureDraws(first, self.t, self.eps)
        if name == "fixed_camera_t":
            return MeasureDraws(first, self.t[:1].expand(len(self)).clone(), self.eps)
        raise ValueError(f"unknown measurement variant {name!r}")

    def __getitem__(self, index: slice) -> MeasureDraws:
        cameras = self.cameras if self.shared_camera else self.cameras[index]
        return MeasureDraws(cameras, self.t[index], self.eps[index])


def measure_seeds(trainer: CellTrainer, step: int) -> dict[str, int]:
    """Seeds of the probe's sub-streams, all from ``trainer.streams.generator('measure', step)``."""
    root = trainer.streams.generator("measure", step)
    seeds = torch.randint(0, 2**62, (len(_PURPOSES),), generator=root, dtype=torch.int64)
    return {name: int(s) for name, s in zip(_PURPOSES, seeds.tolist(), strict=True)}


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def prior_shape(trainer: CellTrainer) -> tuple[int, ...]:
    """[C, H, W] of one encoded render (one no-grad render of a fixed camera)."""
    cam = trainer.config.camera
    camera = sample_cameras(
        1,
        _generator(0),
        cam.elevation_range,
        cam.azimuth_range,
        cam.distance_range,
        cam.fovy_range,
    ).to(trainer.device)
    with torch.no_grad():
        rgb = trainer.backbone.render(
            camera, trainer.config.render.height, trainer.config.render.width
        )
        return tuple(trainer.prior.encode(rgb["rgb"]).shape[1:])


def _sample(
    trainer: CellTrainer, step: int, n: int, seeds: dict[str, int], prefix: str
) -> tuple[Cameras, torch.Tensor]:
    return trainer.draw_cameras_and_t(
        n, step, _generator(seeds[prefix + "camera"]), _generator(seeds[prefix + "timestep"])
    )


def draw_measure_inputs(
    trainer: CellTrainer,
    step: int,
    n: int,
    seeds: dict[str, int] | None = None,
    shape: tuple[int, ...] | None = None,
) -> MeasureDraws:
    """The K = n draws of the probe at ``step``: the trainer's camera distribution and
    timestep schedule, sampled from the measure stream only (same for every method)."""
    seeds = measure_seeds(trainer, step) if seeds is None else seeds
    shape = prior_shape(trainer) if shape is None else shape
    cameras, t = _sample(trainer, step, n, seeds, "")
    eps = torch.randn((n, *shape), generator=_generator(seeds["noise"])).to(trainer.device)
    return MeasureDraws(cameras, t, eps)


def _reference_chunks(
    trainer: CellTrainer,
    step: int,
    draws: MeasureDraws,
    variant: str,
    n: int,
    chunk: int,
    seeds: dict[str, int],
):
    """Yield ``n`` fresh draws of ``variant`` in chunks (the camera / t a variant fixes are
    the K-sample draws' first ones). Identical for every variant and method."""
    cameras, t = _sample(trainer, step, n, seeds, "ref_")
    if variant != "all":
        cameras = draws.cameras[0:1]
    if variant == "fixed_camera_t":
        t = draws.t[:1].expand(n).clone()
    noise = _generator(seeds["ref_noise"])
    shape = tuple(draws.eps.shape[1:])
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        eps = torch.randn((end - start, *shape), generator=noise).to(trainer.device)
        cams = cameras if len(cameras) == 1 else cameras[start:end]
        yield MeasureDraws(cams, t[start:end], eps)


# ----------------------------------------------------------------- per-sample gradients


def theta_parameters(backbone: torch.nn.Module) -> list[tuple[str, str, torch.nn.Parameter]]:
    """(name, group, parameter) of theta in ``param_groups()`` order (groups contiguous)."""
    names = {id(p): n for n, p in backbone.named_parameters()}
    return [
        (names[id(p)], group["name"], p)
        for group in backbone.param_groups()
        for p in group["params"]
    ]


class _Render(torch.nn.Module):
    """A ``forward`` around ``backbone.render`` so that torch.func.functional_call applies."""

    def __init__(
        self, backbone: torch.nn.Module, height: int, width: int, normals: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.height, self.width, self.normals = height, width, normals

    def forward(self, cameras: Cameras) -> dict[str, torch.Tensor]:
        return self.backbone.render(cameras, self.height, self.width, normals=self.normals)


class PerSampleGradients:
    """Per-sample image-space G and flat theta-gradients g of a chunk of draws."""

    def __init__(
        self,
        trainer: CellTrainer,
        step: int,
        engine: str = "auto",
        generator: torch.Generator | None = None,
    ) -> None:
        if engine not in ("auto", "func", "autograd"):
            raise ValueError(f"unknown engine {engine!r}")
        self.trainer = trainer
        self.step = step
        # a backbone that cannot be vmapped (supports_vmap False) opts out of torch.func
        if engine == "auto" and not getattr(trainer.backbone, "supports_vmap", True):
            engine = "autograd"
        self.engine = engine
        self.generator = generator if generator is not None else _generator(0)
        self.theta = theta_parameters(trainer.backbone)
        self.module = _Render(
            trainer.backbone,
            trainer.config.render.height,
            trainer.config.render.width,
            normals="normal" in trainer.estimator.render_outputs,
        )
        self.numel = sum(p.numel() for _, _, p in self.theta)

    def group_slices(self) -> dict[str, list[slice]]:
        """Slices of the flat theta vector per parameter group."""
        out: dict[str, list[slice]] = {}
        start = 0
        for _, group, param in self.theta:
            out.setdefault(group, []).append(slice(start, start + param.numel()))
            start += param.numel()
        return out

    def __call__(self, draws: MeasureDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns G [n, C, H, W] and g [n, P] (float32, no graph) for the n draws."""
        if self.engine == "autograd":
            return self._autograd(draws)
        try:
            return self._func(draws)
        except (RuntimeError, NotImplementedError) as exc:
            if self.engine == "func":
                raise
            warnings.warn(
                f"gradient-variance probe: torch.func path failed ({exc}); using autograd",
                RuntimeWarning,
                stacklevel=2,
            )
            self.engine = "autograd"
            return self._autograd(draws)

    def _estimate(self, x: torch.Tensor, draws: MeasureDraws, render: dict) -> torch.Tensor:
        n = len(draws)
        cameras = draws.cameras[[0] * n] if draws.shared_camera else draws.cameras
        ctx = EstimatorContext(
            prompt=self.trainer.prompt,
            cameras=cameras,
            render={k: v.expand(n, *v.shape[1:]).contiguous() for k, v in render.items()},
            step=self.step,
            generator=self.generator,
        )
        grad, _ = self.trainer.estimator.grad(
            x.detach().expand(n, *x.shape[1:]).contiguous(),
            draws.t,
            draws.eps,
            self.trainer.prior,
            ctx,
        )
        return grad.detach()

    def _flat(self, grads: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        return torch.cat([grads["backbone." + name].reshape(n, -1) for name, _, _ in self.theta], 1)

    def _render_x(self, params: dict, cameras: Cameras):
        render = functional_call(self.module, params, (cameras,))
        aux = {k: v.detach() for k, v in render.items()}
        return self.trainer.prior.encode(render["rgb"]), aux

    def _func(self, draws: MeasureDraws) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(draws)
        params = {"backbone." + name: p.detach() for name, _, p in self.theta}
        if draws.shared_camera:
            x, pullback, render = vjp(
                lambda p: self._render_x(p, draws.cameras), params, has_aux=True
            )
            grad = self._estimate(x, draws, render)
            (grads,) = vmap(pullback)(grad[:, None].to(x.dtype))
            return grad, self._flat(grads, n)

        def one(p: dict, *fields: torch.Tensor):
            return self._render_x(p, Cameras(*(f.unsqueeze(0) for f in fields)))

        def batched(per_sample: dict):
            fields = [getattr(draws.cameras, f) for f in _CAMERA_FIELDS]
            return vmap(one)(per_sample, *fields)

        per_sample = {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}
        x, pullback, render = vjp(batched, per_sample, has_aux=True)
        x = x[:, 0]
        grad = self._estimate(x, draws, {k: v[:, 0] for k, v in render.items()})
        (grads,) = pullback(grad[:, None].to(x.dtype))
        return grad, self._flat(grads, n)

    def _autograd(self, draws: MeasureDraws) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(draws)
        params = [p for _, _, p in self.theta]
        cameras = [draws.cameras] if draws.shared_camera else [draws.cameras[i] for i in range(n)]
        with torch.enable_grad():
            renders = [self.module(c) for c in cameras]
            xs = [self.trainer.prior.encode(r["rgb"]) for r in renders]
            render = {k: torch.cat([r[k].detach() for r in renders]) for k in renders[0]}
            grad = self._estimate(torch.cat(xs).detach(), draws, render)
            rows = []
            for k in range(n):
                x = xs[0] if draws.shared_camera else xs[k]
                retain = draws.shared_camera and k < n - 1
                g = torch.autograd.grad(
                    x, params, grad[k : k + 1].to(x.dtype), retain_graph=retain, allow_unused=True
                )
                rows.append(
                    torch.cat(
                        [
                            (torch.zeros_like(p) if gi is None else gi).reshape(-1)
                            for gi, p in zip(g, params, strict=True)
                        ]
                    )
                )
        return grad, torch.stack(rows)


# ------------------------------------------------------------------ streaming statistics


def count_sketch(rows: torch.Tensor, dim: int) -> torch.Tensor:
    """[n, P] -> [n, dim] count sketch (hashed buckets and signs of the coordinate index):
    E <S a, S b> = <a, b>. Memory O(n x dim + 2^20)."""
    n, total = rows.shape
    out = torch.zeros(n, dim, dtype=torch.float64, device=rows.device)
    for start in range(0, total, _SKETCH_BLOCK):
        index = torch.arange(start, min(total, start + _SKETCH_BLOCK), device=rows.device)
        bucket = ((index * 1_103_515_245 + 12_345) % _HASH_PRIME) % dim
        sign = (((index * 2_147_483_629 + 7) % _HASH_PRIME) % 2) * 2.0 - 1.0
        out.index_add_(1, bucket, rows[:, start : start + index.numel()].double() * sign)
    return out


class StreamingMoments:
    """Mean and unbiased variance of n samples of a flat vector, streamed over chunks.

    Chan/Welford merge in float64 on d_k = x_k - x_1 (shifted by the first sample: no
    cancellation when the mean dominates, exactly zero variance for identical samples).
    With ``gram_dim`` > 0 it also keeps ||d_k||^2 and d_k (count-sketched to ``gram_dim``
    when D > gram_dim) for the Gram matrix the bootstrap needs; ``capacity`` (the number of
    samples) is then required. Work buffers are allocated once and reused (fresh large
    allocations cost page faults that dominate on small CPU machines).
    """

    def __init__(self, gram_dim: int = 0, capacity: int | None = None) -> None:
        if gram_dim > 0 and capacity is None:
            raise ValueError("a Gram matrix needs the number of samples (capacity)")
        self.gram_dim = gram_dim
        self.capacity = capacity
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.mean_shifted: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.sq_norms: list[torch.Tensor] = []
        self.sketches: list[torch.Tensor] = []
        self._rows: torch.Tensor | None = None  # [capacity, D] exact shifted samples
        self._work: torch.Tensor | None = None

    def _buffer(self, n_b: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        if self._work is None or self._work.shape[0] < n_b:
            self._work = torch.empty(n_b, dim, dtype=torch.float64, device=like.device)
        return self._work[:n_b]

    def update(self, batch: torch.Tensor) -> None:
        """batch [n_b, D]."""
        batch = batch.detach()
        n_b, dim = batch.shape
        if self.shift is None:
            self.shift = batch[0].to(torch.float64, copy=True)
            self.mean_shifted = torch.zeros_like(self.shift)
            self.m2 = torch.zeros_like(self.shift)
            if 0 < dim <= self.gram_dim:
                self._rows = self.shift.new_empty(self.capacity, dim)
        if self._rows is not None:
            if self.n + n_b > self.capacity:
                raise ValueError(f"more than capacity={self.capacity} samples")
            d = self._rows[self.n : self.n + n_b]
        else:
            d = self._buffer(n_b, dim, batch)
        d.copy_(batch).sub_(self.shift)
        if self.gram_dim > 0:
            self.sq_norms.append(torch.linalg.vecdot(d, d))
            if self._rows is None:
                self.sketches.append(count_sketch(d, self.gram_dim))
        mean_b = d.mean(0)
        centred = (
            torch.sub(d, mean_b, out=self._buffer(n_b, dim, batch))
            if self._rows is not None
            else d.sub_(mean_b)
        )
        m2_b = centred.square_().sum(0)
        n = self.n + n_b
        delta = mean_b.sub_(self.mean_shifted)
        self.mean_shifted.add_(delta, alpha=n_b / n)
        self.m2.add_(m2_b).add_(delta.square_(), alpha=self.n * n_b / n)
        self.n = n

    @property
    def mean(self) -> torch.Tensor:
        return self.shift + self.mean_shifted

    def variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance [D]."""
        return self.m2 / (self.n - 1)

    def var_trace(self, part: slice | list[slice] | None = None) -> float:
        if part is None:
            return float(self.m2.sum()) / (self.n - 1)
        parts = part if isinstance(part, list) else [part]
        return sum(float(self.m2[s].sum()) for s in parts) / (self.n - 1)

    def gram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(||d_k||^2 [n], Gram <d_k, d_l> [n, n]) with the exact diagonal."""
        rows = self._rows[: self.n] if self._rows is not None else torch.cat(self.sketches)
        sq = torch.cat(self.sq_norms)
        gram = rows @ rows.T
        gram.diagonal().copy_(sq)
        return sq, gram


def bootstrap_var_traces(
    sq_norms: torch.Tensor, gram: torch.Tensor, n_boot: int, generator: torch.Generator
) -> torch.Tensor:
    """var_trace of ``n_boot`` resamples (with replacement) of the K samples, [n_boot].

    For counts c_b (multinomial, sum K): var_b = (c_b . ||d||^2 - c_b^T Gram c_b / K) / (K - 1).
    """
    k = sq_norms.shape[0]
    index = torch.randint(0, k, (n_boot, k), generator=generator)
    counts = torch.zeros(n_boot, k, dtype=torch.float64).scatter_add_(
        1, index, torch.ones(n_boot, k, dtype=torch.float64)
    )
    counts = counts.to(gram.device)
    quad = torch.einsum("bk,kl,bl->b", counts, gram, counts)
    return ((counts @ sq_norms - quad / k) / (k - 1)).clamp_min(0.0)


def _log(value: float) -> float:
    return math.log(value) if value > 0 else float("-inf")


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return float("nan") if num == 0 else float("inf")


def summarize(
    moments: StreamingMoments,
    prefix: str,
    n_boot: int,
    bootstrap_seed: int,
    groups: dict[str, list[slice]] | None = None,
) -> dict[str, float]:
    """var_trace, log_var, mean_sq_norm, nsr (+ bootstrap CI, per-group var_trace)."""
    var_trace = moments.var_trace()
    mean_sq = float(moments.mean.square().sum())
    out = {
        f"{prefix}var_trace": var_trace,
        f"{prefix}log_var": _log(var_trace),
        f"{prefix}mean_sq_norm": mean_sq,
        f"{prefix}nsr": _ratio(var_trace, mean_sq),
    }
    if n_boot > 0 and moments.sq_norms:
        sq, gram = moments.gram()
        var_gram, lo, hi = trace_variance_ci_from_gram(
            sq, gram, n_boot=n_boot, generator=_generator(bootstrap_seed)
        )
        scale = var_trace / var_gram if var_gram > 0 else 1.0  # 1 unless count-sketched
        out[f"{prefix}log_var_lo"] = _log(lo * scale)
        out[f"{prefix}log_var_hi"] = _log(hi * scale)
    for name, parts in (groups or {}).items():
        out[f"{prefix}var_trace/{name}"] = moments.var_trace(parts)
    return out


# ---------------------------------------------------------------------------- the probe


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def variant_statistics(
    sampler: PerSampleGradients,
    draws: MeasureDraws,
    chunk: int,
    gram_dim: int,
) -> tuple[StreamingMoments, StreamingMoments]:
    """Theta- and image-space moments of the per-sample gradients of ``draws``."""
    n = len(draws)
    theta, image = StreamingMoments(gram_dim, n), StreamingMoments(gram_dim, n)
    for start in range(0, len(draws), chunk):
        grad, g = sampler(draws[start : start + chunk])
        theta.update(g)
        image.update(grad.flatten(1))
    return theta, image


def measure_gradient_variance(
    trainer: CellTrainer, step: int, config: MeasureConfig
) -> dict[str, float]:
    """The probe at checkpoint ``step`` (the next training step's index). See module doc."""
    start = time.perf_counter()
    prior_evals = trainer.prior.n_evals
    estimator = trainer.estimator
    snapshot = copy.deepcopy(estimator.state_dict())
    attributes = dict(vars(estimator))  # bindings grad() may rebind (e.g. SSD's _pending)
    metrics: dict[str, float] = {}
    try:
        seeds = measure_seeds(trainer, step)
        draws = draw_measure_inputs(trainer, step, config.samples, seeds)
        sampler = PerSampleGradients(trainer, step, config.engine, _generator(seeds["estimator"]))
        groups = sampler.group_slices()
        chunk = max(1, min(config.chunk, config.samples))
        gram_dim = config.sketch_dim if config.bootstrap > 0 else 0
        for variant in config.variants:
            began = time.perf_counter()
            prefix = f"var/{variant}/"
            theta, image = variant_statistics(sampler, draws.variant(variant), chunk, gram_dim)
            metrics.update(summarize(theta, prefix, config.bootstrap, seeds["bootstrap"], groups))
            metrics.update(summarize(image, prefix + "img_", config.bootstrap, seeds["bootstrap"]))
            if config.reference_samples > 0:
                total = torch.zeros(sampler.numel, dtype=torch.float64, device=trainer.device)
                for part in _reference_chunks(
                    trainer, step, draws, variant, config.reference_samples, config.chunk, seeds
                ):
                    total += sampler(part)[1].double().sum(0)
                reference = total / config.reference_samples
                mean = theta.mean
                ref_norm = float(reference.norm())
                metrics[prefix + "cos_ref"] = float(
                    torch.nn.functional.cosine_similarity(mean, reference, dim=0, eps=1e-300)
                )
                metrics[prefix + "rel_err_ref"] = _ratio(float((mean - reference).norm()), ref_norm)
            metrics[prefix + "seconds"] = time.perf_counter() - began
        metrics["var/n_evals"] = float(trainer.prior.n_evals - prior_evals)
    finally:
        trainer.prior.n_evals = prior_evals
        for name in set(vars(estimator)) - set(attributes):
            delattr(estimator, name)
        for name, value in attributes.items():
            if getattr(estimator, name) is not value:
                setattr(estimator, name, value)
        if not _state_equal(snapshot, estimator.state_dict()):
            estimator.load_state_dict(snapshot)
    metrics["var/seconds"] = time.perf_counter() - start
    return metrics
