"""Does a world CLIP rank assets like the exact metrics? The checks and the gate.

Ladder (held-out ring: elevation 20, 8 azimuths, which CLIP training never sees), per prompt,
mean unclamped score 100 cos over the ring of

    true        the object
    early       ``morph_object`` at t = 0.3, 0.55, 0.8 from the blob (mean)
    partial     every ``partial_objects`` variant (mean)
    blob        the worse case (max) of the ellipsoid ``BLOB_RADII`` (0.6, 0.6, 0.3) in the
                object's part colours (morph t = 0) and in its mean colour
    wrong_shape every other object's geometry in this object's colours (mean)
    grey        the voxel backbone's initial render;  blank: a white image
    margins     true - partial, partial - blob (the gate needs both > 0 for every prompt)

Rank correlation (``snapshot_correlations``): on the committed held-out snapshots of training
runs (evaluation/assets/world_clip/snapshots.npz, ``evaluation.clip_snapshots``), per prompt
the Spearman rho (scipy.stats.spearmanr) of the snapshot's mean score with its PSNR and with
its mask IoU across methods, runs and checkpoints (step 0 once per prompt).

Gate (``gate``): the CLIP is quality iff every ladder margin is > 0 and the median over the
prompts of both rhos is >= ``MIN_MEDIAN_RHO`` = 0.6 (and no prompt's rho is negative).
"""

from __future__ import annotations

import statistics

import torch

from evaluation.clip_data import held_out_cameras, voxel_init_blob
from evaluation.clip_negatives import (
    BLOB_RADII,
    blob_shape,
    mean_colour,
    morph_object,
    painted_as,
    partial_objects,
    solid_colour,
    white_object,
)
from world.objects import OBJECTS, known_prompts
from world.renderer import render_object

MIN_MEDIAN_RHO = 0.6
EARLY_T = (0.3, 0.55, 0.8)
LEVELS = ("true", "early", "partial", "blob", "wrong_shape", "grey", "blank")


@torch.no_grad()
def ladder_images(
    prompt: str, cameras=None, size: int = 32, levels: tuple[str, ...] = LEVELS
) -> dict[str, torch.Tensor]:
    """The ladder's images of ``prompt`` at the held-out ring: level -> [N, V, 3, S, S]
    (only ``levels`` are rendered)."""
    cameras = held_out_cameras() if cameras is None else cameras
    obj = OBJECTS[prompt]

    def rgb(o):
        return render_object(o, cameras, size, size)["rgb"]

    def mean_blob():
        sphere = render_object(white_object(blob_shape()), cameras, size, size)
        return solid_colour(sphere["rgb"], sphere["mask"], torch.tensor(mean_colour(obj)))

    others = [p for p in known_prompts() if p != prompt]
    make = {
        "true": lambda: rgb(obj)[None],
        "early": lambda: torch.stack([rgb(morph_object(prompt, t, BLOB_RADII)) for t in EARLY_T]),
        "partial": lambda: torch.stack([rgb(o) for o in partial_objects(prompt)]),
        "blob": lambda: torch.stack([rgb(morph_object(prompt, 0.0, BLOB_RADII)), mean_blob()]),
        "wrong_shape": lambda: torch.stack([rgb(painted_as(OBJECTS[p], obj)) for p in others]),
        "grey": lambda: voxel_init_blob(cameras, size)[None],
        "blank": lambda: torch.ones(1, len(cameras), 3, size, size),
    }
    return {level: make[level]() for level in levels}


@torch.no_grad()
def ladder_scores(scorer, images: dict[str, torch.Tensor], prompt: str) -> dict[str, float]:
    """Mean score per level (``blob``: the max over its variants) and the two margins."""
    out = {}
    for level, x in images.items():
        n, v = x.shape[:2]
        per_variant = scorer.score(x.flatten(0, 1), prompt).reshape(n, v).mean(1)
        out[level] = float(per_variant.max() if level == "blob" else per_variant.mean())
    if {"true", "partial", "blob"} <= set(out):
        out["margin_true_partial"] = out["true"] - out["partial"]
        out["margin_partial_blob"] = out["partial"] - out["blob"]
    return out


