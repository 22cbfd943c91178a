"""Convergence signals that need no ground truth, computed during any run (world or SD).

Score distillation has no loss that falls; these signals say when a run has reached its
fixed point from what the run itself sees. Notation: g_k is the training theta-gradient of
step k (the minibatch mean, every parameter group flattened into one vector), u_k =
theta_{k+1} - theta_k the optimiser's update of step k, R_j the renders [V, 3, H, W] in
[0, 1] of the j-th evaluation at fixed held-out cameras (step s_j). mu(theta) = E g is the
mean gradient, the quantity the probe's unbiased ``signal_sq`` estimates (benchmark/probe).

Exponential averages over steps are normalised (bias-corrected, as Adam's moments):

    A_k[x] = sum_{i <= k} beta^{k-i} x_i / sum_{i <= k} beta^{k-i},    beta = 1 - 1 / window

a convex combination, so A_k[x] is unbiased for E x whenever every x_i has that mean.

Signals (``conv/...`` metrics, logged at every evaluation):

    signal_sq      A_k[<g_{i-1}, g_i>]: for theta fixed, two independent minibatch gradients
                   satisfy E <g_a, g_b> = <E g_a, E g_b> = ||mu||^2 exactly, so this is an
                   unbiased estimate of ||mu||^2 up to the lag (theta moves by u_{i-1}
                   between the two draws: a bias of E <g_{i-1}, mu(theta_i) - mu(theta_{i-1})>,
                   O(learning rate), negative near a minimum: the Pflug / Chee-Toulis
                   stationarity statistic). No network evaluation; O(P) work per step.
    signal_ratio   signal_sq / signal_start, signal_start = signal_sq at step ``window``
                   (the first average over about one window): its trend relative to its start.
    agreement      A_k[<g_{i-1}, g_i>] / A_k[(||g_{i-1}||^2 + ||g_i||^2) / 2], in [-1, 1]
                   (|<a, b>| <= (||a||^2 + ||b||^2) / 2 term by term). A ratio of two
                   averages: consistent for ||mu||^2 / E||g||^2 = 1 / (1 + B-batch NSR) when
                   theta moves slowly, not unbiased. Near 1 while the mean dominates, near 0
                   (or below) at the fixed point where the noise does.
    update_cos     A_k[cos(u_{i-1}, u_i)]: agreement of consecutive optimiser updates (after
                   Adam's momentum and preconditioning). Only with ``stop.updates`` (a copy
                   of theta per step): Adam's momentum keeps it near 0.95 whatever the
                   state, so it carries little (docs/convergence.md).
    render_change  100 sqrt(mean((R_j - R_{j-1})^2)) / (s_j - s_{j-1}): RMS intensity change
                   of the held-out renders per 100 steps (exact, free: the evaluation's
                   renders).
    probe_signal_ratio   the probe's unbiased var/all/signal_sq over its value at step 0
                   (only where the probe ran; carried forward to later evaluations).

The stop rule (``StopRule``, ``stop.rule``) fires at the evaluation where its conditions
have held at ``patience`` consecutive evaluations (results/stop_rule.py).

>>> monitor = ConvergenceMonitor(window=4, updates=True)
>>> theta = torch.zeros(2)
>>> for k in range(3):
...     monitor.before_update([theta], [torch.ones(2)])
...     theta += 1.0
...     monitor.after_update([theta])
>>> monitor.values()["agreement"], monitor.values()["update_cos"]
(1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from results.stop_rule import SIGNALS  # noqa: F401 - the names of the signals


class NormalizedEma:
    """A_k[x] = sum beta^{k-i} x_i / sum beta^{k-i} (bias-corrected exponential average).

    >>> ema = NormalizedEma(0.5)
    >>> ema.update(1.0); ema.update(4.0); ema.value
    3.0
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.total = 0.0
        self.weight = 0.0

    def update(self, x: float) -> None:
        self.total = self.beta * self.total + x
        self.weight = self.beta * self.weight + 1.0

    @property
    def value(self) -> float:
        return self.total / self.weight if self.weight > 0 else math.nan

    def state_dict(self) -> dict:
        return {"total": self.total, "weight": self.weight}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.weight = float(state["total"]), float(state["weight"])


def lag_products(
    previous: Sequence[torch.Tensor | None], current: Sequence[torch.Tensor | None]
) -> tuple[float, float, float]:
    """(<a, b>, ||a||^2, ||b||^2) of two consecutive gradients given per parameter (None: a
    zero gradient); the cross term is unbiased for ||mu||^2 when a, b are independent draws at
    one theta. Accumulated in float64 over the parameters.

    >>> lag_products([torch.tensor([1.0, 0.0]), None], [torch.tensor([1.0, 2.0]), None])
    (1.0, 1.0, 5.0)
    """
    cross = sq_a = sq_b = 0.0
    for a, b in zip(previous, current, strict=True):
        if a is not None:
            sq_a += float(torch.dot(a.reshape(-1), a.reshape(-1)))
        if b is not None:
            sq_b += float(torch.dot(b.reshape(-1), b.reshape(-1)))
        if a is not None and b is not None:
            cross += float(torch.dot(a.reshape(-1), b.reshape(-1)))
    return cross, sq_a, sq_b


def same_shapes(a: Sequence[torch.Tensor | None], b: Sequence[torch.Tensor | None]) -> bool:
    """Whether two per-parameter lists match in length and in every non-None shape."""
    return len(a) == len(b) and all(
        x is None or y is None or x.shape == y.shape for x, y in zip(a, b, strict=True)
    )


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """<a, b> / (||a|| ||b||) of two vectors given per parameter; NaN when either is zero.

    >>> cosine([torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])])  # doctest: +ELLIPSIS
    0.7071...
    """
    cross, sq_a, sq_b = lag_products(a, b)
    norm = math.sqrt(sq_a * sq_b)
    return cross / norm if norm > 0 else math.nan


