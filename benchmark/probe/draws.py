"""The probe's draws: K (camera, t, eps) from the ``measure`` stream of one step only.

Every method sees the same K draws at the same step and seed (common random numbers). The
stream is split into independent sub-streams in a fixed order (``PURPOSES``, never reorder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.probe.subject import ProbeSubject
from core.cameras import Cameras

PURPOSES = (
    "camera",
    "timestep",
    "noise",
    "estimator",
    "bootstrap",
    "ref_camera",
    "ref_timestep",
    "ref_noise",
)


@dataclass(frozen=True)
class MeasureDraws:
    """K draws of (camera, t, eps).

    Attributes:
        cameras: K cameras, or 1 camera shared by all K samples (rendered once).
        t: [K] int64 timesteps.
        eps: [K, C, H, W] standard normal noise in the prior's space.
    """

    cameras: Cameras
    t: torch.Tensor
    eps: torch.Tensor

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def shared_camera(self) -> bool:
        return len(self.cameras) == 1

    def variant(self, name: str) -> MeasureDraws:
        """The draws of variant ``name`` (all / fixed_camera / fixed_camera_t)."""
        if name == "all":
            return self
        first = self.cameras[0:1]
        if name == "fixed_camera":
            return MeasureDraws(first, self.t, self.eps)
        if name == "fixed_camera_t":
            return MeasureDraws(first, self.t[:1].expand(len(self)).clone(), self.eps)
        raise ValueError(f"unknown measurement variant {name!r}")

    def __getitem__(self, index: slice) -> MeasureDraws:
        cameras = self.cameras if self.shared_camera else self.cameras[index]
        return MeasureDraws(cameras, self.t[index], self.eps[index])


def measure_seeds(subject: ProbeSubject, step: int) -> dict[str, int]:
    """Seeds of the probe's sub-streams, all from ``subject.streams.generator('measure', step)``."""
    root = subject.streams.generator("measure", step)
    seeds = torch.randint(0, 2**62, (len(PURPOSES),), generator=root, dtype=torch.int64)
    return {name: int(s) for name, s in zip(PURPOSES, seeds.tolist(), strict=True)}


def generator_from_seed(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def prior_shape(subject: ProbeSubject) -> tuple[int, ...]:
    """[C, H, W] of one encoded render: the prior's declared space at the render size."""
    return subject.prior.space_shape(subject.height, subject.width)


def _sample(
    subject: ProbeSubject, step: int, n: int, seeds: dict[str, int], prefix: str
) -> tuple[Cameras, torch.Tensor]:
    return subject.draw_cameras_and_t(
        n,
        step,
        generator_from_seed(seeds[prefix + "camera"]),
        generator_from_seed(seeds[prefix + "timestep"]),
    )


def draw_measure_inputs(
    subject: ProbeSubject,
    step: int,
    n: int,
    seeds: dict[str, int] | None = None,
    shape: tuple[int, ...] | None = None,
) -> MeasureDraws:
    """The K = n draws of the probe at ``step``: the trainer's camera distribution and
    timestep schedule, sampled from the measure stream only (same for every method)."""
    seeds = measure_seeds(subject, step) if seeds is None else seeds
    shape = prior_shape(subject) if shape is None else shape
    cameras, t = _sample(subject, step, n, seeds, "")
    eps = torch.randn((n, *shape), generator=generator_from_seed(seeds["noise"])).to(subject.device)
    return MeasureDraws(cameras, t, eps)


def reference_chunks(
    subject: ProbeSubject,
    step: int,
    draws: MeasureDraws,
    variant: str,
    n: int,
    chunk: int,
    seeds: dict[str, int],
):
    """Yield ``n`` fresh draws of ``variant`` in chunks (the camera / t a variant fixes are
    the K-sample draws' first ones). Identical for every variant and method."""
    cameras, t = _sample(subject, step, n, seeds, "ref_")
    if variant != "all":
        cameras = draws.cameras[0:1]
    if variant == "fixed_camera_t":
        t = draws.t[:1].expand(n).clone()
    noise = generator_from_seed(seeds["ref_noise"])
    shape = tuple(draws.eps.shape[1:])
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        eps = torch.randn((end - start, *shape), generator=noise).to(subject.device)
        cams = cameras if len(cameras) == 1 else cameras[start:end]
        yield MeasureDraws(cams, t[start:end], eps)
