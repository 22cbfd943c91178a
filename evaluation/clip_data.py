"""Training data of the world CLIP: colour variants of the objects, blobs, null images,
training / held-out cameras, augmentation and the ranking hinge (``train_world_clip``)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from core.cameras import Cameras, look_at_origin, orbit_cameras
from world.objects import OBJECTS, Part, WorldObject, ellipsoid
from world.renderer import render_object

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "blue": (0.15, 0.30, 0.85),
    "green": (0.15, 0.70, 0.25),
    "yellow": (0.95, 0.82, 0.10),
    "orange": (1.00, 0.50, 0.10),
    "purple": (0.40, 0.20, 0.55),
    "pink": (0.95, 0.50, 0.70),
    "white": (0.90, 0.90, 0.90),
    "black": (0.08, 0.08, 0.08),
    "brown": (0.55, 0.35, 0.17),
}

#: prompt -> (names of the recoloured parts (None: all), caption template, colours too close to
#: the original to be a negative)
RECOLOUR: dict[str, tuple[tuple[str, ...] | None, str, tuple[str, ...]]] = {
    "a red sphere": (None, "a {} sphere", ("red",)),
    "a blue cube": (None, "a {} cube", ("blue",)),
    "a green torus": (None, "a {} torus", ("green",)),
    "a yellow cone": (None, "a {} cone", ("yellow",)),
    "a snowman": (("bottom", "middle", "head"), "a {} snowman", ("white",)),
    "a red mushroom": (("cap",), "a {} mushroom", ("red",)),
    "a wooden table": (("top", "leg"), "a {} table", ("brown",)),
    "a chair": (("seat", "back rest"), "a {} chair", ()),
    "a desk lamp": (("base", "shade"), "a {} desk lamp", ("black",)),
    "a house with a red door": (("walls", "roof"), "a {} house with a red door", ("brown",)),
    "a toy car": (("front body", "rear body"), "a {} toy car", ()),
    "a mask face": (("face", "back"), "a {} mask face", ("yellow", "orange")),
}

TEMPLATES = (
    "{p}",
    "a photo of {p}",
    "a render of {p}",
    "a 3d model of {p}",
    "an image of {p}",
    "{p}, rendered",
    "{bare}",
)

HELD_OUT_ELEVATION = 20.0
HELD_OUT_BAND = 6.0


def variant_colours(prompt: str) -> list[str]:
    """Colour names of the recoloured (wrong-colour) variants of ``prompt``."""
    return [c for c in COLOURS if c not in RECOLOUR[prompt][2]]


def variant_caption(prompt: str, colour: str) -> str:
    return RECOLOUR[prompt][1].format(colour)


def with_albedo(
    obj: WorldObject, albedo: tuple[float, float, float], parts: tuple[str, ...] | None
) -> WorldObject:
    """Copy of ``obj`` with the named parts (None: all) given ``albedo``."""
    return dataclasses.replace(
        obj,
        parts=tuple(
            dataclasses.replace(p, albedo=albedo) if parts is None or p.name in parts else p
            for p in obj.parts
        ),
    )


def recoloured_object(prompt: str, colour: str) -> WorldObject:
    """The library object of ``prompt`` with its main parts in ``COLOURS[colour]``."""
    return with_albedo(OBJECTS[prompt], COLOURS[colour], RECOLOUR[prompt][0])


def voxel_init_blob(cameras: Cameras, size: int) -> torch.Tensor:
    """The voxel backbone's initial render (grey blob) at ``cameras``: [N, 3, S, S]."""
    from backbones.voxel import VoxelConfig, VoxelGrid

    with torch.no_grad():
        return VoxelGrid(VoxelConfig()).render(cameras, size, size)["rgb"].clamp(0, 1)


def training_cameras(n: int, generator: torch.Generator) -> Cameras:
    """n cameras, elevation uniform on [-15, 65] minus |e - 20| < 6 (the held-out band)."""
    u = torch.rand(4, n, generator=generator)
    width = 80.0 - 2.0 * HELD_OUT_BAND
    e = -15.0 + u[0] * width
    e = torch.where(e >= HELD_OUT_ELEVATION - HELD_OUT_BAND, e + 2.0 * HELD_OUT_BAND, e)
    return look_at_origin(e, -180.0 + 360.0 * u[1], 2.2 + 0.7 * u[2], 35.0 + 10.0 * u[3])


