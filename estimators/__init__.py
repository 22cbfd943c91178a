"""Score-distillation gradient estimators (pure math, no I/O)."""

from core.guidance import classifier_free_guidance
from core.weighting import timestep_weight
from estimators.base import EstimatorContext, GradientEstimator, GuidanceConfig
from estimators.sds import SDS

__all__ = [
    "SDS",
    "EstimatorContext",
    "GradientEstimator",
    "GuidanceConfig",
    "classifier_free_guidance",
    "timestep_weight",
]
