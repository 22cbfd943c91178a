"""The snapshot grid's row labels (scripts/world_phenomena.py ``label_rows``)."""

import numpy as np
from PIL import Image

from tests.scripts import load_script


def _script():
    return load_script("world_phenomena")


def test_label_rows_adds_a_margin_with_one_label_per_row():
    image = Image.new("RGB", (60, 90), (200, 0, 0))
    out = np.asarray(_script().label_rows(image, ["truth #0", "sds", "vsd particle 0"], 100))
    assert out.shape == (90, 160, 3)
    assert (out[:, 100:] == (200, 0, 0)).all()  # the image itself is untouched
    margin = out[:, :100].min(axis=2)
    for k in range(3):  # dark text pixels inside every row's band of the margin
        assert (margin[30 * k : 30 * (k + 1)] < 128).any()
