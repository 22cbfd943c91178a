"""The 2D world's backbone: theta = the pixels of one image seen from a single fixed camera.

theta = colour logits l [1, 3, H/f, W/f] with rgb = sigmoid(upsample_f(l)) (f =
``downsample``; f = 1, the default, is plain pixels, f > 1 a small bilinear
parameterisation). The image *is* what a fixed camera (``elevation``, ``azimuth``) sees:
the run configuration pins the training camera distribution to that camera (see
``benchmark.run.config.RunConfig``), so the view-aware prior weights its references for it, and
evaluation compares against the true object's render there.

``render`` ignores the cameras' poses and returns the image for each of the B cameras, with
``depth`` = 0 and ``opacity`` = 1 everywhere (``normal`` = 0 when asked): an image has no
geometry. SSD's geometry baselines therefore degrade to constants: with a zero depth map
the Pearson baseline is phi = offset + scale (its gradient is 0), and the normal baseline
likewise; the ``constant`` baseline is the honest choice in 2D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backbones.base import Backbone
from core.cameras import Cameras


@dataclass
class ImageConfig:
    """The fixed camera of the 2D world (degrees) and the image parameterisation.

    The default camera (elevation 10, azimuth 0: the front) is one of the world prior's
    default reference cameras, so the true image lies in the prior's support.
    """

    elevation: float = 10.0
    azimuth: float = 0.0
    downsample: int = 1
    lr: float = 0.05
    init_logit: float = 0.0

    def __post_init__(self) -> None:
        if self.downsample < 1:
            raise ValueError("image.downsample must be >= 1")
        if self.lr <= 0:
            raise ValueError("image.lr must be > 0")
        if not -90.0 <= self.elevation <= 90.0:
            raise ValueError("image.elevation must lie in [-90, 90]")


class ImageBackbone(Backbone):
    """theta = colour logits of one [3, H, W] image (at ``height / downsample`` resolution)."""

    def __init__(
        self, config: ImageConfig, height: int, width: int, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        self.config = config
        self.height, self.width = height, width
        f = config.downsample
        shape = (1, 3, max(1, -(-height // f)), max(1, -(-width // f)))
        self.logits = torch.nn.Parameter(torch.full(shape, config.init_logit, device=device))

    def param_groups(self) -> list[dict]:
        return [{"name": "color", "params": [self.logits], "lr": self.config.lr}]

    def image(self, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """The image [1, 3, height, width] in [0, 1] (default: the configured resolution)."""
        height, width = height or self.height, width or self.width
        logits = self.logits
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear")
        return torch.sigmoid(logits)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        normals: bool = False,
        info: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        rgb = self.image(height, width).expand(len(cameras), -1, -1, -1)
        zero = torch.zeros_like(rgb[:, :1])
        out = {"rgb": rgb, "depth": zero, "opacity": zero + 1.0}
        if normals:
            out["normal"] = torch.zeros_like(rgb)
        return out
