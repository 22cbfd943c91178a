"""Diffusion priors: the shared interface, the noise schedule, CFG, and real-model adapters."""
