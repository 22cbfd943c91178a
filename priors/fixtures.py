"""Tiny random models of the real architectures, saved in the real on-disk formats.

``python -m benchmark make-fixtures DIR`` writes

    DIR/sd      a diffusers Stable Diffusion directory: model_index.json, unet/, vae/,
                text_encoder/, tokenizer/, scheduler/ (safetensors weights); 64x64 RGB
                renders -> 4x8x8 latents; depth/ holds a copy of DIR/dpt so that
                ``--prior sd:DIR/sd`` finds SSD's depth model without further flags; taesd/
                a tiny AutoencoderTiny (SSD's cheap phi decoder, ``sd.phi_decoder``)
    DIR/dpt     a transformers DPTForDepthEstimation directory (+ its image processor)

(``--full-size DIR``: the same layout at real size, priors/fixtures_full.py) so that the
loading code users' real weights go through (priors/stable_diffusion.py,
priors/dpt.py) is tested offline, on CPU, in a few seconds. ``FIXTURES`` maps a name to its
builder ``(directory, seed, **options) -> None``; a new entry (e.g. ``clip``) is one line.

No global RNG: modules are constructed inside ``torch.random.fork_rng`` (their constructors
draw from the global generator; fork_rng restores its state afterwards), then every
parameter is re-drawn from a ``torch.Generator`` seeded by (seed, fixture name), so the
saved weights depend on the seed only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

#: vae sample size (RGB side) and latent side of the SD fixture
SD_FIXTURE_RESOLUTION = 64
SD_FIXTURE_LATENT = 8


def _generator(seed: int, name: str) -> torch.Generator:
    key = f"steinbench/fixtures/{seed}/{name}".encode()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)
    return generator


@torch.no_grad()
def reinitialise(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` from ``generator``.

    Matrices / conv kernels / embeddings (dim >= 2): N(0, 1 / fan_in), fan_in = numel of one
    output slice; vectors named ``*weight`` (norm scales): 1 + N(0, 0.01); biases and other
    vectors: N(0, 0.01). Names are visited in sorted order, so the draw is reproducible.
    """
    for _, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if param.dim() >= 2:
            std = 1.0 / math.sqrt(max(param[0].numel(), 1))
            param.copy_(torch.randn(param.shape, generator=generator) * std)
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    for name, param in module.named_parameters():
        if param.dim() == 1 and name.endswith("weight"):
            param.add_(1.0)


def _build(factory: Callable[[], torch.nn.Module], generator: torch.Generator) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        module = factory()
    reinitialise(module, generator)
    return module.eval()


def _clip_bpe() -> tuple[list[str], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary (49408 tokens) and merges, from open_clip's bundled file."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    return vocab + ["<|startoftext|>", "<|endoftext|>"], merges


_CLIP_SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def save_clip_tokenizer_files(directory: Path) -> None:
    """CLIP's tokenizer in the layout of real Stable Diffusion repos: vocab.json, merges.txt,
    tokenizer_config.json (model_max_length 77), special_tokens_map.json."""
    vocab, merges = _clip_bpe()
    directory.mkdir(parents=True, exist_ok=True)
    encoder = dict(zip(vocab, range(len(vocab)), strict=True))
    (directory / "vocab.json").write_text(json.dumps(encoder), encoding="utf-8")
    text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (directory / "merges.txt").write_text(text, encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, **_CLIP_SPECIAL}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(_CLIP_SPECIAL), "utf-8")


def clip_bpe_tokenizer():
    """transformers' CLIPTokenizer with the real CLIP BPE (open_clip's bundled file), offline.

    transformers 5.x: vocabulary and merges are passed as objects (``vocab_file=`` would build
    a 2-token vocabulary); model_max_length = 77 as CLIP.
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    return CLIPTokenizer(
        vocab=dict(zip(vocab, range(len(vocab)), strict=True)),
        merges=merges,
        model_max_length=77,
        **_CLIP_SPECIAL,
    )


def build_sd(directory: Path, seed: int = 0, prediction_type: str = "epsilon") -> None:
    """A tiny Stable Diffusion directory (UNet ~1 M params, 64x64 -> 4x8x8 VAE)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory.mkdir(parents=True, exist_ok=True)
    unet = _build(
        lambda: UNet2DConditionModel(
            sample_size=SD_FIXTURE_LATENT,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=16,
        ),
        _generator(seed, "sd/unet"),
    )
    vae = _build(
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=SD_FIXTURE_RESOLUTION,
        ),
        _generator(seed, "sd/vae"),
    )
    text_config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    text_encoder = _build(lambda: CLIPTextModel(text_config), _generator(seed, "sd/text"))
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
    )
    unet.save_pretrained(directory / "unet", safe_serialization=True)
    vae.save_pretrained(directory / "vae", safe_serialization=True)
    text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
    save_clip_tokenizer_files(directory / "tokenizer")
    scheduler.save_pretrained(directory / "scheduler")
    write_model_index(directory, "DDPMScheduler")


