"""The probe's own config section (``measure:`` in a run config), beside the code that reads
it; the run config (benchmark.run.config) composes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class MeasureConfig:
    """Gradient-variance probe (docs/manual.md, "Gradient variance"): every ``every``
    steps (0 = off) and at step 0 and the last step, K = ``samples`` draws of (camera, t, eps)
    from the ``measure`` stream, theta frozen. ``chunk`` samples are vectorised at once
    (memory O(chunk x parameters)); ``engine`` picks torch.func or plain autograd ("auto":
    func, autograd if the backbone cannot be vmapped); ``bootstrap`` resamples give the 95% CI
    of log_var (studentized, benchmark/probe/ci.py) from a K x K Gram matrix, exact up to
    ``sketch_dim`` parameters, count-sketched beyond; ``reference_samples`` > 0 adds the bias
    check against a large-sample mean, at the last checkpoint only (``reference_at: last``,
    the default) or at every probe (``all``), for ``reference_variants``; ``control_variate``
    adds raw_log_var / cv_gain / cv_oracle_* and ``update_log_var`` (benchmark/probe/
    control.py) for ``control_variants``: the image-space forms at every probe (no extra
    work), the theta-space forms and update_log_var (one more backward per sample and the
    per-sample Adam steps) at the last checkpoint only (``control_at: last``, the default:
    the verdict reads the last probe) or at every probe (``all``)."""

    every: int = 150  # 0, 150, 300 on the default 300 steps: the main job fits 10 min
    samples: int = 32
    #: the nested variants (camera fixed; camera and t fixed: the eps part at one (c, t)) are
    #: off by default so the main job (15 prompts) fits 10 minutes; the split gives the eps part
    variants: tuple[Literal["all", "fixed_camera", "fixed_camera_t"], ...] = ("all",)
    reference_samples: int = 32
    reference_at: Literal["last", "all"] = "last"
    reference_variants: tuple[Literal["all", "fixed_camera", "fixed_camera_t"], ...] = ("all",)
    control_variate: bool = True
    control_variants: tuple[Literal["all", "fixed_camera", "fixed_camera_t"], ...] = ("all",)
    control_at: Literal["last", "all"] = "last"
    bootstrap: int = 1000
    chunk: int = 16
    engine: Literal["auto", "func", "autograd", "split"] = "auto"
    sketch_dim: int = 131072
    #: where the bias check runs, SDS with the method's guidance at the same theta and draws
    #: (benchmark/probe/twin.py): matched-state NSR ratio and the bias check against SDS
    twin: bool = True
    #: the variance split by the law of total variance (benchmark/probe/split.py): C
    #: cameras x T timesteps x J noises, at the last probe (``split_at: last``), every probe
    #: (``all``) or never (``off``)
    split: tuple[int, int, int] = (4, 4, 2)
    split_at: Literal["last", "all", "off"] = "last"

    def __post_init__(self) -> None:
        if len(self.split) != 3 or min(self.split) < 2:
            raise ValueError(f"measure.split must be 3 sizes >= 2 (C, T, J), got {self.split}")
        if self.every < 0 or self.samples < 2 or self.reference_samples < 0:
            raise ValueError("need every >= 0, samples >= 2, reference_samples >= 0")
        if self.bootstrap < 0 or self.chunk < 1 or self.sketch_dim < 1:
            raise ValueError("need bootstrap >= 0, chunk >= 1, sketch_dim >= 1")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"duplicate measurement variants in {self.variants}")
