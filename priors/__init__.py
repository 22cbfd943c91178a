"""Adapters to real models: Stable Diffusion (latent prior), LoRA eps_phi support, DPT depth.

The prior interface, schedule and CFG live in ``core``; CLIP is an evaluation model
(``evaluation.clip``)."""
