"""Samples of the learned prior per class, and their exact distance to the world's references.

    .venv/bin/python scripts/learned_prior_samples.py --checkpoint final \
        --grid docs/img/learned_prior_samples.png --json docs/learned_prior_samples.json

For every prompt and view bin (front, side, back) ``--per-view`` samples are drawn from
x_T ~ N(0, I) down a ``--steps``-rung ladder from t = 999 with DDIM (``--eta 0``) or its
ancestral form (``--eta 1``, DDPM's posterior variance on the strided ladder):

    x0_hat = (x_t - sigma_t e) / alpha_t
    s      = eta sqrt((1 - abar_p) / (1 - abar_t)) sqrt(1 - abar_t / abar_p)
    x_p    = alpha_p x0_hat + sqrt(1 - abar_p - s^2) e + s z

with e = the guided prediction (diffusers-form CFG at ``--guidance``; 1 = the conditional
branch only). Exact nearest-reference distance of a sample x (RGB in [0, 1], clamped):
RMSE to the nearest reference of its own class, and whether the nearest reference among all
prompts' references is one of its prompt's (``prompt_match``). ``--exact`` samples the
world's exact eps*_k the same way (the calibration: it lands on references).
The grid: one row per prompt, the samples of front, side, back, then the nearest own
reference of the first front sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sample(eps_fn, n: int, side: int, alphas_cumprod, steps: int, eta: float, generator):
    """Ancestral / DDIM sampling from t = T-1 to the clean image, [n, 3, side, side]."""
    x = torch.randn(n, 3, side, side, generator=generator)
    rungs = torch.linspace(len(alphas_cumprod) - 1, 0, steps).round().long().tolist() + [-1]
    for t, p in zip(rungs[:-1], rungs[1:], strict=True):
        abar_t = alphas_cumprod[t]
        abar_p = alphas_cumprod[p] if p >= 0 else torch.tensor(1.0)
        e = eps_fn(x, torch.full((n,), t, dtype=torch.int64))
        x0 = (x - (1 - abar_t).sqrt() * e) / abar_t.sqrt()
        s = eta * ((1 - abar_p) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_p).clamp_min(0).sqrt()
        x = abar_p.sqrt() * x0 + (1 - abar_p - s**2).clamp_min(0).sqrt() * e
        if eta > 0 and p >= 0:
            x = x + s * torch.randn(x.shape, generator=generator)
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="final", help="shipped name or a folder")
    parser.add_argument("--grid", default="")
    parser.add_argument("--json", default="")
    parser.add_argument("--per-view", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact", action="store_true", help="sample the exact eps* instead")
    args = parser.parse_args(argv)
    if args.per_view < 1 or args.steps < 1 or not 0.0 <= args.eta <= 1.0:
        parser.exit(2, "error: need --per-view >= 1, --steps >= 1 and --eta in [0, 1]\n")
    torch.set_num_threads(args.threads)
    from core.cameras import CameraConfig
    from priors.learned import LearnedPrior, parse_learned
    from priors.weights import WeightsError
    from world.class_targets import ExactTargets
    from world.prior import WorldPrior

    path = parse_learned(f"learned:{args.checkpoint}")
    try:
        table_prompts = json.loads((Path(path) / "classes.json").read_text())["prompts"]
        distance, fovy = CameraConfig().center()
        world = WorldPrior(table_prompts, 32, 32, distance, fovy)
        ac = world.alphas_cumprod
        prior = LearnedPrior(
            path, world, "cpu", table_prompts, lambda t: ExactTargets(t, world.references, ac)
        )
    except (OSError, KeyError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    targets, table = prior.targets, prior.table
    n_views = len(table.views)
    labels = torch.tensor(
        [p * n_views + v for p in range(len(table.prompts)) for v in range(n_views)]
    ).repeat_interleave(args.per_view)
    null = torch.full_like(labels, table.null)

    @torch.no_grad()
    def eps_fn(x, t):
        if args.exact:
            cond = targets.eps(x, t, labels)
            return (
                cond
                if args.guidance == 1.0
                else (targets.eps(x, t, null) + args.guidance * (cond - targets.eps(x, t, null)))
            )
        cond = prior.unet(x, t, class_labels=labels).sample
        if args.guidance == 1.0:
            return cond
        uncond = prior.unet(x, t, class_labels=null).sample
        return uncond + args.guidance * (cond - uncond)

    generator = torch.Generator().manual_seed(args.seed)
    side = prior.resolution[0]
    x = sample(eps_fn, len(labels), side, prior.alphas_cumprod, args.steps, args.eta, generator)
    rgb = ((x.clamp(-1, 1) + 1) / 2).flatten(1)
    refs = (targets.images + 1) / 2
    d2 = torch.cdist(rgb.double(), refs.double()) ** 2 / rgb.shape[1]  # [n, N] MSE
    own = labels[:, None] == targets.labels[None, :]
    own_mse, own_index = torch.where(own, d2, torch.inf).min(dim=1)
    nearest = d2.argmin(dim=1)
    prompt_of_sample = labels // n_views
    prompt_match = (targets.prompt_of[nearest] == prompt_of_sample).double()
    rows = {}
    for p, prompt in enumerate(table.prompts):
        mask = prompt_of_sample == p
        rows[prompt] = {
            "rmse_to_nearest_own_reference": float(own_mse[mask].sqrt().mean()),
            "psnr_to_nearest_own_reference": float((-10 * own_mse[mask].log10()).mean()),
            "prompt_match": float(prompt_match[mask].mean()),
        }
    summary = {
        "checkpoint": str(args.checkpoint) if not args.exact else "exact eps*",
        "sampler": {"steps": args.steps, "eta": args.eta, "guidance": args.guidance},
        "seed": args.seed,
        "samples": len(labels),
        "rmse_to_nearest_own_reference": float(own_mse.sqrt().mean()),
        "psnr_to_nearest_own_reference": float((-10 * own_mse.log10()).mean()),
        "prompt_match": float(prompt_match.mean()),
        "per_prompt": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "per_prompt"}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.grid:
        import numpy as np
        from PIL import Image

        images = rgb.view(-1, 3, side, side)
        per_row = n_views * args.per_view
        tiles = []
        for p in range(len(table.prompts)):
            row = list(images[p * per_row : (p + 1) * per_row])
            row.append(refs[own_index[p * per_row]].view(3, side, side))
            tiles.append(torch.cat([torch.nn.functional.pad(t, (1, 1, 1, 1), value=1.0)
                                    for t in row], dim=2))  # fmt: skip
        grid = torch.cat(tiles, dim=1).permute(1, 2, 0).numpy()
        image = Image.fromarray((grid * 255).round().astype(np.uint8))
        image = image.resize((image.width * 3, image.height * 3), Image.NEAREST)
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        image.save(args.grid)
        print(f"grid: {args.grid}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
