"""The decoder in front of SSD's depth model on a latent prior (``sd.phi_decoder``).

phi only has to be *some* differentiable function of x_t (E_eps[S] = 0 for any phi,
estimators/stein.py), so the image DPT sees need not be the full VAE decode: a cheaper decoder
changes phi's variance reduction, never the estimator's mean.

    full  image = (VAE_dec(resize_h(x) / s_vae) + 1) / 2              (prior.decode)
    tiny  image = (TAESD_dec(resize_h(x) / s_taesd) + 1) / 2         (diffusers AutoencoderTiny)

resize_h: bilinear resize of the latent [B, 4, h, w] to the side h = phi_resolution / f (f the
VAE's downsampling factor, 8) when ``phi_resolution`` differs from the prior's resolution, so
the decoder emits DPT's input size directly (384 = DPT-hybrid's native side) instead of
decoding at 512 and downsampling. The full VAE decoder costs many times TAESD per pixel (its
128-512-channel stages), so it decodes at ``full_resolution`` (``sd.phi_resolution_full``, 192
by default, capped at phi_resolution) instead: its cost, and DPT's behind it, scale with the
pixel count (docs/scale.md). Both decoders map the SD latent space (x = s_vae z) to RGB
in [0, 1], clamped; TAESD's s_taesd is its config's scaling_factor (1: it decodes the scaled
latents, as diffusers pipelines use it). ``dtype`` (``sd.phi_dtype``): the decoder's and the
depth model's compute dtype (bf16 / fp16 / fp32); inputs and outputs stay fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from priors.weights import WeightsError, _read_json, quiet_loading

PHI_DECODERS = ("auto", "tiny", "full")


def check_tiny_decoder_directory(path: str | Path) -> Path:
    """Raise WeightsError (one line) unless ``path`` holds a diffusers AutoencoderTiny."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"tiny decoder directory not found: {path}")
    config = root / "config.json"
    if not config.is_file():
        raise WeightsError(f"{path} is not an AutoencoderTiny directory: config.json is missing")
    kind = _read_json(config).get("_class_name")
    if kind != "AutoencoderTiny":
        raise WeightsError(f"{path} holds a '{kind}' model; expected AutoencoderTiny (TAESD)")
    if not (root / "diffusion_pytorch_model.safetensors").is_file():
        raise WeightsError(f"incomplete AutoencoderTiny directory {path}: no safetensors weights")
    return root


def resolve_phi_decoder(kind: str, path: str, sd_root: Path) -> tuple[str, Path | None]:
    """('tiny', dir) or ('full', None) for ``sd.phi_decoder`` ``kind``: auto = tiny when
    ``path`` (or SD_ROOT/taesd) exists, else full; tiny without a directory is an error."""
    if kind not in PHI_DECODERS:
        raise WeightsError(f"sd.phi_decoder must be one of {PHI_DECODERS}, got {kind!r}")
    folder = Path(path) if path else sd_root / "taesd"
    if kind == "full" or (kind == "auto" and not folder.is_dir()):
        return "full", None
    if not folder.is_dir():
        raise WeightsError(
            f"sd.phi_decoder=tiny needs an AutoencoderTiny (TAESD) directory: {folder} not "
            "found; set --set sd.tiny_decoder=PATH or sd.phi_decoder=full"
        )
    return "tiny", check_tiny_decoder_directory(folder)


class PhiDecoder:
    """Latents [B, 4, h, w] fp32 -> RGB [B, 3, R, R] in [0, 1] fp32, differentiable (module
    doc). Attributes: ``kind`` (tiny | full), ``resolution`` R, ``dtype``."""

    def __init__(
        self,
        prior,
        kind: str = "auto",
        path: str = "",
        resolution: int = 0,
        dtype: torch.dtype = torch.float32,
        full_resolution: int = 0,
    ) -> None:
        self.prior = prior
        self.kind, folder = resolve_phi_decoder(kind, path, Path(prior.path))
        #: True when ``auto`` found no TAESD and fell back to the full VAE decoder
        self.fallback = kind == "auto" and self.kind == "full"
        self.folder = Path(path) if path else Path(prior.path) / "taesd"
        if self.kind == "full" and full_resolution:
            resolution = min(int(full_resolution), int(resolution or prior.resolution))
        self.resolution = int(resolution or prior.resolution)
        self.factor = prior.resolution // prior.shape[-1]
        if self.resolution % self.factor:
            raise WeightsError(
                f"sd.phi_resolution {self.resolution} is not a multiple of the VAE factor "
                f"{self.factor}"
            )
        self.dtype = dtype
        self.model = None
        if self.kind == "tiny":
            from diffusers import AutoencoderTiny

            try:
                with quiet_loading():
                    model = AutoencoderTiny.from_pretrained(
                        folder, local_files_only=True, use_safetensors=True, torch_dtype=dtype
                    )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise WeightsError(f"cannot load the tiny decoder from {folder}: {first}") from None
            self.model = model.requires_grad_(False).eval().to(prior.device)
            self.model.encoder = None  # only the decoder is used: free the encoder's weights
            self.scaling = float(self.model.config.scaling_factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        side = self.resolution // self.factor
        if tuple(x.shape[-2:]) != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        if self.kind == "full":
            vae = self.prior.vae
            with _autocast(x.device, self.dtype, self.prior.dtype):
                image = vae.decode((x / self.prior.scaling_factor).to(self.prior.dtype)).sample
        else:
            image = self.model.decoder((x / self.scaling).to(self.dtype))  # [-1, 1]
        return ((image.to(torch.float32) + 1.0) * 0.5).clamp(0.0, 1.0)


def fallback_notice(decoder: PhiDecoder) -> str:
    """The one line a run prints when SSD's phi falls back to the full VAE decoder."""
    return (
        f"note: SSD's depth baseline decodes with the full VAE decoder at "
        f"{decoder.resolution} px: no TAESD (diffusers AutoencoderTiny) at {decoder.folder}; "
        "madebyollin/taesd there (or --set sd.tiny_decoder=PATH) makes SSD's step about "
        "1.1x SDS's on CPU, with phi decoded at 320 px (docs/scale.md)"
    )


def _autocast(device: torch.device, dtype: torch.dtype, weights: torch.dtype):
    """CPU/CUDA autocast to ``dtype`` when it differs from the weights dtype, else a no-op."""
    import contextlib

    if dtype == weights or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
