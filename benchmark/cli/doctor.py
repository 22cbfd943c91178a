"""``python -m benchmark doctor``: what this machine can run, and how fast.

Always: versions (python, torch and the field's libraries), CUDA (available, device, memory),
and whether the optional CUDA paths load: tinycudann, gsplat's rasteriser, nerfacc's CUDA
sampling. With ``--device cuda`` on a CUDA machine, a battery, each item timed (median of a
few repeats after a warm-up, CUDA-synchronised) with its peak CUDA memory:

    sd_unet_step        fp16 forward + backward to the input of a full-size Stable Diffusion
                        2.1-base UNet (865 M parameters, random weights, 4x64x64 latents)
    hashgrid_step       hash-grid NeRF render + backward at 64x64 (tinycudann when present)
    occgrid_sampling    nerfacc OccGridEstimator.sampling of 64x64 rays
    gaussians_step      Gaussian-splatting render + backward at 64x64 (gsplat when present)
    variance_probe      the gradient-variance probe (K = 8) on the world's voxel backbone

On a machine without CUDA the battery is skipped with the reason and the exit code is 0.
``--out FILE.json`` writes the whole report as JSON (docs/gpu.md records a GPU's figures).
The battery is sized to finish in well under 10 minutes on one GPU.
"""

from __future__ import annotations

import importlib
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from priors.fixtures_full import SD21_UNET  # the SD-2.1-base UNet architecture

LIBRARIES = (
    "torch", "torchvision", "diffusers", "transformers", "peft", "nerfacc", "open_clip",
    "gsplat", "tinycudann", "numpy", "pandas", "scipy",
)  # fmt: skip


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
            out[name] = None if isinstance(exc, ImportError) else f"fails: {type(exc).__name__}"
            continue
        out[name] = str(getattr(module, "__version__", "present"))
    return out


def cuda_report() -> dict:
    if not torch.cuda.is_available():
        return {"available": False, "torch_cuda": torch.version.cuda}
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "available": True,
        "torch_cuda": torch.version.cuda,
        "device": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 2**30, 1),
        "count": torch.cuda.device_count(),
    }


def optional_paths(device: torch.device) -> dict[str, str]:
    """Whether each optional CUDA path loads (and runs, on a CUDA device)."""
    out = {}
    for name, check in (
        ("tinycudann", _check_tcnn),
        ("gsplat", _check_gsplat),
        ("nerfacc_cuda", _check_nerfacc),
    ):
        try:
            out[name] = check(device)
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            out[name] = f"fails: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return out


def _check_tcnn(device: torch.device) -> str:
    import tinycudann  # noqa: F401

    return "imports" if device.type != "cuda" else "imports (used by hashgrid on CUDA)"


