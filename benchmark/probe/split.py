"""The variance split by the law of total variance, from nested draws.

With G the per-sample theta-gradient over (camera c, timestep t, noise eps),

    tr Var(G) = E_{c,t}[tr Var_eps(G | c, t)]        eps part
              + E_c[tr Var_t(E_eps[G | c, t])]        t part
              + tr Var_c(E_{t,eps}[G | c])            camera part

an arithmetic mean over draws (a log-average of single-draw "fixed" variants reads the eps
part many nats low: it is whatever one (camera, t) gives). The probe draws C cameras, T
timesteps per camera and J noises per (camera, t) (K = C T J, ``measure.split``) from the
``measure`` stream (common random numbers across methods) and estimates the parts by the
balanced nested analysis of variance, summed over coordinates:

    MS_e = sum_{c,t,j} ||g_ctj - g_ct.||^2 / (C T (J - 1))     E = s_e
    MS_t = J sum_{c,t} ||g_ct. - g_c..||^2 / (C (T - 1))     E = s_e + J s_t
    MS_c = T J sum_c ||g_c.. - g...||^2 / (C - 1)             E = s_e + J s_t + T J s_c

    eps_var = MS_e,  t_var = (MS_t - MS_e) / J,  camera_var = (MS_c - MS_t) / (T J)

each unbiased (t_var and camera_var may be negative by chance), total_var their sum (an
unbiased tr Var(G) over the joint distribution), and the shares part / total. Streamed one
camera at a time (memory O(P)). Logged as ``var/split/<name>``; the verdict averages the
parts over cells with CIs clustered by prompt (analysis/verdict.py).

>>> import torch
>>> g = torch.zeros(2, 2, 2, 3)  # camera x t x eps x P
>>> g[1] += 1.0  # the cameras' means differ by 1 in each of 3 coordinates
>>> parts = nested_parts_from_array(g)
>>> parts["eps_var"], parts["t_var"], parts["camera_var"], parts["camera_share"]
(0.0, 0.0, 1.5, 1.0)
"""

from __future__ import annotations

import torch

from benchmark.probe.draws import MeasureDraws, generator_from_seed
from benchmark.probe.moments import StreamingMoments

NAMES = ("eps_var", "t_var", "camera_var", "total_var", "eps_share", "t_share", "camera_share")


class NestedMoments:
    """Streaming nested sums of squares: feed one camera's [T, J, P] block at a time."""

    def __init__(self, t: int, j: int) -> None:
        self.t, self.j = t, j
        self.ss_eps = 0.0
        self.ss_t = 0.0
        self.cameras = StreamingMoments()
        self.c = 0

    def update(self, block: torch.Tensor) -> None:
        block = block.detach().double()
        t, j = block.shape[0], block.shape[1]
        if (t, j) != (self.t, self.j):
            raise ValueError(f"expected a [{self.t}, {self.j}, P] block, got {tuple(block.shape)}")
        cell_means = block.mean(1)  # [T, P]
        self.ss_eps += float((block - cell_means[:, None]).square().sum())
        camera_mean = cell_means.mean(0)
        self.ss_t += float((cell_means - camera_mean).square().sum())
        self.cameras.update(camera_mean[None])
        self.c += 1

    def parts(self) -> dict[str, float]:
        c, t, j = self.c, self.t, self.j
        ms_e = self.ss_eps / (c * t * (j - 1))
        ms_t = j * self.ss_t / (c * (t - 1))
        ms_c = t * j * self.cameras.var_trace()
        out = {
            "eps_var": ms_e,
            "t_var": (ms_t - ms_e) / j,
            "camera_var": (ms_c - ms_t) / (t * j),
        }
        total = out["eps_var"] + out["t_var"] + out["camera_var"]
        out["total_var"] = total
        for name in ("eps", "t", "camera"):
            out[f"{name}_share"] = out[f"{name}_var"] / total if total > 0 else float("nan")
        return out


def nested_parts_from_array(g: torch.Tensor) -> dict[str, float]:
    """The parts of a full [C, T, J, P] array (the reference for ``NestedMoments``)."""
    moments = NestedMoments(g.shape[1], g.shape[2])
    for block in g:
        moments.update(block)
    return moments.parts()


def nested_draws(subject, step: int, shape, seeds: dict[str, int], c: int, t: int, j: int):
    """C cameras, T timesteps per camera, J noises per (camera, t), ordered camera-major then
    t then eps (one camera's T J draws contiguous), from the probe's sub-streams."""
    cameras, _ = subject.draw_cameras_and_t(
        c, step, generator_from_seed(seeds["camera"]), generator_from_seed(seeds["timestep"])
    )
    _, times = subject.draw_cameras_and_t(
        c * t, step, generator_from_seed(seeds["camera"]), generator_from_seed(seeds["timestep"])
    )
    k = c * t * j
    index = torch.arange(c).repeat_interleave(t * j)
    eps = torch.randn((k, *shape), generator=generator_from_seed(seeds["noise"]))
    return MeasureDraws(cameras[index.tolist()], times.repeat_interleave(j), eps.to(subject.device))


def split_metrics(sampler, draws: MeasureDraws, c: int, t: int, j: int) -> dict[str, float]:
    """``var/split/<name>`` of nested ``draws`` (``nested_draws``) through ``sampler``."""
    moments = NestedMoments(t, j)
    per_camera = t * j
    for start in range(0, c * per_camera, per_camera):
        g = sampler(draws[start : start + per_camera])[1]
        moments.update(g.reshape(t, j, -1))
    return {f"var/split/{k}": v for k, v in moments.parts().items()}
