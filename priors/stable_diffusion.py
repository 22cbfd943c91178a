"""Stable Diffusion (latent) prior from a local diffusers directory: ``--prior sd:PATH``.

Components are loaded one by one with ``local_files_only=True`` and safetensors only
(no pipeline class, no pickle): ``unet/`` (UNet2DConditionModel), ``vae/`` (AutoencoderKL),
``text_encoder/`` (CLIPTextModel), ``tokenizer/`` (CLIPTokenizer), ``scheduler/`` (its
config gives abar_t and the prediction type; read through DDPMScheduler, the schedule's one
source, core.schedule).

    encode:  x = s_vae * mean(q_vae(z | 2 resize(rgb) - 1))        [B, 3, H, W] -> [B, 4, h, w]

with resize = bilinear to the VAE's ``sample_size`` (512 for SD 1.x/2.x base) and s_vae the
VAE's ``scaling_factor``. The posterior *mean* is used (threestudio samples with a private
generator): encode is deterministic and needs no random stream; gradients flow through the
encoder into the render.

    eps(x_t, t, y) = UNet(x_t, t, E(y))        (epsilon models)
    eps(x_t, t, y) = sigma_t x_t + alpha_t v   (v_prediction models: v = alpha eps - sigma x0)

E(y) is the text encoder's last hidden state [77, D], computed once per distinct prompt
string and cached (the unconditional branch uses the empty prompt ""; the negative branch
``predict_negative`` the negative prompt text, ``{prompt}`` filled in, and ``{view}``, where
the template has it, replaced by the camera's view suffix).
With view-dependent prompting (threestudio) the conditional prompt gets a suffix by camera:
", front view" for |azimuth| < front_threshold, ", back view" for
|azimuth| > 180 - back_threshold, ", overhead view" for elevation > overhead_threshold,
else ", side view" (world azimuth 0 = front).
Weights are fp16 on CUDA (``half_precision: auto``), fp32 on CPU; inputs and outputs of
the prior are fp32.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from core.interfaces import DiffusionPrior, PriorContext
from core.schedule import alpha_sigma
from priors.weights import WeightsError, _read_json, quiet_loading, weights_variant

#: subfolder -> (files that must exist, diffusers/transformers class names accepted)
SD_COMPONENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "unet": (("config.json", "diffusion_pytorch_model.safetensors"), ("UNet2DConditionModel",)),
    "vae": (("config.json", "diffusion_pytorch_model.safetensors"), ("AutoencoderKL",)),
    "text_encoder": (("config.json", "model.safetensors"), ("CLIPTextModel",)),
    "tokenizer": ((), ()),
    "scheduler": (("scheduler_config.json",), ()),
}


@dataclass
class SDPriorConfig:
    """The ``sd:`` section of the run config (used when ``prior: sd:PATH``).

    Attributes:
        view_dependent_prompting: append ", front/side/back/overhead view" by camera.
        front_threshold, back_threshold, overhead_threshold: degrees (threestudio's 45/45/60).
        half_precision: ``auto`` = fp16 weights on CUDA, fp32 on CPU; ``on`` / ``off`` force.
        depth_model: a transformers DPTForDepthEstimation directory for SSD's depth/normal
            baseline; empty = ``PATH/depth`` when that exists.
        phi_decoder: the decoder in front of DPT (priors/decoders.py): ``tiny`` = TAESD
            (AutoencoderTiny at ``tiny_decoder``, empty = ``PATH/taesd``), ``full`` = the VAE
            decoder, ``auto`` = tiny when that directory exists. phi_resolution: RGB side the
            phi decoder emits (0 = the VAE's); phi_resolution_full: the side when that
            decoder is the full VAE decoder (capped at phi_resolution; 0 = phi_resolution),
            lower since it costs many times TAESD per pixel; depth_resolution: DPT's input
            side (0 = its processor's, capped at the decoded side: 320 at the defaults, 192
            with the full decoder); phi_dtype: their
            compute dtype (``auto`` = the weights dtype).
            Defaults and their measurements: docs/scale.md.
        free_text_encoder: encode every prompt (+ view suffixes, "") at load, then drop the
            text encoder (340 M params at SD 2.1 size); reloaded from disk on an unseen
            string.
        (VSD's LoRA eps_phi on this prior is configured by vsd.lora_rank / lora_alpha /
        lora_lr.)
    """

    view_dependent_prompting: bool = True
    front_threshold: float = 45.0
    back_threshold: float = 45.0
    overhead_threshold: float = 60.0
    half_precision: Literal["auto", "on", "off"] = "auto"
    depth_model: str = ""
    phi_decoder: Literal["auto", "tiny", "full"] = "auto"
    tiny_decoder: str = ""
    phi_resolution: int = 320
    phi_resolution_full: int = 192
    depth_resolution: int = 0
    phi_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    free_text_encoder: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.front_threshold <= 180.0 or not 0.0 < self.back_threshold <= 180.0:
            raise ValueError("front_threshold and back_threshold must lie in (0, 180]")
        if min(self.phi_resolution, self.phi_resolution_full, self.depth_resolution) < 0:
            raise ValueError("phi_resolution(_full) and depth_resolution must be >= 0 (0: native)")


def check_sd_directory(path: str | Path) -> Path:
    """Raise WeightsError (one line, naming what is missing or wrong) unless ``path`` is a
    complete diffusers Stable Diffusion directory with safetensors weights."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"Stable Diffusion weights directory not found: {path}")
    if not (root / "model_index.json").is_file():
        config = root / "config.json"
        if config.is_file():
            found = _read_json(config)
            kind = found.get("model_type") or found.get("_class_name") or "unknown"
            raise WeightsError(
                f"{path} holds a '{kind}' model, not a diffusers Stable Diffusion directory "
                "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
            )
        raise WeightsError(
            f"{path} is not a diffusers Stable Diffusion directory: model_index.json is missing"
        )
    for name, (files, classes) in SD_COMPONENTS.items():
        folder = root / name
        if not folder.is_dir():
            raise WeightsError(f"incomplete Stable Diffusion directory {path}: no {name}/")
        for file in files:
            if not (folder / file).is_file() and weights_variant(folder, file) is None:
                hint = ""
                if file.endswith(".safetensors") and any(folder.glob("*.bin")):
                    hint = " (only .bin weights found; convert them to safetensors)"
                raise WeightsError(
                    f"incomplete Stable Diffusion directory {path}: {name}/{file} is missing{hint}"
                )
        if name == "tokenizer" and not (
            (folder / "tokenizer.json").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
        ):
            raise WeightsError(
                f"incomplete Stable Diffusion directory {path}: tokenizer/ has neither "
                "tokenizer.json nor vocab.json + merges.txt"
            )
        if classes:
            config = _read_json(folder / "config.json")
            kind = config.get("_class_name") or (config.get("architectures") or [None])[0]
            if kind not in classes:
                raise WeightsError(
                    f"{path}/{name} holds a '{kind}' model; expected {' or '.join(classes)}"
                )
    return root


def view_suffix(
    elevation: float, azimuth: float, config: SDPriorConfig
) -> Literal["", ", front view", ", side view", ", back view", ", overhead view"]:
    """threestudio's view-dependent prompt suffix for one camera (degrees)."""
    if not config.view_dependent_prompting:
        return ""
    if elevation > config.overhead_threshold:
        return ", overhead view"
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    if abs(azimuth) < config.front_threshold:
        return ", front view"
    if abs(azimuth) > 180.0 - config.back_threshold:
        return ", back view"
    return ", side view"


class StableDiffusionPrior(DiffusionPrior):
    """A diffusers Stable Diffusion model as a latent ``DiffusionPrior`` (frozen).

    Attributes:
        unet, vae, text_encoder, tokenizer: the loaded components (eval, requires_grad False).
        dtype: weights dtype (fp16 on CUDA with half_precision auto, else fp32).
        prediction_type: ``epsilon`` or ``v_prediction`` (from the scheduler config).
        resolution: RGB side the VAE expects; ``shape``: latent (C, h, w).
        n_text_encodes: text-encoder evaluations so far (one per distinct prompt string).
    """

    def __init__(
        self,
        path: str | Path,
        config: SDPriorConfig | None = None,
        device: torch.device | str = "cpu",
        prompts: list[str] | None = None,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.path = check_sd_directory(path)
        self.config = config or SDPriorConfig()
        self.device = torch.device(device)
        half = self.config.half_precision
        use_half = half == "on" or (half == "auto" and self.device.type == "cuda")
        self.dtype = torch.float16 if use_half else torch.float32
        load = {"local_files_only": True, "use_safetensors": True, "torch_dtype": self.dtype}
        try:
            with quiet_loading():
                self.unet = UNet2DConditionModel.from_pretrained(
                    self.path, subfolder="unet", **load, variant=self._variant("unet")
                )
                self.vae = AutoencoderKL.from_pretrained(
                    self.path, subfolder="vae", **load, variant=self._variant("vae")
                )
                self.text_encoder = CLIPTextModel.from_pretrained(
                    self.path / "text_encoder", **load, variant=self._variant("text_encoder")
                )
                self.tokenizer = CLIPTokenizer.from_pretrained(
                    self.path / "tokenizer", local_files_only=True
                )
                scheduler = DDPMScheduler.from_pretrained(
                    self.path, subfolder="scheduler", local_files_only=True
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = f"cannot load Stable Diffusion weights from {path}: {first}"
            raise WeightsError(message) from None
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False).eval().to(self.device)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32).clone()
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise WeightsError(
                f"{path}: unsupported prediction_type {self.prediction_type!r} "
                "(expected epsilon or v_prediction)"
            )
        self.resolution = int(self.vae.config.sample_size)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.shape = (
            int(self.unet.config.in_channels),
            self.resolution // factor,
            self.resolution // factor,
        )
        self.max_tokens = int(self.tokenizer.model_max_length)
        self._embeddings: dict[str, torch.Tensor] = {}
        self.n_text_encodes = 0
        self.auxiliary: dict[str, object] = {}  # e.g. the DPT depth model, loaded once
        for prompt in prompts or []:
            self.check_prompt(prompt)
        if self.config.free_text_encoder and prompts:
            self.release_text_encoder(prompts)

    eps_phi_kind = "lora"
    #: the probe vmaps the render only and runs the VAE encoder with batched autograd
    #: (benchmark/probe/per_sample.py, engine ``split``)
    vmap_encode = False

    @property
    def probe_chunk(self) -> int | None:
        """Most probe samples vectorised at once: the encoder graph of one 512x512 image is
        ~2 GB on CPU (docs/scale.md); at chunk 2 a full-size probe peaked at 12.8 GB (SDS) and
        14.0 GB (SSD) against the 12 GB budget, so 1 from 512 up, 4 from 256, else no cap."""
        return 1 if self.resolution >= 512 else 4 if self.resolution >= 256 else None

    def release_text_encoder(self, prompts: list[str]) -> None:
        """Cache E(p + suffix) for every prompt and view suffix and E(""), then drop the text
        encoder (``text_embedding`` reloads it from disk for a string not cached)."""
        suffixes = ("",)
        if self.config.view_dependent_prompting:
            suffixes += (", front view", ", side view", ", back view", ", overhead view")
        for text in [""] + [p + s for p in prompts for s in suffixes]:
            self.text_embedding(text)
        self.text_encoder = None
        import gc

        gc.collect()

    def _load_text_encoder(self) -> None:
        from transformers import CLIPTextModel

        load = {"local_files_only": True, "use_safetensors": True, "torch_dtype": self.dtype}
        with quiet_loading():
            model = CLIPTextModel.from_pretrained(
                self.path / "text_encoder", **load, variant=self._variant("text_encoder")
            )
        self.text_encoder = model.requires_grad_(False).eval().to(self.device)

    def geometry_estimator(self, depth_model: str = ""):
        """A frozen DPT on the VAE decode of the noisy latent: ``depth_model`` (a transformers
        DPTForDepthEstimation directory) or ``PATH/depth``; loaded once per prior."""
        from core.errors import UserError
        from priors.dpt import DPTGeometry

        path = depth_model or str(self.path / "depth")
        if not depth_model and not (self.path / "depth").is_dir():
            raise UserError(
                "SSD's depth/normal baseline on an SD prior needs a depth model: set "
                "--set sd.depth_model=PATH (a transformers DPTForDepthEstimation directory) "
                "or use --set ssd.baseline=constant"
            )
        key = f"dpt:{path}"
        if key not in self.auxiliary:
            from priors.decoders import PhiDecoder, fallback_notice

            config = self.config
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
                config.phi_dtype, self.dtype
            )
            try:
                resolution = min(config.phi_resolution, self.resolution)
                decoder = PhiDecoder(
                    self,
                    config.phi_decoder,
                    config.tiny_decoder,
                    resolution,
                    dtype,
                    config.phi_resolution_full,
                )
                self.auxiliary[key] = DPTGeometry(
                    path, self, self.device, decoder, config.depth_resolution, dtype
                )
            except WeightsError as exc:
                raise UserError(str(exc)) from None
            if decoder.fallback:  # once per prior: tell the user that the lever exists
                print(fallback_notice(decoder), file=sys.stderr, flush=True)
        return self.auxiliary[key]

    def _variant(self, component: str) -> str | None:
        files, _ = SD_COMPONENTS[component]
        return weights_variant(self.path / component, files[-1])

    def check_prompt(self, prompt: str) -> None:
        """ValueError if ``prompt`` (with the longest view suffix) exceeds the token limit."""
        longest = prompt + (", overhead view" if self.config.view_dependent_prompting else "")
        n = len(self.tokenizer(longest).input_ids)
        if n > self.max_tokens:
            raise ValueError(
                f"prompt {prompt[:40]!r}... is {n} tokens (with the view suffix); "
                f"the tokenizer's limit is {self.max_tokens}"
            )

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        """E(prompt) [77, D] in the weights dtype, encoded once per string and cached."""
        if prompt not in self._embeddings:
            ids = self.tokenizer(
                prompt,
                padding="max_length",
                max_length=self.max_tokens,
                truncation=False,
                return_tensors="pt",
            ).input_ids
            if ids.shape[1] > self.max_tokens:
                raise ValueError(f"prompt {prompt[:40]!r}... exceeds {self.max_tokens} tokens")
            self.n_text_encodes += 1
            if self.text_encoder is None:
                self._load_text_encoder()
            hidden = self.text_encoder(ids.to(self.device)).last_hidden_state[0]
            self._embeddings[prompt] = hidden.to(self.dtype)
        return self._embeddings[prompt]

    def prompts_for(self, ctx: PriorContext, conditional: bool) -> list[str]:
        """The B prompt strings of a branch: view-suffixed prompt, or "" (unconditional)."""
        cameras = ctx.cameras
        n = len(cameras)
        if not conditional:
            return [""] * n
        elevation, azimuth = cameras.elevation.tolist(), cameras.azimuth.tolist()
        return [ctx.prompt + view_suffix(elevation[i], azimuth[i], self.config) for i in range(n)]

    def encoder_hidden_states(self, ctx: PriorContext, conditional: bool) -> torch.Tensor:
        """[B, 77, D] text conditioning of a branch (cached per prompt string)."""
        return torch.stack([self.text_embedding(p) for p in self.prompts_for(ctx, conditional)])

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> latents [B, 4, h, w] fp32 (differentiable)."""
        size = (self.resolution, self.resolution)
        if tuple(rgb.shape[-2:]) != size:
            rgb = torch.nn.functional.interpolate(
                rgb, size=size, mode="bilinear", align_corners=False
            )
        posterior = self.vae.encode((2.0 * rgb - 1.0).to(self.dtype)).latent_dist
        return (posterior.mean * self.scaling_factor).to(torch.float32)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents [B, 4, h, w] -> RGB [B, 3, H, W] in [0, 1] (fp32, differentiable)."""
        image = self.vae.decode((x / self.scaling_factor).to(self.dtype)).sample
        return ((image.to(torch.float32) + 1.0) * 0.5).clamp(0.0, 1.0)

    def model_output_to_eps(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The UNet's output as a noise prediction: identity for epsilon models,
        eps = sigma_t x_t + alpha_t v for v_prediction models (all [B, C, h, w] fp32)."""
        if self.prediction_type == "epsilon":
            return output
        alpha, sigma = alpha_sigma(self.alphas_cumprod, t.to(self.alphas_cumprod.device))
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        alpha, sigma = alpha.to(x_t).view(shape), sigma.to(x_t).view(shape)
        return sigma * x_t + alpha * output

    def run_unet(
        self,
        unet: torch.nn.Module,
        x_t: torch.Tensor,
        t: torch.Tensor,
        hidden: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps from ``unet`` (this prior's or a LoRA copy) at fp32 x_t [B, C, h, w], t [B]."""
        output = unet(
            x_t.to(self.dtype),
            t.to(self.device),
            encoder_hidden_states=hidden,
            class_labels=class_labels,
        ).sample
        return self.model_output_to_eps(output.to(torch.float32), x_t, t)

    supports_negative = True

    def denoiser(self) -> torch.nn.Module:
        """The frozen UNet (a LoRA eps_phi copies its module tree, sharing its tensors)."""
        return self.unet

    def predict_with(self, network, x_t, t, ctx, class_labels=None):
        """Conditional eps from ``network`` (a copy of the UNet) under this prior's output
        convention (base class doc), conditioned on the view-independent prompt, as
        threestudio's VSD conditions its LoRA (the camera enters through ``class_labels``)."""
        hidden = self.text_embedding(ctx.prompt).unsqueeze(0).expand(x_t.shape[0], -1, -1)
        return self.run_unet(network, x_t, t, hidden, class_labels=class_labels)

    def _predict_branch(self, x_t, t, ctx, conditional):
        hidden = self.encoder_hidden_states(ctx, conditional)
        return self.run_unet(self.unet, x_t, t, hidden)

    def _predict_negative(self, x_t, t, ctx, negative_prompt):
        text = negative_prompt.replace("{prompt}", ctx.prompt)
        if "{view}" in text:  # the camera's view suffix per image (SDS-Bridge's source prompt)
            el, az = ctx.cameras.elevation.tolist(), ctx.cameras.azimuth.tolist()
            texts = [
                text.replace("{view}", view_suffix(e, a, self.config))
                for e, a in zip(el, az, strict=True)
            ]
            hidden = torch.stack([self.text_embedding(p) for p in texts])
        else:
            hidden = self.text_embedding(text).unsqueeze(0).expand(x_t.shape[0], -1, -1)
        return self.run_unet(self.unet, x_t, t, hidden)
