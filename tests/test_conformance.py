"""Each family method's settings pinned as numbers from its original code (docs/conformance.md
names the repository, file and commit each fact comes from). Unit level: the estimators'
functions, the presets in configs/, tests/fakes.py and a small world prior; no runs."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmark.run.config import load_config
from core.cameras import orbit_cameras
from core.guidance import (
    classifier_free_guidance,
    perp_neg_guidance,
    perp_neg_view_weights,
)
from core.interfaces import DiffusionPrior
from core.schedule import add_noise, ddpm_alphas_cumprod
from estimators import EstimatorContext, GuidanceConfig
from estimators.asd import later_timestep
from estimators.branches import BRIDGE_NEGATIVE, guided
from estimators.bridge import Bridge
from estimators.cds import CDS, CDSConfig
from estimators.csd import CSD, CSDConfig
from estimators.ism import ISM, ISMConfig, inversion_evaluations
from estimators.registry import METHODS
from estimators.sdi import SDI, SDIConfig, annealed_timestep
from estimators.vsd import VSD, build_residual_eps_phi

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
T = 1000


def _preset(name: str, section: str | None = None):
    return getattr(load_config(str(CONFIGS / f"{name}.yaml")), section or name)


class TextPrior(DiffusionPrior):
    """eps(x_t; text) = 0.3 x_t + b(text): one constant per text, so each branch is
    distinguishable; records the negative-branch texts it was asked for."""

    supports_negative = True

    def __init__(self) -> None:
        super().__init__()
        self.alphas_cumprod = ddpm_alphas_cumprod()
        self.texts: list[str] = []

    def encode(self, rgb):
        return rgb * 2 - 1

    def _offset(self, text: str) -> float:
        return (sum(map(ord, text)) % 97) / 97.0 - 0.5

    def _predict_branch(self, x_t, t, ctx, conditional):
        return 0.3 * x_t + self._offset(ctx.prompt if conditional else "")

    def _predict_negative(self, x_t, t, ctx, negative_prompt):
        text = negative_prompt.replace("{prompt}", ctx.prompt)
        self.texts.append(text)
        return 0.3 * x_t + self._offset(text) + 0.01 * torch.arange(x_t.shape[-1])


def _ctx(azimuths, step=0, seed=0, elevation=20.0):
    n = len(azimuths)
    cameras = orbit_cameras(n, (elevation,), 2.5, 40.0)
    cameras.azimuth[:] = torch.tensor(azimuths, dtype=cameras.azimuth.dtype)
    g = torch.Generator().manual_seed(seed)
    return EstimatorContext(prompt="a snowman", cameras=cameras, step=step, generator=g)


@pytest.fixture(scope="module")
def world_prior_small():
    from world.prior import WorldPrior, WorldPriorConfig

    config = WorldPriorConfig(
        n_azimuth=8, elevations=(0.0, 30.0), supersample=1, view_temperature=0.05
    )
    return WorldPrior(["a red sphere", "a snowman"], 16, 16, 2.5, 40.0, config=config)


# ------------------------------------------------------------------------------ perp-neg


def test_perp_neg_identities_and_orthogonal_negatives():
    """threestudio's perp-neg: weights 0 or negatives parallel to e_pos give diffusers CFG;
    negatives orthogonal to e_pos give eps_u + s (e_pos + sum_i w_i e_i)."""
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    cfg = classifier_free_guidance(c, u, 7.5, "diffusers")
    negs = [torch.randn(2, 3, 4, 4, generator=g) for _ in range(2)]
    assert torch.equal(perp_neg_guidance(c, u, negs, torch.zeros(2, 2), 7.5), cfg)
    parallel = [u + 0.7 * (c - u), u - 2.0 * (c - u)]
    weights = torch.tensor([[-1.5, 0.3], [-0.2, -2.0]])
    torch.testing.assert_close(perp_neg_guidance(c, u, parallel, weights, 7.5), cfg)
    e_pos = c.double() - u.double()
    orth = []
    for n in negs:  # Gram-Schmidt per image against e_pos (float64)
        n = n.double()
        dot = (n * e_pos).sum(dim=(1, 2, 3)) / (e_pos * e_pos).sum(dim=(1, 2, 3))
        orth.append(n - dot.view(-1, 1, 1, 1) * e_pos)
    got = perp_neg_guidance(c.double(), u.double(), [u.double() + o for o in orth], weights, 3.0)
    w = weights.double().view(2, 2, 1, 1, 1)
    want = u.double() + 3.0 * (e_pos + w[:, 0] * orth[0] + w[:, 1] * orth[1])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_perp_neg_view_weights_are_threestudios():
    """get_text_embeddings_perp_neg with the default (a, b, c) of a exp(-b r) + c."""
    az = torch.tensor([0.0, 45.0, 135.0, 180.0, -90.0, 30.0])
    overhead = torch.tensor([False, False, False, False, False, True])
    names, w = perp_neg_view_weights(az, overhead)
    f = lambda a, b, c, r: a * math.exp(-b * r) + c  # noqa: E731
    want = [
        (-f(4, 0.5, -2.426, 1.0), -f(4, 0.5, -2.426, 0.0)),
        (-f(4, 0.5, -2.426, 0.5), -f(4, 0.5, -2.426, 0.5)),
        (-f(1, 0.5, -0.606, 0.5), -f(1, 0.5, 0.967, 0.5)),
        (-0.394, -1.967),
        (-f(1, 0.5, -0.606, 1.0), -f(1, 0.5, 0.967, 1.0)),
        (0.0, 0.0),
    ]
    torch.testing.assert_close(w, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    assert names[:4] == [("front", "side"), ("front", "side"), ("side", "front")] * 1 + [
        ("side", "front")
    ]


def test_guided_with_perp_neg_uses_the_view_prompts_and_the_scale():
    prior = TextPrior()
    ctx = _ctx([0.0, 150.0])
    x_t = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([300, 700])
    cfg = GuidanceConfig(guidance_scale=7.5, perp_neg=True, perp_neg_scale=0.5)
    before = prior.n_evals
    got = guided(prior, x_t, t, ctx, cfg)
    assert prior.n_evals - before == 4 * 2  # cond, uncond, two view negatives per image
    assert set(prior.texts) == {"a snowman, front view", "a snowman, side view"}
    names, w = perp_neg_view_weights(ctx.cameras.azimuth, torch.zeros(2, dtype=torch.bool))
    eps_c = prior.predict_branch(x_t, t, ctx, True)
    eps_u = prior.predict_branch(x_t, t, ctx, False)
    negs = [
        torch.stack(
            [
                prior.predict_negative(x_t[[i]], t[[i]], ctx, f"{{prompt}}, {names[i][k]} view")[0]
                for i in range(2)
            ]
        )
        for k in range(2)
    ]
    want = perp_neg_guidance(eps_c, eps_u, negs, 0.5 * w, 7.5)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "scale"), [("sdi", 1.0), ("asd", 0.5)])
def test_presets_with_perp_neg(name, scale):
    """sdi.yaml (use_perp_neg) and asd_sd_nerf.yaml (guidance_perp_neg -0.5: weights x 0.5)."""
    section = _preset(name)
    assert (section.perp_neg, section.perp_neg_scale, section.cfg_mode) == (
        True,
        scale,
        "diffusers",
    )


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(("name", "section"), [("reference", "vsd"), ("esd", None)])
def test_vsd_and_esd_hold_t_max_until_5000(name, section):
    """prolificdreamer.yaml max_step_percent [5000, 0.98, 0.5, 5001]; AdamW betas (0.9, 0.99),
    eps 1e-15, torch's default weight decay 0.01."""
    cfg = _preset(name, section)
    sched = cfg.timesteps
    assert [sched.bounds(k, T) for k in (0, 2500, 5000, 5001, 9000)] == [
        (20, 980),
        (20, 980),
        (20, 980),
        (20, 500),
        (20, 500),
    ]
    assert (tuple(cfg.adam_betas), cfg.adam_eps, cfg.weight_decay) == ((0.9, 0.99), 1e-15, 0.01)
    vsd = VSD(cfg, build_residual_eps_phi(cfg, (3, 16, 16), torch.Generator().manual_seed(0)))
    group = vsd.optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.99), 1e-15, 0.01)


