"""The training loop of one cell (method x prompt x seed), method-agnostic.

One step, as data (docs/manual.md, "The estimators"):
    camera c, t, eps  <- named random streams
    backbone(theta).render(c) -> rgb, depth, opacity
    x = prior.encode(rgb)
    G, diagnostics = estimator.grad(x, t, eps, prior, ctx)
    loss = 0.5 ||x - (x - G).detach()||^2 / B  ->  d loss / d x = G / B
    Adam step on theta; estimator.update(...)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from backbones.base import Backbone
from benchmark.probe.probe import measure_gradient_variance
from benchmark.probe.subject import ProbeSubject, draw_cameras_and_t
from benchmark.run.budget import equal_compute_steps
from benchmark.run.checkpoint import CellCheckpoint
from benchmark.run.config import RunConfig
from benchmark.run.convergence import ConvergenceMonitor
from benchmark.run.factories import (
    build_backbone,
    build_estimator,
    build_optimizer,
    build_sds_twin,
    method_config,
)
from benchmark.run.timing import SectionTimer, memory_metrics, reset_peak_memory
from benchmark.streams import RandomStreams
from core.interfaces import DiffusionPrior
from estimators.base import EstimatorContext, GradientEstimator
from results.stop_rule import StopState, parse_stop_rule


class CellDiverged(RuntimeError):
    """A non-finite loss or gradient; the cell is recorded as failed and the run goes on."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"step {step}: {reason}")
        self.step = step
        self.reason = reason