def held_out_cameras(n_azimuth: int = 8, azimuth_offset: float = 7.5) -> Cameras:
    """The evaluator's default held-out ring (elevation 20, distance 2.5, fovy 40)."""
    return orbit_cameras(n_azimuth, (HELD_OUT_ELEVATION,), 2.5, 40.0, azimuth_offset)


def render_bank(obj: WorldObject, prompt: str, cameras: Cameras, size: int) -> dict:
    """rgb [N, 3, S, S] of the object, mask [N, 1, S, S], and the recolour decomposition
    base (main parts black) and shade (white minus black), so x(c) = base + c shade."""
    parts = RECOLOUR[prompt][0]
    true = render_object(obj, cameras, size, size)
    black = render_object(with_albedo(obj, (0.0, 0.0, 0.0), parts), cameras, size, size)["rgb"]
    white = render_object(with_albedo(obj, (1.0, 1.0, 1.0), parts), cameras, size, size)["rgb"]
    return {"rgb": true["rgb"], "mask": true["mask"], "base": black, "shade": white - black}


def blob_objects(n: int, generator: torch.Generator) -> list[WorldObject]:
    """Grey ellipsoids (radii 0.3..0.6, grey 0.35..0.75 with a +-0.04 tint)."""
    u = torch.rand(n, 7, generator=generator)
    blobs = []
    for row in u.tolist():
        radii = tuple(0.3 + 0.3 * r for r in row[:3])
        grey = 0.35 + 0.4 * row[3]
        albedo = tuple(min(1.0, max(0.0, grey + 0.08 * (t - 0.5))) for t in row[4:7])
        blobs.append(
            WorldObject("blob", (Part(lambda p, r=radii: ellipsoid(p, (0, 0, 0), r), albedo),))
        )
    return blobs


def null_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Blank white, constant colours, uniform noise and noisy greys: [n, 3, S, S] in [0, 1]."""
    kind = torch.randint(0, 4, (n, 1, 1, 1), generator=generator)
    const = torch.rand(n, 3, 1, 1, generator=generator).expand(n, 3, size, size)
    noise = torch.rand(n, 3, size, size, generator=generator)
    grey = torch.rand(n, 1, 1, 1, generator=generator)
    gauss = (grey + 0.2 * torch.randn(n, 3, size, size, generator=generator)).clamp(0, 1)
    white = torch.ones(n, 3, size, size)
    out = torch.where(kind == 0, white, torch.where(kind == 1, const, noise))
    return torch.where(kind == 3, gauss, out)


def augment(rgb: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Background colour (p 0.5), brightness x U(0.85, 1.15), blur (p 0.3), Gaussian noise
    sigma U(0, 0.08) (p 0.5), shifts of up to 2 px. [B, 3, S, S] -> [B, 3, S, S]."""
    b, _, s, _ = rgb.shape
    u = torch.rand(b, 8, generator=generator)
    bg = 1.0 - u[:, 1:2, None, None] * 0.7 * torch.rand(b, 3, 1, 1, generator=generator)
    use_bg = (u[:, 0] < 0.5)[:, None, None, None]
    x = torch.where(use_bg, rgb - (1.0 - mask) * (1.0 - bg), rgb)
    x = x * (0.85 + 0.3 * u[:, 2, None, None, None])
    factor = torch.where(u[:, 3] < 0.15, 4, torch.where(u[:, 3] < 0.3, 2, 1))
    for f in (2, 4):
        sel = factor == f
        if bool(sel.any()):
            small = F.avg_pool2d(x[sel], f)
            x[sel] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    sigma = torch.where(u[:, 4] < 0.5, 0.08 * u[:, 5], 0.0)[:, None, None, None]
    x = x + sigma * torch.randn(x.shape, generator=generator)
    shifts = torch.randint(-2, 3, (2,), generator=generator).tolist()
    x = torch.roll(x, shifts=shifts, dims=(2, 3))
    return x.clamp(0.0, 1.0)


def ladder_hinge(
    sims: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor, margin: float
) -> torch.Tensor:
    """Mean over captions k and image pairs (a in upper_k, b in lower_k) of
    relu(margin - (s_ak - s_bk)). sims [B, K]; upper, lower: [B, K] bool masks."""
    diff = sims[:, None, :] - sims[None, :, :]  # [B, B, K]: s_ak - s_bk
    pairs = (upper[:, None, :] & lower[None, :, :]).float()
    hinge = F.relu(margin - diff) * pairs
    count = pairs.sum(dim=(0, 1))
    per_caption = hinge.sum(dim=(0, 1)) / count.clamp_min(1.0)
    return per_caption[count > 0].mean() if bool((count > 0).any()) else sims.sum() * 0.0