def test_ism_t_max_falls_from_098_to_05_over_1500():
    """LucidDreamer: t ~ randint(20, 500 + int(480 r)), r = 1 - min(step / 1500, 1)
    (exclusive upper bound: ours, inclusive, is one rung higher)."""
    sched = _preset("ism").timesteps
    for step in (0, 375, 750, 1125, 1500, 4000):
        r = 1.0 - min(step / 1500, 1.0)
        lucid_hi = 500 + int(480 * r) - 1
        lo, hi = sched.bounds(step, T)
        assert lo == 20 and hi - lucid_hi in (0, 1), step
    assert [sched.bounds(k, T)[1] for k in (0, 750, 1500)] == [980, 740, 500]


def test_asd_anneals_t_min_and_t_max_over_the_run():
    """asd_sd_nerf.yaml: min_step_percent [0, 0.5, 0.02, 25000], max [0, 0.98, 0.5, 25000]."""
    sched = _preset("asd").timesteps
    assert [sched.bounds(k, T) for k in (0, 12500, 25000, 30000)] == [
        (500, 980),
        (260, 740),
        (20, 500),
        (20, 500),
    ]


@pytest.mark.parametrize(("name", "section"), [("bridge", None), ("csd_if", "csd")])
def test_t_max_drops_to_05_at_5000(name, section):
    """sds-bridge.yaml and csd-if.yaml: max_step_percent [5000, 0.98, 0.5, 5001]."""
    sched = _preset(name, section).timesteps
    assert [sched.bounds(k, T)[1] for k in (4999, 5000, 5001)] == [980, 980, 500]


