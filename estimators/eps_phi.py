"""VSD's variational score model eps_phi(x_t, t, y, c) behind one small interface.

``VariationalScoreModel`` is what ``estimators.vsd.VSD`` sees: a camera-conditioned noise
predictor for the distribution of the current renders q(x | c), trained online. A diffusers
LoRA copy of a latent prior can implement the same interface later; the first implementation
is for pixel-space priors such as the world's analytic prior:

    eps_phi(x_t, t, c) = eps_prior(x_t, t, y) + delta_psi(x_t, t, c)

with delta_psi a small conv net whose output layer starts at zero ("prior minus prior" at
init, the LoRA-at-init analogue). The net predicts its correction in x0 space by default:

    x0_phi = x0_prior + r_psi            <=>   delta_psi = -(alpha_t / sigma_t) r_psi

because the residual it has to learn, x0_prior(x_t) - x0_q(x_t), is bounded by the pixel
range at every t, whereas its eps-space form alpha/sigma (x0_prior - x0_q) explodes at small
t (docs/vsd_world.md).

Loss weightings lambda(t) of the eps-MSE  lambda(t) ||eps_phi(x_t) - eps||^2  (per image,
mean over pixels):
- ``eps``:  lambda = 1 (ProlificDreamer; dominated by small t in the residual form)
- ``x0``:   lambda = sigma^2 / alpha^2, i.e. ||x0_phi - x||^2
- ``grad``: lambda = w(t)^2 with the estimator's weighting w, i.e. the squared error of the
  VSD gradient w (eps_hat - eps_phi) against SDS's w (eps_hat - eps) for this render.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
import torch.nn.functional as F

from core.interfaces import DiffusionPrior, PriorContext
from core.schedule import add_noise, alpha_sigma
from core.weighting import Weighting, timestep_weight

PhiLossWeighting = Literal["eps", "x0", "grad"]
PhiParameterization = Literal["x0", "eps"]


class VariationalScoreModel(ABC):
    """eps_phi(x_t, t, y, c): a trainable, camera-conditioned noise predictor.

    ``n_evals`` counts the model's own network evaluations (one per image per forward);
    calls it makes into the prior are counted by the prior's ``n_evals``.
    """

    n_evals: int = 0

    @abstractmethod
    def predict(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        ctx: PriorContext,
        prior: DiffusionPrior,
        camera_dropped: torch.Tensor | None = None,
        eps_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps_phi [B, C, H, W] (differentiable w.r.t. ``parameters()``, not w.r.t. x_t).

        Args:
            x_t: [B, C, H, W] noisy inputs; t: [B] int64.
            camera_dropped: [B] bool, True where the camera condition is replaced by zeros
                (None: keep every camera).
            eps_prior: optional precomputed conditional prior prediction eps(x_t, t, y),
                [B, C, H, W], to save a prior evaluation.
        """

    @abstractmethod
    def loss(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        ctx: PriorContext,
        prior: DiffusionPrior,
        camera_dropped: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar training loss on clean renders x [B, C, H, W] (noised here with t, eps)."""

    @abstractmethod
    def parameters(self) -> list[torch.nn.Parameter]: ...

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer/DDPM sinusoidal embedding of integer timesteps, [B] -> [B, dim] (dim even)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class _FiLMBlock(torch.nn.Module):
    """h + conv(silu(norm(conv(silu(h))) * (1 + scale) + shift)), scale/shift from emb."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.utils.skip_init(torch.nn.Conv2d, channels, channels, 3, padding=1)
        self.conv2 = torch.nn.utils.skip_init(torch.nn.Conv2d, channels, channels, 3, padding=1)
        self.film = torch.nn.utils.skip_init(torch.nn.Linear, embed_dim, 2 * channels)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        y = self.conv1(F.silu(h))
        y = F.group_norm(y, 1) * (1.0 + scale) + shift
        return h + self.conv2(F.silu(y))


class DeltaNet(torch.nn.Module):
    """delta_psi(x_t, x0_prior, t, c) -> [B, 3, H, W]: conv net conditioned on t and camera.

    Inputs are concatenated along channels (x_t, and the prior's x0 prediction when
    ``prior_input``); conditioning emb = MLP(sinusoidal(t)) + MLP(flattened 4x4 c2w), applied
    to every block by FiLM. The output conv is zero-initialised. Modules are created with
    ``skip_init`` (no global RNG) and initialised from ``generator`` only.
    """

    def __init__(
        self,
        channels: int = 3,
        hidden: int = 32,
        blocks: int = 2,
        embed_dim: int = 64,
        prior_input: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        in_ch = channels * (2 if prior_input else 1)
        self.prior_input = prior_input

        def lin(i: int, o: int) -> torch.nn.Linear:
            return torch.nn.utils.skip_init(torch.nn.Linear, i, o)

        self.t_mlp = torch.nn.Sequential(lin(embed_dim, embed_dim), torch.nn.SiLU())
        self.t_out = lin(embed_dim, embed_dim)
        self.c_mlp = torch.nn.Sequential(lin(16, embed_dim), torch.nn.SiLU())
        self.c_out = lin(embed_dim, embed_dim)
        self.conv_in = torch.nn.utils.skip_init(torch.nn.Conv2d, in_ch, hidden, 3, padding=1)
        self.blocks = torch.nn.ModuleList(_FiLMBlock(hidden, embed_dim) for _ in range(blocks))
        self.conv_out = torch.nn.utils.skip_init(torch.nn.Conv2d, hidden, channels, 3, padding=1)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """PyTorch's default (kaiming-uniform) init drawn from ``generator``; zero output conv."""
        if generator is None:
            raise ValueError("DeltaNet needs an explicit torch.Generator (no global RNG)")
        for module in self.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                torch.nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                torch.nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        self.conv_out.weight.zero_()
        self.conv_out.bias.zero_()

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        c2w: torch.Tensor,
        x0_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.t_out(self.t_mlp(sinusoidal_embedding(t, self.embed_dim)))
        emb = emb + self.c_out(self.c_mlp(c2w.flatten(1)))
        emb = F.silu(emb)
        inputs = torch.cat([x_t, x0_prior], dim=1) if self.prior_input else x_t
        h = self.conv_in(inputs)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(h))


class ResidualEpsPhi(VariationalScoreModel):
    """eps_phi = eps_prior_conditional(x_t) + delta_psi(x_t, t, c) for pixel-space priors.

    Args:
        parameterization: ``x0`` (net predicts the x0 correction r, delta = -(alpha/sigma) r)
            or ``eps`` (net predicts delta directly).
        loss_weighting: see module docstring; ``weighting`` is the estimator's w(t) used by
            ``grad``.
        hidden, blocks, embed_dim, prior_input: capacity and inputs of ``DeltaNet``.
    The optimiser lives in the estimator (``VSD``), over ``parameters()``.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        hidden: int = 32,
        blocks: int = 2,
        embed_dim: int = 64,
        prior_input: bool = True,
        parameterization: PhiParameterization = "x0",
        loss_weighting: PhiLossWeighting = "x0",
        weighting: Weighting = "sds",
    ) -> None:
        self.net = DeltaNet(shape[0], hidden, blocks, embed_dim, prior_input, generator).to(device)
        self.parameterization = parameterization
        self.loss_weighting = loss_weighting
        self.weighting = weighting
        self.n_evals = 0

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def _camera_condition(self, ctx: PriorContext, n: int, dropped: torch.Tensor | None):
        c2w = ctx.cameras.c2w.reshape(n, 16).to(dtype=torch.float32)
        if dropped is not None:
            c2w = torch.where(dropped.to(c2w.device)[:, None], torch.zeros_like(c2w), c2w)
        return c2w

    def predict(self, x_t, t, ctx, prior, camera_dropped=None, eps_prior=None):
        if eps_prior is None:
            with torch.no_grad():
                eps_prior = prior.predict_branch(x_t, t, ctx, conditional=True)
        alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        alpha, sigma = alpha.view(shape).to(x_t.dtype), sigma.view(shape).to(x_t.dtype)
        x0_prior = (x_t - sigma * eps_prior) / alpha
        c2w = self._camera_condition(ctx, x_t.shape[0], camera_dropped)
        self.n_evals += x_t.shape[0]
        out = self.net(x_t, t, c2w, x0_prior.clamp(-1.5, 1.5))
        if self.parameterization == "x0":
            return eps_prior - (alpha / sigma) * out
        return eps_prior + out

    def loss(self, x, t, eps, ctx, prior, camera_dropped):
        x_t = add_noise(x, t, eps, prior.alphas_cumprod)
        eps_phi = self.predict(x_t, t, ctx, prior, camera_dropped)
        per_image = ((eps_phi - eps) ** 2).flatten(1).mean(dim=1)  # [B]
        alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
        if self.loss_weighting == "x0":
            lam = (sigma / alpha) ** 2
        elif self.loss_weighting == "grad":
            lam = timestep_weight(t, prior.alphas_cumprod, self.weighting) ** 2
        else:
            lam = torch.ones_like(sigma)
        return (lam.to(per_image) * per_image).mean()

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "n_evals": self.n_evals}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.n_evals = int(state.get("n_evals", 0))


#: attention projections of a diffusers UNet that get LoRA adapters (ProlificDreamer)
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


class LoRAEpsPhi(VariationalScoreModel):
    """eps_phi for a diffusers latent prior: a LoRA copy of its UNet conditioned on the camera.

        eps_phi(x_t, t, y, c) = UNet_{W + (alpha/r) B A}(x_t, t, E(y), class_emb = M(c))

    - The prior's declared interface (core.interfaces.DiffusionPrior): ``denoiser()`` gives
      the frozen UNet, ``predict_with(network, x_t, t, ctx, class_labels)`` runs a copy of
      it under the prior's text conditioning and eps/v convention.
    - A separate copy of the prior's UNet module tree carries peft LoRA adapters (rank r,
      ``lora_alpha``) on ``LORA_TARGET_MODULES``, added with
      ``unet.add_adapter(LoraConfig(...))``. The copy's frozen parameters and buffers are the
      prior's own tensors (``copy.deepcopy`` with them in its memo): no second UNet in memory
      (threestudio's VSD loads one; 3.5 GB at SD 2.1 size in fp32). The prior's module tree
      stays untouched, so the pretrained eps_hat (``prior.predict_noise``) is the
      adapter-free model without a class embedding, and cells sharing one prior never see
      each other's adapters.
    - Camera condition c = flattened 4x4 camera-to-world matrix [B, 16] through
      M = TimestepEmbedding(16, time_embed_dim), set as the UNet's ``class_embedding`` (its
      output is added to the timestep embedding, as threestudio/ProlificDreamer); a prior
      with ``lora_class_embedding`` (the learned class-conditional UNet2DModel) wraps it with
      its own class embedding instead (E[class] + M(c)).
    - Init (no global RNG: module construction runs inside ``fork_rng``, then values are drawn
      from ``generator``): lora_A kaiming-uniform (peft's default), lora_B = 0, M's first layer
      kaiming-uniform and its last layer = 0, so at init eps_phi equals the pretrained
      conditional prediction exactly.
    - Text condition: the prompt without the view suffix (threestudio's VSD passes
      ``view_dependent_prompting=False`` for the LoRA), the camera enters through M only.
    - Kept on purpose: M's zero last layer (threestudio keeps diffusers' default init, so
      its eps_phi starts ~8% away from the prior; here VSD starts as the pretrained
      prediction), camera dropout per image (threestudio: one coin per batch) and one LoRA
      evaluation per image in ``grad`` (threestudio evaluates a conditional and an
      unconditional branch and combines them with ``guidance_scale_lora`` = 1, which
      discards the second).
    - Loss: plain eps-MSE, mean over all elements, on the detached latent (ProlificDreamer);
      v-prediction models are trained through their eps conversion. The VSD config's
      ``phi_*`` knobs describe the world's DeltaNet and are not used here.
    Trainable parameters (``parameters()``): the LoRA matrices and M, kept in fp32.
    """

    def __init__(
        self, prior: DiffusionPrior, generator: torch.Generator, rank: int = 4, alpha: int = 4
    ) -> None:
        import copy

        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig

        # a copy of the module tree whose frozen parameters and buffers *are* the prior's
        # (no second UNet in memory); peft wraps the copy's layers, never the prior's
        base = prior.denoiser()
        shared = {id(t): t for t in (*base.parameters(), *base.buffers())}
        unet = copy.deepcopy(base, memo=shared)
        unet.requires_grad_(False)
        time_embed_dim = unet.time_embedding.linear_2.out_features
        device = next(unet.parameters()).device
        with torch.random.fork_rng(devices=[]):
            lora = LoraConfig(
                r=rank,
                lora_alpha=alpha,
                target_modules=list(LORA_TARGET_MODULES),
                init_lora_weights=True,
            )
            if hasattr(unet, "add_adapter"):  # UNet2DConditionModel (PeftAdapterMixin)
                unet.add_adapter(lora)
            else:  # UNet2DModel: what add_adapter does, through peft directly
                from peft import inject_adapter_in_model

                inject_adapter_in_model(lora, unet)
            camera_embedding = TimestepEmbedding(16, time_embed_dim)
        for param in unet.parameters():
            if param.requires_grad:  # the adapters: fp32 master weights under an fp16 UNet
                param.data = param.data.to(torch.float32)
        camera_embedding.to(device=device, dtype=torch.float32)
        self._reset_parameters(unet, camera_embedding, generator)
        # a prior whose UNet is already class-conditional (the learned prior) keeps its classes
        # and adds the camera (``lora_class_embedding``); SD's UNet gets the camera alone
        unet.class_embedding = prior.lora_class_embedding(unet, camera_embedding)
        self.unet = unet
        self.n_evals = 0

    @staticmethod
    @torch.no_grad()
    def _reset_parameters(unet, camera_embedding, generator: torch.Generator) -> None:
        """lora_A and M.linear_1: kaiming-uniform from ``generator``; lora_B, M.linear_2: 0."""

        def kaiming_(weight: torch.Tensor) -> None:
            bound = 1.0 / math.sqrt(weight.shape[1])  # kaiming_uniform(a = sqrt(5))
            draw = torch.rand(weight.shape, generator=generator, dtype=torch.float32)
            weight.copy_((2.0 * draw - 1.0) * bound)

        for name, param in sorted(unet.named_parameters(), key=lambda item: item[0]):
            if ".lora_A." in name:
                kaiming_(param)
            elif ".lora_B." in name:
                param.zero_()
        kaiming_(camera_embedding.linear_1.weight)
        bound = 1.0 / math.sqrt(camera_embedding.linear_1.weight.shape[1])
        draw = torch.rand(camera_embedding.linear_1.bias.shape, generator=generator)
        camera_embedding.linear_1.bias.copy_((2.0 * draw - 1.0) * bound)
        camera_embedding.linear_2.weight.zero_()
        camera_embedding.linear_2.bias.zero_()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def named_trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.unet.named_parameters() if p.requires_grad}

    def predict(self, x_t, t, ctx, prior, camera_dropped=None, eps_prior=None):
        """eps_phi [B, C, h, w] fp32; ``eps_prior`` is not needed (the LoRA UNet is a full
        noise predictor) and ignored."""
        n = x_t.shape[0]
        c2w = ctx.cameras.c2w.reshape(n, 16).to(device=x_t.device, dtype=torch.float32)
        if camera_dropped is not None:
            c2w = torch.where(camera_dropped.to(c2w.device)[:, None], torch.zeros_like(c2w), c2w)
        self.n_evals += n
        return prior.predict_with(self.unet, x_t, t, ctx, class_labels=c2w)

    def loss(self, x, t, eps, ctx, prior, camera_dropped):
        x_t = add_noise(x, t, eps, prior.alphas_cumprod)
        eps_phi = self.predict(x_t, t, ctx, prior, camera_dropped)
        return F.mse_loss(eps_phi, eps)

    def state_dict(self) -> dict:
        params = {n: p.detach().clone() for n, p in self.named_trainable().items()}
        return {"params": params, "n_evals": self.n_evals}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        params = self.named_trainable()
        for name, value in state["params"].items():
            params[name].copy_(value)
        self.n_evals = int(state.get("n_evals", 0))
