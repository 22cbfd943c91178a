"""Prompts as distributions (world/distributions.py) and the metrics against them
(world/instance_metrics.py): the union prior, its per-instance posterior, exact metrics."""

import math

import pytest
import torch

from core.cameras import look_at_origin
from core.interfaces import PriorContext
from core.schedule import alpha_sigma
from world.distributions import (
    DISTRIBUTIONS,
    all_prompts,
    distribution_prompts,
    instances,
    spotted_ball,
)
from world.instance_metrics import (
    best_instance,
    chroma_ratio,
    colour_scores,
    commitment,
    detail_ratio,
    distribution_scores,
    extreme_fraction,
    high_frequency_energy,
    instance_psnr,
    seed_diversity,
)
from world.metrics import psnr
from world.objects import OBJECTS, get_object, known_prompts
from world.prior import WorldPrior, WorldPriorConfig, mixture_expectation
from world.renderer import render_object

BALL = "a red ball with white spots"


def small_prior(prompts, **kw):
    config = WorldPriorConfig(n_azimuth=6, elevations=(0.0, 30.0), supersample=1, **kw)
    return WorldPrior(prompts, 12, 12, 2.5, 40.0, config=config)


def test_library_prompts_are_one_instance_distributions():
    assert known_prompts() == list(OBJECTS)  # the unconditional's objects are unchanged
    assert all_prompts() == [*OBJECTS, *DISTRIBUTIONS]
    for prompt in known_prompts():
        assert instances(prompt) == (get_object(prompt),)
    with pytest.raises(KeyError, match="a red ball with white spots"):
        instances("a purple elephant")
    for prompt in distribution_prompts():
        assert len(instances(prompt)) >= 4


def test_instances_are_deterministic_and_differ():
    cams = look_at_origin(*(torch.tensor([v]) for v in (20.0, 30.0, 2.5, 40.0)))
    a = render_object(spotted_ball(3), cams, 16, 16, supersample=1)["rgb"]
    b = render_object(spotted_ball(3), cams, 16, 16, supersample=1)["rgb"]
    c = render_object(spotted_ball(4), cams, 16, 16, supersample=1)["rgb"]
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 0.3  # different spots
    # same silhouette: spots are paint (a 0.006 bump), not geometry
    ma = render_object(spotted_ball(3), cams, 16, 16, supersample=1)["mask"]
    mc = render_object(spotted_ball(4), cams, 16, 16, supersample=1)["mask"]
    assert float((ma != mc).float().mean()) < 0.02  # at most a boundary pixel or two


@pytest.fixture(scope="module")
def prior():
    return small_prior(["a red sphere", "a ball of some colour"])


def test_one_instance_references_are_the_object_renders(prior):
    refs = prior.references["a red sphere"]
    assert refs.instance is None and refs.n_instances == 1
    out = render_object(get_object("a red sphere"), prior.reference_cameras, 12, 12, supersample=1)
    assert torch.equal(refs.images, (out["rgb"] * 2 - 1).flatten(1))
    assert refs.of_instance(0) is refs


def test_distribution_references_are_the_union_of_the_instances(prior):
    refs = prior.references["a ball of some colour"]
    objs = instances("a ball of some colour")
    n = len(prior.reference_cameras)
    assert refs.images.shape[0] == len(objs) * n and refs.n_instances == len(objs)
    for k, obj in enumerate(objs):
        out = render_object(obj, prior.reference_cameras, 12, 12, supersample=1)
        one = refs.of_instance(k)
        assert torch.equal(one.images, (out["rgb"] * 2 - 1).flatten(1))
        assert torch.equal(one.depth, out["depth"].flatten(1))
        assert torch.equal(refs.instance[k * n : (k + 1) * n], torch.full((n,), k))


def test_instances_render_on_threads_to_the_same_references(prior):
    """render_instances renders the instances on torch's thread count (a distribution
    prompt's 16 instances use every core): the same numbers, in order, as one at a time."""
    objs = instances(BALL)[:3]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = prior.render_instances(objs)
        torch.set_num_threads(3)
        pooled = prior.render_instances(objs)
    finally:
        torch.set_num_threads(before)
    for name in ("images", "directions", "depth", "normal", "instance"):
        assert torch.equal(getattr(one, name), getattr(pooled, name)), name


