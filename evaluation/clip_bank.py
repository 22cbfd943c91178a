"""The world CLIP's training bank (renders of the objects and their hard negatives) and the
graded batches drawn from it (evaluation/train_world_clip.py).

Bank, for O objects, V shared training cameras and images [., 3, S, S] (white background):
    true [O, V], mask [O, V]       the object
    morph [O, V], morph_t [V]      ``morph_object`` at t = MORPH_T[v % 4] (random blob radii)
                                   (and morph_mask [O, V])
    partial [O, V]                 ``partial_objects`` variant v % n (a part removed, a cut)
                                   (and partial_mask [O, V])
    wrong [O, V], wrong_of [O, V]  object (o + 1 + v % (O - 1)) % O painted in o's colours
    blob_white [V], blob_mask [V]  random ellipsoids, albedo 1 (recoloured per object)
    grey [G]                       the voxel backbone's initial render (grey blob)

A batch holds images of each KIND and their grade matrix G [B, O]: how much of the prompt
o the image shows. For the image's own object o (KIND: grade), blur penalties p(2) = 0.12,
p(4) = 0.25:
    true 1 - p | morph t > 0: 0.35 + 0.4 t - p | partial 0.6 - p | view mix 0.45 |
    morph t = 0 (blob in o's part colours), blob in o's mean colour, o's shape in a wrong
    colour, another shape in o's colours: 0.25 | grey blob, other objects' images: 0.1 |
    null images (blank, constant colours, noise): 0
(the shape painted in o's colours also counts 0.25 for the object whose shape it is).
Graded images keep >= 0.3, above every blob. The training loss ranks the scores of every
caption like its column of G.

``exact_grades`` (script version 3) replaces these hand-set grades by the exact metrics: the
grade of image b for prompt o is 0.5 IoU(mask_b, mask_o) + 0.5 clamp((PSNR(x_b, x_o) - 8) /
20, 0, 1) against the true render x_o of o at b's camera, so the ranking the loss teaches is
the one the rank-correlation check asks for (a mushroom's bare stem, 8.7 dB, ranks below a
blob in its colours, 14.9 dB, as PSNR ranks them); null images keep grade 0.
"""

from __future__ import annotations

from functools import partial

import torch

from core.cameras import Cameras
from evaluation.clip_data import COLOURS, null_images, voxel_init_blob
from evaluation.clip_negatives import (
    blur,
    mean_colour,
    morph_object,
    painted_as,
    partial_objects,
    recolour_by_luminance,
    solid_colour,
)
from world.metrics import mask_iou, psnr
from world.objects import OBJECTS, Part, WorldObject, ellipsoid
from world.renderer import render_object

MORPH_T = (0.0, 0.3, 0.55, 0.8)
BLUR_PENALTY = {1: 0.0, 2: 0.12, 4: 0.25}
#: images per batch of each kind
KINDS = {
    "true": 28,
    "morph": 20,
    "partial": 14,
    "view_mix": 8,
    "mean_blob": 6,
    "wrong_colour": 6,
    "wrong_shape": 10,
    "grey": 4,
    "null": 8,
}
OTHER = 0.1
BLOB = 0.25


def _render(obj, cams: Cameras, size: int) -> dict[str, torch.Tensor]:
    return render_object(obj, cams, size, size)


def _grouped(make, groups: torch.Tensor, cams: Cameras, size: int, with_mask: bool = False):
    """Render ``make(g)`` at the cameras of each group g: rgb [V, 3, S, S] in camera order
    (and the mask [V, 1, S, S] with ``with_mask``)."""
    out = torch.empty(len(cams), 3, size, size)
    mask = torch.empty(len(cams), 1, size, size)
    for g in groups.unique().tolist():
        idx = (groups == g).nonzero().squeeze(-1)
        r = _render(make(g), cams[idx], size)
        out[idx], mask[idx] = r["rgb"], r["mask"]
    return (out, mask) if with_mask else out


