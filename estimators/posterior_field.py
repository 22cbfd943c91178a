"""SSD's ``baseline=posterior``: a matrix-valued Stein control variate from the prior's own
posterior responsibilities (priors with ``supports_posterior_field``: the world's mixture).

With CFG, eps_hat = a_c eps_c + a_u eps_u (``cfg_branch_weights``: diffusers a_c = s,
a_u = 1 - s; dreamfusion a_c = 1 + s, a_u = -s; a_c + a_u = 1). For the world's mixture
(tau = 0) each branch is eps_b = (x_t - alpha m_b(x_t)) / sigma, so SDS's residual is

    eps_hat - eps = (alpha / sigma) (x - a_c m_c(x_t) - a_u m_u(x_t)),

whose eps-dependence is that of the x0-predictions m_b. Each branch's S_b
(core/stein_field.py: sigma J_b eps - sigma^2 div J_b, J_b the Jacobian of its tempered
posterior mean) is zero-mean and equals m_b - E[m_b] when m_b is linear in eps, so

    S_post = -(alpha / sigma) (a_c S_c + a_u S_u),       E_eps[S_post] = 0,

is SSD's control variate in the additive form G = w (eps_hat - eps - mu S_post); mu = 1 is the
first-order (Jacobian) control variate, and a mu fitted on past samples (``ssd.mu=optimal``)
shrinks it where the responsibilities jump. ``beta`` < 1 tempers the responsibilities (a
smoother field; still exactly zero-mean).

>>> cfg_branch_weights(7.5, "diffusers"), cfg_branch_weights(100.0, "dreamfusion")
((7.5, -6.5), (101.0, -100.0))
"""

from __future__ import annotations

import weakref

import torch

from core.guidance import CFG_MODES, needs_unconditional
from core.interfaces import DiffusionPrior, PriorContext
from core.schedule import alpha_sigma


def cfg_branch_weights(scale: float, mode: str) -> tuple[float, float]:
    """(a_c, a_u) with eps_hat = a_c eps_c + a_u eps_u (core.guidance's two conventions)."""
    if mode == "diffusers":
        return scale, 1.0 - scale
    if mode == "dreamfusion":
        return 1.0 + scale, -scale
    raise ValueError(f"unknown cfg_mode {mode!r}; expected one of {CFG_MODES}")


def posterior_control_variate(
    x_t: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    prior: DiffusionPrior,
    ctx: PriorContext,
    guidance_scale: float,
    cfg_mode: str,
    beta: float = 1.0,
) -> torch.Tensor:
    """S_post [B, C, H, W] of the module docstring (no graph)."""
    if not prior.supports_posterior_field:
        raise ValueError(
            f"ssd.baseline=posterior needs a prior with a closed-form posterior (the world); "
            f"{type(prior).__name__} has none"
        )
    a_c, a_u = cfg_branch_weights(guidance_scale, cfg_mode)
    with torch.no_grad():
        field = a_c * prior.posterior_stein_field(x_t, t, ctx, eps, True, beta)
        if needs_unconditional(guidance_scale, cfg_mode):
            field = field + a_u * prior.posterior_stein_field(x_t, t, ctx, eps, False, beta)
        alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        return -(alpha / sigma).view(shape).to(x_t.dtype) * field


_POOLED: dict[int, tuple] = {}


def _pooled_references(refs: torch.Tensor, shape, factor: int) -> torch.Tensor:
    """``pooled_images`` of a reference tensor, computed once per tensor (a memo: the same
    value every call)."""
    from core.stein_field import pooled_images

    key = (id(refs), tuple(shape), factor)
    held = _POOLED.get(key)
    if held is None or held[0]() is not refs:
        held = (weakref.ref(refs), pooled_images(refs, tuple(shape), factor))
        _POOLED[key] = held
        weakref.finalize(refs, _POOLED.pop, key, None)
    return held[1]


def _pool_factor(shape, pool: int) -> int:
    return pool if shape[1] % pool == 0 and shape[2] % pool == 0 else 1


def subspace_means(
    x: torch.Tensor,
    t: torch.Tensor,
    prior: DiffusionPrior,
    ctx: PriorContext,
    guidance_scale: float,
    cfg_mode: str,
    generator: torch.Generator,
    draws: int = 256,
    max_refs: int = 32,
    nats: float = 30.0,
    pool: int = 4,
) -> list[tuple[float, list]]:
    """The eps-free half of ``baseline=posterior_mc``: per CFG branch (weight a_b), per image,
    the reduced posterior's plan (core/stein_field.py ``subspace_plan``, from the clean render
    x, t and the camera) and its mean responsibilities rbar from ``draws`` independent draws of
    ``generator``. Never sees eps. Returns [(a_b, [(plan, rbar) per image])]."""
    from core.stein_field import mean_responsibilities, pooled_images, subspace_plan

    if not prior.supports_posterior_field:
        raise ValueError(
            f"ssd.baseline=posterior_mc needs a prior with a closed-form posterior (the world); "
            f"{type(prior).__name__} has none"
        )
    if generator is None:
        raise ValueError("ssd.baseline=posterior_mc needs the step's estimator generator")
    a_c, a_u = cfg_branch_weights(guidance_scale, cfg_mode)
    branches = [(a_c, prior.references[ctx.prompt])]
    if needs_unconditional(guidance_scale, cfg_mode):
        branches.append((a_u, prior.unconditional))
    alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
    shape = x.shape[1:]
    factor = _pool_factor(shape, pool)
    flat = x.detach().flatten(1)
    plans = []  # [branch][image]
    with torch.no_grad():
        for _, refs in branches:
            pooled = _pooled_references(refs.images, shape, factor)
            pooled_x = pooled_images(flat, tuple(shape), factor)
            log_prior = prior.log_mixture_weights(refs, ctx.cameras)
            tau = prior.config.tau
            plans.append(
                [
                    subspace_plan(
                        flat[i],
                        float(alpha[i]),
                        float(sigma[i]),
                        refs.images,
                        log_prior[i],
                        pooled,
                        pooled_x[i],
                        tau,
                        max_refs,
                        nats,
                    )
                    for i in range(flat.shape[0])
                ]
            )
        # one set of draws per image, shared by the branches (as eps is)
        rbars = [
            mean_responsibilities([p[i] for p in plans], draws, generator)
            for i in range(flat.shape[0])
        ]
    return [
        (weight, [(plans[b][i], rbars[i][b]) for i in range(flat.shape[0])])
        for b, (weight, _) in enumerate(branches)
    ]


