"""Gradient-variance probe (benchmark/measure.py): streaming statistics against brute force,
vectorised per-sample gradients against separate backward passes, no side effects on
training, common random numbers, degenerate cases, the bias check and the run_cell hook.

Small world: voxel grid resolution 8, 16x16 renders, the ``world_prior_small`` fixture.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from benchmark.probe import (
    MeasureDraws,
    PerSampleGradients,
    StreamingMoments,
    bootstrap_var_traces,
    count_sketch,
    draw_measure_inputs,
    measure_gradient_variance,
    summarize,
    theta_parameters,
    variant_statistics,
)
from benchmark.probe.config import MeasureConfig
from benchmark.run.config import load_config
from benchmark.run.trainer import CellTrainer, run_cell
from core.cameras import Cameras
from core.errors import ConfigError
from estimators.registry import METHODS
from estimators.sds import SDS
from results.schema import is_machine_metric
from tests.fakes import LinearPrior

SMALL = [
    "voxel.resolution=8",
    "voxel.n_samples=24",
    "render.height=16",
    "render.width=16",
    "eval.snapshots=false",
]
VARIANTS = ("all", "fixed_camera", "fixed_camera_t")


def make_trainer(prior, *overrides: str, warm_steps: int = 2, method: str = "sds") -> CellTrainer:
    config = load_config(None, [*SMALL, *overrides])
    trainer = CellTrainer(config, method, "a snowman", 0, prior, torch.device("cpu"))
    for k in range(warm_steps):  # move theta off the symmetric initial blob
        trainer.step(k)
    return trainer


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def stacked(sampler: PerSampleGradients, draws: MeasureDraws, chunk: int):
    """All per-sample (G, g) of ``draws``, chunk by chunk, stacked [K, ...]."""
    parts = [sampler(draws[s : s + chunk]) for s in range(0, len(draws), chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def separate_backward_passes(trainer: CellTrainer, draws: MeasureDraws, grads: torch.Tensor):
    """K full target-trick backward passes, one render each (the trainer's step with B=1)."""
    theta = [p for _, _, p in theta_parameters(trainer.backbone)]
    height, width = trainer.config.render.height, trainer.config.render.width
    rows = []
    for k in range(len(draws)):
        camera = draws.cameras if draws.shared_camera else draws.cameras[k]
        trainer.backbone.zero_grad(set_to_none=True)
        x = trainer.prior.encode(trainer.backbone.render(camera, height, width)["rgb"])
        loss = 0.5 * ((x - (x - grads[k : k + 1]).detach()) ** 2).sum()
        loss.backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in theta]))
    trainer.backbone.zero_grad(set_to_none=True)
    return torch.stack(rows)


@pytest.fixture(scope="module")
def trainer(world_prior_small):
    return make_trainer(world_prior_small)


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_statistics_match_brute_force(trainer, variant):
    """Chan/Welford over chunks of 4 (4 + 4 + 2 samples) equals torch.var on the stacked
    K = 10 gradients within 1e-5 relative, in theta and image space, per group too."""
    draws = draw_measure_inputs(trainer.probe_subject(), 3, 10).variant(variant)
    sampler = PerSampleGradients(trainer.probe_subject(), 3)
    grads, g = stacked(sampler, draws, 4)
    theta, image = variant_statistics(
        PerSampleGradients(trainer.probe_subject(), 3), draws, 4, gram_dim=10**6
    )
    assert theta.n == image.n == 10

    for moments, samples in ((theta, g), (image, grads.flatten(1))):
        x = samples.double()
        brute_var = torch.var(x, dim=0, unbiased=True)
        assert moments.var_trace() == pytest.approx(float(brute_var.sum()), rel=1e-5)
        assert rel_err(moments.variance(), brute_var) < 1e-5
        assert rel_err(moments.mean, x.mean(0)) < 1e-5
        centred = x - x[0]
        sq, gram = moments.gram()
        assert rel_err(gram, centred @ centred.T) < 1e-5
        assert rel_err(sq, (centred**2).sum(1)) < 1e-5

    for name, parts in sampler.group_slices().items():
        brute = sum(float(torch.var(g[:, s].double(), dim=0).sum()) for s in parts)
        assert theta.var_trace(parts) == pytest.approx(brute, rel=1e-5), name

    metrics = summarize(theta, "v/", 50, 0, sampler.group_slices())
    brute = float(torch.var(g.double(), dim=0).sum())
    assert metrics["v/log_var"] == pytest.approx(math.log(brute), abs=1e-5)
    assert metrics["v/mean_sq_norm"] == pytest.approx(float(g.double().mean(0).square().sum()))
    # the unbiased ||mu||^2 is the U-statistic of the off-diagonal inner products
    x = g.double()
    k = x.shape[0]
    full = x @ x.T
    u_stat = float(full.sum() - full.diagonal().sum()) / (k * (k - 1))
    assert metrics["v/signal_sq"] == pytest.approx(u_stat, rel=1e-6)
    assert metrics["v/nsr"] == pytest.approx(brute / u_stat, rel=1e-5)
    assert metrics["v/snr"] == pytest.approx(u_stat / brute, rel=1e-5)
    assert metrics["v/log_var_lo"] <= metrics["v/log_var_hi"]
    assert set(sampler.group_slices()) == {"density", "color"}


