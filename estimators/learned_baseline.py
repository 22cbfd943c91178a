"""A learned Stein baseline for SSD (``ssd.baseline=learned``).

SteinDreamer's identity admits any baseline; its depth baseline explains <= 0.1% of the
gradient variance in the world. Here the baseline is a small network N_psi, conditioned on the
render x (the prior's space: pixels, or latents for SD), on t (sinusoidal embedding) and on
the camera (flattened 4x4 c2w), trained online to minimise the second moment of SSD's
gradient (the paper's min ||Delta_SSD||^2; E[S] = 0 makes it the variance):

    loss(psi) = mean_b || w (r - mu (.) (offset eps + scale S_psi)) ||^2,
    r = eps_hat - eps (additive form) or eps_hat (paper, offset)

Fields (``ssd.learned_field``; shapes for x_t [B, C, H, W]):

    scalar   phi = mean_pixels N_psi([x_t, x], t, c)                    [B]
             S = eps phi - sigma grad_{x_t} phi                          (one backward)
    vector   the vector-field form S_i = eps_i f_i - sigma d f_i / d x_{t,i}
             (estimators.stein.stein_vector_control_variate), ``ssd.learned_diagonal``:
             exact       f = a (.) x_t + b, (a, b) = N_psi(x, t, c)  [B, 2C, H, W]:
                         affine in x_t, d_i f_i = a_i in closed form (no autograd)
             hutchinson  f = N_psi([x_t, x], t, c) [B, C, H, W], any nonlinear field;
                         d_i f_i estimated by v_i (J^T v)_i, v Rademacher from the
                         estimator's generator (E_v = diag J: still zero-mean; one vjp)

The output layer starts at zero (S_psi = 0), so SSD starts exactly as its form with the
constant baseline (additive: SDS). Unbiasedness: the network used at step k was fitted only on
samples of steps < k (``fit`` runs in ``SSD.update``, after the step's gradient is used).

Cost, counted in ``n_evals`` (one per image per forward+backward, as VSD's eps_phi): ``grad``
one evaluation per image, ``fit`` one (a double backward for the scalar and Hutchinson
fields); the registry's cost model books them as ``phi``, the trainer's time as
``time/estimator``. Modules are built with ``skip_init`` and initialised from an explicit
generator (no global RNG).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F

from estimators.eps_phi import _FiLMBlock, sinusoidal_embedding
from estimators.stein import stein_vector_control_variate

LearnedField = Literal["scalar", "vector"]
LearnedDiagonal = Literal["exact", "hutchinson"]


class SteinBaselineNet(torch.nn.Module):
    """N_psi(inputs [B, in, H, W], t [B], c2w [B, 16]) -> [B, out, H, W]; FiLM conv blocks
    conditioned on emb = silu(MLP(sinusoidal(t)) + MLP(c2w)); zero-initialised output conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int,
        blocks: int,
        embed_dim: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim

        def lin(i: int, o: int) -> torch.nn.Linear:
            return torch.nn.utils.skip_init(torch.nn.Linear, i, o)

        def conv(i: int, o: int) -> torch.nn.Conv2d:
            return torch.nn.utils.skip_init(torch.nn.Conv2d, i, o, 3, padding=1)

        self.t_mlp = torch.nn.Sequential(lin(embed_dim, embed_dim), torch.nn.SiLU())
        self.t_out = lin(embed_dim, embed_dim)
        self.c_mlp = torch.nn.Sequential(lin(16, embed_dim), torch.nn.SiLU())
        self.c_out = lin(embed_dim, embed_dim)
        self.conv_in = conv(in_channels, hidden)
        self.blocks = torch.nn.ModuleList(_FiLMBlock(hidden, embed_dim) for _ in range(blocks))
        self.conv_out = conv(hidden, out_channels)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-uniform (PyTorch's default) drawn from ``generator``; zero output conv."""
        for module in self.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                weight = torch.empty(module.weight.shape)
                torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                bias = torch.empty(module.bias.shape).uniform_(-bound, bound, generator=generator)
                module.weight.copy_(weight)
                module.bias.copy_(bias)
        self.conv_out.weight.zero_()
        self.conv_out.bias.zero_()

    def forward(self, inputs: torch.Tensor, t: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
        emb = self.t_out(self.t_mlp(sinusoidal_embedding(t, self.embed_dim).to(inputs)))
        emb = F.silu(emb + self.c_out(self.c_mlp(c2w.flatten(1).to(inputs))))
        h = self.conv_in(inputs)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(h))


def rademacher(shape: tuple[int, ...], generator: torch.Generator | None, device, dtype):
    """v in {-1, +1}^shape from ``generator`` (drawn on the CPU, then moved)."""
    if generator is None:
        raise ValueError("the Hutchinson diagonal needs ctx.generator (the estimator stream)")
    v = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64)
    return (2 * v - 1).to(device=device, dtype=dtype)


