"""Data files shipped with the package (the world CLIP)."""
