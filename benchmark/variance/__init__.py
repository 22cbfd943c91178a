"""The gradient-variance probe (DESIGN.md section 4).

Modules: ``subject`` (what is probed: ``ProbeSubject``, built by the trainer), ``draws``
(the K draws of (camera, t, eps) from the ``measure`` stream), ``per_sample`` (per-sample
image-space and theta-space gradients, torch.func or autograd), ``moments`` (streaming
moments, Gram matrix, statistics), ``probe`` (``measure_gradient_variance``), ``reference``
(a large-K image-space reference gradient for bias checks).

Heavy modules are imported lazily, so ``import benchmark.variance`` stays cheap.
"""

from core.lazy import lazy_exports

_EXPORTS = {
    "ProbeSubject": "benchmark.variance.subject",
    "draw_cameras_and_t": "benchmark.variance.subject",
    "MeasureDraws": "benchmark.variance.draws",
    "draw_measure_inputs": "benchmark.variance.draws",
    "PerSampleGradients": "benchmark.variance.per_sample",
    "theta_parameters": "benchmark.variance.per_sample",
    "StreamingMoments": "benchmark.variance.moments",
    "bootstrap_var_traces": "benchmark.variance.moments",
    "count_sketch": "benchmark.variance.moments",
    "summarize": "benchmark.variance.moments",
    "measure_gradient_variance": "benchmark.variance.probe",
    "variant_statistics": "benchmark.variance.probe",
    "reference_gradient": "benchmark.variance.reference",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("benchmark.variance", _EXPORTS)
