"""CLIP score and R-precision over an open_clip model (the world's shipped one or a user's).

    score(x, y)  = 100 * cos(f_img(x), f_txt(y))    (torchmetrics' CLIPScore clamps at 0;
                                                      here optional, see ClipScorer.score)
    R-precision  = mean_b [ argmax_k cos(f_img(x_b), f_txt(y_k)) == true_b ]

Images enter as [B, 3, H, W] in [0, 1] and are resized and normalised with differentiable
torch ops using the model's own preprocess config (size, mean, std, interpolation, resize
mode), so a score can also be back-propagated to the render. Text embeddings are cached.

Scorer specs (``load_clip_scorer``): ``"world"`` the small CLIP shipped in
``evaluation/assets/world_clip`` (trained on world renders by ``evaluation.train_world_clip``),
``"none"``, or ``"ARCH:PATH"``: ARCH an open_clip model name (``ViT-B-32``) or a path to an
open_clip JSON model config, PATH a local ``.safetensors`` (or an open_clip ``.bin``/``.pt``
state dict, read with ``torch.load(weights_only=True)``). open_clip is imported lazily.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from core.errors import UserError
from evaluation.clip_spec import check_clip_spec, split_clip_spec

WORLD_CLIP_DIR = Path(__file__).resolve().parent / "assets" / "world_clip"
WORLD_CLIP_CONFIG = WORLD_CLIP_DIR / "world_clip.json"
WORLD_CLIP_WEIGHTS = WORLD_CLIP_DIR / "model.safetensors"

_REGISTERED: dict[str, str] = {}


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _without_random_init_warning():
    """open_clip warns on the root logger that the model is randomly initialised; here the
    weights are loaded right after, so the warning would only mislead."""
    root = logging.getLogger()
    log_filter = _DropRandomInitWarning()
    root.addFilter(log_filter)
    try:
        yield
    finally:
        root.removeFilter(log_filter)


def _register_config(config_path: Path) -> str:
    """Register an open_clip JSON model config once; returns its model name (the file stem)."""
    import open_clip

    key = str(config_path.resolve())
    if key not in _REGISTERED:
        try:
            cfg = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read CLIP model config {config_path}: {exc}") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if not isinstance(cfg, dict) or missing:
            raise UserError(f"CLIP model config {config_path} lacks open_clip keys {missing}")
        open_clip.add_model_config(config_path)
        _REGISTERED[key] = config_path.stem
    return _REGISTERED[key]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict: safetensors, or torch.load(weights_only=True) for .bin/.pt
    (unwrapping a 'state_dict' entry and DataParallel 'module.' prefixes)."""
    if not path.is_file():
        raise UserError(f"CLIP checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many types; all are the user's input
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot read CLIP checkpoint {path}: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"CLIP checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_open_clip(arch: str, weights: Path | None) -> tuple[torch.nn.Module, object]:
    """An open_clip model (eval mode, fp32, CPU) and its tokenizer; ``arch`` a model name or
    a JSON config path; ``weights`` loaded strictly (mismatches are one-line UserErrors)."""
    import open_clip

    if arch.endswith(".json"):
        config_path = Path(arch)
        if not config_path.is_file():
            raise UserError(f"CLIP model config not found: {arch}")
        name = _register_config(config_path)
    else:
        name = arch
        if name not in open_clip.list_models():
            raise UserError(
                f"unknown open_clip architecture {arch!r} (a model name such as ViT-B-32, or a "
                "path to a JSON model config)"
            )
    state = read_state_dict(weights) if weights is not None else None
    with _without_random_init_warning():
        model = open_clip.create_model(name, pretrained=None, load_weights=False)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).split())[:300]
            raise UserError(
                f"CLIP checkpoint {weights} does not match architecture {name}: {first}"
            ) from None
    model = model.float().eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(name)


