"""Lasso and box selections resolved on the server against every image of the map."""

import numpy as np
import pytest

from explorer.region import ids_in_region
from ice.errors import IceError


def inside_even_odd(px: float, py: float, vx, vy) -> bool:
    """The even-odd rule, one point at a time: the reference the compiled test must agree with."""
    crossed, j = False, len(vx) - 1
    for k in range(len(vx)):
        if (vy[k] > py) != (vy[j] > py) and px < (vx[j] - vx[k]) * (py - vy[k]) / (vy[j] - vy[k]) + vx[k]:
            crossed = not crossed
        j = k
    return crossed


def test_a_lasso_holds_exactly_the_images_inside_its_outline():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-5, 5, 20000).astype(np.float32), rng.uniform(-5, 5, 20000).astype(np.float32)
    cluster = rng.integers(0, 4, 20000).astype(np.int32)
    angle = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    radius = 3 + np.sin(5 * angle)  # a star: concave, as a hand draws
    vx, vy = (radius * np.cos(angle)).tolist(), (radius * np.sin(angle)).tolist()
    ids = ids_in_region(x, y, cluster, {"lasso": {"x": vx, "y": vy}})
    expected = [i for i in range(20000) if inside_even_odd(float(x[i]), float(y[i]), vx, vy)]
    assert ids.tolist() == expected and 3000 < len(ids) < 17000


def test_a_box_hidden_clusters_and_images_off_the_map():
    x = np.array([0.5, 1.5, 0.5, np.nan, 0.2], np.float32)
    y = np.array([0.5, 0.5, 0.9, 0.5, 0.2], np.float32)
    cluster = np.array([0, 0, 1, 0, -1], np.int32)
    box = {"box": {"x": [1.0, 0.0], "y": [0.0, 1.0]}}  # either order, as plotly sends a drag's
    assert ids_in_region(x, y, cluster, box).tolist() == [0, 2]
    assert ids_in_region(x, y, cluster, box, hidden=[1]).tolist() == [0]


@pytest.mark.parametrize(
    "region",
    [{}, {"lasso": {"x": [0, 1], "y": [0, 1]}}, {"lasso": {"x": [0, 1, "a"], "y": [0, 1, 2]}}, {"box": {"x": [0]}}],
)
def test_a_malformed_outline_is_a_one_line_error(region):
    with pytest.raises(IceError, match="outline"):
        ids_in_region(np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.int32), region)
