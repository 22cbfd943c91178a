"""Per-sample gradients of a chunk of draws: image-space G_k and flat theta-gradients g_k.

With x_k = prior.encode(render(theta, c_k)):

    G_k = estimator.grad(x_k, t_k, eps_k)            image space, [C, H, W]
    g_k = d/dtheta <x_k, G_k>                        theta space (target trick, batch of 1)

``engine``: ``func`` uses torch.func (a shared camera is rendered once and its vjp vmapped
over the K cotangents; K cameras are rendered in one vmapped forward with per-sample copies
of theta, expanded views, and one backward, which avoids the O(K^2) cost of K backwards
through one batched render); ``split`` vmaps the render only and runs the prior's encoder
with plain batched autograd, chained through the rgb cotangents:

    c_k = J_enc(rgb_k)^T G_k            one batched encoder forward over the chunk's distinct
                                        renders (one for a shared camera), then one backward
                                        per cotangent set (retain_graph), [n, 3, h, w]
    g_k = J_render(theta; c_k)^T c_k    vmapped render vjp (a loop of vjp calls for a backbone
                                        with ``supports_vmap = False``)

which is what latent priors need (a VAE encoder under vmap hits ops without batching rules:
attention, group norm backward); ``autograd`` renders once per camera and runs one backward
per sample; ``auto`` uses ``split`` for a prior with ``vmap_encode = False`` (Stable
Diffusion), else ``func``, and falls back to ``autograd`` if that fails (or the backbone says
``supports_vmap = False``).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch.func import functional_call, vjp, vmap

from benchmark.probe.draws import MeasureDraws, generator_from_seed
from benchmark.probe.subject import ProbeSubject
from core.cameras import Cameras
from estimators.base import EstimatorContext

_CAMERA_FIELDS = tuple(f.name for f in dataclasses.fields(Cameras))


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
        subject: ProbeSubject,
        step: int,
        engine: str = "auto",
        generator: torch.Generator | None = None,
        raw: bool = False,
        raw_theta: bool = True,
    ) -> None:
        if engine not in ("auto", "func", "autograd", "split"):
            raise ValueError(f"unknown engine {engine!r}")
        if engine == "auto" and not subject.prior.vmap_encode:
            engine = "split"
        self.subject = subject
        self.step = step
        self.raw = raw
        self.raw_theta = raw_theta
        # a backbone that cannot be vmapped (supports_vmap False) opts out of torch.func
        if engine == "auto" and not subject.backbone.supports_vmap:
            engine = "autograd"
        self.engine = engine
        self.generator = generator if generator is not None else generator_from_seed(0)
        self.theta = theta_parameters(subject.backbone)
        self.module = _Render(
            subject.backbone,
            subject.height,
            subject.width,
            normals="normal" in subject.estimator.render_outputs,
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

    def __call__(self, draws: MeasureDraws) -> tuple[torch.Tensor, ...]:
        """G [n, C, H, W] and g [n, P] (float32, no graph) for the n draws; with
        ``raw=True`` also the raw score term A [n, C, H, W] (``EstimatorOutput.score_term``,
        w eps_hat without any control variate) and its theta-gradients a [n, P]: (G, g, A, a)
        (A, a are None when the estimator has no score term; a is None with
        ``raw_theta=False``, which saves the second pullback per sample)."""
        if self.engine == "autograd":
            return self._result(*self._autograd(draws))
        try:
            if self.engine == "split":
                return self._result(*self._split(draws))
            return self._result(*self._func(draws))
        except (RuntimeError, NotImplementedError) as exc:
            if self.engine in ("func", "split"):
                raise
            warnings.warn(
                f"gradient-variance probe: torch.func path failed ({exc}); using autograd",
                RuntimeWarning,
                stacklevel=2,
            )
            self.engine = "autograd"
            return self._result(*self._autograd(draws))

    def _result(self, grad, flat, raw, raw_flat):
        return (grad, flat, raw, raw_flat) if self.raw else (grad, flat)

    def _estimate(self, x: torch.Tensor, draws: MeasureDraws, render: dict):
        """(G, A or None) for the draws at renders x."""
        n = len(draws)
        cameras = draws.cameras[[0] * n] if draws.shared_camera else draws.cameras
        ctx = EstimatorContext(
            prompt=self.subject.prompt,
            cameras=cameras,
            render={k: v.expand(n, *v.shape[1:]).contiguous() for k, v in render.items()},
            step=self.step,
            generator=self.generator,
        )
        out = self.subject.estimator.grad(
            x.detach().expand(n, *x.shape[1:]).contiguous(),
            draws.t,
            draws.eps,
            self.subject.prior,
            ctx,
        )
        raw = out.score_term if self.raw and out.score_term is not None else None
        return out.grad.detach(), None if raw is None else raw.detach()

    def _flat(self, grads: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        return torch.cat([grads["backbone." + name].reshape(n, -1) for name, _, _ in self.theta], 1)

    def _render_x(self, params: dict, cameras: Cameras):
        render = functional_call(self.module, params, (cameras,))
        aux = {k: v.detach() for k, v in render.items()}
        return self.subject.prior.encode(render["rgb"]), aux

    def _func(self, draws: MeasureDraws):
        n = len(draws)
        params = {"backbone." + name: p.detach() for name, _, p in self.theta}
        if draws.shared_camera:
            x, pullback, render = vjp(
                lambda p: self._render_x(p, draws.cameras), params, has_aux=True
            )
            grad, raw = self._estimate(x, draws, render)
            pull_raw = raw is not None and self.raw_theta
            cotangents = torch.cat([grad, raw]) if pull_raw else grad
            (grads,) = vmap(pullback)(cotangents[:, None].to(x.dtype))
            flat = self._flat(grads, cotangents.shape[0])
            return grad, flat[:n], raw, flat[n:] if pull_raw else None

        def one(p: dict, *fields: torch.Tensor):
            return self._render_x(p, Cameras(*(f.unsqueeze(0) for f in fields)))

        def batched(per_sample: dict):
            fields = [getattr(draws.cameras, f) for f in _CAMERA_FIELDS]
            return vmap(one)(per_sample, *fields)

        per_sample = {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}
        x, pullback, render = vjp(batched, per_sample, has_aux=True)
        x = x[:, 0]
        grad, raw = self._estimate(x, draws, {k: v[:, 0] for k, v in render.items()})
        (grads,) = pullback(grad[:, None].to(x.dtype))
        raw_flat = None
        if raw is not None and self.raw_theta:
            (raw_grads,) = pullback(raw[:, None].to(x.dtype))
            raw_flat = self._flat(raw_grads, n)
        return grad, self._flat(grads, n), raw, raw_flat

    def _render_pullback(self, draws: MeasureDraws):
        """rgb [m, 3, h, w] (m = 1 for a shared camera, else n), the detached render maps
        [m, ...], and pull(cot [n, 3, h, w]) -> flat theta-gradients [n, P]."""
        n = len(draws)
        params = {"backbone." + name: p.detach() for name, _, p in self.theta}

        def rgb_of(p, cameras):
            render = functional_call(self.module, p, (cameras,))
            return render["rgb"], {k: v.detach() for k, v in render.items()}

        vmappable = self.subject.backbone.supports_vmap
        if draws.shared_camera:
            rgb, pullback, render = vjp(lambda p: rgb_of(p, draws.cameras), params, has_aux=True)

            def pull(cot):
                if vmappable:
                    return self._flat(vmap(pullback)(cot[:, None].to(rgb.dtype))[0], len(cot))
                rows = [self._flat(pullback(c[None].to(rgb.dtype))[0], 1) for c in cot]
                return torch.cat(rows)

            return rgb, render, pull
        if not vmappable:
            raise NotImplementedError("split engine: per-sample renders need a vmappable backbone")

        def one(p: dict, *fields: torch.Tensor):
            return rgb_of(p, Cameras(*(f.unsqueeze(0) for f in fields)))

        def batched(per_sample: dict):
            fields = [getattr(draws.cameras, f) for f in _CAMERA_FIELDS]
            return vmap(one)(per_sample, *fields)

        per_sample = {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}
        rgb, pullback, render = vjp(batched, per_sample, has_aux=True)

        def pull_batched(cot):
            return self._flat(pullback(cot[:, None].to(rgb.dtype))[0], n)

        return rgb[:, 0], {k: v[:, 0] for k, v in render.items()}, pull_batched

    def _split(self, draws: MeasureDraws):
        n = len(draws)
        rgb, render, pull = self._render_pullback(draws)
        with torch.enable_grad():
            leaf = rgb.detach().requires_grad_(True)
            x = self.subject.prior.encode(leaf)  # [m, C, h', w'], one graph for the chunk
            grad, raw = self._estimate(x.detach(), draws, render)
            pull_raw = raw is not None and self.raw_theta
            cotangents = [grad, raw] if pull_raw else [grad]
            rgb_cots = []
            for j, cot in enumerate(cotangents):
                last = j == len(cotangents) - 1
                if draws.shared_camera:  # n backwards through one encoder graph
                    rows = [
                        torch.autograd.grad(
                            x,
                            leaf,
                            cot[k : k + 1].to(x.dtype),
                            retain_graph=not (last and k == n - 1),
                        )[0]
                        for k in range(n)
                    ]
                    rgb_cots.append(torch.cat(rows))
                else:  # one backward: images are independent in the batch
                    (c,) = torch.autograd.grad(x, leaf, cot.to(x.dtype), retain_graph=not last)
                    rgb_cots.append(c)
        del x, leaf
        flats = [pull(c) for c in rgb_cots]
        return grad, flats[0], raw, flats[1] if pull_raw else None

    def _autograd(self, draws: MeasureDraws):
        n = len(draws)
        params = [p for _, _, p in self.theta]
        cameras = [draws.cameras] if draws.shared_camera else [draws.cameras[i] for i in range(n)]

        def flat(g) -> torch.Tensor:
            return torch.cat(
                [
                    (torch.zeros_like(p) if gi is None else gi).reshape(-1)
                    for gi, p in zip(g, params, strict=True)
                ]
            )

        with torch.enable_grad():
            renders = [self.module(c) for c in cameras]
            xs = [self.subject.prior.encode(r["rgb"]) for r in renders]
            render = {k: torch.cat([r[k].detach() for r in renders]) for k in renders[0]}
            grad, raw = self._estimate(torch.cat(xs).detach(), draws, render)
            pull_raw = raw is not None and self.raw_theta
            cotangents = [grad, raw] if pull_raw else [grad]
            rows: list[list[torch.Tensor]] = [[] for _ in cotangents]
            for k in range(n):
                x = xs[0] if draws.shared_camera else xs[k]
                for j, cot in enumerate(cotangents):
                    last = j == len(cotangents) - 1 and (not draws.shared_camera or k == n - 1)
                    g = torch.autograd.grad(
                        x,
                        params,
                        cot[k : k + 1].to(x.dtype),
                        retain_graph=not last,
                        allow_unused=True,
                    )
                    rows[j].append(flat(g))
        stacked = [torch.stack(r) for r in rows]
        return grad, stacked[0], raw, stacked[1] if pull_raw else None
