"""Train the world's small CLIP on renders of the world's objects and their hard negatives
(reproducible from a seed, CPU, about 20 minutes on 2 threads).

    python -m evaluation.train_world_clip --out evaluation/assets/world_clip [--steps N --seed S]

Data (evaluation/clip_bank.py, evaluation/clip_negatives.py). Every library object
(world/objects.py) is rendered from ``--views`` random cameras (elevation in [-15, 65] deg
minus the band |e - 20| < 6 that holds the held-out evaluation ring and the Janus grid of
evaluation/heldout.py; azimuth uniform; distance 2.2..2.9; fovy 35..45), with its hard
negatives at the same cameras: partial shapes (parts removed, plane cuts), SDF morphs from a
blob in the object's own part colours (t = 0) to the object (the kind of shape a method has
early in training), other objects' geometry in its colours, its shape in a wrong colour,
blobs in its mean colour, view mixes and blurred copies (a low-resolution fit); the voxel
init's grey blob and null images (blank, constant colours, noise).

Loss, with cosines s_bk = <f_img(x_b), f_txt(y_k)> over the 12 prompts (caption k in one of
``TEMPLATES``) and a learned temperature (logit scale l <= 100):
    L = CE(l s_b., y_b)                          true renders (blur <= 2): InfoNCE image->text
      + 0.5 CE(l s_b., uniform)                  grey blobs and null images: no evidence
      + RANK * graded hinge                      per caption k, pairs (a, b) with
            G_ak - G_bk >= 0.04: relu(MARGIN (G_ak - G_bk) - (s_ak - s_bk))
where G [B, 12] is the grade of each image for each prompt (evaluation/clip_bank.py: true 1,
early 0.35 + 0.4 t, partial 0.6, view mix 0.45, blobs / wrong shape / wrong colour 0.25,
grey blob and other objects 0.1, null 0; blur lowers a grade), so that the score orders
true > partial / early > blob > null and follows the amount of the object an image shows.
Script version 3 adds ``--grades exact | own`` (grades from the exact metrics,
``clip_bank.exact_grades``), ``--trajectories FILE`` (renders of real run checkpoints at
training cameras, ``python -m benchmark.clip_trajectories``) and ``--init DIR`` (fine-tune);
docs/world_clip.md has what each did. Everything random comes from torch.Generators seeded by
``--seed`` (the model init runs under
``torch.random.fork_rng``). Outputs in ``--out``: world_clip.json (open_clip config),
model.safetensors (fp16), provenance.json (config, seed, data, commit, timing, and the checks
of evaluation/clip_checks.py: the ladder on the held-out ring, the rank correlation with
PSNR and mask IoU on the committed snapshots, the gate).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.errors import UserError, printable_line
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
    voxel_init_blob,
    with_albedo,
)
from evaluation.clip_inputs import (  # noqa: F401 - re-exported
    BANK_KEYS,
    TRAJECTORY_KEYS,
    check_args,
    load_tensor_file,
)
from world.objects import OBJECTS, known_prompts
from world.renderer import render_object

SCRIPT_VERSION = "3"

MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _git_commit() -> str | None:
    from results.provenance import git_commit

    return git_commit()


#: weight of the graded ranking hinge and its margin per unit of grade (cosine units)
RANK = 2.0
MARGIN = 0.6


@torch.no_grad()
def evaluate(
    scorer, size: int = 32, n_noise: int = 240, seed: int = 1234, banks: dict | None = None
) -> dict:
    """Held-out metrics of a ClipScorer: R-precision of the true renders at the held-out ring
    among the 12 prompts; on null images (blank, colours, noise) the R-precision, the largest
    share of one prompt among the argmaxes and the mean largest softmax probability (at the
    model's temperature; uniform = 1/12); and the checks of ``evaluation.clip_checks``
    (ladder, snapshot rank correlations, gate)."""
    from evaluation.clip_checks import run_checks

    prompts = known_prompts()
    cams = held_out_cameras()
    hits = []
    for i, prompt in enumerate(prompts):
        true = render_object(OBJECTS[prompt], cams, size, size)["rgb"]
        hits.append(scorer.similarities(true, prompts).argmax(-1) == i)
    generator = torch.Generator().manual_seed(seed)
    noise = null_images(n_noise, size, generator)
    arg = scorer.similarities(noise, prompts).argmax(-1)
    share = torch.bincount(arg, minlength=len(prompts)).float() / n_noise
    logits = scorer.model.logit_scale.exp() * scorer.similarities(noise, prompts)
    true_index = torch.arange(n_noise) % len(prompts)
    checks = run_checks(scorer, banks=banks)
    monotone = [
        v["true"] > v["partial"] > v["blob"] > v["blank"] for v in checks["ladder"].values()
    ]
    return {
        "held_out_r_precision": float(torch.cat(hits).float().mean()),
        "noise_r_precision": float((arg == true_index).float().mean()),
        "noise_argmax_max_share": float(share.max()),
        "noise_mean_max_softmax": float(logits.softmax(-1).amax(-1).mean()),
        "ladder_monotone_fraction": sum(monotone) / len(monotone),
        **checks,
    }


def train(
    out: Path,
    steps: int,
    seed: int,
    views: int,
    lr: float,
    bank_cache: Path | None = None,
    init: Path | None = None,
    grades: str = "exact",
    trajectories: Path | None = None,
    n_trajectory: int = 24,
) -> dict:
    """Train, save world_clip.json / model.safetensors / provenance.json; returns provenance.
    ``bank_cache``: a torch file holding the rendered bank of (seed, views), written when
    absent (a retrain with other steps / lr skips the renders; the seed's generator state
    after rendering is stored with it). ``init``: a world CLIP folder to start from (fine-
    tuning) instead of a seeded random init. ``grades``: ``exact`` (the exact metrics against
    the true render at the image's camera, ``clip_bank.exact_grades``, for every prompt),
    ``own`` (exact for the image's own prompt, hand-set for the others) or ``hand`` (the
    per-kind grades of script version 2). ``trajectories``: a file of
    ``benchmark.clip_trajectories`` (renders of real run checkpoints at training cameras,
    graded by the exact metrics); ``n_trajectory`` of them join every batch, with their exact
    grade for their own prompt (and, with ``grades="exact"``, for every prompt; else
    ``clip_bank.OTHER`` for the others)."""
    import open_clip
    from safetensors.torch import save_file

    from evaluation.clip import ClipScorer, build_open_clip, read_state_dict
    from evaluation.clip_bank import (
        KINDS,
        OTHER,
        build_bank,
        exact_grades,
        graded_hinge,
        mild_augment,
        sample_batch,
    )

    started = time.perf_counter()
    size = MODEL_CONFIG["vision_cfg"]["image_size"]
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "world_clip.json"
    config_path.write_text(json.dumps(MODEL_CONFIG, indent=2) + "\n", encoding="utf-8")
    open_clip.add_model_config(config_path)
    tokenizer = open_clip.get_tokenizer("world_clip")

    gen = torch.Generator().manual_seed(seed)
    prompts = known_prompts()
    if bank_cache is not None and bank_cache.is_file():
        cached = load_tensor_file(bank_cache, "--bank-cache", BANK_KEYS)
        if (cached["seed"], cached["views"], cached.get("version")) != (seed, views, "3"):
            raise UserError(f"--bank-cache {bank_cache} holds the bank of another seed / views")
        bank = cached["bank"]
        gen.set_state(cached["generator"])
    else:
        bank = build_bank(prompts, training_cameras(views, gen), size, gen)
        if bank_cache is not None:
            torch.save(
                {
                    "seed": seed,
                    "views": views,
                    "version": "3",
                    "bank": bank,
                    "generator": gen.get_state(),
                },  # fmt: skip
                bank_cache,
            )
    render_seconds = time.perf_counter() - started
    print(json.dumps({"render_seconds": round(render_seconds, 1)}), flush=True)
    traj = None
    if trajectories is not None:
        traj = load_tensor_file(trajectories, "--trajectories", TRAJECTORY_KEYS)
        if traj["prompts"] != prompts:
            raise UserError(f"--trajectories {trajectories} was made for other prompts")
        traj_images = traj["images"].flatten(0, 1).float() / 255.0  # [N V, 3, S, S]
        traj_grades = traj["grades"].flatten(0, 1)  # [N V, O]
        traj_owner = traj["prompt_index"].repeat_interleave(traj["images"].shape[1])
        if grades != "exact":  # hand / own: the exact grade for the own prompt only
            own = traj_grades[torch.arange(len(traj_owner)), traj_owner]
            traj_grades = torch.full_like(traj_grades, OTHER)
            traj_grades[torch.arange(len(traj_owner)), traj_owner] = own

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("world_clip", pretrained=None, load_weights=False)
    if init is not None:
        start = {k: v.float() for k, v in read_state_dict(init / "model.safetensors").items()}
        model.load_state_dict(start)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, steps // 20)
    bare = [c.removeprefix("a ").removeprefix("an ") for c in prompts]
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073))[None, :, None, None]
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711))[None, :, None, None]
    log = []
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        x, grade, owner, is_true, masks, cams = sample_batch(bank, gen)
        if grades == "exact":
            grade = exact_grades(x, masks, cams, bank)
        elif grades == "own":  # exact for the image's own prompt, hand-set for the others
            rows = (owner >= 0).nonzero().squeeze(-1)
            grade[rows, owner[rows]] = exact_grades(x, masks, cams, bank)[rows, owner[rows]]
        if traj is not None:
            pick = torch.randint(0, len(traj_owner), (n_trajectory,), generator=gen)
            x = torch.cat([x, traj_images[pick]])
            grade = torch.cat([grade, traj_grades[pick]])
            owner = torch.cat([owner, traj_owner[pick]])
            is_true = torch.cat([is_true, torch.zeros(n_trajectory, dtype=torch.bool)])
        x = mild_augment(x, gen)
        template = torch.randint(0, len(TEMPLATES), (len(prompts),), generator=gen).tolist()
        texts = [
            TEMPLATES[t].format(p=c, bare=b)
            for t, c, b in zip(template, prompts, bare, strict=True)
        ]
        img = F.normalize(model.encode_image((x - mean) / std), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        sims = img @ txt.T  # [B, K]
        logits = model.logit_scale.exp().clamp(max=100.0) * sims
        ce = F.cross_entropy(logits[is_true], owner[is_true])
        flat = owner < 0  # grey blobs and null images: no evidence for any prompt
        uniform = -F.log_softmax(logits[flat], dim=-1).mean()
        rank = graded_hinge(sims, grade, MARGIN)
        loss = ce + 0.5 * uniform + RANK * rank
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            acc = float((logits[is_true].argmax(-1) == owner[is_true]).float().mean())
            row = {
                "step": step,
                "loss": round(float(loss.detach()), 4),
                "ce": round(float(ce.detach()), 4),
                "rank": round(float(rank.detach()), 4),
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
    shipped, shipped_tokenizer = build_open_clip(str(config_path), weights_path)
    metrics = evaluate(ClipScorer(shipped, shipped_tokenizer))
    provenance = {
        "model": "world_clip (open_clip CLIP, custom tiny ViT + text transformer)",
        "model_config": MODEL_CONFIG,
        "parameters": sum(v.numel() for v in state.values()),
        "weights_dtype": "float16",
        "prompts": prompts,
        "captions": prompts,
        "templates": list(TEMPLATES),
        "seed": seed,
        "init": None if init is None else str(init),
        "grades": grades,
        "trajectories": None
        if traj is None
        else {"file": str(trajectories), "per_batch": n_trajectory, **traj["config"]},
        "steps": steps,
        "batch": sum(KINDS.values()),
        "batch_kinds": KINDS,
        "lr": lr,
        "rank_weight": RANK,
        "rank_margin": MARGIN,
        "views_per_object": views,
        "data": (
            f"{len(prompts)} world objects x {views} random cameras at {size}x{size} "
            "(elevation [-15, 65] minus |e - 20| < 6, azimuth uniform, distance 2.2..2.9, "
            "fovy 35..45) and at the same cameras their hard negatives: partial shapes (parts "
            "removed, plane cuts), SDF morphs blob -> object at t = 0, 0.3, 0.55, 0.8 in the "
            "object's part colours, other objects' geometry in its colours, its shape in a "
            "wrong colour, ellipsoid blobs in its mean colour, two-view mixes, blur by 2 / 4; "
            "the voxel init's grey blob; null images (blank, constant colour, noise); mild "
            "augmentation (brightness 0.95..1.05, noise, 1 px shifts)"
        ),
        "held_out": "the evaluation ring: elevation 20, 8 azimuths from 7.5 deg, distance 2.5",
        "loss": "image->text InfoNCE over the 12 prompts on true renders + 0.5 uniform-target "
        f"CE on grey blobs / null + {RANK} graded ranking hinge (margin {MARGIN} x grade gap): "
        "true 1 > partial 0.6 / early 0.35 + 0.4 t / view mix 0.45 > blobs, wrong shape, "
        "wrong colour 0.25 > grey blob, other objects 0.1 > null 0"
        if grades == "hand"
        else "hand-set grades as in script version 2 for other prompts; for the image's own "
        "prompt the exact grade (evaluation/clip_bank.exact_grades)"
        if grades == "own"
        else "exact grades (evaluation/clip_bank.exact_grades): 0.5 mask IoU + 0.5 "
        "clamp((PSNR - 8) / 20) against each prompt's true render at the image's camera; "
        "null images 0",
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


def recheck(folder: Path, banks_cache: Path | None, note: str) -> dict:
    """Recompute provenance["metrics"] of the CLIP in ``folder`` with ``evaluate`` (after a
    change of the checks, not of the weights); the old metrics move to ``metrics_before``."""
    from evaluation.clip import ClipScorer, build_open_clip
    from evaluation.clip_checks import ladder_images

    banks = None
    if banks_cache is not None and banks_cache.is_file():
        banks = load_tensor_file(banks_cache, "--bank-cache")
    elif banks_cache is not None:
        banks = {p: ladder_images(p) for p in known_prompts()}
        torch.save(banks, banks_cache)
    model, tokenizer = build_open_clip(
        str(folder / "world_clip.json"), folder / "model.safetensors"
    )
    path = folder / "provenance.json"
    provenance = json.loads(path.read_text(encoding="utf-8"))
    provenance["metrics_before"] = provenance.get("metrics")
    provenance["metrics"] = evaluate(ClipScorer(model, tokenizer), banks=banks)
    provenance["metrics_note"] = note
    path.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return provenance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=48, help="training views per object")
    parser.add_argument("--bank-cache", type=Path, default=None, help="cache of the renders")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recheck", default=None, help="only recompute the checks: a note")
    parser.add_argument("--init", type=Path, default=None, help="world CLIP folder to fine-tune")
    parser.add_argument("--grades", choices=("exact", "own", "hand"), default="exact")
    parser.add_argument("--trajectories", type=Path, default=None, help="clip_trajectories file")
    parser.add_argument("--per-batch-trajectory", type=int, default=24)
    args = parser.parse_args(argv)
    try:
        check_args(args)
        torch.set_num_threads(args.threads)
        torch.set_flush_denormal(True)
        if args.recheck is not None:
            provenance = recheck(Path(args.out), args.bank_cache, args.recheck)
            print(json.dumps(provenance["metrics"]["gate"]))
            return
        provenance = train(
            Path(args.out),
            args.steps,
            args.seed,
            args.views,
            args.lr,
            args.bank_cache,
            args.init,
            args.grades,
            args.trajectories,
            args.per_batch_trajectory,
        )
    except UserError as exc:
        print(f"error: {printable_line(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from None
    metrics = {
        k: v for k, v in provenance["metrics"].items() if k not in ("ladder", "correlations")
    }
    print(json.dumps({"train_seconds": provenance["train_seconds"], **metrics}))


if __name__ == "__main__":
    main()
