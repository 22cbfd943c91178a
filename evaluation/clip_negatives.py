"""Hard negatives of the world CLIP: shapes that are not (quite) the prompt's object.

For a library object A (world/objects.py) with SDF d_A and albedo a_A(p) (the closest part's):

    partial      A with named parts removed (``PARTIAL_PARTS``), or d = max(d_A, o - <p, n>)
                 (A cut by a plane, ``CutObject``: a truncated SDF); one fixed list per prompt
    morph(t)     d_t = (1 - t) d_blob + t d_A, albedo a_A at the point: at t = 0 a blob in A's
                 own part colours (the "colour-matched blob"), at t = 1 A itself. A lerp of
                 two 1-Lipschitz SDFs is 1-Lipschitz, so sphere tracing stays exact. The
                 shapes between are the kind of thing a method has at step 30.
    wrong shape  object B's geometry in A's part colours (B's part j gets A's albedo j mod n_A)
    colour blob  an ellipsoid in A's mean colour; ``solid_colour``: any render recoloured to
                 one colour (shading is linear in the albedo: x = c * S + (1 - mask) from
                 the render S of the object with every albedo 1); ``recolour_by_luminance``
                 approximates it from the true render (A in a wrong colour)
    view mix     the mean of renders of A from different cameras (a multi-face asset)
    blur         average pooling by 2 or 4 and bilinear upsampling (a low-resolution fit)

Every function is pure; randomness comes from an explicit torch.Generator.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
import torch.nn.functional as F

from world.objects import OBJECTS, Part, WorldObject, ellipsoid

#: prompt -> part-name sets removed to make its partial shapes (besides the plane cuts)
PARTIAL_PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "a snowman": (("head", "nose", "left eye", "right eye"), ("bottom",)),
    "a red mushroom": (("stem",), ("cap", "spot")),
    "a wooden table": (("leg",), ("top",)),
    "a chair": (("leg",), ("back rest",)),
    "a desk lamp": (("shade", "bulb"), ("base", "lower arm")),
    "a house with a red door": (("roof",), ("walls", "door", "window")),
    "a toy car": (("wheel", "cabin"), ("front body",)),
    "a mask face": (("face", "left eye", "right eye", "mouth", "nose"), ("back",)),
}
#: plane cuts (unit normal n, offset o: keep <p, n> >= o) applied to every object
PLANE_CUTS: tuple[tuple[tuple[float, float, float], float], ...] = (
    ((0.0, 0.0, 1.0), -0.1),  # the top part only
    ((0.0, 0.0, -1.0), -0.1),  # the bottom part only
    ((0.0, 1.0, 0.0), -0.05),  # one side
)


def without_parts(obj: WorldObject, names: tuple[str, ...]) -> WorldObject:
    """``obj`` without the parts named in ``names`` (at least one part is kept)."""
    kept = tuple(p for p in obj.parts if p.name not in names)
    return dataclasses.replace(obj, parts=kept or obj.parts[:1])


@dataclasses.dataclass(frozen=True)
class CutObject:
    """``target`` intersected with the half space <p, n> >= offset: d = max(d_A, o - <p, n>),
    A's albedo (duck-types WorldObject for ``world.renderer.render_object``)."""

    target: WorldObject
    normal: tuple[float, float, float]
    offset: float
    prompt: str = "cut"

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """[..., 3] -> [...]."""
        n = torch.tensor(self.normal, dtype=points.dtype, device=points.device)
        return torch.maximum(self.target.sdf(points), self.offset - (points * n).sum(-1))

    def sdf_and_albedo(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, albedo = self.target.sdf_and_albedo(points)
        return self.sdf(points), albedo


def plane_cut(obj: WorldObject, normal: tuple[float, float, float], offset: float) -> CutObject:
    """``obj`` cut by the plane: the part with <p, n> >= offset is kept."""
    return CutObject(obj, normal, offset)


def partial_objects(prompt: str) -> list[WorldObject]:
    """The partial shapes of ``prompt``'s object: part removals, then the plane cuts."""
    obj = OBJECTS[prompt]
    out = [without_parts(obj, names) for names in PARTIAL_PARTS.get(prompt, ())]
    return out + [plane_cut(obj, n, o) for n, o in PLANE_CUTS]


@dataclasses.dataclass(frozen=True)
class MorphObject:
    """SDF d = (1 - t) d_blob + t d_A with A's albedo at the point (duck-types WorldObject for
    ``world.renderer.render_object``)."""

    target: WorldObject
    radii: tuple[float, float, float]
    t: float
    prompt: str = "morph"

    def _blob(self, points: torch.Tensor) -> torch.Tensor:
        return ellipsoid(points, (0.0, 0.0, 0.0), self.radii)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """[..., 3] -> [...]."""
        return (1.0 - self.t) * self._blob(points) + self.t * self.target.sdf(points)

    def sdf_and_albedo(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance [...] and A's closest-part albedo [..., 3]."""
        _, albedo = self.target.sdf_and_albedo(points)
        return self.sdf(points), albedo


def morph_object(prompt: str, t: float, radii=(0.5, 0.5, 0.5)) -> MorphObject:
    """``MorphObject`` of the prompt's object at fraction ``t`` (0: blob, 1: the object)."""
    return MorphObject(OBJECTS[prompt], tuple(float(r) for r in radii), float(t))


def painted_as(geometry: WorldObject, colours_of: WorldObject) -> WorldObject:
    """``geometry``'s parts with ``colours_of``'s part albedos (part j gets albedo j mod n)."""
    albedos = [p.albedo for p in colours_of.parts]
    parts = tuple(
        dataclasses.replace(p, albedo=albedos[j % len(albedos)])
        for j, p in enumerate(geometry.parts)
    )
    return dataclasses.replace(geometry, parts=parts, prompt=colours_of.prompt)


def white_object(obj: WorldObject) -> WorldObject:
    """``obj`` with every albedo 1 (its render is the shading S of ``solid_colour``)."""
    return dataclasses.replace(
        obj, parts=tuple(dataclasses.replace(p, albedo=(1.0, 1.0, 1.0)) for p in obj.parts)
    )


def mean_colour(obj: WorldObject, n: int = 4096, seed: int = 0) -> tuple[float, float, float]:
    """Mean albedo of ``obj`` over points inside it (uniform in [-1, 1]^3, seeded)."""
    points = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0
    d, albedo = obj.sdf_and_albedo(points)
    inside = d < 0
    return tuple(float(v) for v in albedo[inside].mean(0)) if bool(inside.any()) else (0.5,) * 3


def recolour_by_luminance(
    rgb: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor
) -> torch.Tensor:
    """The object in one colour c with its shading kept approximately: x = c L / max L +
    (1 - mask), L the luminance of the object's pixels. rgb [B, 3, H, W], mask [B, 1, H, W],
    colour [B, 3]."""
    obj = rgb - (1.0 - mask)  # the object's contribution (white background)
    lum = obj.mean(1, keepdim=True)
    peak = lum.flatten(1).amax(-1).clamp_min(1e-3)[:, None, None, None]
    return (colour[:, :, None, None] * lum / peak * mask.clamp_max(1.0) + (1.0 - mask)).clamp(0, 1)


def solid_colour(white_rgb: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Recolour a render of an all-white object: x = c S + (1 - mask), S = white - (1 - mask)
    (white background). white_rgb [B, 3, H, W], mask [B, 1, H, W], colour [B, 3] or [3]."""
    shade = white_rgb - (1.0 - mask)
    c = colour.reshape(-1, 3, 1, 1) if colour.ndim == 2 else colour.reshape(1, 3, 1, 1)
    return (c * shade + (1.0 - mask)).clamp(0.0, 1.0)


def blur(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool by ``factor`` and upsample bilinearly: [B, 3, S, S] -> [B, 3, S, S]."""
    if factor <= 1:
        return images
    size = images.shape[-2:]
    small = F.avg_pool2d(images, factor)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def view_mix(images: torch.Tensor, generator: torch.Generator, k: int = 2) -> torch.Tensor:
    """Mean of each view with ``k - 1`` other random views of the same object: [V, 3, S, S]."""
    v = images.shape[0]
    out = images.clone()
    for _ in range(k - 1):
        other = (torch.arange(v) + torch.randint(1, v, (v,), generator=generator)) % v
        out = out + images[other]
    return out / k


#: the evaluation's blob: an oblate ellipsoid, the shape of no library object (a sphere of
#: radius 0.5, the first choice, is "a red sphere" itself)
BLOB_RADII = (0.6, 0.6, 0.3)


def blob_shape() -> WorldObject:
    """The evaluation's blob geometry: the ellipsoid ``BLOB_RADII`` (albedo 1)."""
    return WorldObject(
        "blob", (Part(partial(ellipsoid, center=(0, 0, 0), radii=BLOB_RADII), (1, 1, 1)),)
    )
