"""The snapshot grid's row labels (scripts/world_phenomena.py ``label_rows``)."""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "world_phenomena.py"


def _script():
    spec = importlib.util.spec_from_file_location("world_phenomena", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_rows_adds_a_margin_with_one_label_per_row():
    image = Image.new("RGB", (60, 90), (200, 0, 0))
    out = np.asarray(_script().label_rows(image, ["truth #0", "sds", "vsd particle 0"], 100))
    assert out.shape == (90, 160, 3)
    assert (out[:, 100:] == (200, 0, 0)).all()  # the image itself is untouched
    margin = out[:, :100].min(axis=2)
    for k in range(3):  # dark text pixels inside every row's band of the margin
        assert (margin[30 * k : 30 * (k + 1)] < 128).any()
