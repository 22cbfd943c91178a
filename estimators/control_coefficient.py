"""The control-variate coefficient mu of SSD: G = w (eps_hat - mu (.) S).

Shapes (broadcast against [B, C, H, W]): ``scalar`` [1,1,1,1], ``channel`` [1,C,1,1],
``pixel`` [1,C,H,W]. Strategies:

- ``fixed``    mu = init.
- ``learned``  Adam on ||w (eps_hat - mu S)||^2 (the paper's min_mu ||Delta_SSD||^2), one
               step per observed sample.
- ``optimal``  least squares from an exponential moving average of past samples:
               mu = EMA[sum a s] / EMA[sum s^2] with a = w eps_hat, s = w S, summed over the
               dimensions mu is shared across (the variance-minimising coefficient, since
               E[S] = 0 makes Cov(a, s) = E[a s]).

The mu used at step k depends only on samples observed before step k (``value`` never
looks at the current sample; ``observe`` is called after it is used), otherwise the
estimator would be biased.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

MuStrategy = Literal["fixed", "learned", "optimal"]
MuShape = Literal["scalar", "channel", "pixel"]
_REDUCE = {"scalar": (0, 1, 2, 3), "channel": (0, 2, 3), "pixel": (0,)}


class ControlCoefficient:
    def __init__(
        self,
        strategy: MuStrategy,
        shape: MuShape,
        init: float = 1.0,
        lr: float = 1e-2,
        ema: float = 0.99,
        device: torch.device | str = "cpu",
    ) -> None:
        if strategy not in ("fixed", "learned", "optimal") or shape not in _REDUCE:
            raise ValueError(f"bad mu strategy/shape {strategy!r}/{shape!r}")
        self.strategy, self.shape, self.init = strategy, shape, init
        self.lr, self.ema, self.device = lr, ema, torch.device(device)
        self.mu: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.numerator: torch.Tensor | None = None
        self.denominator: torch.Tensor | None = None

    def _param_shape(self, like: torch.Tensor) -> tuple[int, ...]:
        return tuple(1 if d in _REDUCE[self.shape] else n for d, n in enumerate(like.shape))

    def _ensure(self, like: torch.Tensor) -> None:
        if self.mu is None:
            self.mu = torch.full(self._param_shape(like), self.init, device=like.device)
            if self.strategy == "learned":
                self.mu.requires_grad_(True)
                self.optimizer = torch.optim.Adam([self.mu], lr=self.lr)

    def value(self, like: torch.Tensor) -> torch.Tensor:
        """mu to use now (from past samples only), broadcastable to ``like``. Reads state,
        never creates it (before the first ``observe``, mu is ``init``)."""
        if self.mu is None:
            return torch.full(self._param_shape(like), self.init, device=like.device)
        if self.strategy == "optimal" and self.numerator is not None:
            return self.numerator / self.denominator.clamp_min(1e-12)
        return self.mu.detach()

    def observe(self, a: torch.Tensor, s: torch.Tensor) -> None:
        """Learn from one sample: a = w eps_hat, s = w S (both [B, C, H, W], no graph)."""
        self._ensure(a)
        dims = _REDUCE[self.shape]
        if self.strategy == "learned":
            with torch.enable_grad():
                loss = ((a - self.mu * s) ** 2).sum() / a.shape[0]
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.optimizer.step()
        elif self.strategy == "optimal":
            num = (a * s).sum(dim=dims, keepdim=True)
            den = (s * s).sum(dim=dims, keepdim=True)
            if self.numerator is None:
                self.numerator, self.denominator = num, den
            else:
                self.numerator = self.ema * self.numerator + (1 - self.ema) * num
                self.denominator = self.ema * self.denominator + (1 - self.ema) * den

    def state_dict(self) -> dict:
        return {
            "mu": None if self.mu is None else self.mu.detach().clone(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "numerator": self.numerator,
            "denominator": self.denominator,
        }

    def load_state_dict(self, state: dict) -> None:
        self.mu, self.optimizer = None, None
        if state["mu"] is not None:
            self._ensure(state["mu"].expand(state["mu"].shape))
            with torch.no_grad():
                self.mu.copy_(state["mu"])
            if self.optimizer is not None and state["optimizer"] is not None:
                # Optimizer.load_state_dict keeps references to the given tensors: copy, so the
                # source's in-place Adam updates never leak into this one
                self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.numerator, self.denominator = state["numerator"], state["denominator"]