def test_sdi_t_anneals_linearly():
    """threestudio update_step: percent = (max - min)(1 - step / trainer_max_steps) + min,
    sdi.yaml max 0.98, min 0.25, trainer.max_steps 10000; t = int(T percent)."""
    cfg = _preset("sdi")
    for step in (0, 1, 2500, 5000, 7777, 10000):
        percent = (0.98 - 0.25) * (1 - step / 10000) + 0.25
        assert annealed_timestep(cfg, step, T) == int(T * percent)
    assert annealed_timestep(cfg, 2500, T) == 797  # a square-root schedule gives 615
    sdi = SDI(cfg)
    assert sdi.timestep(torch.tensor([123]), 2500, T) == 797


def test_cds_s_schedule_and_ranges():
    """consistency-coarse.yaml: cur_steps [0, 700, 100, 3000] with perturb_indices sqrt,
    s clamped to [100, 980 - 100], t = s + randint(100, 300) clamped to [100, 980]."""
    cfg = _preset("cds")
    assert [cfg.s_at(k) for k in (0, 750, 1500, 3000, 6000)] == [
        int(700 - 600 * math.sqrt(k / 3000)) if k <= 3000 else 100
        for k in (0, 750, 1500, 3000, 6000)
    ]
    assert [cfg.s_at(k) for k in (0, 750, 3000)] == [700, 400, 100]
    assert [cfg.scale_at(k) for k in (0, 1500, 3000, 5000)] == [100.0, 75.0, 50.0, 50.0]
    cds = CDS(cfg, torch.zeros(3, 4, 4))
    t_harness = torch.tensor([999, 20, 500])
    assert cds.small_timestep(t_harness, 0, T).tolist() == [700, 700, 700]
    free = CDS(CDSConfig(s_anneal=False), torch.zeros(3, 4, 4))
    assert free.small_timestep(t_harness, 0, T).tolist() == [880, 100, 500]
    s = torch.full((20000,), 880)
    t = cds.timesteps(s, _ctx([0.0] * 1, seed=3), T)
    assert int(t.max()) == 980 and int(t.min()) == 980  # 880 + [100, 300) capped at 980
    s = torch.full((20000,), 700)
    t = cds.timesteps(s, _ctx([0.0], seed=3), T)
    assert int(t.min()) == 800 and int(t.max()) == 980 and bool((t < 999).all())


# ------------------------------------------------------------------ SDI's injection scale


