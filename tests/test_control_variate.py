"""The probe's control-variate view and update variance (benchmark/probe/control.py):
exact against brute force, the raw term's per-sample gradients against separate backward
passes, the Adam preconditioner against its definition, SSD's step-0 flag, the bias check at
the last checkpoint only."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from benchmark.probe import PerSampleGradients, draw_measure_inputs, measure_gradient_variance
from benchmark.probe.config import MeasureConfig
from benchmark.probe.control import adam_step, control_variate_metrics
from benchmark.probe.moments import StreamingMoments
from benchmark.run.config import load_config
from benchmark.run.trainer import CellTrainer, run_cell

SMALL = [
    "voxel.resolution=8",
    "voxel.n_samples=16",
    "render.height=16",
    "render.width=16",
    "eval.snapshots=false",
]


def _moments(rows: torch.Tensor) -> StreamingMoments:
    m = StreamingMoments()
    m.update(rows)
    return m


def test_control_variate_metrics_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(12, 30, generator=gen, dtype=torch.float64)
    c = 0.7 * a + 0.3 * torch.randn(12, 30, generator=gen, dtype=torch.float64)
    g = a - c
    out = control_variate_metrics(_moments(g), _moments(a), _moments(c), "p/")
    var = lambda x: float(x.var(0, unbiased=True).sum())  # noqa: E731
    assert out["p/raw_log_var"] == pytest.approx(math.log(var(a)), rel=1e-12)
    assert out["p/cv_gain"] == pytest.approx(math.log(var(a)) - math.log(var(g)), rel=1e-10)
    ac, cc = a - a.mean(0), c - c.mean(0)
    lam = float((ac * cc).sum() / (cc * cc).sum())
    assert out["p/cv_oracle_coef"] == pytest.approx(lam, rel=1e-10)
    best = var(a - lam * c)
    assert out["p/cv_oracle_gain"] == pytest.approx(math.log(var(a)) - math.log(best), rel=1e-9)
    grid = [var(a - s * c) for s in torch.linspace(lam - 0.5, lam + 0.5, 41).tolist()]
    assert best <= min(grid) + 1e-12


@pytest.fixture(scope="module")
def trainers(world_prior_small):
    cpu = torch.device("cpu")
    config = load_config(None, SMALL)
    out = {}
    for method in ("sds", "ssd"):
        trainer = CellTrainer(config, method, "a snowman", 0, world_prior_small, cpu)
        out[method] = trainer
    return out


@pytest.mark.parametrize("camera", ["shared", "k"])
def test_raw_term_gradients_match_the_autograd_engine(trainers, camera):
    trainer = trainers["sds"]
    subject = trainer.probe_subject()
    draws = draw_measure_inputs(subject, 0, 4)
    draws = draws.variant("fixed_camera") if camera == "shared" else draws
    func = PerSampleGradients(subject, 0, "func", raw=True)(draws)
    auto = PerSampleGradients(subject, 0, "autograd", raw=True)(draws)
    for x, y in zip(func, auto, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-7)
    grad, g, raw, a = func
    assert not torch.equal(raw, grad)  # SDS: A = w eps_hat, G = A - w eps


def test_probe_reports_the_control_variate_view_and_the_ssd_flag(trainers):
    ssd = trainers["ssd"]
    config = MeasureConfig(samples=6, variants=("all",), bootstrap=0, control_at="all")
    first = measure_gradient_variance(ssd.probe_subject(), 0, config)
    assert first["var/mu_uninformed"] == 1.0
    assert math.isfinite(first["var/all/update_log_var"])  # Adam's first step: lr sign(g)
    for prefix in ("var/all/", "var/all/img_"):
        assert first[prefix + "cv_oracle_gain"] >= first[prefix + "cv_gain"] - 1e-9
        assert first[prefix + "raw_log_var"] - first[prefix + "log_var"] == pytest.approx(
            first[prefix + "cv_gain"]
        )
    ssd.step(0)
    later = measure_gradient_variance(ssd.probe_subject(), 1, config)
    assert later["var/mu_uninformed"] == 0.0
    assert math.isfinite(later["var/all/update_log_var"])
    assert "cos_self" not in " ".join(later)  # bias check only at the final checkpoint


def test_theta_space_view_at_the_last_checkpoint_only_by_default(trainers):
    """control_at=last: an intermediate probe has the image-space view and no theta-space
    one (no second pullback, no Adam steps); the last probe has both, with the numbers that
    control_at=all gives at every probe, and every shared number is the same bit for bit."""
    sds = trainers["sds"]
    config = MeasureConfig(
        samples=4, variants=("all",), bootstrap=0, reference_samples=0, split_at="off"
    )
    middle = measure_gradient_variance(sds.probe_subject(), 1, config)
    last = measure_gradient_variance(sds.probe_subject(), 1, config, final=True)
    every = measure_gradient_variance(sds.probe_subject(), 1, replace(config, control_at="all"))
    theta_view = ("raw_log_var", "cv_gain", "cv_oracle_coef", "cv_oracle_gain", "update_log_var")
    for name in theta_view:
        assert "var/all/" + name not in middle
        assert math.isfinite(last["var/all/" + name])
    assert math.isfinite(middle["var/all/img_cv_gain"])

    def timeless(metrics):  # repr: a NaN equals a NaN
        return {k: repr(v) for k, v in metrics.items() if not k.endswith("seconds")}

    assert timeless(every) == timeless(last)
    assert timeless(middle).items() <= timeless(last).items()


@pytest.mark.parametrize("steps_before", [0, 2])
def test_adam_step_is_the_update_torch_adam_applies(trainers, steps_before):
    """AdamStep(g) equals the change torch.optim.Adam makes for gradient g (a copy of the
    trainer's optimiser state), before the first step and after two."""
    import copy

    trainer = trainers["sds"] if steps_before else _fresh(trainers)
    for k in range(steps_before):
        trainer.step(10 + k)
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    step = adam_step(trainer.optimizer, params)
    g = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(3))
    clones = [p.detach().clone().requires_grad_(True) for p in params]
    groups = [
        dict(group, params=clones[i : i + len(group["params"])])
        for i, group in zip(
            _offsets(trainer.optimizer.param_groups), trainer.optimizer.param_groups, strict=True
        )
    ]
    optimizer = torch.optim.Adam(groups)
    state = copy.deepcopy(trainer.optimizer.state_dict())
    if steps_before:
        optimizer.load_state_dict(state)
    start = 0
    for c in clones:
        c.grad = g[start : start + c.numel()].view_as(c).to(c.dtype)
        start += c.numel()
    before = torch.cat([c.detach().reshape(-1).double() for c in clones])
    optimizer.step()
    after = torch.cat([c.detach().reshape(-1).double() for c in clones])
    torch.testing.assert_close(before - after, step(g), rtol=1e-5, atol=1e-9)
    assert adam_step(None, params) is None


def _offsets(groups):
    out, start = [], 0
    for group in groups:
        out.append(start)
        start += len(group["params"])
    return out


def _fresh(trainers):
    t = trainers["sds"]
    return CellTrainer(t.config, "sds", "a snowman", 1, t.prior, torch.device("cpu"))


def test_bias_check_runs_at_the_last_checkpoint_by_default(world_prior_small):
    config = load_config(
        None,
        [*SMALL, "steps=2", "measure.every=1", "measure.samples=3", "measure.bootstrap=0",
         "measure.reference_samples=4", "measure.variants=[all,fixed_camera]", "eval.every=2"],
    )  # fmt: skip
    trainer = CellTrainer(config, "sds", "a snowman", 0, world_prior_small, torch.device("cpu"))
    rows = []
    run_cell(trainer, lambda b, s: {}, lambda step, m: rows.append((step, m)))
    with_ref = sorted({s for s, m in rows if "var/all/cos_self" in m})
    assert with_ref == [2]
    assert not any("var/fixed_camera/cos_self" in m for _, m in rows)
