"""Builders of the score-distillation family (issue 19): name -> estimator for a prior.

Until the registries land (issue 15), benchmark/methods.py merges these into BUILDERS; each
method reads its own config section (``config.<name>``). Methods that need the negative
branch check the prior's capability here, before any cell runs.
"""

from __future__ import annotations

from collections.abc import Callable

from estimators.branches import require_negative

FAMILY_METHODS = ("csd", "nfsd", "ism", "sdi", "asd", "cds", "esd", "bridge")


def _build_csd(config, prior, generator, device):
    from estimators.csd import CSD

    if config.csd.uses_negative:
        require_negative(prior, "csd")
    return CSD(config.csd)


def _build_nfsd(config, prior, generator, device):
    from estimators.nfsd import NFSD

    require_negative(prior, "nfsd")
    return NFSD(config.nfsd)


def _build_ism(config, prior, generator, device):
    from estimators.ism import ISM

    return ISM(config.ism)


def _build_sdi(config, prior, generator, device):
    from estimators.sdi import SDI

    return SDI(config.sdi)


def _build_asd(config, prior, generator, device):
    from estimators.asd import ASD

    return ASD(config.asd)


def _build_cds(config, prior, generator, device):
    """eps* [C, H, W] of the run, drawn from the cell's init stream."""
    import torch

    from estimators.cds import CDS

    shape = tuple(getattr(prior, "shape", (3, config.render.height, config.render.width)))
    eps_star = torch.randn(shape, generator=generator).to(device)
    return CDS(config.cds, eps_star)


def _build_esd(config, prior, generator, device):
    """ESD = VSD's builder with the ESD class and config (LoRA eps_phi on an SD prior)."""
    import dataclasses

    from benchmark.methods import is_latent_diffusers_prior
    from estimators.esd import ESD
    from estimators.vsd import build_residual_eps_phi

    esd = config.esd
    if is_latent_diffusers_prior(prior):
        from estimators.eps_phi import LoRAEpsPhi

        model = LoRAEpsPhi(prior, generator, rank=esd.lora_rank, alpha=esd.lora_alpha)
        return ESD(dataclasses.replace(esd, lr=esd.lora_lr), model)
    shape = getattr(prior, "shape", (3, config.render.height, config.render.width))
    return ESD(esd, build_residual_eps_phi(esd, shape, generator, device))


def _build_bridge(config, prior, generator, device):
    from estimators.bridge import Bridge

    require_negative(prior, "bridge")
    return Bridge(config.bridge)


FAMILY_BUILDERS: dict[str, Callable] = {
    "csd": _build_csd,
    "nfsd": _build_nfsd,
    "ism": _build_ism,
    "sdi": _build_sdi,
    "asd": _build_asd,
    "cds": _build_cds,
    "esd": _build_esd,
    "bridge": _build_bridge,
}
