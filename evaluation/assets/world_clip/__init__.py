"""The world CLIP: world_clip.json, model.safetensors, provenance.json."""
