"""The gradient-variance probe (docs/manual.md, "Gradient variance").

Modules: ``subject`` (what is probed: ``ProbeSubject``, built by the trainer), ``draws``
(the K draws of (camera, t, eps) from the ``measure`` stream), ``per_sample`` (per-sample
image-space and theta-space gradients, torch.func or autograd), ``moments`` (streaming
moments, Gram matrix, statistics), ``probe`` (``measure_gradient_variance``), ``reference``
(a large-K image-space reference gradient), ``twin`` (SDS at the same theta and draws: the
matched-state NSR and the bias check against SDS's mean), ``split`` (the variance split by the
law of total variance), ``ci`` (the calibrated CI of the trace variance).

Heavy modules are imported lazily, so ``import benchmark.probe`` stays cheap.
"""

from core.lazy import lazy_exports

_EXPORTS = {
    "ProbeSubject": "benchmark.probe.subject",
    "draw_cameras_and_t": "benchmark.probe.subject",
    "MeasureDraws": "benchmark.probe.draws",
    "draw_measure_inputs": "benchmark.probe.draws",
    "PerSampleGradients": "benchmark.probe.per_sample",
    "theta_parameters": "benchmark.probe.per_sample",
    "StreamingMoments": "benchmark.probe.moments",
    "bootstrap_var_traces": "benchmark.probe.moments",
    "count_sketch": "benchmark.probe.moments",
    "summarize": "benchmark.probe.moments",
    "measure_gradient_variance": "benchmark.probe.probe",
    "variant_statistics": "benchmark.probe.probe",
    "reference_gradient": "benchmark.probe.reference",
    "trace_variance_ci": "benchmark.probe.ci",
    "trace_variance_ci_from_gram": "benchmark.probe.ci",
    "NestedMoments": "benchmark.probe.split",
    "split_metrics": "benchmark.probe.split",
    "twin_statistics": "benchmark.probe.twin",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("benchmark.probe", _EXPORTS)