class ClipScorer:
    """CLIP score / R-precision of images against prompts with a frozen open_clip model.

    Args:
        model: an open_clip CLIP (``encode_image``, ``encode_text``, ``visual.preprocess_cfg``).
        tokenizer: its tokenizer (list[str] -> [N, context_length] token ids).
        name: what the scorer is (recorded by callers).
        prompts: prompts the model was trained to tell apart (candidates for R-precision), if
            known.
        checks: what ``evaluation.clip_checks`` found for this model (``world_clip_checks``),
            None when it was never checked; runs record it in their manifest and the report
            shows CLIP as quality only when ``checks["passed"]``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        device: torch.device | str = "cpu",
        name: str = "",
        prompts: list[str] | None = None,
        checks: dict | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.checks = checks
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.prompts = list(prompts or [])
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self.size = tuple(size) if isinstance(size, list | tuple) else (int(size), int(size))
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.mean = self.mean.to(self.device)[None, :, None, None]
        self.std = self.std.to(self.device)[None, :, None, None]
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self._text_cache: dict[str, torch.Tensor] = {}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, S, S] normalised, differentiable: resize (antialiased)
        so the shorter side is S and centre-crop ('shortest'), or resize to S x S ('squash');
        then (x - mean) / std."""
        x = images.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        sh, sw = self.size
        if (h, w) != (sh, sw):
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            if self.resize_mode == "squash":
                target = (sh, sw)
            else:
                scale = max(sh / h, sw / w)
                target = (max(sh, round(h * scale)), max(sw, round(w * scale)))
            x = F.interpolate(x, size=target, mode=mode, align_corners=False, antialias=True)
            top, left = (x.shape[-2] - sh) // 2, (x.shape[-1] - sw) // 2
            x = x[..., top : top + sh, left : left + sw].clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings [B, D] (differentiable w.r.t. ``images``)."""
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """Unit text embeddings [N, D], cached per prompt."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if new:
            tokens = self.tokenizer(new).to(self.device)
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(new, emb, strict=True))
        return torch.stack([self._text_cache[p] for p in prompts])

    def cosine(self, images: torch.Tensor, prompts: list[str] | str) -> torch.Tensor:
        """cos(f_img(x_b), f_txt(y_b)) [B]; one prompt is broadcast over the batch."""
        if isinstance(prompts, str):
            prompts = [prompts] * images.shape[0]
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        return (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)

    def score(
        self, images: torch.Tensor, prompts: list[str] | str, clamp: bool = False
    ) -> torch.Tensor:
        """CLIP score [B] = 100 cos (in [-100, 100]). Not clamped by default: torchmetrics'
        CLIPScore uses 100 max(cos, 0), which maps a blank image and an initial blob alike to
        0; ``clamp=True`` gives that convention."""
        cos = self.cosine(images, prompts)
        return 100.0 * (cos.clamp_min(0.0) if clamp else cos)

    @torch.no_grad()
    def similarities(self, images: torch.Tensor, candidates: list[str]) -> torch.Tensor:
        """Cosine matrix [B, K] of images against candidate prompts."""
        return self.image_embeddings(images) @ self.text_embeddings(candidates).T

    @torch.no_grad()
    def r_precision(
        self, images: torch.Tensor, true_index: torch.Tensor | int, candidates: list[str]
    ) -> float:
        """Fraction of images whose best-matching candidate (argmax cosine) is the true one.

        Args:
            images: [B, 3, H, W] in [0, 1]; true_index: [B] (or one int for all) indices into
            ``candidates``.
        """
        sims = self.similarities(images, candidates)
        true = torch.as_tensor(true_index, device=sims.device).expand(sims.shape[0])
        return float((sims.argmax(dim=-1) == true).float().mean())


def load_clip_scorer(spec: str, device: torch.device | str = "cpu") -> ClipScorer | None:
    """The scorer for ``spec`` ('world', 'none' or 'ARCH:PATH'; see the module docstring),
    None for 'none'. Problems with the spec or files are one-line ``UserError``s."""
    try:
        check_clip_spec(spec)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if spec == "none":
        return None
    if spec == "auto":
        raise UserError("resolve clip 'auto' with resolve_clip_spec(spec, prior) first")
    if spec == "world":
        prompts = world_clip_prompts()
        model, tokenizer = build_open_clip(str(WORLD_CLIP_CONFIG), WORLD_CLIP_WEIGHTS)
        return ClipScorer(
            model, tokenizer, device, name="world", prompts=prompts, checks=world_clip_checks()
        )
    arch, path = split_clip_spec(spec)
    model, tokenizer = build_open_clip(arch, Path(path))
    return ClipScorer(model, tokenizer, device, name=spec)


def world_clip_prompts() -> list[str]:
    """The world prompts the shipped model was trained on (from its provenance file)."""
    provenance = WORLD_CLIP_DIR / "provenance.json"
    if not provenance.is_file():
        raise UserError(f"the shipped world CLIP is missing its files in {WORLD_CLIP_DIR}")
    return list(json.loads(provenance.read_text(encoding="utf-8"))["prompts"])


def summarize_checks(metrics: dict) -> dict:
    """The gate and its headline figures from a provenance ``metrics`` entry (the output of
    ``evaluation.train_world_clip.evaluate``); {"passed": False, ...} when it has no gate."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict):
        return {
            "passed": False,
            "reasons": ["the CLIP was never checked against the exact metrics"],
        }
    ladder = metrics.get("ladder") or {}
    corr = metrics.get("correlations") or {}
    out = {"passed": bool(gate.get("passed")), "reasons": list(gate.get("reasons", []))}
    for key in ("margin_true_partial", "margin_partial_blob"):
        values = [row[key] for row in ladder.values() if key in row]
        out[f"min_{key}"] = min(values) if values else float("nan")
    for key in ("rho_psnr", "rho_mask_iou", "rho_psnr_after_step0", "rho_mask_iou_after_step0"):
        out[f"median_{key}"] = corr.get(f"median_{key}", float("nan"))
    out["min_median_rho"] = gate.get("min_median_rho")
    out["held_out_r_precision"] = metrics.get("held_out_r_precision", float("nan"))
    return out


def world_clip_checks() -> dict:
    """``summarize_checks`` of the shipped world CLIP's provenance file."""
    provenance = json.loads((WORLD_CLIP_DIR / "provenance.json").read_text(encoding="utf-8"))
    return summarize_checks(provenance.get("metrics", {}))