def _ellipsoid(radii: tuple[float, float, float]) -> WorldObject:
    """A white ellipsoid at the origin."""
    return WorldObject("blob", (Part(partial(ellipsoid, center=(0, 0, 0), radii=radii), (1,) * 3),))


def build_bank(
    prompts: list[str], cams: Cameras, size: int, generator: torch.Generator, n_grey: int = 32
) -> dict:
    """The bank (module docstring) at the training cameras ``cams``."""
    v, o = len(cams), len(prompts)
    view = torch.arange(v)
    level = view % len(MORPH_T)
    radii = 0.35 + 0.25 * torch.rand(len(MORPH_T), 3, generator=generator)
    keys = ("true", "mask", "morph", "morph_mask", "partial", "partial_mask", "wrong")
    bank: dict[str, list] = {k: [] for k in keys}
    wrong_of = []
    for i, prompt in enumerate(prompts):
        obj = OBJECTS[prompt]
        true = _render(obj, cams, size)
        bank["true"].append(true["rgb"])
        bank["mask"].append(true["mask"])
        rgb, mask = _grouped(
            lambda g, p=prompt: morph_object(p, MORPH_T[g], radii[g]), level, cams, size, True
        )
        bank["morph"].append(rgb)
        bank["morph_mask"].append(mask)
        variants = partial_objects(prompt)
        rgb, mask = _grouped(lambda g, vs=variants: vs[g], view % len(variants), cams, size, True)
        bank["partial"].append(rgb)
        bank["partial_mask"].append(mask)
        other = (i + 1 + view % (o - 1)) % o
        bank["wrong"].append(
            _grouped(lambda g, a=obj: painted_as(OBJECTS[prompts[g]], a), other, cams, size)
        )
        wrong_of.append(other)
    out = {k: torch.stack(x) for k, x in bank.items()}
    out["wrong_of"] = torch.stack(wrong_of)
    out["morph_t"] = torch.tensor(MORPH_T)[level]
    blob_radii = 0.3 + 0.3 * torch.rand(8, 3, generator=generator)
    out["blob_white"], out["blob_mask"] = _grouped(
        lambda g: _ellipsoid(tuple(blob_radii[g].tolist())), view % 8, cams, size, True
    )
    out["grey"] = voxel_init_blob(cams[:n_grey], size)
    out["mean_colour"] = torch.tensor([mean_colour(OBJECTS[p]) for p in prompts])
    out["palette"] = [torch.tensor([q.albedo for q in OBJECTS[p].parts]) for p in prompts]
    return out


def wrong_colours(palette: torch.Tensor, candidates: torch.Tensor, min_distance: float = 0.35):
    """Rows of ``candidates`` [C, 3] farther than ``min_distance`` from every palette colour."""
    d = torch.cdist(candidates, palette).amin(-1)
    return candidates[d > min_distance]


