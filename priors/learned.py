"""The learned prior: a class-conditional pixel-space diffusers UNet2DModel trained on the
world's exact score (scripts/train_learned_prior.py): ``--prior learned[:PATH]``.

A folder (``PATH``, default the shipped ``priors/assets/learned/final``) holds

    unet/           config.json + diffusion_pytorch_model.safetensors (fp16), UNet2DModel
    scheduler/      scheduler_config.json (DDPMScheduler: the schedule's one source)
    classes.json    the class table (priors/learned_classes.py)
    provenance.json data, config, seed, training time, error table

and is loaded with ``from_pretrained(local_files_only=True)`` (weights computed in fp32).

    eps(x_t, t, y)  = UNet(x_t, t, class = (y, view bin of the camera))   (conditional)
    eps(x_t, t, {}) = UNet(x_t, t, class = null)                          (unconditional)
    eps_neg         = the null class (no degraded class was trained)

CFG is core.guidance's, over these two branches. What stays exact (the world's): SSD's
depth/normal (the world's Bayes geometry, ``geometry_estimator``), held-out metrics, the
quality ceiling, Janus. ``exact_eps`` gives the training target eps*_k at any (x_t, t), so
the prior's error is known wherever it is evaluated.

VSD's eps_phi on this prior is estimators.eps_phi.LoRAEpsPhi (``eps_phi_kind = 'lora'``): a
peft LoRA copy of the UNet whose class embedding becomes ``ClassAndCamera`` (the prior's
class embedding plus the zero-initialised camera embedding), so at init eps_phi equals the
conditional prediction exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.interfaces import DiffusionPrior, PriorContext
from priors.learned_classes import ClassTable
from priors.weights import WeightsError, _read_json, weights_variant

LEARNED = "learned"
#: the shipped checkpoints (scripts/train_learned_prior.py --export priors/assets/learned)
ASSETS = Path(__file__).resolve().parent / "assets" / "learned"
DEFAULT_CHECKPOINT = ASSETS / "final"


def parse_learned(spec: str) -> Path | None:
    """'learned' -> the shipped final checkpoint; 'learned:PATH' -> PATH; None otherwise.

    >>> parse_learned("learned:/x").as_posix(), parse_learned("world")
    ('/x', None)
    """
    if spec == LEARNED:
        return DEFAULT_CHECKPOINT
    if spec.startswith(LEARNED + ":") and spec[len(LEARNED) + 1 :].strip():
        name = spec[len(LEARNED) + 1 :].strip()
        shipped = ASSETS / name
        return shipped if "/" not in name and shipped.is_dir() else Path(name)
    return None


def check_learned_directory(path: str | Path) -> Path:
    """WeightsError (one line) unless ``path`` is a learned-prior folder (see module doc)."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"learned prior folder not found: {path}")
    for rel in ("unet/config.json", "classes.json", "scheduler/scheduler_config.json"):
        if not (root / rel).is_file():
            raise WeightsError(f"incomplete learned prior folder {path}: {rel} is missing")
    weights = "diffusion_pytorch_model.safetensors"
    if not (root / "unet" / weights).is_file() and weights_variant(root / "unet", weights) is None:
        raise WeightsError(f"incomplete learned prior folder {path}: unet/{weights} is missing")
    kind = _read_json(root / "unet" / "config.json").get("_class_name")
    if kind != "UNet2DModel":
        raise WeightsError(f"{path}/unet holds a '{kind}' model; expected UNet2DModel")
    return root


def save_learned(unet, table: ClassTable, folder: str | Path) -> Path:
    """Write ``unet`` (fp16 safetensors, ``save_pretrained``), the world's DDPM scheduler
    config and classes.json into ``folder`` (provenance.json is the trainer's)."""
    import copy

    from diffusers import DDPMScheduler

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(unet).to(torch.float16).save_pretrained(folder / "unet")
    DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    ).save_pretrained(folder / "scheduler")
    (folder / "classes.json").write_text(json.dumps(table.to_json(), indent=2) + "\n")
    return folder


class ClassAndCamera(torch.nn.Module):
    """Class embedding of VSD's LoRA copy: labels [B, 1 + 16] = (class index, flattened c2w)
    -> E[class] + M(c2w); the UNet adds it to the timestep embedding."""

    def __init__(self, classes: torch.nn.Module, camera: torch.nn.Module) -> None:
        super().__init__()
        self.classes = classes
        self.camera = camera

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        index = labels[:, 0].round().long()
        return self.classes(index) + self.camera(labels[:, 1:].to(torch.float32))


