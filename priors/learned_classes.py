"""The learned prior's classes and its UNet architecture (the exact training targets of these
classes are world.class_targets.ExactTargets: priors/ does not import world/).

Classes (Stable Diffusion's view-dependent prompting, as classes): one class per (prompt,
view bin) with the bins of threestudio by azimuth (world azimuth 0 = the front),

    front: |a| < 45,   back: |a| > 135,   side: otherwise          (degrees, a in (-180, 180])

plus one null class (the last index) for classifier-free guidance. The world's reference
cameras never reach threestudio's overhead elevation (> 60), so there is no overhead bin.

Exact target of class k = (y, v): the reference mixture of prompt y restricted to the
references whose camera falls in bin v, uniform weights (tau = 0):

    eps*_k(x_t) = (x_t - alpha_t E_k[x_0 | x_t]) / sigma_t,
    E_k[x_0 | x_t] = sum_{i in k} softmax_i(-||x_t - alpha_t x_i||^2 / (2 sigma_t^2)) x_i

and for the null class the mixture over every reference of every prompt (uniform over
prompts: each prompt's references get total weight 1 / P). Drawing x_0 uniformly from a
prompt's references, labelling it with its bin and dropping the label to the null class with
probability p makes the regression's minimiser exactly these eps*_k (the exact target has no
noise variance: E[eps | x_t, k] = eps*_k).

>>> view_bin(torch.tensor([0.0, 44.0, 90.0, -170.0, 180.0])).tolist()
[0, 0, 1, 2, 2]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: view bins, in class order within a prompt
VIEWS: tuple[str, ...] = ("front", "side", "back")
FRONT_DEGREES = 45.0
BACK_DEGREES = 45.0


def view_bin(azimuth: torch.Tensor) -> torch.Tensor:
    """Bin index (0 front, 1 side, 2 back) of azimuths in degrees, [B] -> [B] int64."""
    a = torch.remainder(azimuth.to(torch.float64) + 180.0, 360.0) - 180.0
    out = torch.ones_like(a, dtype=torch.int64)
    out[a.abs() < FRONT_DEGREES] = 0
    out[a.abs() > 180.0 - BACK_DEGREES] = 2
    return out


@dataclass(frozen=True)
class ClassTable:
    """Class indices of (prompt, view) pairs; ``null`` is the last index.

    >>> table = ClassTable(("a", "b"))
    >>> table.n_classes, table.null, table.index("b", 2), table.name(5), table.name(6)
    (7, 6, 5, 'b, back view', '')
    """

    prompts: tuple[str, ...]
    views: tuple[str, ...] = VIEWS

    @property
    def n_classes(self) -> int:
        return len(self.prompts) * len(self.views) + 1

    @property
    def null(self) -> int:
        return self.n_classes - 1

    def index(self, prompt: str, view: int) -> int:
        return self.prompts.index(prompt) * len(self.views) + view

    def labels(self, prompt: str, azimuth: torch.Tensor) -> torch.Tensor:
        """[B] class labels of a prompt at cameras of azimuth [B] (degrees)."""
        return self.prompts.index(prompt) * len(self.views) + view_bin(azimuth)

    def name(self, k: int) -> str:
        if k == self.null:
            return ""
        prompt, view = divmod(k, len(self.views))
        return f"{self.prompts[prompt]}, {self.views[view]} view"

    def to_json(self) -> dict:
        return {
            "prompts": list(self.prompts),
            "views": list(self.views),
            "front_degrees": FRONT_DEGREES,
            "back_degrees": BACK_DEGREES,
            "null_class": self.null,
        }

    @staticmethod
    def from_json(data: dict) -> ClassTable:
        if tuple(data.get("views", ())) != VIEWS:
            raise ValueError(f"unsupported view bins {data.get('views')!r}; expected {VIEWS}")
        return ClassTable(tuple(data["prompts"]))


#: the shipped architecture (about 0.69 M parameters, 1.4 MB in fp16)
UNET_ARCHITECTURE = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
    "attention_head_dim": 32,
}


def build_unet(n_classes: int, sample_size: int = 32, **overrides):
    """A class-conditional pixel-space ``UNet2DModel`` (nn.Embedding class embedding of
    ``n_classes`` rows, added to the timestep embedding), the shipped architecture unless
    ``overrides`` says otherwise. Initialised from the global RNG: call under a seed."""
    from diffusers import UNet2DModel

    kwargs = {**UNET_ARCHITECTURE, "sample_size": sample_size, **overrides}
    return UNet2DModel(num_class_embeds=n_classes, **kwargs)
