"""CARV's Monte Carlo levers for any estimator (arXiv 2605.21489): amortised reuse
(one render, K (t, eps) draws averaged), importance-sampled t and stratified t.

``SampledEstimator`` wraps any ``GradientEstimator``. For a batch x [B] with the harness's
draws (t_0, eps_0) [B] it forms K draws per render and averages

    G_b = (1 / K) sum_k r(t_bk) G_inner(x_b, t_bk, eps_bk),        k = 0 .. K-1,

with one inner ``grad`` call on the [B K] batch (network evaluations x K; the render, the
encoder and the backward through the renderer are paid once). The uniforms behind the t's:
u_b0 = (t_b0 - lo + v_b) / N is exactly uniform (v_b ~ U[0, 1)), u_bk for k >= 1 is fresh
(plain) or frac(u_b0 + k / K) (``t_stratified``: one draw per stratum); t_bk = lo + floor(u N)
(uniform) or F_q^{-1}(u) with q(t) ~ w(t) sigma_t (``t_importance``), whose weight
r(t) = (1/N) / q(t) keeps E[G] unchanged (r = 1 without importance). Draw 0 keeps the
harness's eps and, without importance, its t, so K = 1 without importance is the inner
estimator bit for bit. v, the extra uniforms and eps_bk (k >= 1) come from ``ctx.generator``
(the estimator stream: the same for every method, common random numbers).

The probe (benchmark/probe) calls ``grad`` with one row per probe sample, so it measures
the variance of the K-averaged step; in its ``fixed_camera_t`` variant only u_b0's integer
part is fixed. Stratification is across the K draws of one render, never across rows (probe
rows must stay independent).

>>> import torch
>>> from estimators.sds import SDS, SDSConfig
>>> cfg = SDSConfig(noise_samples=4, t_stratified=True)
>>> est = SampledEstimator(SDS(cfg), cfg)
>>> est.name, est.noise_samples
('sds', 4)
"""

from __future__ import annotations

import torch

from core.timesteps import (
    importance_proposal,
    importance_weight,
    inverse_cdf,
    rotated_strata,
    timestep_from_uniform,
    uniform_from_timestep,
)
from estimators.base import EstimatorContext, EstimatorOutput, GradientEstimator, GuidanceConfig


def expand_context(ctx: EstimatorContext, k: int) -> EstimatorContext:
    """The context of the [B K] batch: cameras and render outputs repeated K times per row."""
    if k == 1:
        return ctx
    n = len(ctx.cameras) if ctx.cameras is not None else 0
    cameras = ctx.cameras[[i for i in range(n) for _ in range(k)]] if n else ctx.cameras
    render = {key: v.repeat_interleave(k, dim=0) for key, v in ctx.render.items()}
    return EstimatorContext(
        prompt=ctx.prompt, cameras=cameras, render=render, step=ctx.step, generator=ctx.generator
    )


def multi_draws(
    t0: torch.Tensor,
    eps0: torch.Tensor,
    k: int,
    lo: int,
    hi: int,
    generator: torch.Generator | None,
    q: torch.Tensor | None = None,
    stratified: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """t [B K] int64, eps [B K, ...] and weights r [B K] float64 (see the module doc; ``q``:
    the importance proposal [T] or None for uniform t)."""
    b = t0.shape[0]
    need_uniform = q is not None or k > 1
    if need_uniform and generator is None:
        raise ValueError("the sampling levers need ctx.generator (the estimator stream)")
    if not need_uniform:
        return t0, eps0, torch.ones(b, dtype=torch.float64, device=t0.device)
    v = torch.rand(b, generator=generator, dtype=torch.float64).to(t0.device)
    u0 = uniform_from_timestep(t0, lo, hi, v)
    if stratified:
        u = rotated_strata(u0, k)
    else:
        fresh = torch.rand((b, k - 1), generator=generator, dtype=torch.float64).to(t0.device)
        u = torch.cat([u0[:, None], fresh], 1)
    if q is None:
        t = timestep_from_uniform(u, lo, hi)
        t[:, 0] = t0
        r = torch.ones_like(u)
    else:
        t = inverse_cdf(u, q)
        r = importance_weight(t, q, lo, hi)
    shape = tuple(eps0.shape[1:])
    extra = torch.randn((b, k - 1, *shape), generator=generator, dtype=eps0.dtype)
    eps = torch.cat([eps0[:, None], extra.to(eps0.device)], 1)
    return t.reshape(-1), eps.reshape(b * k, *shape), r.reshape(-1)


class SampledEstimator(GradientEstimator):
    """``inner`` with K draws per render, importance-sampled and/or stratified t."""

    def __init__(self, inner: GradientEstimator, config: GuidanceConfig) -> None:
        self.inner = inner
        self.config = config
        self.noise_samples = int(config.noise_samples)
        self.name = inner.name
        self.render_outputs = inner.render_outputs
        self.mean_of = inner.mean_of  # the levers keep the mean (importance weights)

    def __getattr__(self, name: str):
        # estimator-specific attributes (SSD's mu, VSD's model) read through the wrapper
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def grad(self, x, t, eps, prior, ctx):
        k = self.noise_samples
        lo, hi = self.config.timesteps.bounds(ctx.step, prior.num_train_timesteps)
        q = None
        if self.config.t_importance:
            q = importance_proposal(lo, hi, prior.alphas_cumprod, self.config.weighting)
        tk, epsk, r = multi_draws(t, eps, k, lo, hi, ctx.generator, q, self.config.t_stratified)
        xk = x.repeat_interleave(k, dim=0) if k > 1 else x
        out = self.inner.grad(xk, tk, epsk, prior, expand_context(ctx, k))
        b = x.shape[0]
        weight = r.to(out.grad.dtype).reshape(-1, *([1] * (out.grad.dim() - 1)))
        g = (weight * out.grad).reshape(b, k, *out.grad.shape[1:]).mean(1)
        diagnostics = dict(out.diagnostics)
        diagnostics["grad_norm"] = float(g.flatten(1).norm(dim=1).mean())
        if q is not None:
            diagnostics["is_weight_mean"] = float(r.mean())
        return EstimatorOutput(g, diagnostics, {"inner": out, "k": k})

    def update(self, x, prior, ctx, output: EstimatorOutput | None = None):
        inner = None if output is None else output.update_inputs["inner"]
        self.inner.update(x, prior, ctx, inner)

    def parameters(self):
        return self.inner.parameters()

    def network_evaluations(self) -> dict[str, int]:
        return self.inner.network_evaluations()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def with_sampling_levers(estimator: GradientEstimator, config) -> GradientEstimator:
    """``estimator`` wrapped when its config turns a lever on, else unchanged."""
    if isinstance(config, GuidanceConfig) and config.uses_sampling_levers:
        return SampledEstimator(estimator, config)
    return estimator
