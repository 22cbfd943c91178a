"""Why the online posterior form misses the ceiling: per (camera, t) pair, the in-sample
least-squares coefficient of each responsibilities field S_post(beta) on SDS's G, the field's
variance relative to G's (eps part, image space), and the share of G's eps variance left with
that coefficient and with mu = 1 (the first-order control variate) (docs/stein_ceiling.md).

    python scripts/stein_coefficients.py --setting default --prompt "a snowman" \\
        --train-steps 40 --pairs 10 --draws 64

SDS trains ``--train-steps`` steps (the run's streams), theta is frozen, ``--pairs`` (c, t)
pairs come from the training distribution (seed 1 and 2), each with ``--draws`` eps (seed 5).
One line per pair: t, tr Var(G | c, t), then per beta: coef, Vf/Vg, left (coef), left (mu=1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.stein_ceiling import SETTINGS, fail  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="default", help=",".join(SETTINGS))
    p.add_argument("--prompt", default="a snowman")
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--draws", type=int, default=64)
    args = p.parse_args(argv)
    if args.setting not in SETTINGS:
        fail(f"unknown setting {args.setting!r}; known: {', '.join(SETTINGS)}")
    if args.train_steps < 0 or args.pairs < 1 or args.draws < 4:
        fail("need --train-steps >= 0, --pairs >= 1, --draws >= 4")
    return args


def pair_terms(trainer, prior, camera, t, eps, betas):
    """SDS's G [M, D] and the weighted fields w S_post(beta) [M, F, D] at one (c, t), float64."""
    import torch

    from core.schedule import alpha_sigma
    from core.weighting import timestep_weight
    from estimators.base import EstimatorContext
    from estimators.posterior_field import posterior_control_variate

    cfg = trainer.guidance
    h, w_ = trainer.config.render.height, trainer.config.render.width
    n = eps.shape[0]
    with torch.no_grad():
        render = trainer.backbone.render(camera, h, w_)
        x = prior.encode(render["rgb"]).expand(n, -1, -1, -1)
        tt = t.expand(n)
        ctx = EstimatorContext(
            trainer.prompt,
            camera[[0] * n],
            {k: v.expand(n, *v.shape[1:]) for k, v in render.items()},
        )
        g = trainer.estimator.grad(x, tt, eps, prior, ctx).grad
        w = timestep_weight(tt, prior.alphas_cumprod, cfg.weighting).view(-1, 1, 1, 1)
        alpha, sigma = alpha_sigma(prior.alphas_cumprod, tt)
        x_t = alpha.view(-1, 1, 1, 1) * x + sigma.view(-1, 1, 1, 1) * eps
        fields = [
            w
            * posterior_control_variate(
                x_t, tt, eps, prior, ctx, cfg.guidance_scale, cfg.cfg_mode, b
            )
            for b in betas
        ]
    return g.flatten(1).double(), torch.stack(fields, 1).flatten(2).double()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from benchmark.probe.stein_ceiling import ONLINE_BETAS
    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellTrainer

    config = load_config(None, [*SETTINGS[args.setting], f"steps={max(1, args.train_steps)}"])
    prior = build_prior(config, [args.prompt], torch.device("cpu"))
    trainer = CellTrainer(config, "sds", args.prompt, 0, prior, torch.device("cpu"))
    for step in range(args.train_steps):
        trainer.step(step)
    cameras, t = trainer.draw_cameras_and_t(
        args.pairs,
        args.train_steps,
        torch.Generator().manual_seed(1),
        torch.Generator().manual_seed(2),
    )
    noise = torch.Generator().manual_seed(5)
    shape = (3, config.render.height, config.render.width)
    for k in range(args.pairs):
        eps = torch.randn((args.draws, *shape), generator=noise)
        g, f = pair_terms(trainer, prior, cameras[[k]], t[k : k + 1], eps, ONLINE_BETAS)
        gc, fc = g - g.mean(0), f - f.mean(0)
        vg = float(gc.pow(2).sum()) / (args.draws - 1)
        cells = [f"t={int(t[k])} Vg={vg:.3g}"]
        for i, beta in enumerate(ONLINE_BETAS):
            fi = fc[:, i]
            coef = float((fi * gc).sum() / (fi * fi).sum().clamp_min(1e-300))
            vf = float(fi.pow(2).sum()) / (args.draws - 1)
            left = float((gc - coef * fi).pow(2).sum()) / (args.draws - 1) / vg
            left1 = float((gc - fi).pow(2).sum()) / (args.draws - 1) / vg
            cells.append(
                f"b{beta:g}: coef={coef:.3g} Vf/Vg={vf / vg:.3g} left={left:.2f} "
                f"mu1left={left1:.3g}"
            )
        print(" | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
