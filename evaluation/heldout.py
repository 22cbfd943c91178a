"""Held-out evaluation of a backbone against the world's true object (GT metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

from backbones.base import Backbone
from core.cameras import Cameras, look_at_origin, orbit_cameras
from world.distributions import instances
from world.instance_metrics import colour_scores, detail_ratio, distribution_scores
from world.metrics import angular_distance, depth_l1, janus_score, mask_iou, psnr, ssim
from world.objects import known_prompts
from world.renderer import render_object

if TYPE_CHECKING:
    from evaluation.clip import ClipScorer


class RunConfig(Protocol):
    """What held-out evaluation reads of the run config (benchmark.run.config.RunConfig)."""

    backbone: str
    camera: Any  # core.cameras.CameraConfig
    eval: Any  # n_views, elevation, azimuth_offset
    render: Any  # height, width
    world: Any  # supersample
    voxel: Any  # background
    image: Any  # elevation, azimuth (the 2D world's fixed camera)


def held_out_cameras(config: RunConfig) -> Cameras:
    """A ring of eval cameras at an elevation and azimuth offset no reference camera uses;
    for the image backbone, the single camera its image represents."""
    cam = config.camera
    distance, fovy = cam.center()
    if config.backbone == "image":
        one = torch.ones(1)
        return look_at_origin(
            one * config.image.elevation, one * config.image.azimuth, one * distance, one * fovy
        )
    return orbit_cameras(
        config.eval.n_views,
        (config.eval.elevation,),
        distance,
        fovy,
        azimuth_offset=config.eval.azimuth_offset,
    )


#: azimuth grid of the Janus score's true renders (15 degree steps at the eval elevation)
JANUS_AZIMUTHS = 24
#: back views: grid azimuths within this many degrees of 180 (the back of every object)
JANUS_BACK_WITHIN = 60.0


def janus_cameras(config: RunConfig) -> tuple[Cameras, torch.Tensor]:
    """The Janus score's candidate cameras (``JANUS_AZIMUTHS`` azimuths at the eval elevation,
    offset like the held-out ring) and the indices of its back views (within 60 degrees of
    azimuth 180, the back of every library object)."""
    distance, fovy = config.camera.center()
    cameras = orbit_cameras(
        JANUS_AZIMUTHS,
        (config.eval.elevation,),
        distance,
        fovy,
        azimuth_offset=config.eval.azimuth_offset,
    )
    back = (angular_distance(cameras.azimuth, 180.0) < JANUS_BACK_WITHIN).nonzero().squeeze(-1)
    return cameras, back


def image_row(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [3, H, B*W] side by side."""
    return torch.cat(list(images), dim=-1)