def subspace_control_variate(
    means: list[tuple[float, list]], eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """S_mc = -(alpha / sigma) sum_b a_b (h_b(eps) - hbar_b) [B, C, H, W] (SSD's additive
    form G = w (eps_hat - eps - S_mc); zero mean over (eps, the draws of ``subspace_means``)).
    """
    flat = eps.flatten(1)
    field = torch.zeros(flat.shape, dtype=torch.float64)
    for weight, rows in means:
        for i, (plan, rbar) in enumerate(rows):
            field[i] += weight * plan.centred_mean(flat[i], rbar)
    scale = (-(alpha / sigma)).double().view(-1, 1)
    return (scale * field).to(eps.dtype).view_as(eps)


def subspace_mean_image(means: list[tuple[float, list]], like: torch.Tensor) -> torch.Tensor:
    """sum_b a_b (1 - alpha g) rbar_b X_K [B, C, H, W]: the estimated E[m] part (eps-free; the
    no-peeking check compares it across different eps)."""
    out = torch.zeros(like.flatten(1).shape, dtype=torch.float64)
    for weight, rows in means:
        for i, (plan, rbar) in enumerate(rows):
            out[i] += weight * (1.0 - plan.alpha * plan.g) * (rbar @ plan.images)
    return out.to(like.dtype).view_as(like)


class BinnedLeastSquares:
    """Coefficients mu_b [F] per timestep bin b for a control variate sum_f mu_f s_f, fitted by
    least squares on *past* samples only (exponential moving averages of the normal equations,
    as ``ControlCoefficient``'s ``optimal`` strategy, one set per bin):

        mu_b = (EMA_b[S^T S] + ridge)^{-1} EMA_b[S^T a],   a = w (eps_hat - eps), s_f = w S_f

    summed over pixels; ``value`` reads the state (0 for a bin with no sample yet: SDS),
    ``observe`` is called after the step's gradient is used. Bins split [0, T) evenly (T the
    prior's number of timesteps). The ridge is 1e-6 of the mean diagonal (a field that is
    identically zero gets mu = 0).

    >>> ls = BinnedLeastSquares(n_fields=1, n_bins=2, ema=0.0)
    >>> s = torch.ones(1, 1, 2); ls.observe(torch.tensor([10]), 1000, 3 * s[:, 0], s)
    >>> ls.value(torch.tensor([10, 900]), 1000).round(decimals=4).tolist()
    [[3.0], [0.0]]
    """

    def __init__(self, n_fields: int, n_bins: int, ema: float) -> None:
        if n_fields < 1 or n_bins < 1 or not 0.0 <= ema < 1.0:
            raise ValueError("need n_fields >= 1, n_bins >= 1 and 0 <= ema < 1")
        self.n_fields, self.n_bins, self.ema = n_fields, n_bins, ema
        self.gram = torch.zeros(n_bins, n_fields, n_fields, dtype=torch.float64)
        self.cross = torch.zeros(n_bins, n_fields, dtype=torch.float64)
        self.seen = torch.zeros(n_bins, dtype=torch.bool)

    def bins(self, t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
        """Bin index of each timestep [B] (int64)."""
        return (t.cpu().long() * self.n_bins // num_timesteps).clamp(0, self.n_bins - 1)

    def value(self, t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
        """mu [B, F] (float64, CPU) for timesteps t [B]."""
        b = self.bins(t, num_timesteps)
        gram, cross = self.gram[b], self.cross[b]
        scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)[:, None, None]
        eye = torch.eye(self.n_fields, dtype=torch.float64)
        mu = torch.linalg.solve(gram + 1e-6 * scale * eye, cross[..., None])[..., 0]
        return torch.where(self.seen[b][:, None], mu, torch.zeros_like(mu))

    def observe(
        self, t: torch.Tensor, num_timesteps: int, a: torch.Tensor, fields: torch.Tensor
    ) -> None:
        """One sample: t [B], a [B, ...] and fields [B, F, ...] (no graph)."""
        s = fields.flatten(2).double().cpu()
        y = a.flatten(1).double().cpu()
        bins = self.bins(t, num_timesteps)
        for b in bins.unique().tolist():
            rows = bins == b  # the step's images in bin b: one EMA update with their sums
            gram = torch.einsum("bfd,bgd->fg", s[rows], s[rows])
            cross = torch.einsum("bfd,bd->f", s[rows], y[rows])
            if self.seen[b]:
                self.gram[b] = self.ema * self.gram[b] + (1 - self.ema) * gram
                self.cross[b] = self.ema * self.cross[b] + (1 - self.ema) * cross
            else:
                self.gram[b], self.cross[b], self.seen[b] = gram, cross, True

    def state_dict(self) -> dict:
        return {"gram": self.gram.clone(), "cross": self.cross.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.gram = state["gram"].clone()
        self.cross = state["cross"].clone()
        self.seen = state["seen"].clone()
