"""Gradient-variance probe (DESIGN.md section 4): per-sample gradients at a frozen checkpoint.

At a checkpoint ``step`` theta, the optimiser and the estimator's own state (LoRA, mu) are
frozen: no optimiser step, no ``estimator.update``. ``grad`` has no side effects but its
network-evaluation counters (the prior's ``n_evals``, eps_phi's and the depth model's, which
live in the estimator's ``state_dict``): they are restored afterwards. The subject is explicit
(``ProbeSubject``), never the trainer. K = ``config.samples`` draws of (camera, t, eps)
come from the ``measure`` stream of this step only (never from the estimator), so every
method sees the same K draws at the same step and seed (common random numbers). One sample
is one view: with ``x_k = prior.encode(render(theta, c_k))``,

    G_k = estimator.grad(x_k, t_k, eps_k)            image space, [C, H, W]
    g_k = d/dtheta <x_k, G_k>                        theta space (target trick, batch of 1)

so the training gradient of a batch of B views (loss / B) has covariance Cov(g) / B.
Variants share the draws: ``all`` uses (c_k, t_k, eps_k); ``fixed_camera`` (c_1, t_k,
eps_k); ``fixed_camera_t`` (c_1, t_1, eps_k).

Statistics, streamed over the K samples (Chan/Welford in float64, shifted by the first
sample), so memory is O(P) in the P theta parameters plus O(chunk x P) for one vectorised
chunk, never O(K x P):

    var_trace    = sum_p Var_k(g_kp)   (unbiased, 1 / (K - 1))
    log_var      = ln var_trace
    mean_sq_norm = ||mean_k g_k||^2
    nsr          = var_trace / mean_sq_norm

The 95% CI of log_var is a percentile bootstrap over the K samples; it needs the K x K Gram
matrix of the shifted per-sample gradients, computed exactly when P <= ``sketch_dim`` and
from a count sketch of dimension ``sketch_dim`` otherwise (diagonal always exact), so its
memory is O(K x min(P, sketch_dim)).

Metric names (flat dict, logged by ``run_cell`` at the evaluation step index):

    var/seconds                        wall time of the whole probe
    var/n_evals                        prior network evaluations of the probe (they are
                                       not added to the training ``n_evals``)
    var/<variant>/var_trace            theta space
    var/<variant>/log_var
    var/<variant>/log_var_lo           95% bootstrap CI of log_var (when bootstrap > 0)
    var/<variant>/log_var_hi
    var/<variant>/mean_sq_norm
    var/<variant>/nsr
    var/<variant>/var_trace/<group>    per backbone parameter group (``density``, ``color``)
    var/<variant>/img_var_trace        the same in image space (the prior's space: pixels,
    var/<variant>/img_log_var          or latents for a latent prior), on G_k
    var/<variant>/img_log_var_lo
    var/<variant>/img_log_var_hi
    var/<variant>/img_mean_sq_norm
    var/<variant>/img_nsr
    var/<variant>/cos_ref              bias check (reference_samples > 0): cosine and
    var/<variant>/rel_err_ref          ||mean - ref|| / ||ref|| of the K-sample mean
                                       theta-gradient against the mean of reference_samples
                                       fresh draws of the same variant
    var/<variant>/seconds

Vectorisation (``engine``): ``func`` uses torch.func. A shared camera is rendered once and
its vjp is vmapped over the K cotangents; K cameras are rendered in one vmapped forward with
per-sample copies of theta (expanded views, no copy) and one backward that returns the K
gradients, which avoids the O(K^2) cost of K backwards through one batched render.
``autograd`` renders once per camera and runs one backward per sample (retain_graph for a
shared camera). ``auto`` uses ``func`` and falls back to ``autograd`` if a backbone or prior
cannot be vmapped.
"""

from __future__ import annotations

import copy
import time

import torch

from benchmark.config import MeasureConfig
from benchmark.variance.draws import (
    MeasureDraws,
    draw_measure_inputs,
    generator_from_seed,
    measure_seeds,
    reference_chunks,
)
from benchmark.variance.moments import StreamingMoments, ratio, summarize
from benchmark.variance.per_sample import PerSampleGradients
from benchmark.variance.subject import ProbeSubject


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def variant_statistics(
    sampler: PerSampleGradients,
    draws: MeasureDraws,
    chunk: int,
    gram_dim: int,
) -> tuple[StreamingMoments, StreamingMoments]:
    """Theta- and image-space moments of the per-sample gradients of ``draws``."""
    n = len(draws)
    theta, image = StreamingMoments(gram_dim, n), StreamingMoments(gram_dim, n)
    for start in range(0, len(draws), chunk):
        grad, g = sampler(draws[start : start + chunk])
        theta.update(g)
        image.update(grad.flatten(1))
    return theta, image


def measure_gradient_variance(
    subject: ProbeSubject, step: int, config: MeasureConfig
) -> dict[str, float]:
    """The probe at checkpoint ``step`` (the next training step's index). See module doc."""
    start = time.perf_counter()
    prior_evals = subject.prior.n_evals
    estimator = subject.estimator
    snapshot = copy.deepcopy(estimator.state_dict())
    metrics: dict[str, float] = {}
    try:
        seeds = measure_seeds(subject, step)
        draws = draw_measure_inputs(subject, step, config.samples, seeds)
        sampler = PerSampleGradients(
            subject, step, config.engine, generator_from_seed(seeds["estimator"])
        )
        groups = sampler.group_slices()
        chunk = max(1, min(config.chunk, config.samples))
        gram_dim = config.sketch_dim if config.bootstrap > 0 else 0
        for variant in config.variants:
            began = time.perf_counter()
            prefix = f"var/{variant}/"
            theta, image = variant_statistics(sampler, draws.variant(variant), chunk, gram_dim)
            metrics.update(summarize(theta, prefix, config.bootstrap, seeds["bootstrap"], groups))
            metrics.update(summarize(image, prefix + "img_", config.bootstrap, seeds["bootstrap"]))
            if config.reference_samples > 0:
                total = torch.zeros(sampler.numel, dtype=torch.float64, device=subject.device)
                for part in reference_chunks(
                    subject, step, draws, variant, config.reference_samples, config.chunk, seeds
                ):
                    total += sampler(part)[1].double().sum(0)
                reference = total / config.reference_samples
                mean = theta.mean
                ref_norm = float(reference.norm())
                metrics[prefix + "cos_ref"] = float(
                    torch.nn.functional.cosine_similarity(mean, reference, dim=0, eps=1e-300)
                )
                metrics[prefix + "rel_err_ref"] = ratio(float((mean - reference).norm()), ref_norm)
            metrics[prefix + "seconds"] = time.perf_counter() - began
        metrics["var/n_evals"] = float(subject.prior.n_evals - prior_evals)
    finally:
        subject.prior.n_evals = prior_evals
        if not _state_equal(snapshot, estimator.state_dict()):
            estimator.load_state_dict(snapshot)
    metrics["var/seconds"] = time.perf_counter() - start
    return metrics
