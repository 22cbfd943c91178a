"""The world's analytic prior equals a brute-force Gaussian-mixture posterior computation."""

import math

import pytest
import torch

from core.cameras import look_at_origin
from core.interfaces import PriorContext
from core.schedule import alpha_sigma
from world.objects import known_prompts
from world.prior import mixture_posterior_mean


def brute_force_posterior_mean(x_t, alpha, sigma, refs, log_prior, tau):
    """Loop over components in float64: r_i ~ pi_i N(x_t; alpha x_i, s^2 I)."""
    x_t, refs, log_prior = x_t.double(), refs.double(), log_prior.double()
    out = []
    for b in range(x_t.shape[0]):
        a, s = float(alpha[b]), float(sigma[b])
        s2 = s * s + a * a * tau * tau
        d = refs.shape[1]
        logp = torch.stack(
            [
                log_prior[b, i]
                - ((x_t[b] - a * refs[i]) ** 2).sum() / (2 * s2)
                - 0.5 * d * math.log(2 * math.pi * s2)
                for i in range(refs.shape[0])
            ]
        )
        r = torch.softmax(logp, 0)
        comp = torch.stack(
            [refs[i] + a * tau**2 / s2 * (x_t[b] - a * refs[i]) for i in range(len(r))]
        )
        out.append((r[:, None] * comp).sum(0))
    return torch.stack(out)


@pytest.mark.parametrize("tau", [0.0, 0.3])
@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_mixture_posterior_mean_matches_brute_force(tau, chunk_size):
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(7, 12, generator=g) * 2 - 1
    x_t = torch.randn(4, 12, generator=g)
    alpha = torch.tensor([0.99, 0.8, 0.5, 0.1])
    sigma = (1 - alpha**2).sqrt()
    log_prior = torch.randn(4, 7, generator=g)
    got = mixture_posterior_mean(x_t, alpha, sigma, refs, log_prior, tau, chunk_size)
    want = brute_force_posterior_mean(x_t, alpha, sigma, refs, log_prior, tau)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_world_noise_prediction_is_optimal_denoiser(world_prior_small):
    prior = world_prior_small
    refs = prior.references["a snowman"]
    g = torch.Generator().manual_seed(1)
    cameras = look_at_origin(
        torch.tensor([10.0, 40.0]),
        torch.tensor([20.0, -100.0]),
        torch.tensor([2.5, 2.5]),
        torch.tensor([40.0, 40.0]),
    )
    ctx = PriorContext("a snowman", cameras)
    x_t = torch.randn(2, 3, 16, 16, generator=g) * 0.5
    t = torch.tensor([300, 700])
    eps = prior.predict_branch(x_t, t, ctx, conditional=True)
    alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
    log_prior = (cameras.view_direction @ refs.directions.T) / prior.config.view_temperature
    x0 = brute_force_posterior_mean(x_t.flatten(1), alpha, sigma, refs.images, log_prior, 0.0)
    want = (x_t.flatten(1).double() - alpha.double()[:, None] * x0) / sigma.double()[:, None]
    torch.testing.assert_close(eps.flatten(1).double(), want, rtol=1e-4, atol=1e-4)


def test_unconditional_mixes_every_object(world_prior_small):
    prior = world_prior_small
    n_per_object = prior.references["a red sphere"].images.shape[0]
    assert prior.unconditional.images.shape[0] == n_per_object * len(known_prompts())


def test_denoiser_recovers_reference_at_low_noise(world_prior_small):
    prior = world_prior_small
    refs = prior.references["a red sphere"]
    i = 5
    cameras = prior.reference_cameras[i]
    t = torch.tensor([5])
    alpha, _ = alpha_sigma(prior.alphas_cumprod, t)
    x_t = alpha * refs.images[i].view(1, 3, 16, 16)
    x0 = prior.posterior_mean(x_t, t, PriorContext("a red sphere", cameras), conditional=True)
    torch.testing.assert_close(x0.flatten(), refs.images[i], rtol=0, atol=1e-4)


def test_eval_counter_counts_branches(world_prior_small):
    prior = world_prior_small
    cameras = prior.reference_cameras[:3]
    ctx = PriorContext("a red sphere", cameras)
    before = prior.n_evals
    prior.predict_noise(
        torch.zeros(3, 3, 16, 16), torch.tensor([100, 200, 300]), ctx, 1.0, "diffusers"
    )
    assert prior.n_evals - before == 3
    prior.predict_noise(
        torch.zeros(3, 3, 16, 16), torch.tensor([100, 200, 300]), ctx, 7.5, "diffusers"
    )
    assert prior.n_evals - before == 3 + 6