@pytest.mark.parametrize("engine", ["func", "autograd", "split"])
@pytest.mark.parametrize("variant", ["all", "fixed_camera"])
def test_vectorised_gradients_match_separate_backward_passes(world_prior_small, engine, variant):
    """Per-sample theta-gradients of one vectorised call equal K = 5 full backward passes
    within 1e-5 relative; the batched estimator call equals K single-view calls within 1e-4
    (float32 batched vs single matmuls in the world prior, whose view weights at
    view_temperature 0.001 amplify rounding)."""
    trainer = make_trainer(world_prior_small)
    draws = draw_measure_inputs(trainer.probe_subject(), 2, 5).variant(variant)
    sampler = PerSampleGradients(trainer.probe_subject(), 2, engine=engine)
    grads, g = sampler(draws)
    assert sampler.engine == engine
    assert g.shape == (5, sampler.numel) and grads.shape == draws.eps.shape
    assert rel_err(g, separate_backward_passes(trainer, draws, grads)) < 1e-5

    single = torch.cat([sampler(draws[k : k + 1])[0] for k in range(5)])
    assert rel_err(grads, single) < 1e-4


def test_func_and_autograd_engines_agree(trainer):
    """Both engines give the same metrics (1e-5 relative) on the same draws."""
    config = MeasureConfig(
        variants=VARIANTS,
        samples=6,
        chunk=4,
        bootstrap=0,
        reference_samples=5,
        reference_at="all",
        reference_variants=VARIANTS,
    )
    func = measure_gradient_variance(trainer.probe_subject(), 4, replace(config, engine="func"))
    auto = measure_gradient_variance(trainer.probe_subject(), 4, replace(config, engine="autograd"))
    assert func.keys() == auto.keys()
    for key, value in func.items():
        if not key.endswith("seconds"):
            assert auto[key] == pytest.approx(value, rel=1e-5), key


def test_degenerate_draws_have_exactly_zero_variance():
    """One camera, one t and one eps repeated K times: every g_k is identical, so the
    variance is exactly 0 (shifted accumulation) and log_var is -inf; for the shared-camera
    path and the per-camera (vmapped / looped) path, over chunk boundaries. LinearPrior keeps
    G row-wise identical (the world prior's batched matmul differs by ~1e-8 between rows)."""
    trainer = make_trainer(LinearPrior())
    draws = draw_measure_inputs(trainer.probe_subject(), 1, 6)
    t, eps = draws.t[:1].repeat(6), draws.eps[:1].repeat(6, 1, 1, 1)
    for cameras in (draws.cameras[0:1], draws.cameras[[0] * 6]):
        for engine in ("func", "autograd"):
            sampler = PerSampleGradients(trainer.probe_subject(), 1, engine=engine)
            same = MeasureDraws(cameras, t, eps)
            theta, image = variant_statistics(sampler, same, 4, gram_dim=10**6)
            assert theta.var_trace() == 0.0 and image.var_trace() == 0.0, (len(cameras), engine)
            assert float(theta.m2.abs().max()) == 0.0
            metrics = summarize(theta, "", 20, 0)
            assert metrics["log_var"] == -math.inf and metrics["nsr"] == 0.0
            assert metrics["log_var_hi"] == -math.inf and metrics["mean_sq_norm"] > 0


def test_two_samples_variance_is_half_squared_difference(trainer):
    draws = draw_measure_inputs(trainer.probe_subject(), 5, 2)
    sampler = PerSampleGradients(trainer.probe_subject(), 5)
    for variant in VARIANTS:
        for chunk in (1, 2):
            _, g = stacked(sampler, draws.variant(variant), chunk)
            half = 0.5 * (g[0].double() - g[1].double()) ** 2
            assert half.sum() > 0
            theta, _ = variant_statistics(sampler, draws.variant(variant), chunk, gram_dim=0)
            assert torch.equal(theta.variance(), half), (variant, chunk)
            assert theta.var_trace() == pytest.approx(float(half.sum()), rel=1e-12)


