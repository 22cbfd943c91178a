"""The metric catalogue: one row per metric a run can log (docs/manual.md, "Gradient variance").

Each row names the metric (a pattern: ``<v>`` is a probe variant, ``<g>`` a parameter group,
``<s>`` a time section), its title for tables and plots, its kind (``quality``, ``variance``,
``cost``, ``diagnostic``, ``machine``), which direction is better (``higher``, ``lower`` or
``None`` when neither is), whether the per-method summary shows it, and its minimum effect:
the smallest difference from SDS the verdict calls a difference (on the compared scale: dB,
nats, or ln of a ratio for NSR and the compute multipliers; ``None``: no verdict word).
Adding a metric is one row here.

>>> lookup("var/all/nsr").title
'noise-to-signal ratio (theta)'
>>> lookup("psnr").better
'higher'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

#: the minimum effect of a ratio (NSR, compute multipliers): 10%, on the log scale
LN_1_1 = math.log(1.1)
Kind = Literal["quality", "variance", "cost", "diagnostic", "machine"]
Better = Literal["higher", "lower"] | None


@dataclass(frozen=True)
class MetricInfo:
    name: str
    title: str
    kind: Kind
    better: Better = None
    in_summary: bool = False
    min_effect: float | None = None


_V = "var/<v>/"
CATALOGUE: tuple[MetricInfo, ...] = (
    # held-out quality at evaluation checkpoints (evaluation/heldout.py)
    MetricInfo("psnr", "held-out PSNR (dB)", "quality", "higher", True, min_effect=0.5),
    MetricInfo("ssim", "held-out SSIM", "quality", "higher"),
    MetricInfo("depth_l1", "depth L1 error", "quality", "lower"),
    MetricInfo("mask_iou", "mask IoU", "quality", "higher"),
    MetricInfo("janus", "Janus score", "quality", "lower"),
    MetricInfo("janus_deg", "Janus angle (deg)", "quality", "lower"),
    MetricInfo("janus_front", "Janus front-view match", "diagnostic"),
    # against the truth / a prompt's distribution of instances (world/instance_metrics.py)
    MetricInfo("detail", "high-frequency energy / the truth's", "quality"),
    MetricInfo("chroma", "chroma / the truth's (colour saturation)", "quality"),
    MetricInfo("extreme", "excess fraction of clipped foreground pixels", "quality", "lower"),
    MetricInfo("instance", "best-matching instance (index)", "diagnostic"),
    MetricInfo("psnr_mean_instance", "PSNR to the instances' average (dB)", "diagnostic"),
    MetricInfo(
        "averaging", "PSNR to the instances' average minus to the best one (dB)", "quality", "lower"
    ),
    MetricInfo(
        "commitment", "fraction of views agreeing on the best instance", "quality", "higher"
    ),
    # the world CLIP fails its ranking checks (docs/world_clip.md, analysis/clip_gate.py): a
    # diagnostic, not shown in the summary; the report's gate reads each run's manifest
    MetricInfo("clip_score", "CLIP score (diagnostic)", "diagnostic", "higher", min_effect=0.005),
    MetricInfo("clip_r_precision", "CLIP R-precision (diagnostic)", "diagnostic", "higher"),
    # quality ceiling (evaluation/ceiling.py): once per cell, and the fraction of the gap closed
    MetricInfo("ceiling/psnr", "quality ceiling: PSNR of the photometric fit (dB)", "quality"),
    MetricInfo("ceiling/iou", "quality ceiling: mask IoU of the photometric fit", "quality"),
    MetricInfo(
        "quality/psnr",
        "quality: fraction of the PSNR gap closed",
        "quality",
        "higher",
        min_effect=0.05,
    ),
    MetricInfo("quality/iou", "quality: fraction of the IoU gap closed", "quality", "higher"),
    # per training step
    MetricInfo("t", "timestep (mean over the batch)", "diagnostic"),
    MetricInfo("grad_norm", "image-space gradient norm", "diagnostic"),
    MetricInfo("n_evals", "prior network evaluations (cumulative)", "cost", "lower"),
    MetricInfo(
        "n_evals_phi",
        "eps_phi / learned Stein baseline network evaluations (cumulative)",
        "cost",
        "lower",
    ),
    MetricInfo("n_evals_depth", "depth/normal network evaluations (cumulative)", "cost", "lower"),
    MetricInfo("failed", "cell diverged at this step", "diagnostic"),
    MetricInfo(
        "n_params", "backbone parameters (theta size; grows with densification)", "diagnostic"
    ),
    MetricInfo("train_seconds", "training seconds (cumulative)", "machine", "lower"),
    MetricInfo("time/<s>", "seconds in a step section", "machine", "lower"),
    MetricInfo("mem/<s>", "memory (MB)", "machine", "lower"),
    # estimator diagnostics
    MetricInfo("phi", "SSD baseline phi (mean)", "diagnostic"),
    MetricInfo("cv_norm", "control-variate norm", "diagnostic"),
    MetricInfo("corr_eps_cv", "corr(eps, control variate)", "diagnostic"),
    MetricInfo("corr_eps_hat_cv", "corr(eps_hat, control variate)", "diagnostic"),
    MetricInfo("mu_mean", "SSD mu (mean)", "diagnostic"),
    MetricInfo("mu_std", "SSD mu (std)", "diagnostic"),
    MetricInfo("phi_loss", "VSD eps_phi loss", "diagnostic"),
    MetricInfo("baseline_loss", "SSD learned baseline ||G||^2 loss", "diagnostic"),
    MetricInfo("phi_residual_norm", "VSD eps_phi residual norm", "diagnostic"),
    MetricInfo("is_weight_mean", "mean importance weight of t (sampling levers)", "diagnostic"),
    # family diagnostics (estimators/csd.py ... bridge.py) and the CARV levers
    MetricInfo("c_0", "CSD coefficient of eps_0", "diagnostic"),
    MetricInfo("c_neg", "CSD coefficient of eps_neg", "diagnostic"),
    MetricInfo("frac_small_t", "NFSD: fraction of draws with t < 200", "diagnostic"),
    MetricInfo("interval", "ISM interval t - s", "diagnostic"),
    MetricInfo("t_used", "SDI timestep", "diagnostic"),
    MetricInfo("eps_inv_std", "SDI inverted-noise std", "diagnostic"),
    MetricInfo("dt", "ASD timestep shift", "diagnostic"),
    MetricInfo("delta_t", "Consistent3D t - s", "diagnostic"),
    MetricInfo("phi_camera_gap", "ESD camera-CFG gap of eps_phi", "diagnostic"),
    MetricInfo("stage", "SDS-Bridge stage", "diagnostic"),
    # ground-truth-free convergence signals and the stop rule (benchmark/run/convergence.py,
    # results/stop_rule.py), at every evaluation
    MetricInfo("conv/signal_sq", "lag-1 signal <g_k-1, g_k> (avg; ~||E g||^2)", "diagnostic"),
    MetricInfo("conv/signal_ratio", "lag-1 signal over its start", "diagnostic"),
    MetricInfo("conv/agreement", "agreement of consecutive gradients", "diagnostic"),
    MetricInfo("conv/update_cos", "cosine of consecutive updates (avg)", "diagnostic"),
    MetricInfo("conv/render_change", "held-out render RMS change per 100 steps", "diagnostic"),
    MetricInfo("conv/probe_signal_ratio", "probe signal_sq over its step-0 value", "diagnostic"),
    MetricInfo("stop/holds", "stop rule holds at this evaluation", "diagnostic"),
    MetricInfo("stop/fired", "stop rule fired at this evaluation", "diagnostic"),
    # the gradient-variance probe (benchmark/probe)
    MetricInfo("var/seconds", "probe seconds", "machine"),
    MetricInfo("var/n_evals", "probe network evaluations", "cost"),
    # a learned prior whose exact score is known (priors/learned.py), at the probe's draws
    MetricInfo("var/prior_err", "prior error: relative squared eps error", "diagnostic", "lower"),
    MetricInfo("var/prior_err_x0", "prior error: relative squared x0 error", "diagnostic", "lower"),
    MetricInfo(_V + "seconds", "probe seconds of a variant", "machine"),
    MetricInfo(_V + "var_trace", "trace variance (theta)", "variance", "lower"),
    MetricInfo(_V + "var_trace/<g>", "trace variance of a parameter group", "variance", "lower"),
    MetricInfo(
        _V + "log_var", "log trace variance (theta)", "variance", "lower", True, min_effect=0.1
    ),
    MetricInfo(_V + "log_var_lo", "log variance, 95% studentized CI low", "variance"),
    MetricInfo(_V + "log_var_hi", "log variance, 95% studentized CI high", "variance"),
    MetricInfo(_V + "mean_sq_norm", "squared norm of the mean (theta)", "variance"),
    MetricInfo(
        _V + "nsr", "noise-to-signal ratio (theta)", "variance", "lower", True, min_effect=LN_1_1
    ),
    MetricInfo(_V + "signal_sq", "unbiased squared norm of the mean (theta)", "variance"),
    MetricInfo(
        _V + "snr", "signal-to-noise ratio (theta)", "variance", "higher", min_effect=LN_1_1
    ),
    MetricInfo(_V + "signal_draws", "draws behind the signal estimate", "diagnostic"),
    MetricInfo(_V + "img_var_trace", "trace variance (image)", "variance", "lower"),
    MetricInfo(_V + "img_log_var", "log trace variance (image)", "variance", "lower"),
    MetricInfo(_V + "img_log_var_lo", "log trace variance (image), CI low", "variance"),
    MetricInfo(_V + "img_log_var_hi", "log trace variance (image), CI high", "variance"),
    MetricInfo(_V + "img_mean_sq_norm", "squared norm of the mean (image)", "variance"),
    MetricInfo(_V + "img_nsr", "noise-to-signal ratio (image)", "variance", "lower"),
    MetricInfo(_V + "img_signal_sq", "unbiased squared norm of the mean (image)", "variance"),
    MetricInfo(_V + "img_snr", "signal-to-noise ratio (image)", "variance", "higher"),
    # resolution, not bias: cosine of the K-draw mean with R fresh draws of the same estimator
    # (E ~ 1 / (1 + NSR / K) whatever the bias): no verdict word
    MetricInfo(
        _V + "cos_self", "cosine of the mean with its own R-draw mean (resolution)", "variance"
    ),
    MetricInfo(
        _V + "rel_err_self", "relative error of the mean vs its own R-draw mean", "variance"
    ),
    # SDS at the same theta and draws, and the bias check against it (benchmark/probe/twin.py)
    MetricInfo(_V + "sds_var_trace", "SDS's trace variance at this theta", "variance"),
    MetricInfo(_V + "sds_log_var", "SDS's log trace variance at this theta", "variance"),
    MetricInfo(_V + "sds_mean_sq_norm", "SDS's squared norm of the mean at this theta", "variance"),
    MetricInfo(_V + "sds_signal_sq", "SDS's unbiased ||mu||^2 at this theta", "variance"),
    MetricInfo(_V + "sds_snr", "SDS's signal-to-noise ratio at this theta", "variance"),
    MetricInfo(_V + "sds_nsr", "SDS's noise-to-signal ratio at this theta", "variance"),
    MetricInfo(_V + "bias_sq", "unbiased ||mu - mu_SDS||^2 at this theta", "variance"),
    MetricInfo(
        _V + "bias_rel",
        "||mu - mu_SDS||^2 / ||mu_SDS||^2 (bias check)",
        "variance",
        "lower",
        True,
        0.05,
    ),
    MetricInfo(_V + "bias_z", "bias check z (Chen-Qin, conservative)", "diagnostic"),
    MetricInfo("var/split/eps_var", "E_{c,t}[tr Var_eps(G)]: the eps part (theta)", "variance"),
    MetricInfo("var/split/t_var", "E_c[tr Var_t(E_eps G)]: the t part (theta)", "variance"),
    MetricInfo("var/split/camera_var", "tr Var_c(E G | c): the camera part (theta)", "variance"),
    MetricInfo("var/split/total_var", "tr Var(G) from the nested draws (theta)", "variance"),
    MetricInfo("var/split/eps_share", "eps part / total", "variance"),
    MetricInfo("var/split/t_share", "t part / total", "variance"),
    MetricInfo("var/split/camera_share", "camera part / total", "variance"),
    MetricInfo("var/split/seconds", "probe seconds of the variance split", "machine"),
    MetricInfo("var/claims_sds_mean", "the estimator claims SDS's expectation", "diagnostic"),
    # the control-variate view and the update (benchmark/probe/control.py)
    MetricInfo(_V + "raw_log_var", "log variance of the raw score term w eps_hat", "variance"),
    MetricInfo(
        _V + "cv_gain",
        "nats the control variate removes",
        "variance",
        "higher",
        True,
        min_effect=0.05,
    ),
    MetricInfo(_V + "cv_oracle_coef", "in-sample-optimal control-variate scale", "diagnostic"),
    MetricInfo(_V + "cv_oracle_gain", "nats at the optimal scale (bound)", "variance", "higher"),
    MetricInfo(_V + "img_raw_log_var", "log variance of w eps_hat (image)", "variance"),
    MetricInfo(
        _V + "img_cv_gain", "nats the control variate removes (image)", "variance", "higher"
    ),
    MetricInfo(_V + "img_cv_oracle_coef", "optimal control-variate scale (image)", "diagnostic"),
    MetricInfo(
        _V + "img_cv_oracle_gain", "nats at the optimal scale (image)", "variance", "higher"
    ),
    MetricInfo(
        _V + "update_log_var",
        "log variance of the Adam update",
        "variance",
        "lower",
        True,
        min_effect=0.1,
    ),
    MetricInfo(
        "var/mu_uninformed", "control coefficient not yet informed (SSD step 0)", "diagnostic"
    ),
)

#: quantities analysis derives per method (summary.csv, analysis/verdict.py); never logged
DERIVED: tuple[MetricInfo, ...] = (
    MetricInfo(
        "compute_multiplier",
        "compute multiplier vs SDS (NSR x NFE)",
        "cost",
        "higher",
        min_effect=LN_1_1,
    ),
    MetricInfo(
        "compute_multiplier_raw",
        "raw-variance multiplier vs SDS (var_trace x NFE; scale-dependent diagnostic)",
        "diagnostic",
    ),
    MetricInfo(
        "compute_multiplier_seconds",
        "compute multiplier vs SDS (NSR x seconds)",
        "cost",
        "higher",
        min_effect=LN_1_1,
    ),
    MetricInfo(
        "psnr_equal_compute",
        "PSNR at SDS's network evaluations (dB)",
        "quality",
        "higher",
        min_effect=0.5,
    ),
    MetricInfo(
        "psnr_equal_seconds",
        "PSNR at SDS's training seconds (dB)",
        "quality",
        "higher",
        min_effect=0.5,
    ),
    MetricInfo("stop_steps", "steps until the stop rule fired (no ground truth)", "cost"),
    MetricInfo("stop_calls", "network calls until the stop rule fired", "cost"),
    MetricInfo("nfe_per_step", "network evaluations per step (measured)", "cost", "lower"),
    MetricInfo("nfe_model_per_step", "network evaluations per step (cost model)", "cost", "lower"),
    MetricInfo("seconds_per_step", "training seconds per step", "machine", "lower"),
)

_PLACEHOLDER = re.compile(r"<[a-z]>")


def _pattern(name: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(name)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[re.Pattern, MetricInfo], ...]:
    return tuple((_pattern(info.name), info) for info in (*CATALOGUE, *DERIVED))


def lookup(metric: str) -> MetricInfo | None:
    """The catalogue row of a logged metric name, or None for an unknown one."""
    for pattern, info in _compiled():
        if pattern.match(metric):
            return info
    return None


def title(metric: str) -> str:
    """A metric's title (the name itself when it is not catalogued)."""
    info = lookup(metric)
    return info.title if info is not None else metric


def better_direction(metric: str) -> Better:
    info = lookup(metric)
    return info.better if info is not None else None


def minimum_effect(metric: str) -> float | None:
    """The catalogue's minimum effect of a metric or derived quantity (None: no word)."""
    info = lookup(metric)
    return info.min_effect if info is not None else None