def render_change(previous: torch.Tensor, current: torch.Tensor, steps: int) -> float:
    """100 sqrt(mean((current - previous)^2)) / steps: RMS change per 100 steps of renders
    taken ``steps`` steps apart at the same cameras; NaN when steps <= 0 or shapes differ.

    >>> render_change(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5), 50)
    1.0
    """
    if steps <= 0 or previous.shape != current.shape:
        return math.nan
    rms = float((current.double() - previous.double()).square().mean().sqrt())
    return 100.0 * rms / steps


def safe_ratio(num: float, den: float) -> float:
    """num / den, NaN unless den > 0 and both finite.

    >>> safe_ratio(1.0, 4.0), safe_ratio(1.0, 0.0)
    (0.25, nan)
    """
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return math.nan
    return num / den


class ConvergenceMonitor:
    """The running signals of one cell (module doc). Call ``before_update(params, grads)``
    after the backward and before the optimiser step, ``after_update(params)`` after it,
    ``observe_renders`` at an evaluation and ``observe_probe`` with a probe's metrics;
    ``values()`` gives the current signals.

    Cost: the previous step's gradient tensors are kept by reference (the trainer's
    ``zero_grad(set_to_none=True)`` makes backward allocate fresh ones, and Adam does not
    write into them), so the gradient signals cost three dot products per parameter tensor
    per step and no copy. ``updates=True`` adds ``update_cos``: a copy of theta before each
    step and the update's dot products (about half an Adam step). A change of a parameter's
    shape (densification) skips the pair across the change.
    """

    def __init__(self, window: int = 20, updates: bool = False) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self.updates = updates
        beta = 1.0 - 1.0 / window
        self.cross = NormalizedEma(beta)
        self.energy = NormalizedEma(beta)
        self.update_cos = NormalizedEma(beta)
        self.steps = 0
        self.signal_start = math.nan
        self.previous_grad: list[torch.Tensor | None] | None = None
        self.previous_update: list[torch.Tensor] | None = None
        self._theta_before: list[torch.Tensor] | None = None
        self.render: torch.Tensor | None = None
        self.render_step = -1
        self.render_change = math.nan
        self.probe_start = math.nan
        self.probe_ratio = math.nan

    def before_update(
        self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]
    ) -> None:
        grads = [None if g is None else g.detach() for g in grads]
        previous = self.previous_grad
        if previous is not None and same_shapes(previous, grads):
            cross, sq_a, sq_b = lag_products(previous, grads)
            self.cross.update(cross)
            self.energy.update(0.5 * (sq_a + sq_b))
        self.previous_grad = grads
        if self.updates:
            self._theta_before = [p.detach().clone() for p in params]
        self.steps += 1
        if self.steps == self.window:
            self.signal_start = self.cross.value

    def after_update(self, params: Sequence[torch.Tensor]) -> None:
        before, self._theta_before = self._theta_before, None
        if before is None:
            return
        if not same_shapes(before, list(params)):
            self.previous_update = None
            return
        update = [p.detach() - b for p, b in zip(params, before, strict=True)]
        if self.previous_update is not None and same_shapes(self.previous_update, update):
            cos = cosine(self.previous_update, update)
            if math.isfinite(cos):
                self.update_cos.update(cos)
        self.previous_update = update

    def observe_renders(self, step: int, renders: torch.Tensor) -> None:
        """The evaluation's renders at ``step`` (fixed cameras): sets ``render_change``."""
        renders = renders.detach().to("cpu", torch.float32)
        self.render_change = math.nan
        if self.render is not None and step > self.render_step:
            self.render_change = render_change(self.render, renders, step - self.render_step)
        self.render, self.render_step = renders, step

    def observe_probe(self, step: int, metrics: dict[str, float]) -> None:
        """The probe's var/all/signal_sq: its ratio to the value at step 0."""
        signal = metrics.get("var/all/signal_sq", math.nan)
        if step == 0:
            self.probe_start = signal
        self.probe_ratio = safe_ratio(signal, self.probe_start)

    def values(self) -> dict[str, float]:
        """The current value of every signal in ``SIGNALS`` (NaN where not defined yet)."""
        signal = self.cross.value
        return {
            "signal_sq": signal,
            "signal_ratio": safe_ratio(signal, self.signal_start),
            "agreement": signal / self.energy.value if self.energy.value > 0 else math.nan,
            "update_cos": self.update_cos.value,
            "render_change": self.render_change,
            "probe_signal_ratio": self.probe_ratio,
        }

    def state_dict(self) -> dict:
        return {
            "cross": self.cross.state_dict(),
            "energy": self.energy.state_dict(),
            "update_cos": self.update_cos.state_dict(),
            "steps": self.steps,
            "signal_start": self.signal_start,
            "previous_grad": _clone(self.previous_grad),
            "previous_update": _clone(self.previous_update),
            "render": self.render,
            "render_step": self.render_step,
            "render_change": self.render_change,
            "probe_start": self.probe_start,
            "probe_ratio": self.probe_ratio,
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("cross", "energy", "update_cos"):
            getattr(self, name).load_state_dict(state[name])
        self.steps = int(state["steps"])
        for name in ("signal_start", "render_change", "probe_start", "probe_ratio"):
            setattr(self, name, float(state[name]))
        self.previous_grad = _clone(state["previous_grad"])
        self.previous_update = _clone(state["previous_update"])
        self.render, self.render_step = state["render"], int(state["render_step"])


def _clone(tensors: list | None) -> list | None:
    return None if tensors is None else [None if t is None else t.clone() for t in tensors]
