"""Ground-truth-free convergence signals (benchmark/run/convergence.py) and the stop rule
(results/stop_rule.py): each formula against its definition, the cross term's mean by Monte
Carlo, the rule's grammar and state, and the training loop's record / stop behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.run.config import load_config
from benchmark.run.convergence import (
    ConvergenceMonitor,
    NormalizedEma,
    cosine,
    lag_products,
    render_change,
)
from benchmark.run.trainer import CellTrainer, run_cell
from core.errors import ConfigError
from results.schema import is_machine_metric
from results.stop_rule import SIGNALS, StopState, parse_stop_rule
from tests.test_cli_errors import call_main


def test_normalized_ema_is_the_weighted_mean_of_its_definition():
    beta, xs = 0.8, [3.0, -1.0, 2.5, 7.0, 0.25]
    ema = NormalizedEma(beta)
    for k, x in enumerate(xs):
        ema.update(x)
        weights = [beta ** (k - i) for i in range(k + 1)]
        expected = sum(w * v for w, v in zip(weights, xs, strict=False)) / sum(weights)
        assert ema.value == pytest.approx(expected, rel=1e-14)
    assert math.isnan(NormalizedEma(0.5).value)


def test_lag_products_and_cosine_match_flat_float64():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    b = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    fa = torch.cat([t.reshape(-1) for t in a]).double()
    fb = torch.cat([t.reshape(-1) for t in b]).double()
    cross, sq_a, sq_b = lag_products(a, b)
    assert cross == pytest.approx(float(fa @ fb), rel=1e-6)
    assert sq_a == pytest.approx(float(fa @ fa), rel=1e-6)
    assert sq_b == pytest.approx(float(fb @ fb), rel=1e-6)
    expected = float(fa @ fb / (fa.norm() * fb.norm()))
    assert cosine(a, b) == pytest.approx(expected, rel=1e-6)
    # a None gradient is a zero vector
    assert lag_products([None, a[1]], [b[0], b[1]]) == pytest.approx(
        (float(a[1].double() @ b[1].double()), float(a[1].double() @ a[1].double()), sq_b)
    )
    assert math.isnan(cosine([torch.zeros(2)], [torch.ones(2)]))


def test_cross_term_is_unbiased_for_the_squared_mean_norm():
    """Two independent gradient draws at one theta: E <g_a, g_b> = ||mu||^2 (Monte Carlo,
    5 standard errors), while the plug-in ||g||^2 is biased up by tr Cov."""
    gen = torch.Generator().manual_seed(1)
    mu = torch.tensor([0.3, -0.2, 0.1, 0.0]).double()
    n = 200_000
    g_a = mu + 2.0 * torch.randn(n, 4, generator=gen, dtype=torch.float64)
    g_b = mu + 2.0 * torch.randn(n, 4, generator=gen, dtype=torch.float64)
    cross = (g_a * g_b).sum(1)
    se = float(cross.std()) / math.sqrt(n)
    assert abs(float(cross.mean()) - float(mu @ mu)) < 5 * se
    assert float((g_a * g_a).sum(1).mean()) > float(mu @ mu) + 15.0  # tr Cov = 16


def test_monitor_signals_follow_their_definitions():
    """A hand-fed sequence of gradients: signal_sq, agreement, signal_ratio and update_cos
    equal the normalised averages of the module doc, computed here from scratch."""
    window = 3
    beta = 1 - 1 / window
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(6, generator=gen).double() for _ in range(6)]
    monitor = ConvergenceMonitor(window, updates=True)
    theta = torch.zeros(6, dtype=torch.float64)
    thetas = [theta.clone()]
    for g in grads:
        monitor.before_update([theta], [g])
        theta = theta - 0.1 * g.sign() * (1 + g.abs())  # any update rule
        thetas.append(theta.clone())
        monitor.after_update([theta])

    def avg(xs):
        k = len(xs) - 1
        w = [beta ** (k - i) for i in range(k + 1)]
        return sum(wi * x for wi, x in zip(w, xs, strict=True)) / sum(w)

    cross = [float(grads[i - 1] @ grads[i]) for i in range(1, 6)]
    energy = [0.5 * float(grads[i - 1] @ grads[i - 1] + grads[i] @ grads[i]) for i in range(1, 6)]
    updates = [thetas[i + 1] - thetas[i] for i in range(6)]
    cos = [float(updates[i - 1] @ updates[i] / (updates[i - 1].norm() * updates[i].norm()))
           for i in range(1, 6)]  # fmt: skip
    values = monitor.values()
    assert values["signal_sq"] == pytest.approx(avg(cross), rel=1e-12)
    assert values["agreement"] == pytest.approx(avg(cross) / avg(energy), rel=1e-12)
    assert -1.0 <= values["agreement"] <= 1.0
    start = avg(cross[: window - 1])  # the average after `window` steps (window - 1 pairs)
    assert values["signal_ratio"] == pytest.approx(avg(cross) / start, rel=1e-12)
    assert values["update_cos"] == pytest.approx(avg(cos), rel=1e-12)
    assert math.isnan(values["render_change"]) and math.isnan(values["probe_signal_ratio"])


def test_monitor_skips_pairs_across_a_shape_change_and_round_trips_its_state():
    monitor = ConvergenceMonitor(2)
    monitor.before_update([torch.zeros(2)], [torch.ones(2)])
    monitor.before_update([torch.zeros(3)], [torch.ones(3)])  # densified: no pair
    assert math.isnan(monitor.values()["signal_sq"])
    monitor.before_update([torch.zeros(3)], [torch.full((3,), 2.0)])
    assert monitor.values()["signal_sq"] == 6.0
    monitor.observe_renders(0, torch.zeros(1, 3, 2, 2))
    monitor.observe_renders(20, torch.full((1, 3, 2, 2), 0.1))
    monitor.observe_probe(0, {"var/all/signal_sq": 4.0})
    monitor.observe_probe(10, {"var/all/signal_sq": 1.0})
    other = ConvergenceMonitor(2)
    other.load_state_dict(monitor.state_dict())
    assert other.values() == pytest.approx(monitor.values(), nan_ok=True)
    assert other.values()["render_change"] == pytest.approx(100 * 0.1 / 20)
    assert other.values()["probe_signal_ratio"] == 0.25


def test_render_change_is_rms_per_100_steps():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0, 0, 0, 0] = 0.96  # one pixel of 96 changes by 0.96: rms 0.96 / sqrt(96)
    assert render_change(a, b, 25) == pytest.approx(100 * 0.96 / math.sqrt(96) / 25)
    assert math.isnan(render_change(a, b, 0))
    assert math.isnan(render_change(a, torch.zeros(1, 3, 4, 4), 10))


def test_stop_rule_grammar():
    rule = parse_stop_rule(" agreement < 0.2&render_change<5e-2 ")
    assert str(rule) == "agreement<0.2 & render_change<0.05"
    assert rule.holds({"agreement": 0.1, "render_change": 0.01})
    assert not rule.holds({"agreement": 0.3, "render_change": 0.01})
    assert parse_stop_rule("signal_ratio>-1").holds({"signal_ratio": 0.0})
    assert not parse_stop_rule("none").holds(dict.fromkeys(SIGNALS, 0.0))
    for bad in ("agreement", "loss<1", "agreement<x", "agreement<inf", "agreement<1 & agreement<2",
                "agreement<=1", ""):  # fmt: skip
        with pytest.raises(ValueError):
            parse_stop_rule(bad)


def test_stop_state_needs_patience_consecutive_holds_and_fires_once():
    state = StopState(3)
    holds = [True, True, False, True, True, True, True]
    fired = [state.update(10 * (i + 1), h) for i, h in enumerate(holds)]
    assert fired == [False, False, False, False, False, True, False]
    assert state.fired_step == 60
    with pytest.raises(ValueError):
        StopState(0)


@pytest.mark.parametrize(
    "setting",
    [
        "stop.rule=loss<1",
        "stop.rule=agreement<<1",
        "stop.patience=0",
        "stop.window=1",
        "stop.action=halt",
        "stop.rule=update_cos<0.5",
    ],
)
def test_bad_stop_settings_are_config_errors(setting):
    with pytest.raises(ConfigError):
        load_config(None, [setting])


def test_bad_stop_rule_on_the_cli_is_one_error_line_and_exit_2(tmp_path):
    proc = call_main("run", "--steps", "2", "--out", str(tmp_path), "--set", "stop.rule=loss<1")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "loss" in lines[0]
    assert not any(tmp_path.iterdir())


def _tiny_cell(world_prior_small, *overrides):
    config = load_config(
        None,
        ["render.height=16", "render.width=16", "steps=12", "eval.every=3", "measure.every=0",
         "eval.ceiling=false", "eval.clip=none", *overrides],
    )  # fmt: skip
    trainer = CellTrainer(config, "sds", "a snowman", 0, world_prior_small, torch.device("cpu"))
    rows: list[tuple[int, str, float]] = []

    def evaluate(backbone, step):
        renders = backbone.render(
            trainer.draw_cameras_and_t(
                2, 0, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
            )[0],
            16,
            16,
        )
        trainer.convergence.observe_renders(step, renders["rgb"])
        return {}

    def log(step, metrics):
        rows.extend((step, k, float(v)) for k, v in metrics.items())

    return run_cell(trainer, evaluate, log), rows


def test_training_loop_records_the_rule_and_stops_only_when_asked(world_prior_small):
    rule = ["stop.rule=agreement<2 & render_change<1e9", "stop.window=2", "stop.patience=2"]
    recorded, rows = _tiny_cell(world_prior_small, *rule)
    assert recorded.steps_done == 12 and recorded.stop_step == 6  # evaluations 3 and 6
    assert recorded.stop_n_evals == 6  # one view per step, one prior call each
    assert [(s, v) for s, m, v in rows if m == "stop/fired"] == [(6, 1.0)]
    logged = {m for _, m, _ in rows}
    assert {"conv/agreement", "conv/signal_sq", "conv/render_change", "time/convergence"} <= logged
    stopped, rows_stopped = _tiny_cell(world_prior_small, *rule, "stop.action=stop")
    assert stopped.steps_done == 6 and stopped.stop_step == 6

    def key(rs):  # the rows up to the stop, machine metrics aside
        return [(s, m, v) for s, m, v in rs if s <= 6 and not is_machine_metric(m)]

    # record-only changes nothing of the training: the same rows up to the stop
    assert key(rows_stopped) == key(rows)
    never, _ = _tiny_cell(world_prior_small, "stop.rule=agreement<-2")
    assert never.stop_step is None and never.steps_done == 12
