"""Train the world's small CLIP on renders of the world's objects (reproducible, CPU, minutes).

    python -m evaluation.train_world_clip --out evaluation/assets/world_clip [--steps N --seed S]

Data. Every library object (world/objects.py) is rendered from ``--views`` random cameras
(elevation in [-15, 65] deg minus the band |e - 20| < 6 that holds the held-out evaluation
ring and the Janus grid of evaluation/heldout.py; azimuth uniform; distance 2.2..2.9;
fovy 35..45), together with recoloured copies of its main parts in ``COLOURS`` (hard
negatives: "a blue sphere", "a red snowman", "a green house with a red door", ...). Shading is
linear in the albedo, so a recoloured render is exact from two renders: with the parts black
(x_0) and white (x_1), ``x(c) = x_0 + c (x_1 - x_0)``. Grey ellipsoid "blobs" and null images
(blank, constant colours, noise) are rendered / drawn too.

Augmentation (per image, from the training generator): background replaced by a random
colour (using the mask), brightness jitter, blur (down- and up-sampling), Gaussian noise,
shifts of up to 2 pixels. Captions: the prompt in one of ``TEMPLATES`` (paraphrases).

Loss, with cosines s_bk = <f_img(x_b), f_txt(y_k)> over every caption class k and a learned
temperature (logit scale l):
    L = CE(l s_b., y_b)                    object images (image->text InfoNCE over all classes)
      + 0.5 * CE(l s_b., uniform)          blobs and null images: no evidence for any prompt
      + 2.0 * ladder hinge                 per caption k, mean over image pairs of
            relu(m - (s_ak - s_bk)), (a, b) in (true, recoloured same shape), (recoloured,
            blob), (blob, null); m = 0.1
so that the score orders true > wrong colour > blob > blank. Everything random comes from
torch.Generators seeded by ``--seed`` (the model init runs under ``torch.random.fork_rng``).
Outputs in ``--out``: world_clip.json (open_clip config), model.safetensors (fp16),
provenance.json (config, seed, data, commit, timing, final held-out metrics).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.cameras import Cameras
from evaluation.clip_data import (  # noqa: F401 - the data API, re-exported
    COLOURS,
    HELD_OUT_BAND,
    HELD_OUT_ELEVATION,
    RECOLOUR,
    TEMPLATES,
    augment,
    blob_objects,
    held_out_cameras,
    ladder_hinge,
    null_images,
    recoloured_object,
    render_bank,
    training_cameras,
    variant_caption,
    variant_colours,
    with_albedo,
)
from world.objects import OBJECTS, known_prompts
from world.renderer import render_object

SCRIPT_VERSION = "1"

MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _git_commit() -> str | None:
    from results.provenance import git_commit

    return git_commit()


def voxel_init_blob(cameras: Cameras, size: int) -> torch.Tensor:
    """The voxel backbone's initial render (grey blob) at ``cameras``: [N, 3, S, S]."""
    from backbones.voxel import VoxelConfig, VoxelGrid

    with torch.no_grad():
        return VoxelGrid(VoxelConfig()).render(cameras, size, size)["rgb"].clamp(0, 1)


@torch.no_grad()
def evaluate(scorer, size: int = 32, n_noise: int = 240, seed: int = 1234) -> dict:
    """Held-out metrics of a ClipScorer: R-precision of the true renders at the held-out ring
    among the 12 prompts; on null images (blank, colours, noise) the R-precision, the largest
    share of one prompt among the argmaxes and the mean largest softmax probability (at the
    model's temperature; uniform = 1/12); and the ladder (mean unclamped CLIP score over the
    ring) true > wrong colour > voxel init blob > blank."""
    prompts = known_prompts()
    cams = held_out_cameras()
    n = len(cams)
    hits, ladder = [], {}
    blob = voxel_init_blob(cams, size)
    blank = torch.ones(n, 3, size, size)
    for i, prompt in enumerate(prompts):
        bank = render_bank(OBJECTS[prompt], prompt, cams, size)
        true = bank["rgb"]
        hits.append(scorer.similarities(true, prompts).argmax(-1) == i)
        wrong = torch.stack(
            [
                scorer.score(
                    bank["base"] + torch.tensor(COLOURS[c])[:, None, None] * bank["shade"], prompt
                ).mean()
                for c in variant_colours(prompt)
            ]
        )
        ladder[prompt] = {
            "true": float(scorer.score(true, prompt).mean()),
            "wrong_colour": float(wrong.mean()),
            "wrong_colour_max": float(wrong.max()),
            "blob": float(scorer.score(blob, prompt).mean()),
            "blank": float(scorer.score(blank, prompt).mean()),
        }
    generator = torch.Generator().manual_seed(seed)
    noise = null_images(n_noise, size, generator)
    arg = scorer.similarities(noise, prompts).argmax(-1)
    share = torch.bincount(arg, minlength=len(prompts)).float() / n_noise
    logits = scorer.model.logit_scale.exp() * scorer.similarities(noise, prompts)
    true_index = torch.arange(n_noise) % len(prompts)
    monotone = [v["true"] > v["wrong_colour"] > v["blob"] > v["blank"] for v in ladder.values()]
    return {
        "held_out_r_precision": float(torch.cat(hits).float().mean()),
        "noise_r_precision": float((arg == true_index).float().mean()),
        "noise_argmax_max_share": float(share.max()),
        "noise_mean_max_softmax": float(logits.softmax(-1).amax(-1).mean()),
        "ladder_monotone_fraction": sum(monotone) / len(monotone),
        "ladder": ladder,
    }


