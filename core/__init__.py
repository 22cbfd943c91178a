"""The ground floor: cameras, diffusion math, interfaces and error types.

Everything else imports these modules; they import nothing of the project (a test checks it,
tests/test_layering.py). Modules: ``cameras`` (Cameras, CameraConfig, sampling, rays),
``schedule`` (abar_t, add_noise), ``guidance`` (both CFG conventions), ``weighting`` (w(t)),
``timesteps`` (t schedules), ``interfaces`` (DiffusionPrior, PriorContext, GeometryEstimator),
``errors`` (UserError, ConfigError).
"""