class LearnedPrior(DiffusionPrior):
    """The learned UNet as a pixel-space ``DiffusionPrior`` ([-1, 1], frozen, fp32).

    Args:
        path: the folder; world: the run's WorldPrior (exact geometry for SSD);
        prompts: must all be in the class table; exact_targets: ``table -> targets`` with
            ``targets.eps(x_t, t, labels)`` the exact eps*_k (world.class_targets
            .ExactTargets over the world's references; injected: priors/ does not import
            world/), or None (no ``exact_eps``).
    """

    eps_phi_kind = "lora"
    supports_negative = True

    def __init__(
        self,
        path: str | Path,
        world,
        device: torch.device | str = "cpu",
        prompts=(),
        exact_targets=None,
    ) -> None:
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        self.path = check_learned_directory(path)
        self.device = torch.device(device)
        try:
            self.table = ClassTable.from_json(_read_json(self.path / "classes.json"))
            variant = weights_variant(self.path / "unet", "diffusion_pytorch_model.safetensors")
            self.unet = UNet2DModel.from_pretrained(
                self.path / "unet",
                local_files_only=True,
                use_safetensors=True,
                torch_dtype=torch.float32,
                variant=variant,
            )
            scheduler = DDPMScheduler.from_pretrained(
                self.path / "scheduler", local_files_only=True
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"cannot load the learned prior from {path}: {first}") from None
        self.unet.requires_grad_(False).eval().to(self.device)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32).clone()
        if self.unet.config.num_class_embeds != self.table.n_classes:
            raise WeightsError(
                f"{path}: the UNet has {self.unet.config.num_class_embeds} classes, "
                f"classes.json {self.table.n_classes}"
            )
        side = int(self.unet.config.sample_size)
        #: the renders' (H, W) it was trained at (its space is the render's RGB: shape None)
        self.resolution = (side, side)
        unknown = [p for p in prompts if p not in self.table.prompts]
        if unknown:
            raise ValueError(
                f"the learned prior at {path} has no class for {unknown[0]!r}; "
                f"its prompts: {', '.join(self.table.prompts)}"
            )
        self.world = world
        self._exact_targets = exact_targets
        self._targets = None
        self.provenance = (
            json.loads((self.path / "provenance.json").read_text("utf-8"))
            if (self.path / "provenance.json").is_file()
            else {}
        )

    # ------------------------------------------------------------------ space
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> [-1, 1] pixels (as the world prior)."""
        return rgb * 2.0 - 1.0

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1.0) * 0.5

    # ------------------------------------------------------------------ conditioning
    def class_labels(self, ctx: PriorContext, conditional: bool) -> torch.Tensor:
        """[B] class indices of a branch: (prompt, view bin) or the null class."""
        n = len(ctx.cameras)
        if not conditional:
            return torch.full((n,), self.table.null, dtype=torch.int64, device=self.device)
        return self.table.labels(ctx.prompt, ctx.cameras.azimuth).to(self.device)

    def denoiser(self) -> torch.nn.Module:
        """The frozen UNet (a LoRA eps_phi copies its module tree, sharing its tensors)."""
        return self.unet

    def predict_with(self, network, x_t, t, ctx, class_labels=None):
        """Conditional eps from ``network`` (a LoRA copy of the UNet, its class embedding
        ``ClassAndCamera``) at the camera's (prompt, view bin) class; ``class_labels`` the
        flattened c2w [B, 16]. On SD the LoRA sees the view-independent prompt; no class here
        is view-independent, so it sees the camera's class and starts exactly at eps_cond."""
        return self.run_unet(network, x_t, t, self.class_labels(ctx, True), class_labels)

    def lora_class_embedding(self, unet, camera_embedding: torch.nn.Module) -> torch.nn.Module:
        """The class embedding of a LoRA copy: its own classes plus the camera (VSD)."""
        return ClassAndCamera(unet.class_embedding, camera_embedding)

    def run_unet(self, unet, x_t, t, hidden, class_labels=None) -> torch.Tensor:
        """eps from ``unet`` (this prior's or a LoRA copy) at x_t [B, 3, H, W], t [B];
        ``hidden`` = class indices [B]; ``class_labels`` = flattened c2w [B, 16] for a
        LoRA copy with ``ClassAndCamera`` (None: the plain class embedding)."""
        labels = hidden
        if class_labels is not None:
            labels = torch.cat([hidden.to(torch.float32)[:, None], class_labels], dim=1)
        t = t.to(self.device)
        return unet(x_t.to(torch.float32), t, class_labels=labels).sample.to(torch.float32)

    def _predict_branch(self, x_t, t, ctx, conditional):
        return self.run_unet(self.unet, x_t, t, self.class_labels(ctx, conditional))

    def _predict_negative(self, x_t, t, ctx, negative_prompt):
        del negative_prompt  # the null class
        return self.run_unet(self.unet, x_t, t, self.class_labels(ctx, conditional=False))

    # ------------------------------------------------------------------ exact parts
    def geometry_estimator(self, depth_model: str = ""):
        """The world's Bayes depth/normal estimator (exact; SSD's baseline)."""
        return self.world.geometry_estimator(depth_model)

    @property
    def knows_exact_score(self) -> bool:
        """True when ``exact_eps`` works (built with exact targets): the probe logs the error."""
        return self._exact_targets is not None

    @property
    def targets(self):
        """The exact targets of the table's classes (built once from ``exact_targets``)."""
        if self._targets is None:
            if self._exact_targets is None:
                raise ValueError("this learned prior was built without exact targets")
            self._targets = self._exact_targets(self.table)
        return self._targets

    @torch.no_grad()
    def exact_eps(self, x_t, t, ctx: PriorContext, conditional: bool = True) -> torch.Tensor:
        """eps*_k(x_t) of the same class the network sees (its training target), [B, 3, H, W]."""
        labels = self.class_labels(ctx, conditional).cpu()
        targets = self.targets
        return targets.eps(x_t.detach().to("cpu", torch.float32), t.cpu(), labels).to(x_t)