def test_sdi_mean_injection_is_threestudios_gradient(world_prior_small):
    """reduction="mean": with the harness's 0.5 ||x - (x - G)||^2 / B the gradient on x equals
    threestudio's 0.5 mse(x, x - G_sum, "mean") / B, G_sum / (B^2 numel)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(2, 3, 16, 16, generator=g)
    base = dict(t_anneal=False, inversion_eta=0.3)
    t = torch.tensor([450, 450])
    sdi_sum, sdi_mean = SDI(SDIConfig(**base)), SDI(SDIConfig(**base, injection="mean"))
    g_sum = sdi_sum.grad(x, t, eps, world_prior_small, _ctx([0.0, 90.0], seed=4)).grad
    g_mean = sdi_mean.grad(x, t, eps, world_prior_small, _ctx([0.0, 90.0], seed=4)).grad
    torch.testing.assert_close(g_mean * x.numel(), g_sum, rtol=1e-6, atol=1e-7)
    assert x.numel() == 2 * 768  # B numel: 1,536x here, 16,384 B at SD's 4 x 64 x 64
    # float64: x - (x - G) cancels catastrophically in float32 for G this small
    ours = x.double().requires_grad_(True)
    (0.5 * ((ours - (ours - g_mean.double()).detach()) ** 2).sum() / 2).backward()
    theirs = x.double().requires_grad_(True)
    (0.5 * F.mse_loss(theirs, (theirs - g_sum.double()).detach(), reduction="mean") / 2).backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-12)
    assert _preset("sdi").injection == "mean"


# ----------------------------------------------------------------------- ISM's evaluations


def _lucid_inversion_evaluations(ind_prev_t: int, xs_delta_t: int, xs_inv_steps: int) -> int:
    """LucidDreamer's add_noise_with_cfg loop (transcribed): one UNet call per iteration,
    next = min(cur + delta, target), break once the target is reached."""
    starting_ind = max(ind_prev_t - xs_delta_t * xs_inv_steps, 0)
    cur, calls = starting_ind, 0
    for _ in range(xs_inv_steps):
        calls += 1
        cur = min(cur + xs_delta_t, ind_prev_t)
        if cur == ind_prev_t:
            break
    return calls


@pytest.mark.parametrize("step", [0, 750, 1500])
def test_ism_inversion_length_is_lucid_dreamers(step):
    cfg = _preset("ism")
    t = torch.arange(0, T)
    got = inversion_evaluations(cfg, t, step).tolist()
    delta = cfg.interval(step)
    want = [_lucid_inversion_evaluations(max(k - delta, 0), 200, 5) for k in range(T)]
    assert got == want
    assert delta == int(80 + (1 - min(step / 1500, 1)) * (100 - 80))


def test_ism_evaluations_by_step():
    """Preset: 8 at t = 980 (5 + 1 + CFG 2), 4 at small t; the mean over the t range is 5.58
    at step 0 and 4.50 once t_max is 0.5 (the old fixed count charged 8 at every step)."""
    cfg = _preset("ism")
    assert ISM.nfe_per_step(cfg, t=980, step=0) == {"prior": 8}
    assert ISM.nfe_per_step(cfg, t=20, step=2000) == {"prior": 4}
    assert ISM.nfe_per_step(cfg, step=0)["prior"] == pytest.approx(5.5817, abs=1e-4)
    assert ISM.nfe_per_step(cfg, step=1500)["prior"] == pytest.approx(4.4990, abs=1e-4)
    run = METHODS["ism"].mean_nfe_per_step(cfg, None, 3000)["prior"]
    assert 4.5 < run < 5.6


def test_ism_counters_follow_the_exact_count(world_prior_small):
    cfg = ISMConfig(guidance_scale=7.5)
    t = torch.tensor([20, 300, 980])
    g = torch.Generator().manual_seed(0)
    x, eps = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1, torch.randn(3, 3, 16, 16, generator=g)
    before = world_prior_small.n_evals
    ISM(cfg).grad(x, t, eps, world_prior_small, _ctx([0.0, 90.0, 180.0], step=10))
    want = sum(ISM.nfe_per_step(cfg, t=int(k), step=10)["prior"] for k in t)
    assert world_prior_small.n_evals - before == want == (1 + 2 + 5) + 3 * 3


def test_ism_cfg_uses_the_negative_prompt():
    prior = TextPrior()
    cfg = _preset("ism")
    assert cfg.negative_prompt.startswith("unrealistic, blurry")
    x_t = torch.randn(1, 3, 4, 4)
    t, ctx = torch.tensor([500]), _ctx([0.0])
    got = ISM(cfg).guided_prediction(prior, x_t, t, ctx)
    eps_y = prior.predict_branch(x_t, t, ctx, True)
    eps_neg = prior.predict_negative(x_t, t, ctx, cfg.negative_prompt)
    torch.testing.assert_close(got, eps_neg + 7.5 * (eps_y - eps_neg))


# ------------------------------------------------------------------------- bridge, ASD, CSD


def test_bridge_preset_and_unweighted_stage_two():
    """sds-bridge.yaml: guidance 100 (diffusers), stage two from 20000, weighting uniform in
    stage two (phase 1 hard-codes 1 - abar); the source prompt carries the view suffix."""
    cfg = _preset("bridge")
    assert (cfg.guidance_scale, cfg.cfg_mode, cfg.switch_step) == (100.0, "diffusers", 20000)
    assert (cfg.weighting, cfg.stage_two_weighting) == ("sds", "uniform")
    assert BRIDGE_NEGATIVE.endswith("malformed{view}")
    prior = TextPrior()
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    eps, t = torch.randn(2, 3, 4, 4), torch.tensor([100, 900])
    ctx = _ctx([0.0, 90.0], step=20000)
    got = Bridge(cfg).grad(x, t, eps, prior, ctx).grad
    x_t = add_noise(x, t, eps, prior.alphas_cumprod)
    want = prior.predict_branch(x_t, t, ctx, True) - prior.predict_negative(
        x_t, t, ctx, cfg.negative_prompt
    )
    assert torch.equal(got, want)


def test_asd_clamps_the_room_before_the_draw():
    """get_t_plus: t_plus = clamp(0.1 (t - min_step), 0, T - t - 1) * u, then t + t_plus: at
    t = 980 the later timestep is uniform on 980 .. 998, never 999 (clamping after the draw
    put 80% of the mass there)."""
    cfg = _preset("asd")
    n = 100000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((n,), 980)
    later = later_timestep(cfg, t, u, 25000, T)  # t_min 0.02 at the end of the anneal
    assert int(later.max()) == 998 and int(later.min()) == 980
    assert float((later == 999).double().mean()) == 0.0
    counts = torch.bincount(later - 980, minlength=19).double() / n
    assert float((counts - 1 / 19).abs().max()) < 0.01  # uniform: binomial sd 7e-4
    t = torch.tensor([500])
    assert later_timestep(cfg, t, torch.tensor([0.99999]), 0, T).tolist() == [500]  # t_min 500
    assert later_timestep(cfg, t, torch.tensor([0.99999]), 25000, T).tolist() == [547]


def test_csd_normalises_over_the_batch_and_its_presets():
    """deep_floyd_simple_guidance: grad / (grad.norm(2) + 1e-8) over the batch; csd-if.yaml:
    uniform w, perp-neg 3, its own negative prompt; csd-sd-refine.yaml: no normalisation."""
    prior = TextPrior()
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    eps, t = torch.randn(2, 3, 4, 4), torch.tensor([100, 900])
    g = CSD(CSDConfig(coef_anneal_steps=10)).grad(x, t, eps, prior, _ctx([0.0, 90.0])).grad
    assert float(g.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(g[0].norm()) != pytest.approx(float(g[1].norm()), rel=1e-3)
    if_recipe, sd = _preset("csd_if", "csd"), _preset("csd")
    assert (if_recipe.perp_neg, if_recipe.perp_neg_scale, if_recipe.weighting) == (
        True,
        3.0,
        "uniform",
    )
    assert (if_recipe.normalize, if_recipe.normalize_over) == (True, "batch")
    assert sd.normalize is False and sd.t_max == 0.5 and sd.coef_anneal_steps == 10000
    negative = "oversaturated color, ugly, tiling, low quality, noisy"
    assert if_recipe.negative_prompt == sd.negative_prompt == CSDConfig().negative_prompt
    assert sd.negative_prompt == negative
    assert CSD.nfe_per_step(if_recipe) == {"prior": 5}  # eps_y, eps_0, eps_neg, 2 views
