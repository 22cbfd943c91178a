"""The variance split by the law of total variance (benchmark/probe/split.py)."""

from __future__ import annotations

import numpy as np
import torch

from benchmark.probe.config import MeasureConfig
from benchmark.probe.split import NestedMoments, nested_parts_from_array


def test_streamed_parts_are_unbiased_for_known_components():
    """g = a_c + b_ct + e_ctj in P = 50 dims with per-coordinate variances 0.5 / 0.3 / 0.2:
    the mean over 400 simulated probes of each part is within 4 standard errors of its
    truth (traces 25 / 15 / 10), and the streamed sums equal a direct two-pass ANOVA."""
    rng = np.random.default_rng(0)
    c, t, j, p = 4, 4, 2, 50
    parts = {"camera_var": [], "t_var": [], "eps_var": []}
    for _ in range(400):
        a = rng.normal(0, np.sqrt(0.5), (c, 1, 1, p))
        b = rng.normal(0, np.sqrt(0.3), (c, t, 1, p))
        e = rng.normal(0, np.sqrt(0.2), (c, t, j, p))
        out = nested_parts_from_array(torch.tensor(a + b + e))
        for k in parts:
            parts[k].append(out[k])
    for k, truth in (("camera_var", 25.0), ("t_var", 15.0), ("eps_var", 10.0)):
        values = np.array(parts[k])
        se = values.std(ddof=1) / np.sqrt(values.size)
        assert abs(values.mean() - truth) < 4 * se, (k, values.mean(), se)
    g = torch.tensor(rng.normal(size=(c, t, j, p)))
    cell = g.mean(2, keepdim=True)
    camera = cell.mean(1, keepdim=True)
    ms_e = float(((g - cell) ** 2).sum()) / (c * t * (j - 1))
    ms_t = j * float(((cell - camera) ** 2).sum()) / (c * (t - 1))
    ms_c = t * j * float(((camera - camera.mean(0)) ** 2).sum()) / (c - 1)
    streamed = NestedMoments(t, j)
    for block in g:
        streamed.update(block)
    got = streamed.parts()
    assert np.isclose(got["eps_var"], ms_e) and np.isclose(got["t_var"], (ms_t - ms_e) / j)
    assert np.isclose(got["camera_var"], (ms_c - ms_t) / (t * j))


def test_probe_logs_the_split_at_the_last_probe(world_prior_small):
    from benchmark.probe.probe import measure_gradient_variance
    from tests.test_measure import make_trainer

    trainer = make_trainer(world_prior_small)
    config = MeasureConfig(
        samples=4, variants=("all",), bootstrap=0, reference_samples=0, split=(2, 2, 2)
    )
    early = measure_gradient_variance(trainer.probe_subject(), 2, config)
    last = measure_gradient_variance(trainer.probe_subject(), 2, config, final=True)
    assert "var/split/eps_var" not in early
    shares = [last[f"var/split/{k}_share"] for k in ("eps", "t", "camera")]
    assert np.isclose(sum(shares), 1.0) and last["var/split/eps_var"] > 0