def assert_same_state(a, b, where=""):
    """Bit-identical nested state (tensors, dicts, lists, scalars)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_state(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


def cell_state(trainer: CellTrainer):
    return copy.deepcopy(
        (
            trainer.backbone.state_dict(),
            trainer.optimizer.state_dict(),
            [p.grad for p in trainer.backbone.parameters()],
            trainer.estimator.state_dict(),
            trainer.prior.n_evals,
        )
    )


@pytest.mark.parametrize("method", ["sds", "vsd", "ssd"])
def test_probe_changes_nothing_and_training_after_it_is_bit_identical(world_prior_small, method):
    """Theta, its .grad, the Adam state, the estimator's state and prior.n_evals are
    bit-identical across a probe, and training on after a probe equals training without it
    (the probe advances no training stream), for every method."""
    if method not in METHODS:
        pytest.skip(f"{method} is not registered")
    probed = make_trainer(world_prior_small, warm_steps=3, method=method)
    plain = make_trainer(world_prior_small, warm_steps=3, method=method)
    before = cell_state(probed)
    config = MeasureConfig(
        samples=4,
        variants=VARIANTS,
        bootstrap=10,
        reference_samples=3,
        reference_at="all",
        reference_variants=VARIANTS,
    )
    metrics = measure_gradient_variance(probed.probe_subject(), 3, config)
    if method == "sds":
        assert metrics["var/n_evals"] == 3 * (4 + 3)  # views per variant, 1 branch (no CFG)
    assert_same_state(before, cell_state(probed))

    for k in range(3, 6):
        probed.step(k)
        plain.step(k)
    assert_same_state(cell_state(plain), cell_state(probed))


class EMASDS(SDS):
    """SDS with internal state that grad() changes (an EMA of ||G||): must be restored."""

    def __init__(self, guidance):
        super().__init__(guidance)
        self.ema = torch.zeros(())

    def grad(self, x, t, eps, prior, ctx):
        out = super().grad(x, t, eps, prior, ctx)
        self.ema.mul_(0.9).add_(0.1 * out.grad.norm())
        return out

    def state_dict(self):
        return {"ema": self.ema.clone()}

    def load_state_dict(self, state):
        self.ema.copy_(state["ema"])


def test_probe_restores_estimator_state(world_prior_small):
    trainer = make_trainer(world_prior_small, warm_steps=0)
    trainer.estimator = EMASDS(trainer.guidance)
    trainer.step(0)
    ema = trainer.estimator.ema.clone()
    assert ema > 0
    measure_gradient_variance(trainer.probe_subject(), 1, MeasureConfig(samples=3, bootstrap=0))
    assert torch.equal(trainer.estimator.ema, ema)


class RecordingSDS(SDS):
    def __init__(self, guidance):
        super().__init__(guidance)
        self.seen: list[tuple[torch.Tensor, ...]] = []

    def grad(self, x, t, eps, prior, ctx):
        self.seen.append((ctx.cameras.c2w.clone(), t.clone(), eps.clone()))
        return super().grad(x, t, eps, prior, ctx)


def test_common_random_numbers_across_methods(world_prior_small):
    """Two SDS set-ups with different guidance (standing in for two methods) receive
    bit-identical cameras, t and eps in the probe, and their gradients differ."""
    metrics, seen = [], []
    for guidance in ("sds.guidance_scale=1.0", "sds.guidance_scale=5.0"):
        trainer = make_trainer(world_prior_small, guidance, warm_steps=0)
        trainer.estimator = RecordingSDS(trainer.guidance)
        config = MeasureConfig(
            variants=VARIANTS,
            samples=4,
            chunk=3,
            reference_samples=4,
            reference_at="all",
            reference_variants=VARIANTS,
            bootstrap=0,
        )
        metrics.append(measure_gradient_variance(trainer.probe_subject(), 7, config))
        seen.append(trainer.estimator.seen)
    assert len(seen[0]) == len(seen[1]) == 3 * (2 + 2)  # variants x (K chunks + ref chunks)
    for a, b in zip(seen[0], seen[1], strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert metrics[0]["var/all/img_mean_sq_norm"] != metrics[1]["var/all/img_mean_sq_norm"]
    # draws differ between steps and seeds
    trainer = make_trainer(world_prior_small, warm_steps=0)
    assert not torch.equal(
        draw_measure_inputs(trainer.probe_subject(), 7, 4).eps,
        draw_measure_inputs(trainer.probe_subject(), 8, 4).eps,
    )


def test_variants_share_the_draws(trainer):
    draws = draw_measure_inputs(trainer.probe_subject(), 0, 5)
    fixed, fixed_t = draws.variant("fixed_camera"), draws.variant("fixed_camera_t")
    assert fixed.shared_camera and fixed_t.shared_camera and not draws.shared_camera
    assert torch.equal(fixed.cameras.c2w[0], draws.cameras.c2w[0])
    assert torch.equal(fixed.t, draws.t) and torch.equal(fixed.eps, draws.eps)
    assert torch.equal(fixed_t.t, draws.t[:1].repeat(5)) and torch.equal(fixed_t.eps, draws.eps)
    lo, hi = trainer.guidance.timesteps.bounds(0, trainer.prior.num_train_timesteps)
    assert int(draws.t.min()) >= lo and int(draws.t.max()) <= hi
    assert len(torch.unique(draws.t)) > 1


def test_bias_check_cos_self_close_to_one(world_prior_small):
    """SDS, K = 64 against a 256-draw reference of the same variant: the K-sample mean points
    along the reference mean. Seen: cos_self 0.962 / 1.000 / 1.000 and rel_err_self 0.275 /
    0.030 / 0.006 for all / fixed_camera / fixed_camera_t (nsr 2.07 / 0.22 / 0.03), 3.3 s.
    (K = 32 against 128 draws gave cos_self(all) = 0.82: with nsr ~ 2 the mean of K = 32
    views is still noisy, so K is kept large.)"""
    trainer = make_trainer(world_prior_small)
    config = MeasureConfig(
        variants=VARIANTS,
        samples=64,
        reference_samples=256,
        reference_at="all",
        reference_variants=VARIANTS,
        bootstrap=0,
        chunk=64,
    )
    metrics = measure_gradient_variance(trainer.probe_subject(), 2, config)
    for variant in VARIANTS:
        assert metrics[f"var/{variant}/cos_self"] > 0.9, (variant, metrics)
        assert metrics[f"var/{variant}/rel_err_self"] < 0.5, (variant, metrics)


def test_metric_names(trainer):
    metrics = measure_gradient_variance(
        trainer.probe_subject(), 0, MeasureConfig(samples=3, variants=VARIANTS, bootstrap=20)
    )
    for variant in VARIANTS:
        for name in (
            "var_trace",
            "log_var",
            "log_var_lo",
            "log_var_hi",
            "mean_sq_norm",
            "nsr",
            "var_trace/density",
            "var_trace/color",
            "img_var_trace",
            "img_log_var",
            "img_log_var_lo",
            "img_log_var_hi",
            "img_mean_sq_norm",
            "img_nsr",
            "seconds",
        ):
            assert f"var/{variant}/{name}" in metrics
        assert f"var/{variant}/cos_self" not in metrics
        total = metrics[f"var/{variant}/var_trace"]
        parts = (
            metrics[f"var/{variant}/var_trace/density"] + metrics[f"var/{variant}/var_trace/color"]
        )
        assert parts == pytest.approx(total, rel=1e-12)
    assert metrics["var/seconds"] > 0
    only = measure_gradient_variance(
        trainer.probe_subject(), 0, MeasureConfig(samples=3, variants=("all",))
    )
    assert not any(k.startswith("var/fixed") for k in only)
    assert only["var/all/var_trace"] == metrics["var/all/var_trace"]


def test_count_sketch_bootstrap_close_to_exact():
    """Above sketch_dim the Gram matrix is count-sketched: inner products are unbiased and
    the bootstrap CI moves little (here < 0.05 in log_var) against the exact one."""
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(12, 50_000, generator=g) * 0.1 + torch.randn(50_000, generator=g)
    a, b = torch.randn(2, 200_000, generator=g).double()
    sa, sb = count_sketch(torch.stack([a, b]), 8192)
    assert float(sa @ sb) == pytest.approx(float(a @ b), abs=5 * float(a.norm() * b.norm()) / 90)
    exact, sketched = StreamingMoments(10**6, 12), StreamingMoments(8192, 12)
    for part in (samples[:5], samples[5:]):
        exact.update(part)
        sketched.update(part)
    assert sketched.var_trace() == pytest.approx(exact.var_trace(), rel=1e-12)
    e = summarize(exact, "", 400, 1)
    s = summarize(sketched, "", 400, 1)
    assert s["log_var_lo"] == pytest.approx(e["log_var_lo"], abs=0.05)
    assert s["log_var_hi"] == pytest.approx(e["log_var_hi"], abs=0.05)


def test_bootstrap_resample_formula():
    """A resample that takes every sample once reproduces the unbiased variance."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 7, generator=g).double()
    d = x - x[0]
    sq, gram = (d**2).sum(1), d @ d.T
    boot = bootstrap_var_traces(sq, gram, 300, g)
    assert boot.shape == (300,) and bool((boot >= 0).all())
    k = 5
    ones = torch.ones(k, dtype=torch.float64)
    full = (ones @ sq - ones @ gram @ ones / k) / (k - 1)
    assert float(full) == pytest.approx(float(torch.var(x, 0).sum()), rel=1e-12)


