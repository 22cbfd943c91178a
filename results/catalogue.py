"""The metric catalogue: one row per metric a run can log (DESIGN.md section 4).

Each row names the metric (a pattern: ``<v>`` is a probe variant, ``<g>`` a parameter group,
``<s>`` a time section), its title for tables and plots, its kind (``quality``, ``variance``,
``cost``, ``diagnostic``, ``machine``), which direction is better (``higher``, ``lower`` or
``None`` when neither is), and whether the per-method summary shows it. Adding a metric is one
row here.

>>> lookup("var/all/nsr").title
'noise-to-signal ratio (theta)'
>>> lookup("psnr").better
'higher'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Kind = Literal["quality", "variance", "cost", "diagnostic", "machine"]
Better = Literal["higher", "lower"] | None


@dataclass(frozen=True)
class MetricInfo:
    name: str
    title: str
    kind: Kind
    better: Better = None
    in_summary: bool = False


_V = "var/<v>/"
CATALOGUE: tuple[MetricInfo, ...] = (
    # held-out quality at evaluation checkpoints (evaluation/heldout.py)
    MetricInfo("psnr", "held-out PSNR (dB)", "quality", "higher", True),
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
    MetricInfo("clip_score", "CLIP score (diagnostic)", "diagnostic", "higher"),
    MetricInfo("clip_r_precision", "CLIP R-precision (diagnostic)", "diagnostic", "higher"),
    # quality ceiling (evaluation/ceiling.py): once per cell, and the fraction of the gap closed
    MetricInfo("ceiling/psnr", "quality ceiling: PSNR of the photometric fit (dB)", "quality"),
    MetricInfo("ceiling/iou", "quality ceiling: mask IoU of the photometric fit", "quality"),
    MetricInfo("quality/psnr", "quality: fraction of the PSNR gap closed", "quality", "higher"),
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
    # the gradient-variance probe (benchmark/probe)
    MetricInfo("var/seconds", "probe seconds", "machine"),
    MetricInfo("var/n_evals", "probe network evaluations", "cost"),
    MetricInfo(_V + "seconds", "probe seconds of a variant", "machine"),
    MetricInfo(_V + "var_trace", "trace variance (theta)", "variance", "lower"),
    MetricInfo(_V + "var_trace/<g>", "trace variance of a parameter group", "variance", "lower"),
    MetricInfo(_V + "log_var", "log trace variance (theta)", "variance", "lower", True),
    MetricInfo(_V + "log_var_lo", "log variance, 95% studentized CI low", "variance"),
    MetricInfo(_V + "log_var_hi", "log variance, 95% studentized CI high", "variance"),
    MetricInfo(_V + "mean_sq_norm", "squared norm of the mean (theta)", "variance"),
    MetricInfo(_V + "nsr", "noise-to-signal ratio (theta)", "variance", "lower", True),
    MetricInfo(_V + "signal_sq", "unbiased squared norm of the mean (theta)", "variance"),
    MetricInfo(_V + "snr", "signal-to-noise ratio (theta)", "variance", "higher"),
    MetricInfo(_V + "signal_draws", "draws behind the signal estimate", "diagnostic"),
    MetricInfo(_V + "img_var_trace", "trace variance (image)", "variance", "lower"),
    MetricInfo(_V + "img_log_var", "log trace variance (image)", "variance", "lower"),
    MetricInfo(_V + "img_log_var_lo", "log trace variance (image), CI low", "variance"),
    MetricInfo(_V + "img_log_var_hi", "log trace variance (image), CI high", "variance"),
    MetricInfo(_V + "img_mean_sq_norm", "squared norm of the mean (image)", "variance"),
    MetricInfo(_V + "img_nsr", "noise-to-signal ratio (image)", "variance", "lower"),
    MetricInfo(_V + "img_signal_sq", "unbiased squared norm of the mean (image)", "variance"),
    MetricInfo(_V + "img_snr", "signal-to-noise ratio (image)", "variance", "higher"),
    MetricInfo(_V + "cos_ref", "cosine with the large-K reference mean", "variance", "higher"),
    # the control-variate view and the update (benchmark/probe/control.py)
    MetricInfo(_V + "raw_log_var", "log variance of the raw score term w eps_hat", "variance"),
    MetricInfo(_V + "cv_gain", "nats the control variate removes", "variance", "higher", True),
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
    MetricInfo(_V + "update_log_var", "log variance of the Adam update", "variance", "lower", True),
    MetricInfo(
        "var/mu_uninformed", "control coefficient not yet informed (SSD step 0)", "diagnostic"
    ),
    MetricInfo(_V + "rel_err_ref", "relative error of the mean", "variance", "lower"),
)

#: quantities analysis derives per method (summary.csv, analysis/verdict.py); never logged
DERIVED: tuple[MetricInfo, ...] = (
    MetricInfo("compute_multiplier", "compute multiplier vs SDS (NSR x NFE)", "cost", "higher"),
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
    ),
    MetricInfo("psnr_equal_compute", "PSNR at SDS's network evaluations (dB)", "quality", "higher"),
    MetricInfo("psnr_equal_seconds", "PSNR at SDS's training seconds (dB)", "quality", "higher"),
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