def train(out: Path, steps: int, seed: int, views: int, batch: int, lr: float) -> dict:
    """Train, save world_clip.json / model.safetensors / provenance.json; returns provenance."""
    import open_clip
    from safetensors.torch import save_file

    from evaluation.clip import ClipScorer

    started = time.perf_counter()
    size = MODEL_CONFIG["vision_cfg"]["image_size"]
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "world_clip.json"
    config_path.write_text(json.dumps(MODEL_CONFIG, indent=2) + "\n", encoding="utf-8")
    open_clip.add_model_config(config_path)
    tokenizer = open_clip.get_tokenizer("world_clip")

    gen = torch.Generator().manual_seed(seed)
    prompts = known_prompts()
    # Classes: every prompt, then its recoloured variants.
    captions: list[str] = []
    owner: list[int] = []  # object index of each class
    colour_of: list[tuple[float, float, float] | None] = []
    for i, prompt in enumerate(prompts):
        captions.append(prompt)
        owner.append(i)
        colour_of.append(None)
    for i, prompt in enumerate(prompts):
        for c in variant_colours(prompt):
            captions.append(variant_caption(prompt, c))
            owner.append(i)
            colour_of.append(COLOURS[c])
    n_classes = len(captions)
    owner_t = torch.tensor(owner)

    cams = training_cameras(views, gen)
    banks = [render_bank(OBJECTS[p], p, cams, size) for p in prompts]
    rgb = torch.stack([b["rgb"] for b in banks])  # [O, V, 3, S, S]
    mask = torch.stack([b["mask"] for b in banks])
    base = torch.stack([b["base"] for b in banks])
    shade = torch.stack([b["shade"] for b in banks])
    blob_views = 16
    blob_imgs, blob_masks = [], []
    for blob in blob_objects(views // blob_views * 2, gen):
        r = render_object(blob, training_cameras(blob_views, gen), size, size)
        blob_imgs.append(r["rgb"])
        blob_masks.append(r["mask"])
    blob_rgb, blob_mask = torch.cat(blob_imgs), torch.cat(blob_masks)
    colours = torch.tensor([c if c is not None else (0.0, 0.0, 0.0) for c in colour_of])
    render_seconds = time.perf_counter() - started

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("world_clip", pretrained=None, load_weights=False)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, steps // 20)
    n_blob = n_null = batch // 8
    n_obj = batch - n_blob - n_null
    bare = [c.removeprefix("a ").removeprefix("an ") for c in captions]
    margin = 0.1
    log = []
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        # Object images: class uniform over objects, canonical colour with p 0.4.
        obj = torch.randint(0, len(prompts), (n_obj,), generator=gen)
        view = torch.randint(0, views, (n_obj,), generator=gen)
        n_var = torch.tensor([len(variant_colours(p)) for p in prompts])[obj]
        offsets = torch.tensor([0, *[len(variant_colours(p)) for p in prompts]]).cumsum(0)
        pick = (torch.rand(n_obj, generator=gen) * n_var).long()
        canonical = torch.rand(n_obj, generator=gen) < 0.4
        cls = torch.where(canonical, obj, len(prompts) + offsets[obj] + pick)
        col = colours[cls][:, :, None, None]
        imgs = torch.where(
            canonical[:, None, None, None],
            rgb[obj, view],
            base[obj, view] + col * shade[obj, view],
        )
        x_obj = augment(imgs, mask[obj, view], gen)
        bi = torch.randint(0, blob_rgb.shape[0], (n_blob,), generator=gen)
        x_blob = augment(blob_rgb[bi], blob_mask[bi], gen)
        x_null = null_images(n_null, size, gen)
        x = torch.cat([x_obj, x_blob, x_null])
        template = torch.randint(0, len(TEMPLATES), (n_classes,), generator=gen).tolist()
        texts = [
            TEMPLATES[t].format(p=c, bare=b)
            for t, c, b in zip(template, captions, bare, strict=True)
        ]
        mean = torch.tensor((0.48145466, 0.4578275, 0.40821073))[None, :, None, None]
        std = torch.tensor((0.26862954, 0.26130258, 0.27577711))[None, :, None, None]
        img = F.normalize(model.encode_image((x - mean) / std), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        sims = img @ txt.T  # [B, K]
        logits = model.logit_scale.exp().clamp(max=100.0) * sims
        ce = F.cross_entropy(logits[:n_obj], cls)
        uniform = -F.log_softmax(logits[n_obj:], dim=-1).mean()
        # Ladder levels per caption k: 0 true class, 1 same object other colour, 2 blob, 3 null.
        is_cls = F.one_hot(cls, n_classes).bool()
        same_obj = (owner_t[cls][:, None] == owner_t[None, :]) & ~is_cls
        pad = torch.zeros(n_blob + n_null, n_classes, dtype=torch.bool)
        level0 = torch.cat([is_cls, pad])
        level1 = torch.cat([same_obj, pad])
        level2 = torch.zeros_like(level0)
        level2[n_obj : n_obj + n_blob] = True
        level3 = torch.zeros_like(level0)
        level3[n_obj + n_blob :] = True
        ladder = (
            ladder_hinge(sims, level0, level1, margin)
            + ladder_hinge(sims, level1, level2, margin)
            + ladder_hinge(sims, level2, level3, margin)
        )
        loss = ce + 0.5 * uniform + 2.0 * ladder
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            acc = float((logits[:n_obj].argmax(-1) == cls).float().mean())
            row = {
                "step": step,
                "loss": round(float(loss.detach()), 4),
                "ce": round(float(ce.detach()), 4),
                "ladder": round(float(ladder.detach()), 4),
                "train_acc": round(acc, 3),
                "seconds": round(time.perf_counter() - started, 1),
            }
            log.append(row)
            print(json.dumps(row), flush=True)
    train_seconds = time.perf_counter() - started

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    weights_path = out / "model.safetensors"
    save_file(state, str(weights_path))
    # Final metrics with the shipped (fp16-stored) weights, loaded as the scorer loads them.
    from evaluation.clip import build_open_clip

    shipped, shipped_tokenizer = build_open_clip(str(config_path), weights_path)
    metrics = evaluate(ClipScorer(shipped, shipped_tokenizer))
    provenance = {
        "model": "world_clip (open_clip CLIP, custom tiny ViT + text transformer)",
        "model_config": MODEL_CONFIG,
        "parameters": sum(v.numel() for v in state.values()),
        "weights_dtype": "float16",
        "prompts": prompts,
        "captions": captions,
        "templates": list(TEMPLATES),
        "colours": COLOURS,
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "views_per_object": views,
        "data": (
            f"{len(prompts)} world objects x {views} random cameras at {size}x{size} "
            "(elevation [-15, 65] minus |e - 20| < 6, azimuth uniform, distance 2.2..2.9, "
            "fovy 35..45), recoloured variants of the main parts in the listed colours, grey "
            "ellipsoid blobs, null images (blank, constant colour, noise); augmented "
            "(background colour, brightness, blur, noise, shifts)"
        ),
        "held_out": "the evaluation ring: elevation 20, 8 azimuths from 7.5 deg, distance 2.5",
        "loss": "image->text InfoNCE over all captions + 0.5 uniform-target CE on blobs/null "
        "+ 2.0 ladder hinge (margin 0.1): true > wrong colour > blob > null",
        "script": "evaluation/train_world_clip.py",
        "script_version": SCRIPT_VERSION,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "threads": torch.get_num_threads(),
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "log": log,
        "metrics": metrics,
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return provenance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=96, help="training views per object")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    provenance = train(Path(args.out), args.steps, args.seed, args.views, args.batch, args.lr)
    metrics = {k: v for k, v in provenance["metrics"].items() if k != "ladder"}
    print(json.dumps({"train_seconds": provenance["train_seconds"], **metrics}))


if __name__ == "__main__":
    main()
