"""Thumbnails of the world's objects: ``python -m benchmark prompts`` writes a grid of them."""

from __future__ import annotations

from pathlib import Path

import torch

from core.cameras import look_at_origin
from core.errors import UserError
from world.distributions import all_prompts, instances
from world.renderer import render_object


def write_prompt_grid(path: str, size: int = 64, azimuths=(0.0, 90.0, 180.0, 270.0)) -> str:
    """PNG grid: one row per world prompt (prompt on the left; a distribution prompt shows its
    first instance), one column per azimuth."""
    import numpy as np
    from PIL import Image, ImageDraw

    prompts = all_prompts()
    n = len(azimuths)
    ones = torch.ones(n)
    cameras = look_at_origin(ones * 20.0, torch.tensor(azimuths), ones * 2.5, ones * 40.0)
    label_width, pad = 6 * max(len(p) for p in prompts) + 12, 2
    canvas = Image.new(
        "RGB", (label_width + n * (size + pad), len(prompts) * (size + pad) + 16), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for j, azimuth in enumerate(azimuths):
        draw.text((label_width + j * (size + pad) + 4, 2), f"az {azimuth:g}", fill="black")
    for i, prompt in enumerate(prompts):
        rgb = render_object(instances(prompt)[0], cameras, size, size, supersample=1)["rgb"]
        tiles = (rgb.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        top = 16 + i * (size + pad)
        draw.text((4, top + size // 2 - 5), prompt, fill="black")
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (label_width + j * (size + pad), top))
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(target, format="PNG")
    except OSError as exc:
        raise UserError(f"cannot write the prompt grid {path}: {exc.strerror}") from None
    return str(target)
