"""The analytic diffusion prior of the ground-truth world (docs/world.md).

The data distribution for prompt y is a mixture over reference renders {x_i} (i = 1..N) of
its object from fixed cameras, each optionally smoothed: x_0 ~ sum_i pi_i N(x_i, tau^2 I).
Under x_t = alpha x_0 + sigma eps the marginal is a Gaussian mixture with component
variance s^2 = sigma^2 + alpha^2 tau^2, and the optimal noise prediction is closed form:

    r_i(x_t)      = softmax_i( log pi_i - ||x_t - alpha x_i||^2 / (2 s^2) )
    E[x_0 | x_t]  = sum_i r_i (x_i + (alpha tau^2 / s^2) (x_t - alpha x_i))
    eps*(x_t)     = (x_t - alpha E[x_0 | x_t]) / sigma

Conditional = the prompt's references; unconditional = the references of every object in
the world (uniform over objects), so classifier-free guidance is exact. In view-aware mode
the mixture weights depend on the camera c: pi_i(c) ~ exp(cos(c, c_i) / temperature), the
analogue of view-dependent prompting; in view-agnostic mode pi_i is uniform (all views
mixed), which invites multi-face (Janus) solutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.cameras import Cameras, orbit_cameras
from core.interfaces import DiffusionPrior, PriorContext
from core.schedule import alpha_sigma, ddpm_alphas_cumprod
from world.degraded import DEGRADATIONS, degrade
from world.distributions import instances
from world.objects import known_prompts
from world.renderer import render_object

#: unconditional branches: the library's objects (uniform over objects) or the generic-object
#: distribution of world/generic.py (a broad "any object", as a text-to-image model's)
UNCONDITIONALS = ("objects", "generic")


@dataclass
class WorldPriorConfig:
    """Reference set and mixture options of the analytic prior.

    ``view_temperature`` T: pi_i(c) ~ exp(cos(c, c_i) / T), a von Mises kernel of angular width
    about sqrt(T) rad on the view sphere (elevation and azimuth alike). Default 0.001 (about
    1.8 degrees, below the 15 / 20 degree reference spacing: each camera is conditioned on its
    nearest references, blended only within a few degrees of the midpoints). At the former
    0.05 (13 degrees) about 8 references were blended per camera, thin parts (table and chair
    legs, the lamp's arm and base) averaged away and SDS gained -0.8..+1.2 dB on them; at 0.001
    it gains 8-13 dB (docs/world_fidelity.md).

    ``unconditional``: ``objects`` (the library's objects, uniform over objects) or
    ``generic`` (``n_generic`` random objects of world/generic.py: every shape and colour).
    """

    n_azimuth: int = 24
    elevations: tuple[float, ...] = (-10.0, 10.0, 30.0, 50.0)
    view_aware: bool = True
    view_temperature: float = 0.001
    tau: float = 0.0
    chunk_size: int = 1024
    supersample: int = 2
    unconditional: str = "objects"
    n_generic: int = 32

    def __post_init__(self) -> None:
        if self.n_azimuth < 1 or not self.elevations:
            raise ValueError("need n_azimuth >= 1 and at least one elevation")
        if self.view_temperature <= 0 or self.tau < 0:
            raise ValueError("need view_temperature > 0 and tau >= 0")
        if self.chunk_size < 1 or self.supersample < 1:
            raise ValueError("need chunk_size >= 1 and supersample >= 1")
        if self.unconditional not in UNCONDITIONALS:
            raise ValueError(
                f"unknown unconditional {self.unconditional!r}; expected one of {UNCONDITIONALS}"
            )
        if self.n_generic < 1:
            raise ValueError("need n_generic >= 1")


@dataclass
class ReferenceSet:
    """Flattened references of one or more objects.

    Attributes:
        images: [N, D] references in the prior's space ([-1, 1]).
        directions: [N, 3] unit view directions of their cameras.
        depth: [N, H*W] ray distance to the surface (0 on background), or None.
        normal: [N, 3*H*W] world-space unit normals (0 on background), or None.
        instance: [N] int64 index of the instance each reference shows (a multi-instance
            prompt's references are its instances' in order, each seen from every reference
            camera), or None (one instance).
    """

    images: torch.Tensor
    directions: torch.Tensor
    depth: torch.Tensor | None = None
    normal: torch.Tensor | None = None
    instance: torch.Tensor | None = None

    @property
    def n_instances(self) -> int:
        return 1 if self.instance is None else int(self.instance.max()) + 1

    def of_instance(self, k: int) -> ReferenceSet:
        """The references of instance ``k`` alone (``self`` for a one-instance set)."""
        if self.instance is None:
            if k != 0:
                raise IndexError(f"instance {k} of a one-instance reference set")
            return self
        keep = self.instance == k
        pick = lambda v: None if v is None else v[keep]
        return ReferenceSet(
            self.images[keep], self.directions[keep], pick(self.depth), pick(self.normal)
        )


def mixture_expectation(
    x_t: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    refs: torch.Tensor,
    log_prior: torch.Tensor,
    values: torch.Tensor | None = None,
    tau: float = 0.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """sum_i r_i(x_t) v_i: the posterior expectation of per-reference values, streamed over
    reference chunks (memory O(B * chunk_size + B * D), time linear in N). Differentiable
    w.r.t. x_t.

    Args:
        x_t: [B, D]; alpha, sigma: [B]; refs: [N, D]; log_prior: [B, N] (log pi_i, any
        normalisation); values: [N, Dv] (default: refs, i.e. sum_i r_i x_i).
    Returns:
        [B, Dv].
    """
    values = refs if values is None else values
    s2 = sigma**2 + alpha**2 * tau**2  # [B]
    x_sq = (x_t**2).sum(dim=1, keepdim=True)  # [B, 1]
    running_max = torch.full_like(s2, -torch.inf)[:, None]
    running_sum = torch.zeros_like(running_max)
    running_mean = torch.zeros(x_t.shape[0], values.shape[1], dtype=x_t.dtype, device=x_t.device)
    for start in range(0, refs.shape[0], chunk_size):
        chunk = refs[start : start + chunk_size]  # [n, D]
        dist2 = (
            x_sq - 2.0 * alpha[:, None] * (x_t @ chunk.T) + alpha[:, None] ** 2 * (chunk**2).sum(1)
        ).clamp_min(0.0)
        logits = log_prior[:, start : start + chunk_size] - dist2 / (2.0 * s2[:, None])
        new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True)).detach()
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)  # [B, n]
        running_sum = running_sum * rescale + weights.sum(dim=1, keepdim=True)
        running_mean = running_mean * rescale + weights @ values[start : start + chunk_size]
        running_max = new_max
    return running_mean / running_sum


def mixture_posterior_mean(
    x_t: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    refs: torch.Tensor,
    log_prior: torch.Tensor,
    tau: float = 0.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """E[x_0 | x_t] under the smoothed reference mixture, [B, D] (see module docstring)."""
    mean_ref = mixture_expectation(x_t, alpha, sigma, refs, log_prior, None, tau, chunk_size)
    s2 = sigma**2 + alpha**2 * tau**2
    shrink = (alpha * tau**2 / s2)[:, None]
    return mean_ref + shrink * (x_t - alpha[:, None] * mean_ref)


class _LazyReferences(dict):
    """prompt -> ReferenceSet, rendered by ``render(prompt)`` on first access."""

    def __init__(self, render) -> None:
        super().__init__()
        self._render = render

    def __missing__(self, prompt: str) -> ReferenceSet:
        self[prompt] = refs = self._render(prompt)
        return refs


class WorldPrior(DiffusionPrior):
    """Exact optimal denoiser of the world's reference mixtures (pixel space, [-1, 1])."""

    supports_negative = True
    supports_posterior_field = True

    def __init__(
        self,
        prompts: list[str],
        height: int,
        width: int,
        distance: float,
        fovy: float,
        config: WorldPriorConfig | None = None,
        device: torch.device | str = "cpu",
        alphas_cumprod: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config or WorldPriorConfig()
        self.device = torch.device(device)
        self.alphas_cumprod = (
            ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        ).to(self.device)
        self.shape = (3, height, width)
        cameras = orbit_cameras(self.config.n_azimuth, self.config.elevations, distance, fovy).to(
            self.device
        )
        self.reference_cameras = cameras
        # prompt -> its references, rendered on first use (each object's renders depend on
        # that object only, so the order of use changes no number)
        self.references = _LazyReferences(self._render_references)
        for prompt in prompts:
            self.references[prompt]  # noqa: B018 - the run's prompts up front: bad ones fail here
        self._unconditional: ReferenceSet | None = None
        self._degraded: dict[str, ReferenceSet] = {}

    @property
    def unconditional(self) -> ReferenceSet:
        """The unconditional branch's mixture: the references of every object of the library
        (``unconditional = "objects"``) or of the generic objects (``"generic"``), each object
        seen from every reference camera, so uniform over objects (depth/normal are only
        needed for the conditional Bayes estimators)."""
        if self._unconditional is None:
            if self.config.unconditional == "generic":
                from world.generic import generic_objects

                refs = [self.render_instances(generic_objects(self.config.n_generic))]
            else:
                refs = [self.references[p] for p in known_prompts()]
            self._unconditional = ReferenceSet(
                torch.cat([r.images for r in refs]), torch.cat([r.directions for r in refs])
            )
        return self._unconditional

    def prepare(self, prompts: list[str]) -> None:
        """Render the prompts' references before cells share this prior on threads."""
        for prompt in prompts:
            try:
                self.references[prompt]
            except KeyError:  # a prompt the world does not know: the cell reports it
                continue

    def geometry_estimator(self, depth_model: str = ""):
        """The world's Bayes depth/normal estimator (a fresh counter per call)."""
        from world.geometry import WorldBayesGeometry

        return WorldBayesGeometry(self)

    def _render_references(self, prompt: str) -> ReferenceSet:
        """The prompt's references: every instance from every reference camera (the union
        of the instances' renders; one instance: exactly that object's renders)."""
        return self.render_instances(instances(prompt))

    def render_instances(self, objects) -> ReferenceSet:
        """References of a list of WorldObjects (each from every reference camera, in order;
        ``instance`` set when there are several). ``prior.references[name] = ...`` makes any
        list of instances a prompt of this prior (its exact eps* is then that mixture's)."""
        cameras = self.reference_cameras

        def render(obj) -> ReferenceSet:
            out = render_object(
                obj, cameras, self.shape[1], self.shape[2], supersample=self.config.supersample
            )
            return ReferenceSet(
                self.encode(out["rgb"]).flatten(1),
                cameras.view_direction,
                out["depth"].flatten(1),
                out["normal"].flatten(1),
            )

        # instances render independently (deterministic, no random numbers): on threads, in
        # order, so a distribution prompt's many instances use every core; same numbers
        threads = min(len(objects), max(1, torch.get_num_threads()))
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                sets = list(pool.map(render, objects))
        else:
            sets = [render(obj) for obj in objects]
        if len(sets) == 1:
            return sets[0]
        n = len(cameras)
        return ReferenceSet(
            torch.cat([r.images for r in sets]),
            torch.cat([r.directions for r in sets]),
            torch.cat([r.depth for r in sets]),
            torch.cat([r.normal for r in sets]),
            torch.arange(len(sets), device=self.device).repeat_interleave(n),
        )

    def instance_posterior(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext
    ) -> torch.Tensor:
        """P(instance k | x_t, y) under the conditional mixture, [B, K] (K = the prompt's
        instances; a one-instance prompt gives ones): the responsibilities summed per
        instance."""
        refs = self.references[ctx.prompt]
        if refs.instance is None:
            return torch.ones(x_t.shape[0], 1, dtype=x_t.dtype, device=x_t.device)
        onehot = torch.nn.functional.one_hot(refs.instance, refs.n_instances).to(x_t.dtype)
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t)
        return mixture_expectation(
            x_t.flatten(1),
            alpha.to(x_t.dtype),
            sigma.to(x_t.dtype),
            refs.images,
            self.log_mixture_weights(refs, ctx.cameras),
            onehot,
            self.config.tau,
            self.config.chunk_size,
        )

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> [-1, 1] pixels (the world prior lives in pixel space)."""
        return rgb * 2.0 - 1.0

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1.0) * 0.5

    def log_mixture_weights(self, refs: ReferenceSet, cameras: Cameras) -> torch.Tensor:
        """log pi_i(c) up to a constant, [B, N]."""
        n = refs.images.shape[0]
        if not self.config.view_aware:
            return torch.zeros(len(cameras), n, device=refs.images.device)
        cos = cameras.view_direction.to(refs.directions) @ refs.directions.T
        return cos / self.config.view_temperature

    def posterior_expectation(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, field: str
    ) -> torch.Tensor:
        """E[v_i | x_t, y] of the prompt's reference ``field`` ('depth' or 'normal') under the
        conditional mixture weights: the world's Bayes estimator, differentiable in x_t.
        Returns [B, Dv]."""
        refs = self.references[ctx.prompt]
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t)
        return mixture_expectation(
            x_t.flatten(1),
            alpha.to(x_t.dtype),
            sigma.to(x_t.dtype),
            refs.images,
            self.log_mixture_weights(refs, ctx.cameras),
            getattr(refs, field),
            self.config.tau,
            self.config.chunk_size,
        )

    def posterior_mean(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, conditional: bool
    ) -> torch.Tensor:
        """E[x_0 | x_t, y] (or unconditional), [B, 3, H, W]."""
        refs = self.references[ctx.prompt] if conditional else self.unconditional
        return self._mixture_mean(x_t, t, refs, ctx)

    def _mixture_mean(self, x_t, t, refs: ReferenceSet, ctx: PriorContext) -> torch.Tensor:
        """E[x_0 | x_t] under the mixture over ``refs`` at the batch's cameras."""
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t)
        mean = mixture_posterior_mean(
            x_t.flatten(1),
            alpha.to(x_t.dtype),
            sigma.to(x_t.dtype),
            refs.images,
            self.log_mixture_weights(refs, ctx.cameras),
            self.config.tau,
            self.config.chunk_size,
        )
        return mean.view_as(x_t)

    def _predict_branch(self, x_t, t, ctx, conditional):
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        x0 = self.posterior_mean(x_t, t, ctx, conditional)
        return (x_t - alpha.view(shape) * x0) / sigma.view(shape)

    def degraded_references(self, prompt: str) -> ReferenceSet:
        """The prompt's references under every degradation (4N images), built once."""
        if prompt not in self._degraded:
            refs = self.references[prompt]
            images = degrade(refs.images.view(-1, *self.shape)).flatten(1)
            directions = refs.directions.repeat(len(DEGRADATIONS), 1)
            self._degraded[prompt] = ReferenceSet(images, directions)
        return self._degraded[prompt]

    def _predict_negative(self, x_t, t, ctx, negative_prompt):
        del negative_prompt  # the world's negative is its degraded distribution
        refs = self.degraded_references(ctx.prompt)
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t)
        x0 = self._mixture_mean(x_t, t, refs, ctx)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        return (x_t - alpha.view(shape) * x0) / sigma.view(shape)

    def posterior_stein_field(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        ctx: PriorContext,
        eps: torch.Tensor,
        conditional: bool,
        beta: float = 1.0,
    ) -> torch.Tensor:
        """The responsibilities' matrix-valued Stein field S_beta of one branch's mixture
        (core/stein_field.py): zero mean over eps for x_t = alpha x + sigma eps, [B, 3, H, W].
        Not counted as a network evaluation: it reads the responsibilities a prediction at
        the same x_t computes (the caller books its cost)."""
        from core.stein_field import mixture_stein_field

        refs = self.references[ctx.prompt] if conditional else self.unconditional
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t)
        field = mixture_stein_field(
            x_t.flatten(1),
            eps.flatten(1),
            alpha.to(x_t.dtype),
            sigma.to(x_t.dtype),
            refs.images,
            self.log_mixture_weights(refs, ctx.cameras),
            beta,
            self.config.tau,
        )
        return field.view_as(x_t)
