"""Named random streams: no global RNG anywhere.

Every draw comes from a ``torch.Generator`` seeded by a hash of
(seed, stream name, prompt, step), independent of the method. So every method sees the same
cameras, timesteps and noise at every step (common random numbers), any step can be
regenerated without replaying the past (resume), and streams never interfere: a method that
draws more from its private ``estimator`` stream does not shift anyone's noise.
"""

from __future__ import annotations

import hashlib

import torch

STREAM_NAMES = ("camera", "timestep", "noise", "init", "measure", "estimator", "eval")


def stream_seed(seed: int, name: str, prompt: str, step: int) -> int:
    """63-bit seed from sha256 of the stream's identity (stable across runs and machines)."""
    key = f"steinbench/v1/{seed}/{name}/{prompt}/{step}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


class RandomStreams:
    """The random streams of one (seed, prompt) cell."""

    def __init__(self, seed: int, prompt: str) -> None:
        self.seed = seed
        self.prompt = prompt

    def generator(self, name: str, step: int = 0) -> torch.Generator:
        """A fresh CPU generator for stream ``name`` at ``step`` (draw on CPU, then move)."""
        if name not in STREAM_NAMES:
            raise ValueError(f"unknown stream {name!r}; known: {STREAM_NAMES}")
        generator = torch.Generator(device="cpu")
        generator.manual_seed(stream_seed(self.seed, name, self.prompt, step))
        return generator

    def normal(self, name: str, step: int, shape: tuple[int, ...], device="cpu") -> torch.Tensor:
        """Standard normal draw of ``shape`` from stream ``name`` at ``step``."""
        return torch.randn(shape, generator=self.generator(name, step)).to(device)
