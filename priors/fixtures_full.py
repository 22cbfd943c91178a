"""Full-size random-weight models of the real architectures (``make-fixtures --full-size DIR``).

    DIR/sd            Stable Diffusion 2.1-base (stabilityai/stable-diffusion-2-1-base
                      layout): model_index.json, unet/ (UNet2DConditionModel, 866 M params),
                      vae/ (AutoencoderKL, 84 M), text_encoder/ (CLIPTextModel, OpenCLIP
                      ViT-H text tower, 340 M), tokenizer/ (CLIP BPE vocab.json + merges.txt,
                      built offline from open_clip's bundled file), scheduler/
                      (PNDMScheduler config, scaled-linear betas, epsilon)
    DIR/sd/depth      DPTForDepthEstimation in the Intel/dpt-hybrid-midas architecture
                      (ViT-B/16 + BiT-R50 hybrid, 384x384, 122 M) + image processor: the
                      depth model ``priors/dpt.py`` names as the default
    DIR/sd/taesd      AutoencoderTiny (madebyollin/taesd architecture, 2.4 M): SSD's cheap
                      phi decoder (``sd.phi_decoder``)

Weights are random (seeded exactly as the tiny fixtures: ``priors.fixtures.reinitialise``
from a generator keyed by (seed, name)) and written as **fp16** safetensors under the plain
file names (``diffusion_pytorch_model.safetensors``, ``model.safetensors``): 2.6 GB instead of
5.2 GB; the CPU prior loads them as fp32 (``torch_dtype``), CUDA as fp16. Components are built,
saved and freed one at a time (peak ~4 GB, the fp32 UNet). ``build_full_size`` takes ~1 min
on 2 threads.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from priors.fixtures import (
    _build,
    _generator,
    build_tiny_autoencoder,
    save_clip_tokenizer_files,
    write_model_index,
)

#: Stable Diffusion 2.1-base UNet (stabilityai/stable-diffusion-2-1-base unet/config.json)
SD21_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}

#: its vae/config.json (sample_size: the RGB side the prior encodes at, 512 for 2.1-base)
SD21_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

#: its text_encoder/config.json (OpenCLIP ViT-H/14 text tower, penultimate layers kept: 23)
SD21_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}

#: Intel/dpt-hybrid-midas config.json (architecture keys) and its image processor
DPT_HYBRID = {
    "is_hybrid": True,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 384,
    "patch_size": 16,
    "backbone_out_indices": [2, 5, 8, 11],
    "neck_hidden_sizes": [256, 512, 768, 768],
    "reassemble_factors": [1, 1, 1, 0.5],
    "fusion_hidden_size": 256,
    "readout_type": "project",
}
DPT_HYBRID_PROCESSOR = {
    "size": {"height": 384, "width": 384},
    "keep_aspect_ratio": False,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}

#: madebyollin/taesd (diffusers AutoencoderTiny defaults): 4 x 64 channels, 3 upsamplings
TAESD = {
    "encoder_block_out_channels": (64, 64, 64, 64),
    "decoder_block_out_channels": (64, 64, 64, 64),
    "num_encoder_blocks": (1, 3, 3, 3),
    "num_decoder_blocks": (3, 3, 3, 1),
    "latent_channels": 4,
    "scaling_factor": 1.0,
}


def _save(module: torch.nn.Module, directory: Path, dtype: torch.dtype) -> None:
    module.to(dtype).save_pretrained(directory, safe_serialization=True)


def build_dpt_hybrid(directory: Path, seed: int = 0, dtype=torch.float16) -> None:
    """DPT-hybrid (Intel/dpt-hybrid-midas architecture) + its image processor."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    model = _build(
        lambda: DPTForDepthEstimation(DPTConfig(**DPT_HYBRID)), _generator(seed, "dpt-hybrid")
    )
    directory.mkdir(parents=True, exist_ok=True)
    _save(model, directory, dtype)
    DPTImageProcessor(**DPT_HYBRID_PROCESSOR).save_pretrained(directory)


def build_full_size(directory: Path, seed: int = 0, dtype=torch.float16) -> None:
    """SD 2.1-base + DPT-hybrid + TAESD at real size under ``directory`` (see module doc)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory.mkdir(parents=True, exist_ok=True)
    builders = (
        ("unet", lambda: UNet2DConditionModel(**SD21_UNET)),
        ("vae", lambda: AutoencoderKL(**SD21_VAE)),
        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**SD21_TEXT))),
    )
    for name, factory in builders:
        module = _build(factory, _generator(seed, f"sd21/{name}"))
        _save(module, directory / name, dtype)
        del module
        gc.collect()
    save_clip_tokenizer_files(directory / "tokenizer")
    PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    ).save_pretrained(directory / "scheduler")
    write_model_index(directory, "PNDMScheduler")
    build_dpt_hybrid(directory / "depth", seed, dtype)
    build_tiny_autoencoder(directory / "taesd", seed, TAESD, dtype)


def make_full_size(root: str | Path, seed: int = 0) -> list[Path]:
    """``make-fixtures --full-size ROOT``: writes ROOT/sd (replacing it once the new build is
    complete: ``priors.fixtures.build_into``); returns [ROOT/sd]."""
    from priors.fixtures import build_into
    from priors.weights import quiet_loading

    with quiet_loading():
        target = build_into(Path(root) / "sd", lambda folder: build_full_size(folder, seed))
    return [target]