def sample_batch(bank: dict, generator: torch.Generator, kinds: dict[str, int] = KINDS):
    """(images [B, 3, S, S], grades G [B, O], own object [B] (-1: none), is_true [B] bool,
    mask [B, 1, S, S] of each image's geometry (zeros for null images), camera [B] (index
    into the bank's views; -1 for null images))."""
    o, v = bank["true"].shape[:2]
    size = bank["true"].shape[-1]
    candidates = torch.tensor(list(COLOURS.values()))
    images, grades, owners, true_flags, masks, cameras = [], [], [], [], [], []

    def pick(n):
        return (
            torch.randint(0, o, (n,), generator=generator),
            torch.randint(0, v, (n,), generator=generator),
        )

    def blurs(n, probs=(0.6, 0.25, 0.15)):
        u = torch.rand(n, generator=generator)
        return torch.where(u < probs[0], 1, torch.where(u < probs[0] + probs[1], 2, 4))

    def add(x, own, g_own, mask, camera, extra=None, is_true=None):
        n = x.shape[0]
        g = torch.full((n, o), OTHER)
        if own is not None:
            g[torch.arange(n), own] = g_own
        if extra is not None:
            g[torch.arange(n), extra[0]] = torch.maximum(g[torch.arange(n), extra[0]], extra[1])
        images.append(x)
        grades.append(g)
        owners.append(own if own is not None else torch.full((n,), -1))
        true_flags.append(is_true if is_true is not None else torch.zeros(n, dtype=torch.bool))
        masks.append(mask)
        cameras.append(camera)

    def blurred(x, f):
        out = x.clone()
        for k in (2, 4):
            sel = f == k
            if bool(sel.any()):
                out[sel] = blur(x[sel], k)
        return out

    pen = torch.tensor([0.0, BLUR_PENALTY[1], BLUR_PENALTY[2], 0.0, BLUR_PENALTY[4]])
    n = kinds["true"]
    obj, view = pick(n)
    f = blurs(n)
    add(blurred(bank["true"][obj, view], f), obj, 1.0 - pen[f], bank["mask"][obj, view],
        view, is_true=f <= 2)  # fmt: skip
    n = kinds["morph"]
    obj, view = pick(n)
    f = blurs(n)
    t = bank["morph_t"][view]
    g = torch.where(t > 0, (0.35 + 0.4 * t - pen[f]).clamp_min(0.3), torch.tensor(BLOB))
    add(blurred(bank["morph"][obj, view], f), obj, g, bank["morph_mask"][obj, view], view)
    n = kinds["partial"]
    obj, view = pick(n)
    f = blurs(n)
    add(blurred(bank["partial"][obj, view], f), obj, (0.6 - pen[f]).clamp_min(0.3),
        bank["partial_mask"][obj, view], view)  # fmt: skip
    n = kinds["view_mix"]
    obj, view = pick(n)
    other = (view + torch.randint(1, v, (n,), generator=generator)) % v
    mixed = 0.5 * (bank["true"][obj, view] + bank["true"][obj, other])
    union = torch.maximum(bank["mask"][obj, view], bank["mask"][obj, other])
    add(mixed, obj, torch.full((n,), 0.45), union, view)
    n = kinds["mean_blob"]
    obj, view = pick(n)
    x = solid_colour(bank["blob_white"][view], bank["blob_mask"][view], bank["mean_colour"][obj])
    add(blurred(x, blurs(n)), obj, torch.full((n,), BLOB), bank["blob_mask"][view], view)
    n = kinds["wrong_colour"]
    obj, view = pick(n)
    cols = []
    for i in obj.tolist():
        allowed = wrong_colours(bank["palette"][i], candidates)
        cols.append(allowed[int(torch.randint(0, len(allowed), (1,), generator=generator))])
    x = recolour_by_luminance(bank["true"][obj, view], bank["mask"][obj, view], torch.stack(cols))
    add(x, obj, torch.full((n,), BLOB), bank["mask"][obj, view], view)
    n = kinds["wrong_shape"]
    obj, view = pick(n)
    shape_of = bank["wrong_of"][obj, view]
    add(blurred(bank["wrong"][obj, view], blurs(n)), obj, torch.full((n,), BLOB),
        bank["mask"][shape_of, view], view, extra=(shape_of, torch.full((n,), BLOB)))  # fmt: skip
    n = kinds["grey"]
    gi = torch.randint(0, bank["grey"].shape[0], (n,), generator=generator)
    grey = bank["grey"][gi]
    add(grey, None, None, (grey < 0.97).any(1, keepdim=True).float(), gi)
    n = kinds["null"]
    x = null_images(n, size, generator)
    images.append(x)
    grades.append(torch.zeros(n, o))
    owners.append(torch.full((n,), -1))
    true_flags.append(torch.zeros(n, dtype=torch.bool))
    masks.append(torch.zeros(n, 1, size, size))
    cameras.append(torch.full((n,), -1))
    return (
        torch.cat(images),
        torch.cat(grades),
        torch.cat(owners),
        torch.cat(true_flags),
        torch.cat(masks),
        torch.cat(cameras),
    )