class HeldOutEvaluator:
    """GT renders of one prompt at the held-out cameras, and metrics of a backbone there.

    Metrics (means over the held-out views; world/metrics.py defines each):
        psnr, ssim          of the clamped RGB against the true renders;
        depth_l1, mask_iou  scale-aligned L1 depth on the true mask and IoU of opacity > 0.5
                            with the true mask > 0.5 (3D backbones only: an image has no
                            geometry);
        janus, janus_front  for objects with a distinct front and back, 3D backbones only:
                            ``janus_score`` of the backbone's renders at the back views of the
                            ``janus_cameras`` grid against the true renders at every grid
                            azimuth (8 extra renders per evaluation); janus_deg = 180 janus,
                            the mean nearest-azimuth error in degrees.
        detail, chroma,     high-frequency energy and chroma against the truth's (ratios) and
        extreme             the excess fraction of clipped foreground pixels
                            (world/instance_metrics.py);
        clip_score,         with a ``clip`` scorer (evaluation/clip.py): the mean CLIP score
        clip_r_precision    100 cos (not clamped) of the renders with the prompt, and the
                            fraction of renders whose best-matching prompt among
                            ``clip_candidates`` (default: the world's prompts and this one)
                            is this prompt.
    With the image backbone there is one view, the image's fixed camera.

    A prompt with several instances (world/distributions.py) is scored against its best
    instance k* (highest mean PSNR over the views): ``psnr`` is k*'s, and SSIM, depth, IoU,
    detail and colour are taken against k*; it also gets ``instance`` (k*),
    ``psnr_mean_instance``, ``averaging`` and ``commitment`` (world/instance_metrics.py).
    ``truth`` is the first instance's renders, ``truths`` every instance's.
    """

    def __init__(
        self,
        prompt: str,
        config: RunConfig,
        device: torch.device,
        clip: ClipScorer | None = None,
        clip_candidates: list[str] | None = None,
    ) -> None:
        self.config = config
        self.prompt = prompt
        self.clip = clip
        candidates = clip_candidates if clip_candidates is not None else known_prompts()
        self.clip_candidates = list(dict.fromkeys([*candidates, prompt]))
        self.geometry = config.backbone != "image"
        self.cameras = held_out_cameras(config).to(device)
        objects = instances(prompt)
        obj = objects[0]
        self.truths = [self._render_truth(o, self.cameras) for o in objects]
        self.truth = self.truths[0]
        self.truth_rgb = torch.stack([t["rgb"] for t in self.truths])  # [K, V, 3, H, W]
        self.janus = None
        if self.geometry and all(o.has_distinct_front_back for o in objects):
            cameras, back = janus_cameras(config)
            cameras = cameras.to(device)
            truth = self._render_truth(obj, cameras)["rgb"]
            self.janus = (cameras[back], truth, cameras.azimuth)

    def _render_truth(self, obj, cameras: Cameras) -> dict[str, torch.Tensor]:
        return render_object(
            obj,
            cameras,
            self.config.render.height,
            self.config.render.width,
            supersample=self.config.world.supersample,
            background=self.config.voxel.background,
        )

    @torch.no_grad()
    def __call__(self, backbone: Backbone) -> tuple[dict[str, float], torch.Tensor]:
        """Metrics (see the class docstring) and the renders [B, 3, H, W]."""
        height, width = self.config.render.height, self.config.render.width
        out = backbone.render(self.cameras, height, width)
        rgb = out["rgb"].clamp(0.0, 1.0)
        if len(self.truths) == 1:
            truth = self.truth
            metrics = {"psnr": float(psnr(rgb, truth["rgb"]).mean())}
        else:
            metrics = distribution_scores(rgb, self.truth_rgb)
            truth = self.truths[int(metrics["instance"])]
        metrics["ssim"] = float(ssim(rgb, truth["rgb"]).mean())
        metrics["detail"] = detail_ratio(rgb, truth["rgb"])
        metrics.update(colour_scores(rgb, truth["rgb"], truth["mask"]))
        if self.geometry:
            metrics["depth_l1"] = float(
                depth_l1(out["depth"], truth["depth"], truth["mask"]).mean()
            )
            metrics["mask_iou"] = float(mask_iou(out["opacity"], truth["mask"]).mean())
        if self.janus is not None:
            back_cameras, candidates, candidate_azimuths = self.janus
            back = backbone.render(back_cameras, height, width)["rgb"].clamp(0.0, 1.0)
            janus, front = janus_score(
                back,
                back_cameras.azimuth,
                candidates,
                candidate_azimuths,
                back_within=JANUS_BACK_WITHIN,
            )
            metrics["janus"], metrics["janus_front"] = float(janus), float(front)
            metrics["janus_deg"] = 180.0 * float(janus)
        if self.clip is not None:
            metrics["clip_score"] = float(self.clip.score(rgb, self.prompt).mean())
            metrics["clip_r_precision"] = self.clip.r_precision(
                rgb, self.clip_candidates.index(self.prompt), self.clip_candidates
            )
        return metrics, rgb


class RenderOnlyEvaluator:
    """For prompts without a world object (real priors): renders at the held-out cameras,
    no metrics (``truth`` is None)."""

    truth = None

    def __init__(self, config: RunConfig, device: torch.device) -> None:
        self.config = config
        self.cameras = held_out_cameras(config).to(device)

    @torch.no_grad()
    def __call__(self, backbone: Backbone) -> tuple[dict[str, float], torch.Tensor]:
        out = backbone.render(self.cameras, self.config.render.height, self.config.render.width)
        return {}, out["rgb"].clamp(0.0, 1.0)