class LearnedSteinBaseline:
    """N_psi, its Adam optimiser and its evaluation counter (see the module doc).

    Attributes:
        n_evals: cumulative network evaluations (images; ``grad`` and ``fit`` one each).
        last_loss: the latest ``fit`` loss (nan before any); n_updates: fits done.
    """

    def __init__(
        self,
        channels: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        field: LearnedField = "scalar",
        diagonal: LearnedDiagonal = "exact",
        hidden: int = 16,
        blocks: int = 1,
        embed_dim: int = 32,
        lr: float = 1e-3,
    ) -> None:
        if field not in ("scalar", "vector") or diagonal not in ("exact", "hutchinson"):
            raise ValueError(f"bad learned baseline field/diagonal {field!r}/{diagonal!r}")
        self.field, self.diagonal, self.channels = field, diagonal, channels
        self.affine = field == "vector" and diagonal == "exact"
        in_channels = channels if self.affine else 2 * channels
        out_channels = {"scalar": 1, "vector": 2 * channels if self.affine else channels}[field]
        net = SteinBaselineNet(in_channels, out_channels, hidden, blocks, embed_dim, generator)
        self.net = net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.n_evals, self.n_updates, self.last_loss = 0, 0, float("nan")

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def control_variate(
        self,
        x_t: torch.Tensor,
        eps: torch.Tensor,
        sigma: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        c2w: torch.Tensor,
        generator: torch.Generator | None = None,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_psi [B, C, H, W], summary [B]: phi for the scalar field, mean_i f_i else).

        Args:
            x_t, eps: [B, C, H, W]; sigma: [B]; x: the render [B, C, H, W] (detached);
            t: [B] int64; c2w: [B, 16]; generator: draws Hutchinson's v.
            create_graph: keep the graph to psi (``fit``); otherwise S has no graph and no
                parameter's ``.grad`` is touched.
        """
        self.n_evals += x_t.shape[0]
        x, shape = x.detach(), (-1,) + (1,) * (x_t.dim() - 1)
        with torch.enable_grad():
            if self.affine:
                a, b = self.net(x, t, c2w).chunk(2, dim=1)
                field = a * x_t.detach() + b
                s = stein_vector_control_variate(field, a, eps, sigma)
                summary = field.flatten(1).mean(1)
            else:
                z = x_t.detach().requires_grad_(True)
                out = self.net(torch.cat([z, x], dim=1), t, c2w)
                if self.field == "scalar":
                    phi = out.flatten(1).mean(1)
                    (grad,) = torch.autograd.grad(phi.sum(), z, create_graph=create_graph)
                    s = eps * phi.view(shape) - sigma.view(shape) * grad
                    summary = phi
                else:
                    v = rademacher(tuple(z.shape), generator, z.device, z.dtype)
                    (jtv,) = torch.autograd.grad(out, z, v, create_graph=create_graph)
                    s = stein_vector_control_variate(out, v * jtv, eps, sigma)
                    summary = out.flatten(1).mean(1)
        if not create_graph:
            s, summary = s.detach(), summary.detach()
        return s, summary

    def fit(self, sample: dict[str, torch.Tensor], generator: torch.Generator | None) -> float:
        """One Adam step on the second moment of G = w (r - mu (offset eps + scale S_psi)).

        ``sample`` (``SSD.grad``'s update inputs, all detached): x_t, eps, sigma, render, t,
        c2w, w [B, 1, 1, 1], residual r, mu (broadcastable), offset and scale (0-d).
        """
        with torch.enable_grad():
            s, _ = self.control_variate(
                sample["x_t"],
                sample["eps"],
                sample["sigma"],
                sample["render"],
                sample["t"],
                sample["c2w"],
                generator,
                create_graph=True,
            )
            control = sample["offset"] * sample["eps"] + sample["scale"] * s
            g = sample["w"] * (sample["residual"] - sample["mu"] * control)
            loss = (g**2).flatten(1).sum(1).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.n_updates += 1
        self.last_loss = float(loss.detach())
        return self.last_loss

    def state_dict(self) -> dict:
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "n_evals": self.n_evals,
            "n_updates": self.n_updates,
            "last_loss": self.last_loss,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        # Optimizer.load_state_dict keeps references to the given tensors: copy them
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.n_evals = int(state["n_evals"])
        self.n_updates = int(state["n_updates"])
        self.last_loss = float(state["last_loss"])