def write_model_index(directory: Path, scheduler: str) -> None:
    """``directory/model_index.json`` of a StableDiffusionPipeline with ``scheduler`` (a
    diffusers scheduler class name) and no safety checker."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", scheduler],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def build_dpt(directory: Path, seed: int = 0) -> None:
    """A tiny DPTForDepthEstimation (ViT 4 x 32, 32x32 input, ~0.1 M params) + processor."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        neck_hidden_sizes=[16, 16, 32, 32],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        reassemble_factors=[4, 2, 1, 0.5],
    )
    model = _build(lambda: DPTForDepthEstimation(config), _generator(seed, "dpt"))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    processor = DPTImageProcessor(
        size={"height": 32, "width": 32},
        keep_aspect_ratio=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor.save_pretrained(directory)


#: a tiny open_clip architecture (ViT 1 x 32 at 32x32, text 1 x 16, ~0.9 M params, most of it
#: the 49408-token embedding); its spec for ``eval.clip`` is ``DIR/clip/tiny_clip.json:
#: DIR/clip/model.safetensors``
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def build_clip(directory: Path, seed: int = 0) -> None:
    """A tiny random open_clip model: ``tiny_clip.json`` (open_clip model config, registered
    by ``evaluation.clip.load_clip_scorer``) and ``model.safetensors`` (its state dict)."""
    import open_clip
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tiny_clip.json"
    config.write_text(json.dumps(TINY_CLIP, indent=2), encoding="utf-8")
    open_clip.add_model_config(config)
    model = _build(
        lambda: open_clip.create_model("tiny_clip", pretrained=None, load_weights=False),
        _generator(seed, "clip"),
    )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))


#: the tiny fixture's AutoencoderTiny (64x64 RGB <-> 4x8x8 latents, ~6 k params)
TAESD_TINY = {
    "encoder_block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 8, 8, 8),
    "num_encoder_blocks": (1, 1, 1, 1),
    "num_decoder_blocks": (1, 1, 1, 1),
    "latent_channels": 4,
    "scaling_factor": 1.0,
}


def build_tiny_autoencoder(
    directory: Path, seed: int = 0, config: dict | None = None, dtype=torch.float32
) -> None:
    """An AutoencoderTiny (``config``: TAESD_TINY by default) with seeded random weights."""
    from diffusers import AutoencoderTiny

    model = _build(lambda: AutoencoderTiny(**(config or TAESD_TINY)), _generator(seed, "taesd"))
    model.to(dtype).save_pretrained(directory, safe_serialization=True)


def _build_sd_with_depth(directory: Path, seed: int = 0) -> None:
    build_sd(directory, seed)
    build_dpt(directory / "depth", seed)
    build_tiny_autoencoder(directory / "taesd", seed)


#: fixture name -> builder(directory, seed); ``make_fixtures`` writes DIR/<name> for each
FIXTURES: dict[str, Callable[..., None]] = {
    "sd": _build_sd_with_depth,
    "dpt": build_dpt,
    "clip": build_clip,
}


def build_into(target: Path, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` into a temp folder beside ``target``, then ``target`` replaced by it:
    a build that fails (full disk, Ctrl-C) removes only its temp folder and leaves an
    existing ``target`` as it was, never half-written."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f".{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        build(building)
        if target.exists():
            shutil.rmtree(target)
        building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def make_fixtures(root: str | Path, names: list[str] | None = None, seed: int = 0) -> list[Path]:
    """Build the fixtures ``names`` (default: all) under ``root``; returns their directories.
    An existing fixture directory is replaced once its new build is complete (``build_into``)."""
    from priors.weights import quiet_loading

    root = Path(root)
    written = []
    for name in names or list(FIXTURES):
        if name not in FIXTURES:
            raise KeyError(name)
        with quiet_loading():
            build_into(root / name, lambda folder, name=name: FIXTURES[name](folder, seed))
        written.append(root / name)
    return written