def test_instance_posterior_is_the_summed_responsibilities(prior):
    """P(k | x_t) = sum over instance k's references of r_i, checked by brute force; and the
    denoiser of the union is the instance-posterior-weighted mean of per-instance denoisers."""
    prompt = "a ball of some colour"
    refs = prior.references[prompt]
    g = torch.Generator().manual_seed(0)
    cams = look_at_origin(
        torch.tensor([10.0, 25.0]), torch.tensor([40.0, 200.0]), torch.full((2,), 2.5),
        torch.full((2,), 40.0),
    )  # fmt: skip
    ctx = PriorContext(prompt, cams)
    x0 = refs.images[[3, len(prior.reference_cameras) * 2 + 5]].view(2, 3, 12, 12)
    t = torch.tensor([300, 900])
    alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
    x_t = alpha.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) * torch.randn(
        x0.shape, generator=g
    )
    post = prior.instance_posterior(x_t, t, ctx)
    assert post.shape == (2, 4)
    torch.testing.assert_close(post.sum(1), torch.ones(2))
    logits = prior.log_mixture_weights(refs, cams).double() - (
        (x_t.flatten(1)[:, None].double() - alpha.double()[:, None, None] * refs.images.double())
        ** 2
    ).sum(-1) / (2 * sigma.double()[:, None] ** 2)
    r = torch.softmax(logits, 1)
    want = torch.stack([r[:, refs.instance == k].sum(1) for k in range(4)], 1)
    torch.testing.assert_close(post.double(), want, rtol=1e-4, atol=1e-5)
    # at t = 300 the posterior has snapped to the true instance (coarse: colours)
    assert float(post[0, 0]) > 0.999
    mean_union = prior.posterior_mean(x_t, t, ctx, conditional=True).flatten(1)
    per = torch.stack(
        [
            mixture_expectation(
                x_t.flatten(1), alpha, sigma, refs.of_instance(k).images,
                prior.log_mixture_weights(refs.of_instance(k), cams),
            )
            for k in range(4)
        ],
        1,
    )  # fmt: skip
    torch.testing.assert_close(mean_union, (post[:, :, None] * per).sum(1), atol=1e-4, rtol=1e-4)


def test_any_list_of_instances_becomes_a_prompt(prior):
    objs = instances("a ball of some colour")[:2]
    refs = prior.render_instances(objs)
    assert refs.n_instances == 2
    assert torch.equal(
        refs.images, prior.references["a ball of some colour"].images[: len(refs.images)]
    )
    prior.references["two balls"] = refs
    ctx = PriorContext("two balls", prior.reference_cameras[:1])
    post = prior.instance_posterior(refs.images[:1].view(1, 3, 12, 12), torch.tensor([10]), ctx)
    assert post.shape == (1, 2) and float(post[0, 0]) > 0.99


def test_generic_unconditional_and_config_checks():
    p = small_prior(["a red sphere"], unconditional="generic", n_generic=3)
    assert p.unconditional.images.shape[0] == 3 * len(p.reference_cameras)
    with pytest.raises(ValueError, match="unconditional"):
        WorldPriorConfig(unconditional="everything")
    with pytest.raises(ValueError, match="n_generic"):
        WorldPriorConfig(n_generic=0)


# ------------------------------------------------------------------------------ metrics


def test_distribution_scores_exact():
    """Two instances (0 and 1 everywhere), views of value 0.2 and 0.6: PSNR_kv by hand."""
    truths = torch.zeros(2, 2, 3, 4, 4)
    truths[1] += 1.0
    renders = torch.stack([torch.full((3, 4, 4), 0.2), torch.full((3, 4, 4), 0.6)])
    per = instance_psnr(renders, truths)
    db = lambda mse: 10 * math.log10(1 / mse)  # noqa: E731
    want = torch.tensor([[db(0.04), db(0.36)], [db(0.64), db(0.16)]])
    torch.testing.assert_close(per, want.float())
    assert best_instance(per) == 0  # means 10.9 vs 5.9 dB
    assert commitment(per) == 0.5  # view 1 prefers instance 1
    m = distribution_scores(renders, truths)
    assert m["instance"] == 0.0 and m["commitment"] == 0.5
    assert m["psnr"] == pytest.approx((db(0.04) + db(0.36)) / 2, rel=1e-6)
    assert m["psnr_mean_instance"] == pytest.approx((db(0.09) + db(0.01)) / 2, rel=1e-6)
    assert m["averaging"] == pytest.approx(m["psnr_mean_instance"] - m["psnr"])
    # one instance: psnr is the plain metric, commitment 1, averaging 0
    one = distribution_scores(renders, truths[:1])
    assert one["psnr"] == pytest.approx(float(psnr(renders, truths[0]).mean()))
    assert one["commitment"] == 1.0 and one["averaging"] == 0.0


