"""Entropic Score Distillation (ESD, Wang et al. 2024, "Taming mode collapse in score
distillation"): VSD (estimators/vsd.py) with classifier-free guidance *over the camera* of
eps_phi,

    eps_phi_cfg = eps_phi(x_t, t, y, 0) + lambda (eps_phi(x_t, t, y, c) - eps_phi(x_t, t, y, 0))
    G           = w(t) (cfg(x_t, t) - eps_phi_cfg)

where camera 0 is eps_phi's dropped camera condition (the zeros it is trained on with
``camera_dropout``). lambda = ``camera_cfg`` < 1 mixes in the camera-agnostic score, an
entropy term that counteracts VSD's view collapse (Janus). lambda = 1 is VSD exactly (the
same code path; tests/test_family.py). threestudio exposes the same knob as VSD's
``guidance_scale_lora``. eps_phi's training (``update``) is VSD's, unchanged.

CFG convention: VSD's (``cfg_mode`` / ``guidance_scale``, diffusers form in ProlificDreamer).
NFE per step (the registry's cost model, estimators/registry.py): VSD's + 1 eps_phi evaluation
when lambda != 1; the world's residual eps_phi reuses one conditional prior prediction for both
camera branches (VSD's prior count), the LoRA eps_phi pays it as one more prior call with CFG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.guidance import needs_unconditional
from estimators.base import EstimatorOutput
from estimators.sds import guided_residual_terms
from estimators.vsd import VSD, VSDConfig


@dataclass
class ESDConfig(VSDConfig):
    camera_cfg: float = 0.5


class ESD(VSD):
    name = "esd"

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        if cfg.camera_cfg == 1.0 or ctx.step < cfg.warmup_steps:
            return super().grad(x, t, eps, prior, ctx)
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, cfg)
        guided = needs_unconditional(cfg.guidance_scale, cfg.cfg_mode)
        n = x.shape[0]
        with torch.no_grad():
            eps_cond = prior.predict_branch(x_t, t, ctx, conditional=True) if guided else eps_hat
            keep = torch.zeros(n, dtype=torch.bool, device=x.device)
            phi_c = self.model.predict(x_t, t, ctx, prior, camera_dropped=keep, eps_prior=eps_cond)
            phi_0 = self.model.predict(x_t, t, ctx, prior, camera_dropped=~keep, eps_prior=eps_cond)
            eps_phi = phi_0 + cfg.camera_cfg * (phi_c - phi_0)
        residual = eps_hat - eps_phi
        g = w * residual
        return EstimatorOutput(
            g,
            {
                "grad_norm": float(g.flatten(1).norm(dim=1).mean()),
                "phi_residual_norm": float(residual.flatten(1).norm(dim=1).mean()),
                "phi_camera_gap": float((phi_c - phi_0).flatten(1).norm(dim=1).mean()),
                "n_evals_phi": float(self.n_evals_phi),
                **self._loss_diagnostics(),
            },
        )
