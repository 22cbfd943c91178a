"""The prompt-keyed library of procedural ground-truth objects (SDF parts with albedos).

The primitives are in ``world.sdf`` (re-exported here). World frame: z up, objects stand
roughly centred at the origin inside the ball of radius 0.85, and objects with a distinct front
face it towards +x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from world.sdf import (  # noqa: F401 - re-exported primitives
    SDF,
    Vec3,
    box,
    capped_cone,
    capped_cylinder,
    capsule,
    ellipsoid,
    half_space_cut,
    sphere,
    torus,
    triangular_prism,
)


@dataclass(frozen=True)
class Part:
    """One primitive with its parameters bound (``sdf: p [..., 3] -> [...]``) and its albedo."""

    sdf: SDF
    albedo: Vec3
    name: str = ""


@dataclass(frozen=True)
class WorldObject:
    """A union of coloured parts, keyed by its text prompt."""

    prompt: str
    parts: tuple[Part, ...]
    has_distinct_front_back: bool = False

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Union distance ``min_k sdf_k(points)``: [..., 3] -> [...]."""
        d = self.parts[0].sdf(points)
        for part in self.parts[1:]:
            d = torch.minimum(d, part.sdf(points))
        return d

    def sdf_and_albedo(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Union distance [...] and the albedo [..., 3] of the closest (argmin) part."""
        d = torch.stack([part.sdf(points) for part in self.parts], dim=0)  # [K, ...]
        sdf, index = d.min(dim=0)
        colours = torch.tensor(
            [part.albedo for part in self.parts], dtype=points.dtype, device=points.device
        )
        return sdf, colours[index]


def _part(fn: Callable[..., torch.Tensor], albedo: Vec3, name: str = "", **params) -> Part:
    return Part(partial(fn, **params), albedo, name)


# Palette: well separated, nothing pure white (the background is white).
RED = (0.85, 0.10, 0.10)
BLUE = (0.15, 0.30, 0.85)
GREEN = (0.15, 0.70, 0.25)
YELLOW = (0.95, 0.82, 0.10)
SNOW = (0.90, 0.90, 0.90)
ORANGE = (1.00, 0.50, 0.10)
DARK = (0.08, 0.08, 0.08)
CREAM = (0.92, 0.86, 0.68)
WOOD = (0.55, 0.35, 0.17)
DARK_WOOD = (0.38, 0.23, 0.11)
METAL = (0.55, 0.57, 0.62)
CHARCOAL = (0.22, 0.22, 0.25)
WALL = (0.85, 0.72, 0.50)
ROOF = (0.30, 0.18, 0.16)
WINDOW = (0.35, 0.60, 0.90)
TEAL = (0.10, 0.55, 0.55)
GOLD = (0.90, 0.70, 0.25)
PURPLE = (0.40, 0.20, 0.55)


def _build_library() -> dict[str, WorldObject]:
    objects = [
        WorldObject("a red sphere", (_part(sphere, RED, center=(0, 0, 0), radius=0.5),)),
        WorldObject(
            "a blue cube",
            (_part(box, BLUE, center=(0, 0, 0), half_size=(0.38, 0.38, 0.38), rounding=0.03),),
        ),
        WorldObject(
            "a green torus",
            (_part(torus, GREEN, center=(0, 0, 0), major_radius=0.5, minor_radius=0.18),),
        ),
        WorldObject(
            "a yellow cone",
            (
                _part(
                    capped_cone,
                    YELLOW,
                    center=(0, 0, 0.05),
                    half_height=0.45,
                    radius_bottom=0.5,
                    radius_top=0.0,
                ),
            ),
        ),
        WorldObject(
            "a snowman",
            (
                _part(sphere, SNOW, "bottom", center=(0, 0, -0.45), radius=0.38),
                _part(sphere, SNOW, "middle", center=(0, 0, 0.06), radius=0.28),
                _part(sphere, SNOW, "head", center=(0, 0, 0.46), radius=0.2),
                _part(
                    capped_cone,
                    ORANGE,
                    "nose",
                    center=(0.29, 0, 0.45),
                    half_height=0.12,
                    radius_bottom=0.06,
                    radius_top=0.0,
                    axis="x",
                ),
                _part(sphere, DARK, "left eye", center=(0.165, 0.08, 0.53), radius=0.04),
                _part(sphere, DARK, "right eye", center=(0.165, -0.08, 0.53), radius=0.04),
                _part(sphere, DARK, "button", center=(0.275, 0, 0.1), radius=0.035),
                _part(sphere, DARK, "button", center=(0.27, 0, -0.02), radius=0.035),
            ),
            has_distinct_front_back=True,
        ),
        WorldObject(
            "a red mushroom",
            (
                _part(
                    half_space_cut,
                    RED,
                    "cap",
                    sdf=partial(ellipsoid, center=(0, 0, -0.05), radii=(0.6, 0.6, 0.45)),
                    normal=(0, 0, 1),
                    offset=-0.15,
                ),
                _part(
                    capped_cylinder,
                    CREAM,
                    "stem",
                    center=(0, 0, -0.4),
                    radius=0.17,
                    half_height=0.3,
                ),
                *(
                    # Centres on the cap surface, mirror symmetric in x and y.
                    _part(sphere, CREAM, "spot", center=c, radius=0.075)
                    for c in [
                        (0.0, 0.0, 0.4),
                        *((sx * 0.25, sy * 0.25, 0.316) for sx in (-1, 1) for sy in (-1, 1)),
                        (0.5, 0.0, 0.199),
                        (-0.5, 0.0, 0.199),
                        (0.0, 0.5, 0.199),
                        (0.0, -0.5, 0.199),
                    ]
                ),
            ),
        ),
        WorldObject(
            "a wooden table",
            (
                _part(
                    box, WOOD, "top", center=(0, 0, 0.2), half_size=(0.6, 0.4, 0.045), rounding=0.01
                ),
                *(
                    _part(
                        box,
                        DARK_WOOD,
                        "leg",
                        center=(sx * 0.52, sy * 0.32, -0.14),
                        half_size=(0.04, 0.04, 0.3),
                    )
                    for sx in (-1, 1)
                    for sy in (-1, 1)
                ),
            ),
        ),
        WorldObject(
            "a chair",
            (
                _part(
                    box,
                    TEAL,
                    "seat",
                    center=(0, 0, -0.05),
                    half_size=(0.3, 0.3, 0.045),
                    rounding=0.01,
                ),
                _part(
                    box,
                    TEAL,
                    "back rest",
                    center=(-0.27, 0, 0.32),
                    half_size=(0.035, 0.3, 0.32),
                    rounding=0.01,
                ),
                *(
                    _part(
                        box,
                        DARK_WOOD,
                        "leg",
                        center=(sx * 0.26, sy * 0.26, -0.38),
                        half_size=(0.035, 0.035, 0.3),
                    )
                    for sx in (-1, 1)
                    for sy in (-1, 1)
                ),
            ),
            has_distinct_front_back=True,
        ),
        WorldObject(
            "a desk lamp",
            (
                _part(
                    capped_cylinder,
                    CHARCOAL,
                    "base",
                    center=(-0.1, 0, -0.6),
                    radius=0.3,
                    half_height=0.045,
                ),
                _part(
                    capsule, METAL, "lower arm", a=(-0.2, 0, -0.55), b=(-0.05, 0, 0.3), radius=0.035
                ),
                _part(
                    capsule, METAL, "upper arm", a=(-0.05, 0, 0.3), b=(0.3, 0, 0.42), radius=0.035
                ),
                _part(
                    capped_cone,
                    GREEN,
                    "shade",
                    center=(0.33, 0, 0.3),
                    half_height=0.15,
                    radius_bottom=0.25,
                    radius_top=0.08,
                ),
                _part(sphere, YELLOW, "bulb", center=(0.33, 0, 0.13), radius=0.08),
            ),
            has_distinct_front_back=True,
        ),
        WorldObject(
            "a house with a red door",
            (
                _part(box, WALL, "walls", center=(0, 0, -0.2), half_size=(0.4, 0.45, 0.3)),
                _part(
                    triangular_prism,
                    ROOF,
                    "roof",
                    center=(0, 0, 0.1),
                    half_width=0.5,
                    height=0.35,
                    half_length=0.52,
                ),
                _part(box, RED, "door", center=(0.4, 0, -0.28), half_size=(0.025, 0.14, 0.22)),
                _part(box, WINDOW, "window", center=(0, 0.45, -0.15), half_size=(0.12, 0.02, 0.1)),
                _part(box, WINDOW, "window", center=(0, -0.45, -0.15), half_size=(0.12, 0.02, 0.1)),
            ),
            has_distinct_front_back=True,
        ),
        WorldObject(
            "a toy car",
            (
                _part(
                    box, YELLOW, "front body", center=(0.3, 0, -0.14), half_size=(0.3, 0.27, 0.12)
                ),
                _part(box, RED, "rear body", center=(-0.3, 0, -0.14), half_size=(0.3, 0.27, 0.12)),
                _part(
                    box,
                    WINDOW,
                    "cabin",
                    center=(-0.08, 0, 0.06),
                    half_size=(0.28, 0.23, 0.1),
                    rounding=0.04,
                ),
                *(
                    _part(
                        capped_cylinder,
                        DARK,
                        "wheel",
                        center=(sx * 0.36, sy * 0.27, -0.27),
                        radius=0.14,
                        half_height=0.05,
                        axis="y",
                    )
                    for sx in (-1, 1)
                    for sy in (-1, 1)
                ),
            ),
            has_distinct_front_back=True,
        ),
        WorldObject(
            "a mask face",
            (
                _part(
                    half_space_cut,
                    GOLD,
                    "face",
                    sdf=partial(ellipsoid, center=(0, 0, 0), radii=(0.4, 0.55, 0.75)),
                    normal=(1, 0, 0),
                ),
                _part(
                    half_space_cut,
                    PURPLE,
                    "back",
                    sdf=partial(ellipsoid, center=(0, 0, 0), radii=(0.4, 0.55, 0.75)),
                    normal=(-1, 0, 0),
                ),
                _part(
                    ellipsoid, DARK, "left eye", center=(0.35, 0.19, 0.18), radii=(0.06, 0.1, 0.06)
                ),
                _part(
                    ellipsoid,
                    DARK,
                    "right eye",
                    center=(0.35, -0.19, 0.18),
                    radii=(0.06, 0.1, 0.06),
                ),
                _part(ellipsoid, RED, "mouth", center=(0.36, 0, -0.3), radii=(0.05, 0.2, 0.06)),
                _part(
                    capped_cone,
                    GOLD,
                    "nose",
                    center=(0.43, 0, -0.02),
                    half_height=0.07,
                    radius_bottom=0.08,
                    radius_top=0.01,
                    axis="x",
                ),
            ),
            has_distinct_front_back=True,
        ),
    ]
    return {obj.prompt: obj for obj in objects}


OBJECTS: dict[str, WorldObject] = _build_library()


def known_prompts() -> list[str]:
    """The prompts of the object library, in definition order."""
    return list(OBJECTS)


def get_object(prompt: str) -> WorldObject:
    """The library object for ``prompt``; KeyError listing the known prompts otherwise."""
    try:
        return OBJECTS[prompt]
    except KeyError:
        raise KeyError(
            f"unknown object prompt {prompt!r}; known prompts: {known_prompts()}"
        ) from None
