"""A frozen DPT monocular depth model (transformers ``DPTForDepthEstimation``, e.g.
Intel/dpt-hybrid-midas) as SSD's geometry estimator D on real priors.

For a latent prior, D sees the VAE decode of the *noisy* latent, and phi's gradient is taken
w.r.t. the latent through the decoder:

    D(x_t) = resize(-DPT(normalise(resize(decode(x_t)))))       [B, 4, h, w] -> [B, 1, H, W]

decode is the phi decoder (priors/decoders.py: the full VAE decoder or TAESD, at
``sd.phi_resolution``); the inner resize goes to DPT's input side (``sd.depth_resolution``,
0 = the image processor's size, 384 for DPT-hybrid, or the decoded image's side when that is
smaller: the decode is never upsampled) and is skipped when the decode already has that
size. The decoder and DPT run in ``sd.phi_dtype`` (fp32 on CPU by default).

DPT predicts relative inverse depth (disparity); its negative is returned so that larger
means farther (the baseline's Pearson correlation is invariant to positive affine maps of
depth, not to a sign flip). H, W = the render's size (``ctx.render["depth"]``) when known,
else the decoded image's.

Normals from the depth map (approximate: relative depth has no metric slope). With the
depth standardised per image (zero mean, unit std) and derivatives taken w.r.t. image
coordinates in [-1, 1] (central differences, replicate padding):

    n_cam = normalise(d_u, -d_v, 1)      (OpenGL camera: +x right, +y up, +z to the camera)
    n_world = R_c2w n_cam
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from core.interfaces import GeometryEstimator, PriorContext
from priors.weights import WeightsError, _read_json, quiet_loading


def check_dpt_directory(path: str | Path) -> Path:
    """Raise WeightsError (one line) unless ``path`` holds a DPT depth model in safetensors."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"depth model directory not found: {path}")
    if (root / "model_index.json").is_file():
        raise WeightsError(f"{path} is a diffusers pipeline, not a DPT depth model directory")
    if not (root / "config.json").is_file():
        raise WeightsError(f"{path} is not a DPT depth model directory: config.json is missing")
    kind = _read_json(root / "config.json").get("model_type")
    if kind != "dpt":
        raise WeightsError(f"{path} holds a '{kind}' model; expected a DPT depth model ('dpt')")
    for file in ("model.safetensors", "preprocessor_config.json"):
        if not (root / file).is_file():
            raise WeightsError(f"incomplete DPT directory {path}: {file} is missing")
    return root


class DPTGeometry(GeometryEstimator):
    """D and N of SSD's baseline from a frozen DPT, on a latent prior (``prior.decode``)."""

    def __init__(
        self,
        path: str | Path,
        prior,
        device: torch.device | str = "cpu",
        decoder=None,
        resolution: int = 0,
        dtype: torch.dtype | None = None,
    ) -> None:
        from transformers import DPTForDepthEstimation

        from priors.decoders import PhiDecoder

        root = check_dpt_directory(path)
        dtype = prior.dtype if dtype is None else dtype
        processor = _read_json(root / "preprocessor_config.json")
        try:
            with quiet_loading():
                self.model = DPTForDepthEstimation.from_pretrained(
                    root, local_files_only=True, use_safetensors=True, torch_dtype=dtype
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"cannot load the DPT depth model from {path}: {first}") from None
        self.model.requires_grad_(False).eval().to(device)
        self.decoder = decoder if decoder is not None else PhiDecoder(prior, "full")
        size = processor.get("size") or {}
        self.size = (int(size.get("height", 384)), int(size.get("width", 384)))
        if resolution:
            self.size = (int(resolution), int(resolution))
        else:  # the processor's size, never above the decoded image's (no upsampling)
            side = int(getattr(self.decoder, "resolution", max(self.size)))
            self.size = (min(self.size[0], side), min(self.size[1], side))
        self.dtype = dtype
        mean = processor.get("image_mean", [0.5, 0.5, 0.5])
        std = processor.get("image_std", [0.5, 0.5, 0.5])
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.prior = prior
        self.n_evals = 0

    def _output_size(self, ctx: PriorContext, image: torch.Tensor) -> tuple[int, int]:
        if "depth" in ctx.render:
            return tuple(ctx.render["depth"].shape[-2:])
        return tuple(image.shape[-2:])

    def depth(self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext) -> torch.Tensor:
        """Latents [B, C, h, w] -> -disparity [B, 1, H, W] fp32 (differentiable in x_t)."""
        self.n_evals += x_t.shape[0]
        image = self.decoder(x_t)  # [B, 3, R, R] in [0, 1]
        pixels = image
        if tuple(image.shape[-2:]) != self.size:
            pixels = F.interpolate(image, size=self.size, mode="bilinear", align_corners=False)
        pixels = ((pixels - self.mean) / self.std).to(self.dtype)
        embeddings = getattr(getattr(self.model, "dpt", None), "embeddings", None)
        if hasattr(embeddings, "image_size"):  # DPT-hybrid checks the input side, though it
            embeddings.image_size = self.size  # resizes its position embedding to any side
        disparity = self.model(pixel_values=pixels).predicted_depth.to(torch.float32)
        out = F.interpolate(
            disparity[:, None],
            size=self._output_size(ctx, image),
            mode="bilinear",
            align_corners=False,
        )
        return -out

    def normal(self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext) -> torch.Tensor:
        """Latents [B, C, h, w] -> world-frame unit normals [B, 3, H, W] (see module doc)."""
        d = self.depth(x_t, t, ctx)
        return normals_from_depth(d, ctx.cameras.c2w.to(d))


def normals_from_depth(depth: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Depth [B, 1, H, W] (any scale, larger = farther), c2w [B, 4, 4] -> unit normals
    [B, 3, H, W] in the world frame."""
    b, _, h, w = depth.shape
    flat = depth.flatten(1)
    d = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)).view_as(depth)
    padded = F.pad(d, (1, 1, 1, 1), mode="replicate")
    d_u = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) * 0.5 * (w - 1) / 2.0
    d_v = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) * 0.5 * (h - 1) / 2.0
    n_cam = F.normalize(torch.cat([d_u, -d_v, torch.ones_like(d)], dim=1), dim=1)
    n_world = torch.einsum("bij,bjhw->bihw", c2w[:, :3, :3], n_cam)
    return F.normalize(n_world, dim=1)
