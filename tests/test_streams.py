"""Named streams: common random numbers across methods, reproducible, seed-dependent."""

import pytest
import torch

from benchmark.run.config import load_config
from benchmark.run.trainer import CellTrainer
from benchmark.streams import RandomStreams, stream_seed


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(0, "noise", "a snowman", 3) == stream_seed(0, "noise", "a snowman", 3)
    seeds = {
        stream_seed(s, n, p, k)
        for s in (0, 1)
        for n in ("camera", "noise")
        for p in ("a", "b")
        for k in (0, 1)
    }
    assert len(seeds) == 16


def test_unknown_stream_rejected():
    with pytest.raises(ValueError, match="unknown stream"):
        RandomStreams(0, "p").generator("global")


def test_draws_do_not_depend_on_other_streams():
    a, b = RandomStreams(0, "p"), RandomStreams(0, "p")
    torch.randn(1000, generator=b.generator("estimator", 4))  # extra private draws
    torch.testing.assert_close(a.normal("noise", 4, (5,)), b.normal("noise", 4, (5,)))


def test_two_methods_see_same_cameras_t_and_noise(world_prior_small):
    """Different methods (here: SDS with two guidance settings standing in for two
    methods) draw identical cameras, timesteps and noise at every step."""
    config = load_config(None, ["render.height=16", "render.width=16"])
    other = load_config(None, ["render.height=16", "render.width=16", "sds.guidance_scale=3.0"])
    device = torch.device("cpu")
    t1 = CellTrainer(config, "sds", "a snowman", 7, world_prior_small, device)
    t2 = CellTrainer(other, "sds", "a snowman", 7, world_prior_small, device)
    for step in (0, 1, 57):
        c1, tt1 = t1.sample_step_inputs(step)
        c2, tt2 = t2.sample_step_inputs(step)
        torch.testing.assert_close(c1.c2w, c2.c2w, rtol=0, atol=0)
        torch.testing.assert_close(tt1, tt2, rtol=0, atol=0)
        torch.testing.assert_close(
            t1.streams.normal("noise", step, (3, 16, 16)),
            t2.streams.normal("noise", step, (3, 16, 16)),
        )
    c_other_seed, _ = CellTrainer(
        config, "sds", "a snowman", 8, world_prior_small, device
    ).sample_step_inputs(0)
    assert not torch.equal(c_other_seed.c2w, t1.sample_step_inputs(0)[0].c2w)
