"""The world's phenomena, measured: the experiments behind tests/test_world_phenomena.py,
scripts/world_phenomena.py and the phenomena table of docs/world.md.

- ``train``: one cell (method, prompt, seed) trained to the end; its final held-out metrics
  (evaluation/heldout.py: against the prompt's best instance) and its backbone.
- ``train_particles``: ProlificDreamer's n particles: n backbones (seeds ``seed .. seed+n-1``,
  each with its own init, camera, t and noise streams) optimised together, all sharing ONE
  estimator (for VSD: one eps_phi), so eps_phi is trained on every particle's renders and
  models q(x | c) of the n-particle distribution. Each round steps every particle once.
- ``variance_split``: the law of total variance over nested draws,
  Var G = E_{c,t}[Var_eps(G | c, t)] + Var_{c,t}(E_eps[G | c, t]).
- ``eps_share``: that split of an estimator's image-space gradient at the true renders of
  one instance (a converged state), for the eps-only share of the variance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from benchmark.run.config import load_config
from benchmark.run.factories import build_prior
from benchmark.run.trainer import CellTrainer, run_cell
from estimators.base import EstimatorContext
from evaluation.heldout import HeldOutEvaluator
from world.distributions import instances
from world.renderer import render_object


@dataclass
class Trained:
    final: dict[str, float]
    backbone: object
    renders: torch.Tensor  # [V, 3, H, W] at the held-out cameras


def setup(overrides: list[str], prompt: str, path: str | None = None, prior=None):
    """(config, prior, evaluator) of ``prompt`` under the config file ``path`` + overrides."""
    config = load_config(path, overrides)
    device = torch.device("cpu")
    prior = prior if prior is not None else build_prior(config, [prompt], device)
    return config, prior, HeldOutEvaluator(prompt, config, device)


def train(config, method: str, prompt: str, seed: int, prior, evaluator) -> Trained:
    """One cell trained for ``config.steps`` steps; final metrics, backbone, held-out renders."""
    trainer = CellTrainer(config, method, prompt, seed, prior, torch.device("cpu"))
    result = run_cell(trainer, lambda b, s: evaluator(b)[0], lambda s, m: None)
    if result.status != "ok":
        raise RuntimeError(f"{method} on {prompt!r} seed {seed}: {result.status}")
    metrics, renders = evaluator(trainer.backbone)
    return Trained(metrics, trainer.backbone, renders)


def train_particles(
    config, method: str, prompt: str, n: int, seed: int, prior, evaluator
) -> list[Trained]:
    """``n`` particles sharing one estimator (module docstring), ``config.steps`` rounds."""
    device = torch.device("cpu")
    trainers = [CellTrainer(config, method, prompt, seed + k, prior, device) for k in range(n)]
    shared = trainers[0].estimator
    for trainer in trainers[1:]:
        trainer.estimator = shared  # one eps_phi trained on every particle's renders
    for step in range(config.steps):
        for trainer in trainers:
            trainer.step(step)
    out = []
    for trainer in trainers:
        metrics, renders = evaluator(trainer.backbone)
        out.append(Trained(metrics, trainer.backbone, renders))
    return out


def variance_split(samples: torch.Tensor) -> dict[str, float]:
    """Law of total variance of nested draws ``samples`` [M, K, D] (M outer (c, t) groups,
    K >= 2 eps draws each), traces summed over D:

        within  W = mean_m s^2_m            (s^2_m the unbiased variance over k)
        between B = s^2(group means) - W / K (unbiased for Var_{c,t} E[G | c, t])
        share = W / (W + B)                  (the eps-only share)

    >>> g = torch.zeros(2, 2, 1); g[1] += 1.0      # groups differ, no eps spread
    >>> variance_split(g)["share"]
    0.0
    """
    m, k, _ = samples.shape
    if m < 2 or k < 2:
        raise ValueError("need at least 2 groups of at least 2 draws")
    x = samples.to(torch.float64)
    within = float(x.var(dim=1, unbiased=True).sum(dim=-1).mean())
    means = x.mean(dim=1)
    between = float(means.var(dim=0, unbiased=True).sum()) - within / k
    total = within + between
    return {"within": within, "between": between, "total": total, "share": within / total}


@torch.no_grad()
def eps_share(
    config, method: str, prompt: str, prior, n_groups: int = 32, n_eps: int = 8, seed: int = 0
) -> dict[str, float]:
    """``variance_split`` of ``method``'s image-space G at the true renders of the prompt's
    first instance: n_groups training-distribution cameras and t, n_eps eps draws each."""
    device = torch.device("cpu")
    trainer = CellTrainer(config, method, prompt, seed, prior, device)
    g = torch.Generator().manual_seed(seed)
    cameras, t = trainer.draw_cameras_and_t(n_groups, 0, g, g)
    truth = render_object(
        instances(prompt)[0],
        cameras,
        config.render.height,
        config.render.width,
        supersample=config.world.supersample,
    )
    x = prior.encode(truth["rgb"])
    render = {"rgb": truth["rgb"], "depth": truth["depth"], "opacity": truth["mask"]}
    draws = []
    for _ in range(n_eps):
        eps = torch.randn(x.shape, generator=g)
        ctx = EstimatorContext(prompt, cameras, render, 0, torch.Generator().manual_seed(seed))
        draws.append(trainer.estimator.grad(x, t, eps, prior, ctx).grad.flatten(1))
    return variance_split(torch.stack(draws, dim=1))


def with_world(config, **changes):
    """``config`` with its world section changed (the prior must be rebuilt for new refs)."""
    config.world = replace(config.world, **changes)
    return config
