"""The stopping rule on the ground-truth-free convergence signals (benchmark/run/convergence.py).

Pure Python (no torch): the training loop applies it while a run goes (benchmark/run/trainer.py)
and analysis replays it on logged ``conv/*`` rows with other thresholds.

A rule is ``none`` or conditions joined by ``&``, each ``<signal> < <number>`` or
``<signal> > <number>`` with a signal of ``convergence.SIGNALS``:

    agreement<0.2 & render_change<0.05

It is checked at every evaluation after step 0 (and not before ``window`` steps, when the
averages hold about one window): it *holds* at an evaluation when every condition does (a
signal that is NaN there fails its condition), and it *fires* at the evaluation where it has
held at ``patience`` consecutive evaluations. The step and the network evaluations at which it
fires are the cell's steps / NFE to convergence. ``stop.action``: ``record`` (default: the run
goes on to ``steps``, so runs stay comparable) or ``stop`` (the cell ends there).

>>> rule = parse_stop_rule("agreement<0.2 & render_change < 0.05")
>>> rule.holds({"agreement": 0.1, "render_change": 0.01})
True
>>> rule.holds({"agreement": 0.1, "render_change": float("nan")})
False
>>> state = StopState(patience=2)
>>> [state.update(10 * j, h) for j, h in enumerate([True, False, True, True, True], 1)]
[False, False, False, True, False]
>>> state.fired_step
40
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: the signals a rule may name, as logged under ``conv/`` (benchmark/run/convergence.py)
SIGNALS = (
    "signal_sq",
    "signal_ratio",
    "agreement",
    "update_cos",
    "render_change",
    "probe_signal_ratio",
)

_CONDITION = re.compile(r"^\s*([a-z_]+)\s*([<>])\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Condition:
    signal: str
    op: str  # "<" or ">"
    threshold: float

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value < self.threshold if self.op == "<" else value > self.threshold

    def __str__(self) -> str:
        return f"{self.signal}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class StopRule:
    """Conditions that must all hold (empty: the rule ``none``, which never fires)."""

    conditions: tuple[Condition, ...] = ()

    def holds(self, values: dict[str, float]) -> bool:
        if not self.conditions:
            return False
        return all(c.holds(values.get(c.signal, math.nan)) for c in self.conditions)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(c.signal for c in self.conditions)

    def __str__(self) -> str:
        return " & ".join(str(c) for c in self.conditions) or "none"


def parse_stop_rule(text: str) -> StopRule:
    """Parse a rule (module doc); ValueError naming the first bad part.

    >>> str(parse_stop_rule("none")), str(parse_stop_rule("agreement<1e-1"))
    ('none', 'agreement<0.1')
    >>> parse_stop_rule("loss<1")
    Traceback (most recent call last):
    ...
    ValueError: unknown signal 'loss' in stop rule 'loss<1'; known: signal_sq, signal_ratio, \
agreement, update_cos, render_change, probe_signal_ratio
    """
    if not isinstance(text, str):
        raise ValueError(f"stop rule must be a string, got {text!r}")
    if text.strip().lower() == "none":
        return StopRule()
    conditions = []
    for part in text.split("&"):
        match = _CONDITION.match(part)
        if match is None:
            raise ValueError(
                f"bad stop rule condition {part.strip()!r} in {text!r}; expected "
                "'<signal> < <number>' or '<signal> > <number>' joined by '&', or 'none'"
            )
        signal, op, number = match.groups()
        if signal not in SIGNALS:
            raise ValueError(
                f"unknown signal {signal!r} in stop rule {text!r}; known: {', '.join(SIGNALS)}"
            )
        try:
            threshold = float(number)
        except ValueError:
            raise ValueError(f"bad threshold {number!r} in stop rule {text!r}") from None
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite in stop rule {text!r}")
        conditions.append(Condition(signal, op, threshold))
    if len({c.signal for c in conditions}) != len(conditions):
        raise ValueError(f"a signal appears twice in stop rule {text!r}")
    return StopRule(tuple(conditions))


class StopState:
    """Consecutive evaluations at which the rule held; ``update(step, holds)`` is True once,
    at the evaluation where the streak reaches ``patience`` (then ``fired_step`` is set)."""

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.streak = 0
        self.fired_step: int | None = None
        #: the cell's prior network evaluations when it fired (set by the training loop)
        self.fired_cost: int | None = None

    def update(self, step: int, holds: bool) -> bool:
        if self.fired_step is not None:
            return False
        self.streak = self.streak + 1 if holds else 0
        if self.streak >= self.patience:
            self.fired_step = step
            return True
        return False

    def state_dict(self) -> dict:
        return {"streak": self.streak, "fired_step": self.fired_step, "fired_cost": self.fired_cost}

    def load_state_dict(self, state: dict) -> None:
        self.streak = int(state["streak"])
        fired = state["fired_step"]
        self.fired_step = None if fired is None else int(fired)
        cost = state.get("fired_cost")
        self.fired_cost = None if cost is None else int(cost)