def configure_torch(threads: int) -> None:
    """Process-wide torch settings of a benchmark run: thread count, and flush denormals
    (transmittance exp(-large) underflows into denormals, which slow CPU steps 50x)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


@dataclass
class StepOutput:
    grad: torch.Tensor
    t: torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)


class CellTrainer:
    """Owns theta, its optimiser and the estimator of one cell; ``step(k)`` is one bare step."""

    def __init__(
        self,
        config: RunConfig,
        method: str,
        prompt: str,
        seed: int,
        prior: DiffusionPrior,
        device: torch.device,
    ) -> None:
        self.config = config
        self.method = method
        self.prompt = prompt
        self.seed = seed
        self.prior = prior
        self.device = device
        self.streams = RandomStreams(seed, prompt)
        self.backbone = build_backbone(config, device, self.streams.generator("init", 0))
        self.estimator: GradientEstimator = build_estimator(
            method, config, prior, self.streams.generator("init", 1), device
        )
        self.optimizer = build_optimizer(self.backbone, config)
        #: the backbone's training-strategy state (gsplat style), passed in and returned
        self.strategy_state = self.backbone.initialize_state()
        self.guidance = method_config(config, method)
        stop = config.stop
        self.convergence = ConvergenceMonitor(stop.window, stop.updates) if stop.signals else None
        self.stop_rule = parse_stop_rule(stop.rule)
        self.stop_state = StopState(stop.patience)

    def theta(self) -> list[torch.Tensor]:
        """The optimised parameters, in the optimiser's order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def convergence_metrics(self, done: int) -> tuple[dict[str, float], bool]:
        """At an evaluation after ``done`` steps: the ``conv/*`` signals
        (benchmark/run/convergence.py) and the stop rule's ``stop/holds``; ``stop/fired`` = 1
        (and True) at the evaluation where the rule fires. Nothing at step 0 or with the
        signals off."""
        if self.convergence is None or done == 0:
            return {}, False
        values = self.convergence.values()
        optional = {"probe_signal_ratio", "update_cos"}  # logged only where measured
        metrics = {
            f"conv/{k}": v for k, v in values.items() if k not in optional or math.isfinite(v)
        }
        if not self.stop_rule.conditions:
            return metrics, False
        holds = done >= self.config.stop.window and self.stop_rule.holds(values)
        fired = self.stop_state.update(done, holds)
        metrics["stop/holds"] = float(holds)
        if fired:
            metrics["stop/fired"] = 1.0
        return metrics, fired

    def sample_step_inputs(self, step: int):
        """Cameras [B] and timesteps [B] of ``step`` from the camera / timestep streams."""
        return self.draw_cameras_and_t(
            self.config.camera.batch_size,
            step,
            self.streams.generator("camera", step),
            self.streams.generator("timestep", step),
        )

    def draw_cameras_and_t(
        self,
        n: int,
        step: int,
        camera_generator: torch.Generator,
        timestep_generator: torch.Generator,
    ):
        """n training-distribution cameras and n timesteps (schedule at ``step``) from the
        given generators: ``benchmark.probe.subject.draw_cameras_and_t``, the one draw (the
        probe subject's form feeds it the ``measure`` sub-streams)."""
        return draw_cameras_and_t(
            self.config.camera,
            self.guidance.timesteps,
            n,
            step,
            self.prior.num_train_timesteps,
            camera_generator,
            timestep_generator,
            self.device,
        )

    def probe_subject(self) -> ProbeSubject:
        """What the gradient-variance probe measures at the current state (no trainer)."""
        return ProbeSubject(
            backbone=self.backbone,
            estimator=self.estimator,
            prior=self.prior,
            prompt=self.prompt,
            streams=self.streams,
            device=self.device,
            camera=self.config.camera,
            timesteps=self.guidance.timesteps,
            height=self.config.render.height,
            width=self.config.render.width,
            optimizer=self.optimizer,
            twin=self.sds_twin(),
        )

    def sds_twin(self):
        """SDS with this method's guidance, built once on first use (build_sds_twin)."""
        if not hasattr(self, "_twin"):
            self._twin = build_sds_twin(
                self.method, self.config, self.prior, self.streams.generator("init", 2), self.device
            )
        return self._twin

    def step(self, step: int) -> StepOutput:
        """One optimisation step of theta (and the estimator's own update).

        Diagnostics include ``time/<section>`` seconds for render, encode, prior (network
        evaluations inside the estimator), estimator (the rest of ``grad`` and its online
        ``update``), backward and optimizer, CUDA-synchronised on GPU, and
        ``time/cpu_step``: the process CPU seconds of the whole step (all threads; robust to
        other processes' load, unlike the wall-clock sections).
        """
        timer = SectionTimer(self.device)
        cpu_start = time.process_time()
        prior_seconds = self.prior.seconds
        cameras, t = self.sample_step_inputs(step)
        with timer.section("time/render"):
            backbone, state = self.backbone, self.strategy_state
            state = backbone.step_pre_render(self.optimizer, state, step)
            info: dict = {}
            render = backbone.render(
                cameras,
                self.config.render.height,
                self.config.render.width,
                normals="normal" in self.estimator.render_outputs,
                info=info,
            )
        with timer.section("time/encode"):
            x = self.prior.encode(render["rgb"])
        eps = self.streams.normal("noise", step, tuple(x.shape), self.device)
        ctx = EstimatorContext(
            prompt=self.prompt,
            cameras=cameras,
            render=render,
            step=step,
            generator=self.streams.generator("estimator", step),
        )
        with timer.section("time/estimator"):
            output = self.estimator.grad(x, t, eps, self.prior, ctx)
        grad, diagnostics = output.grad, output.diagnostics
        if not bool(torch.isfinite(grad).all()):
            raise CellDiverged(step, "non-finite estimator gradient")
        with timer.section("time/backward"):
            loss = 0.5 * ((x - (x - grad).detach()) ** 2).sum() / x.shape[0]
            state = backbone.step_pre_backward(self.optimizer, state, step, info)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.strategy_state = backbone.step_post_backward(self.optimizer, state, step, info)
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
                    raise CellDiverged(step, f"non-finite theta gradient in '{group['name']}'")
        if self.convergence is not None:
            with timer.section("time/convergence"):
                theta = self.theta()
                self.convergence.before_update(theta, [p.grad for p in theta])
        with timer.section("time/optimizer"):
            self.optimizer.step()
        if self.convergence is not None and self.convergence.updates:
            with timer.section("time/convergence"):
                self.convergence.after_update(self.theta())
        with timer.section("time/estimator"):
            self.estimator.update(x.detach(), self.prior, ctx, output)
        prior_seconds = self.prior.seconds - prior_seconds
        timer.add("time/prior", prior_seconds)
        timer.add("time/estimator", -prior_seconds)
        timer.add("time/cpu_step", time.process_time() - cpu_start)
        return StepOutput(grad, t, {**diagnostics, **timer.seconds})

    def state_dict(self) -> dict:
        """Backbone (parameters and buffers), Adam and estimator state: with the step index
        this is all a resumed cell needs (random streams are stateless)."""
        state = {
            "backbone": self.backbone.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "estimator": self.estimator.state_dict(),
            "stop": self.stop_state.state_dict(),
        }
        if self.convergence is not None:
            state["convergence"] = self.convergence.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.backbone.load_state_dict(state["backbone"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.estimator.load_state_dict(state["estimator"])
        if "stop" in state:
            self.stop_state.load_state_dict(state["stop"])
        if self.convergence is not None and "convergence" in state:
            self.convergence.load_state_dict(state["convergence"])


@dataclass
class CellResult:
    method: str
    prompt: str
    seed: int
    status: str = "ok"
    failed_step: int | None = None
    reason: str = ""
    final: dict[str, float] = field(default_factory=dict)
    initial: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    n_evals: int = 0
    steps_done: int = 0
    #: the step and prior network evaluations at which the stop rule fired (None: never)
    stop_step: int | None = None
    stop_n_evals: int | None = None


class CellInterrupted(Exception):
    """A stop was requested (Ctrl-C / SIGTERM); raised after the checkpoint is written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted after step {step}")
        self.step = step


@dataclass
class CellHooks:
    """What the runner plugs into ``run_cell``.

    checkpoint: called with a CellCheckpoint every ``checkpoint_every`` steps (after all of
        that step's rows are logged) and when a stop is requested; None = no checkpoints.
    stop_requested: polled after every step; True -> checkpoint, then CellInterrupted.
    before_step: called with the step index before each training step (fault injection in
        the sweep tests, benchmark/sweep/faults.py).
    """

    on_step: Callable[[int], None] | None = None
    checkpoint: Callable[[CellCheckpoint], None] | None = None
    checkpoint_every: int = 0
    stop_requested: Callable[[], bool] | None = None
    before_step: Callable[[int], None] | None = None


def run_cell(
    trainer: CellTrainer,
    evaluate: Callable[[Backbone, int], dict[str, float]],
    log: Callable[[int, dict[str, float]], None],
    on_step: Callable[[int], None] | None = None,
    hooks: CellHooks | None = None,
    resume: CellCheckpoint | None = None,
) -> CellResult:
    """Train one cell for config.steps steps with evaluation and per-step logging.

    Metrics logged with ``step`` = number of optimiser steps done: per step ``t``,
    ``grad_norm`` (and estimator diagnostics, ``time/*`` sections), cumulative ``n_evals``
    (prior network evaluations) and ``train_seconds`` (wall-clock excluding evaluation); at
    checkpoints (0, every, 2 every, ..., steps) the evaluation metrics, ``time/eval`` and
    ``mem/*``; with ``measure.every`` > 0 the gradient-variance probe (benchmark/probe/,
    ``var/...``, its wall-clock ``var/seconds``) at 0, every measure.every steps and the last
    step,
    excluded from ``train_seconds`` like the evaluation.

    With ``resume`` the trainer state is loaded and training continues at ``resume.step``;
    the rows logged up to that step are the caller's (they are in the results store).
    """
    hooks = hooks or CellHooks(on_step=on_step)
    config = trainer.config
    device = trainer.device
    result = CellResult(trainer.method, trainer.prompt, trainer.seed)
    reset_peak_memory(device)
    probe = config.measure

    def evaluate_and_log(done: int) -> dict[str, float]:
        start = time.perf_counter()
        metrics = evaluate(trainer.backbone, done)
        seconds = time.perf_counter() - start
        size = float(sum(p.numel() for p in trainer.backbone.parameters()))
        log(done, {**metrics, "time/eval": seconds, "n_params": size, **memory_metrics(device)})
        return metrics

    def measure_and_log(done: int, final: bool = False) -> None:
        final = final or done == config.steps
        # its time: var/seconds
        metrics = measure_gradient_variance(trainer.probe_subject(), done, probe, final)
        if trainer.convergence is not None:
            trainer.convergence.observe_probe(done, metrics)
        log(done, metrics)

    if resume is None:
        first, elapsed, evals_offset = 0, 0.0, 0
        result.initial = evaluate_and_log(0)
        if probe.every > 0:
            measure_and_log(0)
    else:
        trainer.load_state_dict(resume.trainer_state)
        first, elapsed, evals_offset = resume.step, resume.train_seconds, resume.n_evals
        result.initial, result.final = dict(resume.initial), dict(resume.final)
        result.stop_step = trainer.stop_state.fired_step
        result.stop_n_evals = trainer.stop_state.fired_cost
    evals_start = trainer.prior.n_evals
    result.steps_done = first
    budget_steps = equal_compute_steps(config, trainer.method, trainer.prior)

    def cell_checkpoint(done: int) -> CellCheckpoint:
        return CellCheckpoint(
            step=done,
            trainer_state=trainer.state_dict(),
            n_evals=trainer.prior.n_evals - evals_start + evals_offset,
            train_seconds=elapsed,
            initial=result.initial,
            final=result.final,
        )

    for step in range(first, config.steps):
        if hooks.before_step is not None:
            hooks.before_step(step)
        start = time.perf_counter()
        try:
            out = trainer.step(step)
        except CellDiverged as exc:
            result.status, result.failed_step, result.reason = "failed", exc.step, exc.reason
            log(step, {"failed": 1.0})
            break
        elapsed += time.perf_counter() - start
        n_evals = trainer.prior.n_evals - evals_start + evals_offset
        done = step + 1
        log(
            done,
            {
                "t": float(out.t.float().mean()),
                "n_evals": float(n_evals),
                "train_seconds": elapsed,
                **out.diagnostics,
            },
        )
        evaluated = done % config.eval.every == 0 or done == config.steps
        if evaluated or done in budget_steps:
            metrics = evaluate_and_log(done)
            if evaluated:
                result.final = metrics
        measured = probe.every > 0 and (done % probe.every == 0 or done == config.steps)
        if measured:
            measure_and_log(done)
        converged = False
        if evaluated:  # after the probe of this step: the signals see both
            signals, fired = trainer.convergence_metrics(done)
            if fired:
                result.stop_step, result.stop_n_evals = done, n_evals
                trainer.stop_state.fired_cost = n_evals
                converged = config.stop.action == "stop"
            log(done, signals)
        if converged and probe.every > 0 and not measured:
            measure_and_log(done, final=True)  # the cell's last probe, with the bias check
        result.steps_done = done
        if hooks.on_step is not None:
            hooks.on_step(done)
        stop = hooks.stop_requested is not None and hooks.stop_requested()
        if hooks.checkpoint is not None and done < config.steps:
            if stop or (hooks.checkpoint_every > 0 and done % hooks.checkpoint_every == 0):
                hooks.checkpoint(cell_checkpoint(done))
        if stop and done < config.steps:
            raise CellInterrupted(done)
        if converged:
            break
    result.train_seconds = elapsed
    result.n_evals = trainer.prior.n_evals - evals_start + evals_offset
    return result
