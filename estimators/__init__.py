"""Score-distillation gradient estimators (pure math, no I/O)."""

from estimators.base import EstimatorContext, GradientEstimator, GuidanceConfig
from estimators.sds import SDS
from estimators.weighting import timestep_weight
from priors.guidance import classifier_free_guidance

__all__ = [
    "SDS",
    "EstimatorContext",
    "GradientEstimator",
    "GuidanceConfig",
    "classifier_free_guidance",
    "timestep_weight",
]