def test_measure_config_validation():
    assert load_config(None, ["measure.variants=[all]"]).measure.variants == ("all",)
    assert MeasureConfig().every == 150  # on by default: the main job measures variance
    # the nested variants are off by default (the main job's 10 minutes; the run says so)
    assert MeasureConfig().variants == ("all",)
    with pytest.raises(ConfigError, match="measure.variants"):
        load_config(None, ["measure.variants=[sideways]"])
    with pytest.raises(ConfigError):
        load_config(None, ["measure.samples=1"])
    with pytest.raises(ConfigError):
        load_config(None, ["measure.engine=jax"])


def test_run_cell_logs_probe_without_changing_training(world_prior_small):
    """measure.every=2 over 5 steps probes at 0, 2, 4 and 5 (last), at the eval step index;
    every training metric and the final theta equal a run without the probe."""

    def run(*overrides):
        trainer = make_trainer(
            world_prior_small,
            "steps=5",
            "eval.every=2",
            "measure.samples=3",
            "measure.bootstrap=10",
            *overrides,
            warm_steps=0,
        )
        rows = []
        result = run_cell(trainer, lambda b, s: {"psnr": 0.0}, lambda s, m: rows.append((s, m)))
        return trainer, rows, result

    PROBE_DERIVED = {"conv/probe_signal_ratio"}  # the probe's own signal, read by the monitor
    probed, rows, result = run("measure.every=2")
    plain, plain_rows, plain_result = run()
    steps = [s for s, m in rows if "var/seconds" in m]
    assert steps == [0, 2, 4, 5]
    eval_steps = [s for s, m in rows if "psnr" in m]
    assert set(steps) <= set(eval_steps)

    def training(logged):
        return [
            (s, {k: v for k, v in m.items() if not is_machine_metric(k) and k not in PROBE_DERIVED})
            for s, m in logged
            if not any(k.startswith("var/") for k in m)
        ]

    assert training(rows) == training(plain_rows)
    assert result.n_evals == plain_result.n_evals
    for a, b in zip(probed.backbone.parameters(), plain.backbone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cameras_getitem_list_used_for_shared_camera():
    """The probe repeats a shared camera with a list index: Cameras keeps [K, ...]."""
    cams = Cameras(
        torch.eye(4)[None].repeat(2, 1, 1),
        torch.tensor([40.0, 41.0]),
        torch.zeros(2),
        torch.zeros(2),
        torch.ones(2),
    )
    assert len(cams[[0, 0, 0]]) == 3 and torch.equal(cams[[0, 0, 0]].fovy, torch.full((3,), 40.0))


def test_ssd_with_phi_one_mu_one_reports_exactly_sds_numbers(world_prior_small):
    """SSD(constant phi = 1, fixed mu = 1) has S = eps, so G_ssd = G_sds bit for bit
    and the probe reports SDS's numbers exactly, eps-only variant (camera and t fixed)
    included; SDS's eps-only variance is a finite, positive number."""
    config = ["measure.samples=4", "measure.bootstrap=20", "measure.variants=[all,fixed_camera_t]"]
    sds = make_trainer(world_prior_small, *config, method="sds")
    ssd = make_trainer(
        world_prior_small, *config, "ssd.baseline=constant", "ssd.mu=fixed", method="ssd"
    )
    a = measure_gradient_variance(sds.probe_subject(), 2, sds.config.measure)
    b = measure_gradient_variance(ssd.probe_subject(), 2, ssd.config.measure)
    keep = sorted(k for k in a if not is_machine_metric(k))
    assert {k: a[k] for k in keep} == {k: b[k] for k in keep if k in a}
    eps_only = a["var/fixed_camera_t/var_trace"]
    assert math.isfinite(eps_only) and eps_only > 0.0
    assert a["var/all/var_trace"] > eps_only  # camera and t add variance on top of eps
