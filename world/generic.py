"""A generic-object distribution: the world's broad "any object" for the unconditional branch.

A text-to-image model's unconditional p(x) covers every kind of object in every colour; the
library's 12 objects are a narrow stand-in (and they contain each prompt's own object, so the
unconditional posterior snaps to the conditional's references at low noise and classifier-free
guidance has nothing to push against). ``generic_objects(n)`` draws ``n`` random objects: a
primitive (sphere, box, cylinder, cone, torus, ellipsoid) of random size and proportions, in a
colour uniform in hue with random saturation and value, so that colours average to grey.
``WorldPriorConfig.unconditional = "generic"`` uses them as the unconditional mixture (uniform
over objects), the analogue of SD's empty-prompt branch.

>>> len(generic_objects(4)), generic_objects(4)[0].prompt
(4, 'generic object #0')
"""

from __future__ import annotations

import colorsys
from functools import partial

import torch

from world.objects import (
    Part,
    WorldObject,
    box,
    capped_cone,
    capped_cylinder,
    ellipsoid,
    sphere,
    torus,
)

#: default number of generic objects and their seed
N_GENERIC = 32
GENERIC_SEED = 3000


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))


def generic_object(index: int, seed: int = GENERIC_SEED) -> WorldObject:
    """Object ``index``: a random primitive in a random colour (deterministic in the seed)."""
    g = torch.Generator().manual_seed(seed + index)
    kind = int(torch.randint(6, (1,), generator=g))
    s = _uniform(g, 0.3, 0.6)  # overall size
    a, b = _uniform(g, 0.6, 1.0), _uniform(g, 0.6, 1.0)  # proportions
    hue, sat, val = _uniform(g, 0.0, 1.0), _uniform(g, 0.0, 1.0), _uniform(g, 0.25, 0.95)
    colour = tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, sat, val))
    shapes = [
        partial(sphere, center=(0, 0, 0), radius=s),
        partial(box, center=(0, 0, 0), half_size=(s * a, s * b, s * 0.8), rounding=0.02),
        partial(capped_cylinder, center=(0, 0, 0), radius=s * a, half_height=s * b),
        partial(
            capped_cone,
            center=(0, 0, 0),
            half_height=s * b,
            radius_bottom=s * a,
            radius_top=0.0,
        ),
        partial(torus, center=(0, 0, 0), major_radius=s, minor_radius=s * 0.35 * a),
        partial(ellipsoid, center=(0, 0, 0), radii=(s * a, s * b, s)),
    ]
    return WorldObject(f"generic object #{index}", (Part(shapes[kind], colour, "body"),))


def generic_objects(n: int = N_GENERIC, seed: int = GENERIC_SEED) -> tuple[WorldObject, ...]:
    """``n`` generic objects (``generic_object(i)`` for i < n)."""
    return tuple(generic_object(i, seed) for i in range(n))