def ladder(scorer, prompts: list[str] | None = None, banks: dict | None = None) -> dict:
    """prompt -> ``ladder_scores`` (``banks``: precomputed ``ladder_images`` per prompt)."""
    prompts = known_prompts() if prompts is None else prompts
    return {p: ladder_scores(scorer, banks[p] if banks else ladder_images(p), p) for p in prompts}


@torch.no_grad()
def snapshot_scores(scorer, data: dict) -> torch.Tensor:
    """Mean score over the views of each snapshot with its own prompt: [N]."""
    images = data["images"]  # [N, V, 3, S, S] float in [0, 1]
    n, v = images.shape[:2]
    prompts = [data["prompts"][int(i)] for i in data["prompt_index"]]
    flat = [p for p in prompts for _ in range(v)]
    scores = torch.cat(
        [scorer.score(images.flatten(0, 1)[i : i + 512], flat[i : i + 512]) for i in
         range(0, n * v, 512)]
    )  # fmt: skip
    return scores.reshape(n, v).mean(1)


def snapshot_correlations(scorer, data: dict) -> dict:
    """Per prompt: n, Spearman rho of the score with PSNR and with mask IoU (all snapshots,
    and those after step 0), and the medians over prompts."""
    from scipy.stats import spearmanr

    scores = snapshot_scores(scorer, data).numpy()
    out: dict = {"per_prompt": {}}
    for k, prompt in enumerate(data["prompts"]):
        sel = (data["prompt_index"] == k).numpy()
        late = sel & (data["step"] > 0).numpy()
        row = {"n": int(sel.sum()), "n_after_step0": int(late.sum())}
        for metric in ("psnr", "mask_iou"):
            values = data[metric].numpy()
            row[f"rho_{metric}"] = float(spearmanr(scores[sel], values[sel]).statistic)
            rho_late = spearmanr(scores[late], values[late]).statistic
            row[f"rho_{metric}_after_step0"] = float(rho_late)
        out["per_prompt"][prompt] = row
    rows = out["per_prompt"].values()
    for key in ("rho_psnr", "rho_mask_iou", "rho_psnr_after_step0", "rho_mask_iou_after_step0"):
        out[f"median_{key}"] = statistics.median(r[key] for r in rows)
        out[f"min_{key}"] = min(r[key] for r in rows)
    return out


def gate(ladder_result: dict, correlations: dict | None) -> dict:
    """{'passed': bool, 'reasons': [...]} from the ladder and the correlations (module doc)."""
    reasons = []
    for prompt, row in ladder_result.items():
        for key in ("margin_true_partial", "margin_partial_blob"):
            if not row[key] > 0:
                reasons.append(f"{prompt}: {key} = {row[key]:.1f} <= 0")
    if correlations is None:
        reasons.append("no snapshot data for the rank correlation")
    else:
        for key in ("rho_psnr", "rho_mask_iou"):
            median = correlations[f"median_{key}"]
            if not median >= MIN_MEDIAN_RHO:
                reasons.append(f"median {key} = {median:.2f} < {MIN_MEDIAN_RHO}")
            if not correlations[f"min_{key}"] >= 0:
                reasons.append(f"min {key} = {correlations[f'min_{key}']:.2f} < 0")
    return {"passed": not reasons, "reasons": reasons, "min_median_rho": MIN_MEDIAN_RHO}


def run_checks(scorer, snapshots_path=None, banks: dict | None = None) -> dict:
    """Ladder, correlations (when the snapshot file exists) and the gate of ``scorer``
    (``banks``: precomputed ``ladder_images`` per prompt)."""
    from evaluation.clip_snapshots import SNAPSHOTS, load_snapshots

    path = SNAPSHOTS if snapshots_path is None else snapshots_path
    lad = ladder(scorer, banks=banks)
    corr = snapshot_correlations(scorer, load_snapshots(path)) if path.is_file() else None
    return {"ladder": lad, "correlations": corr, "gate": gate(lad, corr)}
