"""The reference gradient: a large-K Monte-Carlo mean of an estimator's image-space gradient
at a fixed state (render x, camera, timestep range), for bias checks.

    G_ref = (1/K) sum_k G(x, t_k, eps_k),   t_k ~ U{t_lo .. t_hi},  eps_k ~ N(0, I)

with every draw taken from one ``torch.Generator`` and evaluated ``chunk`` samples at a time
(memory O(chunk x D)). The estimator's trainable state is frozen: ``update`` is never called,
and its ``state_dict`` is restored afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from core.interfaces import DiffusionPrior
from estimators.base import EstimatorContext, GradientEstimator


@dataclass
class ReferenceGradient:
    """Attributes:
    mean: [C, H, W] float64, the K-sample mean of G.
    var_trace: sum over pixels of the per-pixel sample variance of G (unbiased, 1 / (K-1)).
    n: K.
    """

    mean: torch.Tensor
    var_trace: float
    n: int

    @property
    def stderr_norm(self) -> float:
        """sqrt(E||mean - E[G]||^2) = sqrt(var_trace / K): the Monte-Carlo error of ``mean``."""
        return (self.var_trace / self.n) ** 0.5


def _sub_generators(generator: torch.Generator, n: int) -> list[torch.Generator]:
    seeds = torch.randint(0, 2**62, (n,), generator=generator, dtype=torch.int64).tolist()
    out = []
    for seed in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(seed))
        out.append(g)
    return out


@torch.no_grad()
def reference_gradient(
    estimator: GradientEstimator,
    prior: DiffusionPrior,
    x: torch.Tensor,
    prompt: str,
    camera,
    t_range: tuple[int, int],
    generator: torch.Generator,
    n_samples: int = 4096,
    chunk: int = 256,
    render: dict[str, torch.Tensor] | None = None,
    step: int = 0,
) -> ReferenceGradient:
    """Mean image-space gradient of ``estimator`` over ``n_samples`` draws of (t, eps).

    Args:
        x: [1, C, H, W] (or [C, H, W]) the fixed render in the prior's space.
        camera: the fixed camera (a core.cameras.Cameras of length 1).
        t_range: inclusive integer timestep bounds (t_lo, t_hi); e.g.
            ``guidance.timesteps.bounds(step, prior.num_train_timesteps)``.
        generator: CPU generator; it seeds three sub-streams (t, eps, the estimator's
            private stream), so the t_k and eps_k do not depend on ``chunk`` and the
            result is reproducible from the generator's state.
        render: backbone outputs for ``x`` ([1, ...] each: ``depth`` for SSD's depth
            baseline, ...), expanded to every sample (default: none).
    Returns:
        ReferenceGradient (mean [C, H, W] float64, var_trace, n).
    """
    if n_samples < 2 or chunk < 1:
        raise ValueError("need n_samples >= 2 and chunk >= 1")
    lo, hi = int(t_range[0]), int(t_range[1])
    if not 0 <= lo <= hi < prior.num_train_timesteps:
        raise ValueError(f"t_range must satisfy 0 <= lo <= hi < T, got {t_range}")
    x = x if x.dim() == 4 else x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError(f"x must hold one render, got shape {tuple(x.shape)}")
    shape = tuple(x.shape[1:])
    t_gen, eps_gen, est_gen = _sub_generators(generator, 3)
    t_all = torch.randint(lo, hi + 1, (n_samples,), generator=t_gen, dtype=torch.int64)
    render = render or {}
    device = x.device
    saved = copy.deepcopy(estimator.state_dict())
    total = torch.zeros(shape, dtype=torch.float64, device=device)
    shift = None  # first chunk's mean: variance accumulated around it (numerically stable)
    total_sq = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n_samples, chunk):
        n = min(chunk, n_samples - start)
        # One randn call per sample: the stream is the same whatever the chunk size.
        eps = torch.stack([torch.randn(shape, generator=eps_gen) for _ in range(n)]).to(device)
        ctx = EstimatorContext(
            prompt=prompt,
            cameras=camera[[0] * n],
            render={k: v.expand(n, *v.shape[1:]) for k, v in render.items()},
            step=step,
            generator=est_gen,
        )
        t = t_all[start : start + n].to(device)
        grad, _ = estimator.grad(x.expand(n, *shape), t, eps.to(x.dtype), prior, ctx)
        grad = grad.detach().to(torch.float64)
        if shift is None:
            shift = grad.mean(dim=0)
        total += grad.sum(dim=0)
        total_sq += ((grad - shift) ** 2).sum()
    estimator.load_state_dict(saved)
    mean = total / n_samples
    # sum_k ||g_k - m||^2 = sum_k ||g_k - s||^2 - K ||m - s||^2
    ss = float(total_sq) - n_samples * float(((mean - shift) ** 2).sum())
    return ReferenceGradient(mean, max(ss, 0.0) / (n_samples - 1), n_samples)