#: exact grades: weight of mask IoU (the rest is PSNR), and the PSNR range mapped to [0, 1]
IOU_WEIGHT = 0.5
PSNR_RANGE = (8.0, 28.0)


def exact_grades(
    images: torch.Tensor, masks: torch.Tensor, cameras: torch.Tensor, bank: dict
) -> torch.Tensor:
    """Grades G [B, O] from the exact metrics against each object's true render at the
    image's camera: IOU_WEIGHT IoU + (1 - IOU_WEIGHT) clamp((PSNR - lo) / (hi - lo), 0, 1)
    (world.metrics' psnr and mask_iou: masks at 0.5, PSNR of the MSE over the image); 0 for
    images without a camera (null).
    images [B, 3, S, S], masks [B, 1, S, S], cameras [B] (-1: none).

    >>> bank = {"true": torch.ones(2, 1, 3, 4, 4), "mask": torch.zeros(2, 1, 1, 4, 4)}
    >>> bank["true"][1, 0, :, :2] = 0.0; bank["mask"][1, 0, :, :2] = 1.0
    >>> g = exact_grades(bank["true"][:, 0], bank["mask"][:, 0], torch.tensor([0, 0]), bank)
    >>> g.diagonal().tolist()  # each object's own render: IoU 1 (0/0 counts 1), PSNR inf
    [1.0, 1.0]
    """
    b, o = images.shape[0], bank["true"].shape[0]
    out = torch.zeros(b, o)
    sel = cameras >= 0
    if not bool(sel.any()):
        return out
    view = cameras[sel]
    true, true_mask = bank["true"][:, view], bank["mask"][:, view]  # [O, b, ...]
    mine, mine_mask = images[sel][None].expand_as(true), masks[sel][None].expand_as(true_mask)
    db = psnr(mine.flatten(0, 1), true.flatten(0, 1)).view(o, -1)
    iou = mask_iou(mine_mask.flatten(0, 1), true_mask.flatten(0, 1)).view(o, -1)
    lo, hi = PSNR_RANGE
    grade = IOU_WEIGHT * iou + (1 - IOU_WEIGHT) * ((db - lo) / (hi - lo)).clamp(0.0, 1.0)
    out[sel] = grade.T
    return out


def mild_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness x U(0.95, 1.05), Gaussian noise sigma U(0, 0.03) (p 0.3), a shift of up to
    1 px: quality-preserving jitter. [B, 3, S, S] -> [B, 3, S, S]."""
    b = x.shape[0]
    u = torch.rand(b, 3, generator=generator)
    x = x * (0.95 + 0.1 * u[:, 0, None, None, None])
    sigma = torch.where(u[:, 1] < 0.3, 0.03 * u[:, 2], 0.0)[:, None, None, None]
    x = x + sigma * torch.randn(x.shape, generator=generator)
    shifts = torch.randint(-1, 2, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=shifts, dims=(2, 3)).clamp(0.0, 1.0)


def graded_hinge(sims: torch.Tensor, grades: torch.Tensor, scale: float, min_gap: float = 0.04):
    """Mean over captions k of the mean over pairs (a, b) with G_ak - G_bk >= min_gap of
    relu(scale (G_ak - G_bk) - (s_ak - s_bk)): scores ordered like the grades, with margins
    proportional to the grade gaps. sims, grades: [B, K]."""
    gap = grades[:, None, :] - grades[None, :, :]  # [B, B, K]
    diff = sims[:, None, :] - sims[None, :, :]
    pairs = (gap >= min_gap).float()
    hinge = torch.relu(scale * gap - diff) * pairs
    per_caption = hinge.sum(dim=(0, 1)) / pairs.sum(dim=(0, 1)).clamp_min(1.0)
    return per_caption.mean()
