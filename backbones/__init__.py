"""3D representations and their renderers: render(cameras, H, W) -> dict of images."""