def _check_gsplat(device: torch.device) -> str:
    import gsplat

    if device.type != "cuda":
        return "imports (CUDA kernels are used on CUDA tensors only)"
    means = torch.zeros(1, 3, device=device)
    quats = torch.tensor([[1.0, 0, 0, 0]], device=device)
    scales = torch.full((1, 3), 0.1, device=device)
    viewmat = torch.eye(4, device=device)[None]
    viewmat[0, 2, 3] = 3.0
    k = torch.tensor([[[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]], device=device)
    rgb, _, _ = gsplat.rasterization(
        means, quats, scales, torch.ones(1, device=device), torch.ones(1, 3, device=device),
        viewmat, k, 32, 32,
    )  # fmt: skip
    return f"rasterization runs ({tuple(rgb.shape)})"


def _check_nerfacc(device: torch.device) -> str:
    if device.type != "cuda":
        return "CPU: dense functions only (OccGridEstimator.sampling needs CUDA)"
    _occgrid(device)()
    return "OccGridEstimator.sampling runs"


# -------------------------------------------------------------------------------- battery


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> dict:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (kernels, allocator, JIT)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    out = {"median_s": statistics.median(times), "repeats": repeats}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _sd_unet(device: torch.device, config: dict | None = None, half: bool = True):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    config = dict(config or SD21_UNET)
    dtype = torch.float16 if half and device.type == "cuda" else torch.float32
    unet = UNet2DConditionModel(**config).to(device=device, dtype=dtype).requires_grad_(False)
    size, width = config["sample_size"], config["cross_attention_dim"]
    x = torch.randn(1, 4, size, size, device=device, dtype=dtype, requires_grad=True)
    text = torch.randn(1, 77, width, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)

    def step():
        eps = unet(x, t, encoder_hidden_states=text).sample
        (grad,) = torch.autograd.grad(eps.float().square().mean(), x)
        return grad

    return step


def _hashgrid(device: torch.device, size: int = 64):
    from backbones.hashgrid import HashGridConfig, HashGridNeRF
    from core.cameras import CameraConfig

    model = HashGridNeRF(HashGridConfig(), device, torch.Generator().manual_seed(0))
    cameras = CameraConfig().sample(1, torch.Generator().manual_seed(1)).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        model.render(cameras, size, size)["rgb"].sum().backward()

    return step


def _occgrid(device: torch.device, size: int = 64):
    import nerfacc

    from core.cameras import CameraConfig, camera_rays

    estimator = nerfacc.OccGridEstimator(
        roi_aabb=torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), resolution=64
    ).to(device)
    cameras = CameraConfig().sample(1, torch.Generator().manual_seed(1)).to(device)
    origins, directions = camera_rays(cameras, size, size)

    def step():
        return estimator.sampling(
            origins.reshape(-1, 3), directions.reshape(-1, 3), render_step_size=1e-2
        )

    return step


def _gaussians(device: torch.device, size: int = 64):
    from backbones.gaussians import GaussianConfig, GaussianSplats
    from core.cameras import CameraConfig

    model = GaussianSplats(GaussianConfig(), device, torch.Generator().manual_seed(0))
    cameras = CameraConfig().sample(1, torch.Generator().manual_seed(1)).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        model.render(cameras, size, size)["rgb"].sum().backward()

    return step


def _probe(device: torch.device, size: int = 32):
    from benchmark.probe.config import MeasureConfig
    from benchmark.probe.probe import measure_gradient_variance
    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellTrainer

    config = load_config(None, [f"render.height={size}", f"render.width={size}"])
    prior = build_prior(config, ["a snowman"], device)
    trainer = CellTrainer(config, "sds", "a snowman", 0, prior, device)
    trainer.step(0)
    probe = MeasureConfig(samples=8, variants=("all",), bootstrap=0, reference_samples=0)
    return lambda: measure_gradient_variance(trainer.probe_subject(), 1, probe)


BATTERY: dict[str, Callable[[torch.device], Callable[[], object]]] = {
    "sd_unet_step": _sd_unet,
    "hashgrid_step": _hashgrid,
    "occgrid_sampling": _occgrid,
    "gaussians_step": _gaussians,
    "variance_probe": _probe,
}


def run_battery(device: torch.device, items: dict | None = None) -> dict[str, dict]:
    out = {}
    for name, build in (items or BATTERY).items():
        try:
            out[name] = _timed(build(device), device)
        except Exception as exc:  # noqa: BLE001 - one failing item must not hide the rest
            out[name] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def doctor(device_name: str | None = None) -> dict:
    """The report (see module doc); never raises for a missing CUDA."""
    cuda = cuda_report()
    report = {
        "versions": library_versions(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": cuda,
    }
    device = torch.device("cuda" if device_name == "cuda" and cuda["available"] else "cpu")
    report["optional_paths"] = optional_paths(device)
    if device_name == "cuda" and not cuda["available"]:
        report["battery"] = {"skipped": "CUDA is not available on this machine"}
    elif device_name == "cuda":
        report["battery"] = run_battery(device)
    return report


def print_report(report: dict) -> None:
    print(json.dumps(report, indent=2, default=str))
