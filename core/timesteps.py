"""Timestep sampling t ~ U{t_min .. t_max} with optional linear annealing of t_max."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TimestepSchedule:
    """Fractions of T. t_max anneals linearly to ``t_max_final`` over ``anneal_steps`` steps
    (threestudio's ``max_step_percent`` schedule) when both are set."""

    t_min: float = 0.02
    t_max: float = 0.98
    t_max_final: float | None = None
    anneal_steps: int = 0

    def bounds(self, step: int, num_train_timesteps: int) -> tuple[int, int]:
        """Inclusive integer bounds (lo, hi) of t at ``step``."""
        t_max = self.t_max
        if self.t_max_final is not None and self.anneal_steps > 0:
            frac = min(1.0, step / self.anneal_steps)
            t_max = self.t_max + (self.t_max_final - self.t_max) * frac
        lo = round(self.t_min * num_train_timesteps)
        hi = max(lo, round(t_max * num_train_timesteps))
        return lo, min(hi, num_train_timesteps - 1)

    def sample(
        self, n: int, step: int, num_train_timesteps: int, generator: torch.Generator
    ) -> torch.Tensor:
        """n integer timesteps [n] int64. Always draws n uniforms from ``generator``."""
        lo, hi = self.bounds(step, num_train_timesteps)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (lo + torch.floor(u * (hi - lo + 1))).clamp(max=hi).to(torch.int64)