def test_detail_and_colour_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    assert detail_ratio(x, x) == 1.0
    assert detail_ratio(torch.full_like(x, 0.3), x) == 0.0  # a constant has no detail
    # the Laplacian energy by hand for one pixel impulse: 16 (centre) + 4 x 1 (neighbours)
    imp = torch.zeros(1, 1, 5, 5)
    imp[0, 0, 2, 2] = 1.0
    assert float(high_frequency_energy(imp)[0]) == 20.0
    assert detail_ratio(2 * x, x) == pytest.approx(4.0)
    mask = torch.ones(2, 1, 8, 8)
    grey = torch.full_like(x, 0.5)
    red = grey.clone()
    red[:, 0] = 0.9
    red[:, 1:] = 0.1  # chroma 0.8
    half = grey.clone()
    half[:, 0] = 0.7
    half[:, 1:] = 0.3  # chroma 0.4
    assert chroma_ratio(red, half, mask) == pytest.approx(2.0)
    assert math.isnan(chroma_ratio(red, grey, mask))
    pure = red.clone()
    pure[:, 0] = 1.0
    pure[0, 1:] = 0.0  # image 0: (1, 0, 0); image 1: (1, 0.1, 0.1): both have a channel >= 0.98
    assert extreme_fraction(pure, mask) == 1.0 and extreme_fraction(red, mask) == 0.0
    m = mask.clone()
    m[1] = 0.0  # only image 0's pixels count
    assert colour_scores(pure, red, m) == {"chroma": pytest.approx(1.0 / 0.8), "extreme": 1.0}


def test_seed_diversity_exact():
    r = torch.zeros(3, 1, 3, 2, 2)
    r[1] += 0.5
    out = seed_diversity([2, 2, 5], r)
    assert out["distinct"] == 2
    assert out["pairwise_rmse"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    with pytest.raises(ValueError):
        seed_diversity([1], r)


def test_evaluator_scores_against_the_best_instance():
    """HeldOutEvaluator on a distribution prompt: a backbone that renders instance 2 exactly
    gets instance 2, commitment 1, psnr 100 and the ceiling-style best-instance metrics."""
    from benchmark.run.config import load_config
    from evaluation.heldout import HeldOutEvaluator

    config = load_config(
        None, ["render.height=12", "render.width=12", "world.supersample=1", "eval.n_views=3"]
    )
    prompt = "a ball of some colour"
    ev = HeldOutEvaluator(prompt, config, torch.device("cpu"))
    assert ev.truth_rgb.shape == (4, 3, 3, 12, 12)

    class Exact:
        def render(self, cameras, h, w):
            t = ev.truths[2]
            return {"rgb": t["rgb"], "depth": t["depth"], "opacity": t["mask"]}

    metrics, _ = ev(Exact())
    assert metrics["instance"] == 2.0 and metrics["commitment"] == 1.0
    assert metrics["psnr"] == 100.0 and metrics["mask_iou"] == 1.0
    assert metrics["detail"] == 1.0 and metrics["chroma"] == 1.0 and metrics["extreme"] == 0.0
    assert metrics["averaging"] < -50.0


def test_instance_diversity_from_results():
    import pandas as pd

    from analysis.diversity import instance_diversity

    rows = []
    for seed, (early, late) in enumerate([(0, 1), (1, 1), (3, 2)]):
        rows += [("vsd", "p", seed, 0, "instance", float(early))]
        rows += [("vsd", "p", seed, 300, "instance", float(late))]
        rows += [("vsd", "p", seed, 300, "psnr", 20.0)]
    df = pd.DataFrame(rows, columns=["method", "prompt", "seed", "step", "metric", "value"])
    out = instance_diversity(df).iloc[0]
    assert (out.seeds, out.distinct, out.top_share) == (3, 2, pytest.approx(2 / 3))
    assert instance_diversity(df[df.metric == "psnr"]).empty
