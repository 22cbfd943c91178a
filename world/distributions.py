"""Prompts as distributions: a prompt names a set of 3D instances, not one object.

A text-to-image model's p(x | y) for "a ball with spots" holds many balls with many spot
patterns; the world's analytic prior does the same by letting a prompt own several instances
(each a ``WorldObject``, so every instance is 3D-consistent: one SDF seen from every camera).
The conditional branch of the prior is the union of all instances' reference renders, uniform
over instances (each instance has the same reference cameras), and its noise prediction is the
exact denoiser of that mixture (world/prior.py).

Two kinds of instance differences matter for score distillation:

- ``detail``: instances that differ in fine detail (a pattern of spots, the proportions of a
  part). Their renders are close in pixels, the posterior never snaps to one of them at the
  noise levels that matter, and the exact denoiser returns their average: mode averaging
  (ProlificDreamer's over-smoothing argument).
- ``coarse``: instances that differ coarsely (colour, shape). Below t ~ 900 the posterior
  snaps to the nearest instance and distillation commits to one.

Every single-object prompt of ``world.objects`` is a one-instance distribution
(``instances(prompt) == (get_object(prompt),)``), so nothing changes for them.

>>> len(instances("a red ball with white spots")), len(instances("a red sphere"))
(16, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from world.objects import (
    BLUE,
    CREAM,
    GREEN,
    OBJECTS,
    RED,
    SNOW,
    YELLOW,
    Part,
    WorldObject,
    capped_cylinder,
    ellipsoid,
    half_space_cut,
    sphere,
)


@dataclass(frozen=True)
class PromptDistribution:
    """A prompt with its instances.

    Attributes:
        prompt: the text prompt.
        instances: the instances (WorldObject each; their ``prompt`` fields name the instance).
        kind: ``detail`` (fine, pixel-close differences) or ``coarse`` (colour / shape).
        description: one line for docs and listings.
    """

    prompt: str
    instances: tuple[WorldObject, ...]
    kind: str
    description: str


def spots_part(centers, sphere_center, sphere_radius, spot_radius, albedo, lift=0.006) -> Part:
    """Painted spots: within ``spot_radius`` of any of the points ``centers`` (on the sphere's
    surface), the cap of a ball of radius ``sphere_radius + lift``. Its distance is below the
    sphere's on a spot (the union's albedo is the spot's there) and the bump is ``lift`` high:
    a pattern, not geometry. One part for all spots (one SDF evaluation per point)."""
    c = torch.tensor(centers, dtype=torch.float64)  # [S, 3]

    def sdf(p):
        outer = sphere(p, sphere_center, sphere_radius + lift)
        d = (p[..., None, :] - c.to(p)).norm(dim=-1).amin(dim=-1) - spot_radius
        return torch.maximum(outer, d)

    return Part(sdf, albedo, "spots")


def random_directions(n: int, generator: torch.Generator, min_angle: float = 0.0):
    """``n`` unit vectors uniform on the sphere, rejecting any closer than ``min_angle`` (rad)
    to an earlier one (so spots do not merge); float64 [n, 3]."""
    out: list[torch.Tensor] = []
    while len(out) < n:
        v = torch.randn(3, generator=generator, dtype=torch.float64)
        v = v / v.norm()
        if all(float(v @ u) < math.cos(min_angle) for u in out):
            out.append(v)
    return torch.stack(out)


def spotted_ball(index: int, n_spots: int = 10, seed: int = 1000) -> WorldObject:
    """Instance ``index`` of "a red ball with white spots": a red sphere (radius 0.5) with
    ``n_spots`` white spots (radius 0.11) at random places (seed ``seed + index``)."""
    g = torch.Generator().manual_seed(seed + index)
    radius = 0.5
    dirs = random_directions(n_spots, g, min_angle=0.5)
    centers = [tuple(float(c) for c in radius * d) for d in dirs]
    spots = (spots_part(centers, (0, 0, 0), radius, 0.11, SNOW),)
    ball = Part(partial(sphere, center=(0, 0, 0), radius=radius), RED, "ball")
    return WorldObject(f"a red ball with white spots #{index}", (ball, *spots))


def spotted_mushroom(index: int, seed: int = 2000) -> WorldObject:
    """Instance ``index`` of "a mushroom with a spotted cap": the cap's height and the stem's
    length and width vary (proportions), and 6 cream spots lie at random on the cap."""
    g = torch.Generator().manual_seed(seed + index)
    u = torch.rand(3, generator=g, dtype=torch.float64)
    cap_height = 0.38 + 0.14 * float(u[0])  # ellipsoid z radius
    stem_half = 0.22 + 0.12 * float(u[1])
    stem_radius = 0.12 + 0.08 * float(u[2])
    cap_base = -0.15
    cap_center = (0.0, 0.0, cap_base - 0.05)
    parts = [
        Part(
            partial(
                half_space_cut,
                sdf=partial(ellipsoid, center=cap_center, radii=(0.6, 0.6, cap_height)),
                normal=(0, 0, 1),
                offset=cap_base,
            ),
            RED,
            "cap",
        ),
        Part(
            partial(
                capped_cylinder,
                center=(0, 0, cap_base - stem_half),
                radius=stem_radius,
                half_height=stem_half,
            ),
            CREAM,
            "stem",
        ),
    ]
    centers = []
    for _ in range(6):
        # a point on the upper cap: azimuth uniform, polar angle from the top up to ~60 degrees
        phi = 2 * math.pi * float(torch.rand(1, generator=g, dtype=torch.float64))
        v = float(torch.rand(1, generator=g, dtype=torch.float64))
        theta = math.radians(60.0) * math.sqrt(v)
        d = (math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta))
        # the ellipsoid's surface along d (exact for an axis-aligned ellipsoid)
        scale = 1.0 / math.sqrt((d[0] / 0.6) ** 2 + (d[1] / 0.6) ** 2 + (d[2] / cap_height) ** 2)
        centers.append(tuple(cap_center[k] + scale * d[k] for k in range(3)))
    c = torch.tensor(centers, dtype=torch.float64)

    def spots(p, cap=parts[0].sdf):
        d = (p[..., None, :] - c.to(p)).norm(dim=-1).amin(dim=-1) - 0.1
        return torch.maximum(cap(p) - 0.006, d)

    parts.append(Part(spots, CREAM, "spots"))
    return WorldObject(f"a mushroom with a spotted cap #{index}", tuple(parts))


def coloured_ball(colour, name: str) -> WorldObject:
    return WorldObject(
        f"a ball of some colour ({name})",
        (Part(partial(sphere, center=(0, 0, 0), radius=0.5), colour, "ball"),),
    )


def _build() -> dict[str, PromptDistribution]:
    dists = [
        PromptDistribution(
            "a red ball with white spots",
            tuple(spotted_ball(i) for i in range(16)),
            "detail",
            "16 red balls, each with its own 10 random white spots (a pattern)",
        ),
        PromptDistribution(
            "a mushroom with a spotted cap",
            tuple(spotted_mushroom(i) for i in range(8)),
            "detail",
            "8 mushrooms: cap height, stem length and width vary; 6 random cap spots each",
        ),
        PromptDistribution(
            "a ball of some colour",
            tuple(
                coloured_ball(c, n)
                for c, n in ((RED, "red"), (BLUE, "blue"), (GREEN, "green"), (YELLOW, "yellow"))
            ),
            "coarse",
            "a sphere in 4 colours",
        ),
    ]
    return {d.prompt: d for d in dists}


DISTRIBUTIONS: dict[str, PromptDistribution] = _build()


def distribution_prompts() -> list[str]:
    """The multi-instance prompts, in definition order."""
    return list(DISTRIBUTIONS)


def all_prompts() -> list[str]:
    """Every prompt the world knows: the single-object library, then the distributions."""
    return [*OBJECTS, *DISTRIBUTIONS]


def instances(prompt: str) -> tuple[WorldObject, ...]:
    """The instances of ``prompt``: its distribution's, or the one library object; KeyError
    listing every known prompt otherwise."""
    if prompt in DISTRIBUTIONS:
        return DISTRIBUTIONS[prompt].instances
    if prompt in OBJECTS:
        return (OBJECTS[prompt],)
    raise KeyError(f"unknown object prompt {prompt!r}; known prompts: {all_prompts()}")


def has_distinct_front_back(prompt: str) -> bool:
    """Whether every instance of ``prompt`` has a distinct front (Janus score applies)."""
    return all(obj.has_distinct_front_back for obj in instances(prompt))
