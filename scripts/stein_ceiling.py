"""The Stein control-variate ceiling table (docs/stein_ceiling.md): per world setting, the
eps-only share of SDS's gradient variance (what the perfect eps control variate removes) and
what each class's cross-fitted oracle removes (benchmark/probe/stein_ceiling.py).

    python scripts/stein_ceiling.py --prompts "a snowman,a red sphere" --train-steps 100 \
        --pairs 12 --draws 128 --settings default,cfg7.5,detail \
        --out docs/stein_ceiling_run.md --csv docs/stein_ceiling.csv

The row ``online_posterior_mc`` is SSD's ``baseline=posterior_mc`` (coefficient 1, its mean
from ``--mc-draws`` fresh draws per eps of a generator seeded apart from the eps draws).

Per setting and prompt: SDS trains ``--train-steps`` steps (the run's own streams), then theta
is frozen and ``--pairs`` (camera, t) pairs are drawn from the training distribution (a
generator seeded by --seed, prompt and setting), each with ``--draws`` eps. Variances are
trace variances in image space (exact) and in theta space (the render's vjp, as the probe;
``--theta-probes`` Rademacher combinations of the draws per class, unbiased, or 0 for one vjp
per draw). The ``detail`` setting uses ``--detail-prompts`` (distribution prompts whose
instances differ in fine detail), the others ``--prompts``. Shares are of V_total = V_eps +
V_ct per prompt (law of total variance, V_ct corrected for the noise of the conditional
means), averaged over prompts; CIs: 95% percentile bootstrap (2000 resamples), ``clustered``:
prompts, then (c, t) pairs within each prompt; ``pairs``: (c, t) pairs within each prompt,
the prompts fixed (the only choice with one prompt).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "default": [],
    "cfg7.5": ["sds.guidance_scale=7.5"],
    "temp0.05": ["world.view_temperature=0.05"],
    "detail": [],
    "cfg100": ["sds.guidance_scale=100", "sds.cfg_mode=dreamfusion"],
}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", default="a snowman,a red sphere", help="comma-separated prompts")
    p.add_argument(
        "--detail-prompts",
        default="a red ball with white spots",
        help="comma-separated prompts of the detail setting (prompts/distributions.txt)",
    )
    p.add_argument("--settings", default="default,cfg7.5,detail", help=",".join(SETTINGS))
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--pairs", type=int, default=12, help="(camera, t) pairs per prompt")
    p.add_argument("--draws", type=int, default=128, help="eps draws per pair (even)")
    p.add_argument(
        "--theta-probes", type=int, default=8, help="Rademacher probes per class (0: exact)"
    )
    p.add_argument("--bootstrap", choices=("clustered", "pairs"), default="clustered")
    p.add_argument(
        "--online-fit",
        type=int,
        default=200,
        help="draws the online posterior form's coefficients are fitted on first (0: no row)",
    )
    p.add_argument(
        "--mc-draws",
        type=int,
        default=256,
        help="draws of SSD baseline=posterior_mc's mean per eps (0: no row)",
    )
    p.add_argument("--basis", type=int, default=48, help="K columns of matrix_linear")
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-theta", action="store_true", help="image space only (faster)")
    p.add_argument(
        "--only-mc",
        action="store_true",
        help="eps share and the posterior_mc row only (the same pairs and eps; faster)",
    )
    p.add_argument("--set", action="append", default=[], help="extra config overrides")
    p.add_argument("--out", help="markdown table")
    p.add_argument("--csv", help="one row per setting and class")
    args = p.parse_args(argv)
    if args.draws < 8 or args.draws % 2:
        fail("--draws must be an even number >= 8")
    if args.pairs < 2 or args.train_steps < 0 or args.basis < 1 or args.chunk < 1:
        fail("need --pairs >= 2, --train-steps >= 0, --basis >= 1, --chunk >= 1")
    if args.only_mc and (args.online_fit or not args.mc_draws):
        fail("--only-mc needs --online-fit 0 and --mc-draws > 0")
    if args.theta_probes < 0 or args.online_fit < 0 or args.mc_draws < 0:
        fail("need --theta-probes >= 0, --online-fit >= 0 and --mc-draws >= 0")
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in args.settings:
        if s not in SETTINGS:
            fail(f"unknown setting {s!r}; known: {', '.join(SETTINGS)}")
    args.prompts = [s.strip() for s in args.prompts.split(",") if s.strip()]
    args.detail_prompts = [s.strip() for s in args.detail_prompts.split(",") if s.strip()]
    if not args.prompts or not args.detail_prompts:
        fail("no prompts")
    for path in (args.out, args.csv):
        if path and not Path(path).resolve().parent.is_dir():
            fail(f"folder of {path} does not exist")
    return args


class ThetaPull:
    """g = J_c^T G for a batch of image-space G at one camera (one render, batched vjp)."""

    def __init__(self, backbone, prior, camera, height, width):
        import torch

        self.params = [p for p in backbone.parameters() if p.requires_grad]
        with torch.enable_grad():
            rgb = backbone.render(camera, height, width)["rgb"]
            self.x = prior.encode(rgb)

    def __call__(self, cot):
        import torch

        grads = torch.autograd.grad(
            self.x,
            self.params,
            cot[:, None].to(self.x.dtype),
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
        )
        n = cot.shape[0]
        return torch.cat(
            [
                (torch.zeros(n, p.numel()) if g is None else g.reshape(n, -1))
                for g, p in zip(grads, self.params, strict=True)
            ],
            1,
        )


def measure_pair(trainer, prior, camera, t, eps_all, args, geometry, z=None):
    """Image- and theta-space statistics of one (c, t) pair: dict with per-class within
    variances and the conditional means of G."""
    import torch

    from benchmark.probe.stein_ceiling import (
        pulled_trace_variance,
        trace_variance,
    )
    from core.schedule import alpha_sigma
    from core.weighting import timestep_weight
    from estimators.base import EstimatorContext
    from estimators.baselines import baseline_function
    from estimators.posterior_field import (
        posterior_control_variate,
        subspace_control_variate,
        subspace_means,
    )
    from estimators.stein import stein_control_variate

    cfg = trainer.guidance
    h, w_ = trainer.config.render.height, trainer.config.render.width
    m = eps_all.shape[0]
    with torch.no_grad():
        render = trainer.backbone.render(camera, h, w_)
        x = prior.encode(render["rgb"])
    alpha, sigma = alpha_sigma(prior.alphas_cumprod, t[:1])
    gs, sd, sp, xts, mc = [], [], {b: [] for b in args.betas}, [], []
    for start in range(0, m, args.chunk):
        eps = eps_all[start : start + args.chunk]
        n = eps.shape[0]
        cams = camera[[0] * n]
        tt = t[:1].expand(n)
        ctx = EstimatorContext(
            trainer.prompt, cams, {k: v.expand(n, *v.shape[1:]) for k, v in render.items()}
        )
        xx = x.expand(n, *x.shape[1:])
        out = trainer.estimator.grad(xx, tt, eps, prior, ctx)
        weight = float(timestep_weight(tt[:1], prior.alphas_cumprod, cfg.weighting))
        x_t = alpha * xx + sigma * eps
        gs.append(out.grad)
        xts.append(x_t)
        if not args.only_mc:
            phi = baseline_function("depth_pearson", tt, ctx, ctx.render, geometry)
            sd.append(weight * stein_control_variate(phi, x_t, eps, sigma.expand(n)))
        for b in () if args.only_mc else args.betas:
            s = posterior_control_variate(
                x_t, tt, eps, prior, ctx, cfg.guidance_scale, cfg.cfg_mode, b
            )
            sp[b].append(weight * s)
        if args.mc_draws:  # SSD's baseline=posterior_mc: fresh draws per eps, never eps itself
            means = subspace_means(
                xx, tt, prior, ctx, cfg.guidance_scale, cfg.cfg_mode, args.mc_gen, args.mc_draws
            )
            s_mc = subspace_control_variate(means, eps, alpha.expand(n), sigma.expand(n))
            mc.append(out.grad - weight * s_mc)
    g = torch.cat(gs).flatten(1)
    resid = {}
    if not args.only_mc:
        resid = other_classes(trainer, prior, camera, g, eps_all, sigma, xts, sd, sp, args)
    if args.online is not None:
        from benchmark.probe.stein_ceiling import ONLINE_BETAS

        mu = args.online.value(t[:1], prior.num_train_timesteps)[0].to(g.dtype)  # [F]
        fields = torch.stack([torch.cat(sp[b]).flatten(1) for b in ONLINE_BETAS], -1)
        resid["online_posterior"] = g - fields @ mu
    if args.mc_draws:
        resid["online_posterior_mc"] = torch.cat(mc).flatten(1)
    stats = {"img_within": trace_variance(g), "img_mean": g.mean(0).double()}
    for name, r in resid.items():
        stats[f"img_{name}"] = trace_variance(r)
    if not args.no_theta:
        pull = ThetaPull(trainer.backbone, prior, camera, h, w_)
        shape = x.shape[1:]

        def flat_pull(rows):
            return pull(rows.view(-1, *shape))

        stats["within"] = pulled_trace_variance(flat_pull, g, z, args.chunk)
        stats["mean"] = flat_pull(g.mean(0, keepdim=True))[0].double()
        for name, r in resid.items():
            stats[name] = pulled_trace_variance(flat_pull, r, z, args.chunk)
    return stats


def other_classes(trainer, prior, camera, g, eps_all, sigma, xts, sd, sp, args):
    """The cross-fitted oracles of every class (benchmark/probe/stein_ceiling.py)."""
    import torch

    from benchmark.probe.stein_ceiling import class_residuals, reference_basis

    cfg = trainer.guidance
    m = eps_all.shape[0]
    eps_f = eps_all.flatten(1)
    refs = [prior.references[trainer.prompt]]
    if cfg.guidance_scale != 1.0 or cfg.cfg_mode != "diffusers":
        refs.append(prior.unconditional)
    lws = [prior.log_mixture_weights(r, camera)[0] for r in refs]
    basis = reference_basis(lws, [r.images for r in refs], min(args.basis, m // 4))
    return class_residuals(
        g,
        eps_f,
        torch.cat(xts).flatten(1),
        float(sigma),
        torch.cat(sd).flatten(1),
        {b: torch.cat(v).flatten(1) for b, v in sp.items()},
        basis,
    )


def online_coefficients(trainer, prior, args, seed):
    """SSD ``baseline=posterior``'s coefficients (``BinnedLeastSquares``, the estimator's
    default bins and EMA, betas ``ONLINE_BETAS``) fitted, one draw at a time as in training,
    on ``--online-fit`` fresh training-distribution draws of (c, t, eps) at the frozen theta:
    samples independent of the evaluated ones (past samples only)."""
    import torch

    from benchmark.probe.stein_ceiling import ONLINE_BETAS
    from core.schedule import alpha_sigma
    from core.weighting import timestep_weight
    from estimators.base import EstimatorContext
    from estimators.posterior_field import BinnedLeastSquares, posterior_control_variate
    from estimators.ssd import SSDConfig

    ssd = SSDConfig()
    fit = BinnedLeastSquares(len(ONLINE_BETAS), ssd.posterior_t_bins, ssd.mu_ema)
    cfg, n_t = trainer.guidance, prior.num_train_timesteps
    h, w_ = trainer.config.render.height, trainer.config.render.width
    gens = [torch.Generator().manual_seed(seed + k) for k in (10, 11, 12)]
    cameras, t = trainer.draw_cameras_and_t(args.online_fit, args.train_steps, *gens[:2])
    for k in range(args.online_fit):
        cam, tt = cameras[[k]], t[k : k + 1]
        with torch.no_grad():
            render = trainer.backbone.render(cam, h, w_)
            x = prior.encode(render["rgb"])
            eps = torch.randn(x.shape, generator=gens[2])
            ctx = EstimatorContext(trainer.prompt, cam, render)
            g = trainer.estimator.grad(x, tt, eps, prior, ctx).grad
            weight = timestep_weight(tt, prior.alphas_cumprod, cfg.weighting).to(x.dtype)
            alpha, sigma = alpha_sigma(prior.alphas_cumprod, tt)
            x_t = alpha.view(-1, 1, 1, 1) * x + sigma.view(-1, 1, 1, 1) * eps
            fields = torch.stack(
                [
                    posterior_control_variate(
                        x_t, tt, eps, prior, ctx, cfg.guidance_scale, cfg.cfg_mode, b
                    )
                    for b in ONLINE_BETAS
                ],
                1,
            )
        fit.observe(tt, n_t, g, weight.view(-1, 1, 1, 1, 1) * fields)
    return fit


def prompt_pairs(setting, prompt, prior, args):
    """Train SDS, then measure ``args.pairs`` (c, t) pairs: list of per-pair stats."""
    import torch

    from benchmark.run.config import load_config
    from benchmark.run.trainer import CellTrainer

    config = load_config(None, [*SETTINGS[setting], *args.set, f"steps={args.train_steps}"])
    trainer = CellTrainer(config, "sds", prompt, args.seed, prior, torch.device("cpu"))
    for step in range(args.train_steps):
        trainer.step(step)
    geometry = prior.geometry_estimator()
    seed = zlib.crc32(f"{args.seed}|{prompt}|{setting}".encode())
    cam_gen = torch.Generator().manual_seed(seed)
    t_gen = torch.Generator().manual_seed(seed + 1)
    noise = torch.Generator().manual_seed(seed + 2)
    cameras, t = trainer.draw_cameras_and_t(args.pairs, args.train_steps, cam_gen, t_gen)
    args.online = online_coefficients(trainer, prior, args, seed) if args.online_fit else None
    args.mc_gen = torch.Generator().manual_seed(seed + 3)
    shape = (3, config.render.height, config.render.width)
    rows = []
    for k in range(args.pairs):
        eps = torch.randn((args.draws, *shape), generator=noise)
        z = None
        if args.theta_probes:
            z = torch.randint(0, 2, (args.theta_probes, args.draws), generator=noise) * 2.0 - 1
        rows.append(
            measure_pair(trainer, prior, cameras[[k]], t[k : k + 1], eps, args, geometry, z)
        )
        rows[-1]["t"] = int(t[k])
    return rows


def summarise(per_prompt, prefix, classes, m, seed, bootstrap="clustered", n_boot=2000):
    """Point estimates (mean over prompts) and 95% cluster-bootstrap CIs."""
    import numpy as np

    from benchmark.probe.stein_ceiling import gram_of_means, prompt_statistic

    keys = ["eps_share", *classes]
    grams = [gram_of_means(pairs, prefix) for pairs in per_prompt]

    def point(sample):
        stats = [
            prompt_statistic(per_prompt[i], grams[i], idx, prefix, classes, m) for i, idx in sample
        ]
        return {k: float(np.mean([s[k] for s in stats])) for k in keys}

    est = point([(i, np.arange(len(p))) for i, p in enumerate(per_prompt)])
    rng = np.random.default_rng(seed)
    boots = {k: [] for k in keys}
    for _ in range(n_boot):
        sample = []
        clusters = range(len(per_prompt))
        if bootstrap == "clustered":
            clusters = rng.integers(0, len(per_prompt), len(per_prompt))
        for i in clusters:
            n = len(per_prompt[i])
            sample.append((i, rng.integers(0, n, n)))
        for k, v in point(sample).items():
            boots[k].append(v)
    return {k: (est[k], *np.percentile(boots[k], [2.5, 97.5])) for k in keys}


TITLES = {
    "eps_share": "perfect eps CV (eps-only share)",
    "scalar_depth": "scalar phi (depth, paper), one mu",
    "scalar_depth_pixel": "scalar phi (depth), per-pixel mu",
    "diagonal_affine": "diagonal field (affine, per pixel)",
    "matrix_linear": "matrix, constant A (linear in eps)",
    "matrix_posterior_1": "matrix, responsibilities beta=1",
    "matrix_posterior_0.3": "matrix, responsibilities beta=0.3",
    "matrix_posterior_0.1": "matrix, responsibilities beta=0.1",
    "matrix_posterior_0.03": "matrix, responsibilities beta=0.03",
    "matrix_posterior_all": "matrix, responsibilities, betas 0.3/0.1/0.03",
    "online_posterior": "online: SSD baseline=posterior (mu from past draws)",
    "online_posterior_mc": "online: SSD baseline=posterior_mc (mean from fresh draws, coef 1)",
}


def fmt(v):
    return f"{100 * v[0]:.1f}% [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from benchmark.probe.stein_ceiling import BETAS, CLASSES
    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.betas = BETAS
    started = time.time()
    load_start = os.getloadavg()[0]
    results, csv_rows, walls = {}, [], {}
    prompts_of = {s: args.detail_prompts if s == "detail" else args.prompts for s in args.settings}
    total = sum(len(v) for v in prompts_of.values())
    bar = tqdm(total=total, desc="stein ceiling", unit="prompt")
    classes = [
        *([] if args.only_mc else CLASSES),
        *(["online_posterior"] if args.online_fit else []),
        *(["online_posterior_mc"] if args.mc_draws else []),
    ]
    for setting in args.settings:
        begun = time.time()
        prompts = prompts_of[setting]
        config = load_config(None, [*SETTINGS[setting], *args.set])
        prior = build_prior(config, prompts, torch.device("cpu"))
        per_prompt = []
        for prompt in prompts:
            per_prompt.append(prompt_pairs(setting, prompt, prior, args))
            bar.update(1)
        spaces = [("img_", "image")] + ([] if args.no_theta else [("", "theta")])
        results[setting] = {
            space: summarise(per_prompt, prefix, classes, args.draws, args.seed, args.bootstrap)
            for prefix, space in spaces
        }
        walls[setting] = time.time() - begun
        for space, summary in results[setting].items():
            for key, (est, lo, hi) in summary.items():
                csv_rows.append(
                    {
                        "setting": setting,
                        "space": space,
                        "class": key,
                        "share": est,
                        "lo": lo,
                        "hi": hi,
                        "prompts": "|".join(prompts),
                        "pairs": args.pairs,
                        "draws": args.draws,
                        "train_steps": args.train_steps,
                        "theta_probes": args.theta_probes,
                        "bootstrap": args.bootstrap,
                    }
                )
    bar.close()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    lines = [
        f"Stein ceiling, {when}: {args.pairs} (c, t) pairs x {args.draws} eps per prompt, SDS "
        f"trained {args.train_steps} steps, seed {args.seed}, theta probes "
        f"{args.theta_probes or 'exact'}, bootstrap {args.bootstrap}; load "
        f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}; wall "
        + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()),
        "",
    ]
    for setting in args.settings:
        lines.append(f"- {setting}: {'; '.join(prompts_of[setting])}")
    lines.append("")
    spaces = list(next(iter(results.values())))
    for space in spaces:
        lines += [f"Share of SDS's total {space}-space variance removed (95% CI):", ""]
        lines += ["| class | " + " | ".join(args.settings) + " |"]
        lines += ["|---|" + "---|" * len(args.settings)]
        for key in ["eps_share", *classes]:
            cells = [fmt(results[s][space][key]) for s in args.settings]
            lines.append(f"| {TITLES.get(key, key)} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(csv_rows[0]))
            writer.writeheader()
            writer.writerows(csv_rows)
    assert all(math.isfinite(r["share"]) for r in csv_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
