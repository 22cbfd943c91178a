"""Gradient-variance probe (docs/manual.md, "Gradient variance"): per-sample gradients at a
frozen checkpoint.

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
    mean_sq_norm = ||mean_k g_k||^2                      plug-in (biased up by var_trace / K)
    signal_sq    = mean_sq_norm - var_trace / K          unbiased ||mu||^2 (U-statistic)
    snr, nsr     = signal_sq / var_trace, var_trace / signal_sq   (nsr = inf: not resolved)

With the bias check on, the theta-space signal_sq / snr / nsr of the checked variant use the
K + R draws (R = reference_samples, fresh, same variant): with m the mean of all K + R,
signal_sq = ||m||^2 - var_trace / (K + R), still unbiased and less noisy
(``signal_draws`` says K or K + R).

The 95% CI of log_var is the calibrated studentized bootstrap of benchmark/probe/ci.py,
from the K x K Gram matrix of the shifted per-sample gradients (benchmark/probe/moments).

Metric names (flat dict, logged by ``run_cell`` at the evaluation step index):

    var/seconds                        wall time of the whole probe
    var/n_evals                        prior network evaluations of the probe (they are
                                       not added to the training ``n_evals``)
    var/<variant>/var_trace            theta space
    var/<variant>/log_var
    var/<variant>/log_var_lo           95% CI of log_var (when bootstrap > 0)
    var/<variant>/log_var_hi
    var/<variant>/mean_sq_norm
    var/<variant>/signal_sq            unbiased ||mu||^2
    var/<variant>/snr                  signal_sq / var_trace (average this over replicates)
    var/<variant>/nsr                  var_trace / signal_sq, inf when signal_sq <= 0
    var/<variant>/signal_draws         draws behind signal_sq (K, or K + R with the check)
    var/<variant>/var_trace/<group>    per backbone parameter group (``density``, ``color``)
    var/<variant>/img_var_trace        the same in image space (the prior's space: pixels,
    var/<variant>/img_log_var          or latents for a latent prior), on G_k
    var/<variant>/img_log_var_lo
    var/<variant>/img_log_var_hi
    var/<variant>/img_mean_sq_norm
    var/<variant>/img_nsr
    var/<variant>/cos_self             resolution, not bias (reference_samples > 0, by
    var/<variant>/rel_err_self         default at the last checkpoint, variant all): cosine
                                       and ||mean - ref|| / ||ref|| of the K-sample mean
                                       theta-gradient against the mean of reference_samples
                                       fresh draws of the same estimator (E ~ 1 / (1 + NSR/K)
                                       whatever the bias)
    var/<variant>/raw_log_var          the control-variate view (control_variate: true;
    var/<variant>/cv_gain              benchmark/probe/control.py): the raw score term
    var/<variant>/cv_oracle_coef       w eps_hat's log variance, the nats the method's
    var/<variant>/cv_oracle_gain       control variate removes, its in-sample-optimal
                                       scale and that scale's gain (+ ``img_`` forms);
                                       the theta-space forms need a second pullback per
                                       sample and come at the last checkpoint only by
                                       default (``control_at: last``), the ``img_`` forms
                                       (free) at every probe
    var/<variant>/update_log_var       log trace variance of the Adam-preconditioned update
                                       (with the theta-space forms)
    var/split/<part>                   the law-of-total-variance split (eps_var, t_var,
                                       camera_var, total_var, *_share; benchmark/probe/
                                       split.py), at the last probe by default
    var/<variant>/sds_*, bias_*        SDS at the same theta and draws and the bias check
                                       against it (benchmark/probe/twin.py)
    var/claims_sds_mean                the estimator claims SDS's expectation (1 / 0)
    var/prior_err                      a prior that knows its exact score (``exact_eps``,
    var/prior_err_x0                   the learned prior) at the K draws of ``all``:
                                       sum ||eps_c - eps*||^2 / sum ||eps*||^2 of the
                                       conditional branch at x_t = alpha encode(render(c_k))
                                       + sigma eps_k, and the same of the x0 predictions
    var/mu_uninformed                  1 on a probe whose estimator's control coefficient
                                       has seen no sample yet (SSD at step 0): leave such
                                       rows out of comparisons
    var/<variant>/seconds

Vectorisation (``engine``): ``func`` uses torch.func. A shared camera is rendered once and
its vjp is vmapped over the K cotangents; K cameras are rendered in one vmapped forward with
per-sample copies of theta (expanded views, no copy) and one backward that returns the K
gradients, which avoids the O(K^2) cost of K backwards through one batched render.
``autograd`` renders once per camera and runs one backward per sample (retain_graph for a
shared camera); ``split`` vmaps the render only and the prior's encoder runs batched autograd
(benchmark/probe/per_sample.py). ``auto`` uses ``split`` for priors that say
``vmap_encode = False`` (Stable Diffusion), else ``func``, and falls back to ``autograd`` if
a backbone or prior cannot be vmapped. A prior's ``probe_chunk`` caps ``chunk`` (memory).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch

from benchmark.probe.config import MeasureConfig
from benchmark.probe.control import AdamStep, adam_step, control_variate_metrics
from benchmark.probe.draws import (
    MeasureDraws,
    draw_measure_inputs,
    generator_from_seed,
    measure_seeds,
    reference_chunks,
)
from benchmark.probe.moments import StreamingMoments, ratio, signal_statistics, summarize
from benchmark.probe.per_sample import PerSampleGradients
from benchmark.probe.split import nested_draws, split_metrics
from benchmark.probe.subject import ProbeSubject
from benchmark.probe.twin import twin_statistics


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def variant_statistics(
    sampler: PerSampleGradients, draws: MeasureDraws, chunk: int, gram_dim: int
) -> tuple[StreamingMoments, StreamingMoments]:
    """Theta- and image-space moments of the per-sample gradients G of ``draws``."""
    moments = variant_moments(sampler, draws, chunk, gram_dim)
    return moments["theta"], moments["image"]


def variant_moments(
    sampler: PerSampleGradients,
    draws: MeasureDraws,
    chunk: int,
    gram_dim: int,
    update: AdamStep | None = None,
    twin: PerSampleGradients | None = None,
    twin_gram_dim: int = 131072,
) -> dict[str, StreamingMoments]:
    """Moments of the per-sample gradients of ``draws``: ``theta`` and ``image`` (G), with a
    raw-term sampler also ``img_raw`` (A) and ``img_control`` (A - G), and ``raw``/``control``
    (a, a - g) when it pulls A back to theta (``raw_theta``), with an ``update`` map the
    per-sample Adam steps ``update`` (benchmark/probe/control), and with a ``twin`` sampler
    (SDS at the same theta, benchmark/probe/twin.py) ``twin`` (its theta-gradients s) and
    ``diff`` (g - s, with the Gram matrix the bias z needs)."""
    n = len(draws)
    moments = {"theta": StreamingMoments(gram_dim, n), "image": StreamingMoments(gram_dim, n)}
    if twin is not None:
        moments["twin"] = StreamingMoments()
        moments["diff"] = StreamingMoments(twin_gram_dim, n)
    for start in range(0, len(draws), chunk):
        part = draws[start : start + chunk]
        out = sampler(part)
        grad, g = out[0], out[1]
        moments["theta"].update(g)
        if twin is not None:
            s = twin(part)[1]
            moments["twin"].update(s)
            moments["diff"].update(g - s)
        moments["image"].update(grad.flatten(1))
        if len(out) == 4 and out[2] is not None:
            raw, a = out[2], out[3]
            pairs = [("img_raw", raw.flatten(1)), ("img_control", (raw - grad).flatten(1))]
            if a is not None:  # the theta-space view (a second pullback per sample)
                pairs = [("raw", a), ("control", a - g), *pairs]
            for name, value in pairs:
                moments.setdefault(name, StreamingMoments()).update(value)
        if update is not None:
            moments.setdefault("update", StreamingMoments()).update(update(g))
    return moments


def _bias_check(
    subject, step, draws, variant, config, seeds, sampler, moments, chunk, twin=None
) -> dict:
    """cos_self and rel_err_self of the K-sample mean against ``reference_samples`` fresh
    draws of the same estimator (a resolution figure, E ~ 1 / (1 + NSR / K): it cannot see a
    bias), the signal statistics of all K + R draws (module doc), and with a ``twin`` (SDS at
    this theta) its statistics and the bias check against it (benchmark/probe/twin.py)."""
    mean = moments["theta"].mean
    total = torch.zeros(sampler.numel, dtype=torch.float64, device=subject.device)
    twin_total = torch.zeros_like(total) if twin is not None else None
    raw, sampler.raw = sampler.raw, False  # only g of the reference draws is used
    try:
        for part in reference_chunks(
            subject, step, draws, variant, config.reference_samples, chunk, seeds
        ):
            total += sampler(part)[1].double().sum(0)
            if twin is not None:
                twin_total += twin(part)[1].double().sum(0)
    finally:
        sampler.raw = raw
    reference = total / config.reference_samples
    cos = torch.nn.functional.cosine_similarity(mean, reference, dim=0, eps=1e-300)
    rel = ratio(float((mean - reference).norm()), float(reference.norm()))
    k = moments["theta"].n
    n = k + config.reference_samples
    pooled = (mean * k + total) / n
    signal = signal_statistics(float(pooled.square().sum()), moments["theta"].var_trace(), n)
    out = {"cos_self": float(cos), "rel_err_self": rel, "signal_draws": float(n), **signal}
    if twin is not None:
        twin_pooled = (moments["twin"].mean * k + twin_total) / n
        out.update(
            twin_statistics(
                moments["twin"], moments["diff"], "", float(twin_pooled.square().sum()), n
            )
        )
    return out


@torch.no_grad()
def prior_error(subject: ProbeSubject, draws) -> dict[str, float]:
    """``var/prior_err`` and ``var/prior_err_x0`` (module doc) when the prior
    ``knows_exact_score`` (``exact_eps``), else {}. Its network evaluations are not counted
    (the caller restores n_evals)."""
    if not subject.prior.knows_exact_score:
        return {}
    exact_eps = subject.prior.exact_eps
    from core.interfaces import PriorContext
    from core.schedule import add_noise, alpha_sigma

    prior = subject.prior
    cameras = draws.cameras
    if len(cameras) == 1 and len(draws) > 1:
        cameras = type(cameras).cat([cameras] * len(draws))
    rgb = subject.backbone.render(cameras, subject.height, subject.width)["rgb"]
    x = prior.encode(rgb)
    x_t = add_noise(x, draws.t, draws.eps, prior.alphas_cumprod)
    ctx = PriorContext(subject.prompt, cameras)
    net = prior.predict_branch(x_t, draws.t, ctx, conditional=True)
    star = exact_eps(x_t, draws.t, ctx, conditional=True)
    alpha, sigma = alpha_sigma(prior.alphas_cumprod, draws.t)
    scale = (sigma / alpha).view(-1, 1, 1, 1).to(x_t)
    x0_star = (x_t - sigma.view(-1, 1, 1, 1).to(x_t) * star) / alpha.view(-1, 1, 1, 1).to(x_t)
    err = float(((net - star) ** 2).sum())
    err_x0 = float(((scale * (net - star)) ** 2).sum())
    return {
        "var/prior_err": ratio(err, float((star**2).sum())),
        "var/prior_err_x0": ratio(err_x0, float((x0_star**2).sum())),
    }


def measure_gradient_variance(
    subject: ProbeSubject, step: int, config: MeasureConfig, final: bool = False
) -> dict[str, float]:
    """The probe at checkpoint ``step`` (the next training step's index); ``final`` marks
    the last checkpoint (where the bias check runs by default). See module doc."""
    start = time.perf_counter()
    prior_evals = subject.prior.n_evals
    estimator = subject.estimator
    snapshot = copy.deepcopy(estimator.state_dict())
    metrics: dict[str, float] = dict(estimator.probe_flags())
    metrics = {f"var/{k}": v for k, v in metrics.items()}
    bias_check = config.reference_samples > 0 and (final or config.reference_at == "all")
    try:
        seeds = measure_seeds(subject, step)
        draws = draw_measure_inputs(subject, step, config.samples, seeds)
        sampler = PerSampleGradients(
            subject,
            step,
            config.engine,
            generator_from_seed(seeds["estimator"]),
            raw=config.control_variate,
        )
        groups = sampler.group_slices()
        chunk = max(1, min(config.chunk, config.samples))
        cap = subject.prior.probe_chunk  # a large prior's memory cap
        chunk = min(chunk, cap) if cap else chunk
        gram_dim = config.sketch_dim if config.bootstrap > 0 else 0
        # the theta-space part of the control-variate view (a second pullback per sample and
        # the per-sample Adam steps) at the last checkpoint only unless control_at is "all"
        theta_view = config.control_variate and (final or config.control_at == "all")
        update = None
        if theta_view:
            update = adam_step(subject.optimizer, [p for _, _, p in sampler.theta])
        sampler.raw_theta = theta_view
        twin = None
        if bias_check and subject.twin is not None:
            metrics["var/claims_sds_mean"] = float(getattr(estimator, "mean_of", None) == "sds")
            twin = PerSampleGradients(
                dataclasses.replace(subject, estimator=subject.twin, twin=None),
                step,
                config.engine,
                generator_from_seed(seeds["estimator"]),
            )
        for variant in config.variants:
            began = time.perf_counter()
            prefix = f"var/{variant}/"
            sampler.raw = config.control_variate and variant in config.control_variants
            twin_here = twin if variant == "all" else None
            moments = variant_moments(
                sampler,
                draws.variant(variant),
                chunk,
                gram_dim,
                update if sampler.raw else None,
                twin_here,
                config.sketch_dim,
            )
            theta, image = moments["theta"], moments["image"]
            metrics.update(summarize(theta, prefix, config.bootstrap, seeds["bootstrap"], groups))
            metrics[prefix + "signal_draws"] = float(theta.n)
            metrics.update(summarize(image, prefix + "img_", config.bootstrap, seeds["bootstrap"]))
            if "raw" in moments:
                metrics.update(
                    control_variate_metrics(theta, moments["raw"], moments["control"], prefix)
                )
            if "img_raw" in moments:
                metrics.update(
                    control_variate_metrics(
                        image, moments["img_raw"], moments["img_control"], prefix + "img_"
                    )
                )
            if sampler.raw and theta_view:
                steps = moments.get("update")
                metrics[prefix + "update_log_var"] = (
                    _log_or_neg_inf(steps.var_trace()) if steps is not None else float("nan")
                )
            if bias_check and variant in config.reference_variants:
                check = _bias_check(
                    subject,
                    step,
                    draws,
                    variant,
                    config,
                    seeds,
                    sampler,
                    moments,
                    chunk,
                    twin_here,
                )
                metrics.update({prefix + k: v for k, v in check.items()})
            elif twin_here is not None:
                metrics.update(twin_statistics(moments["twin"], moments["diff"], prefix))
            metrics[prefix + "seconds"] = time.perf_counter() - began
        if config.split_at == "all" or (config.split_at == "last" and final):
            began = time.perf_counter()
            sampler.raw = False
            c, t, j = config.split
            nested = nested_draws(subject, step, tuple(draws.eps.shape[1:]), seeds, c, t, j)
            metrics.update(split_metrics(sampler, nested, c, t, j))
            metrics["var/split/seconds"] = time.perf_counter() - began
        metrics["var/n_evals"] = float(subject.prior.n_evals - prior_evals)
        metrics.update(prior_error(subject, draws))
    finally:
        subject.prior.n_evals = prior_evals
        if not _state_equal(snapshot, estimator.state_dict()):
            estimator.load_state_dict(snapshot)
    metrics["var/seconds"] = time.perf_counter() - start
    return metrics


def _log_or_neg_inf(value: float) -> float:
    return math.log(value) if value > 0 else float("-inf")
