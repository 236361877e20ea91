"""The image atlas: the pictures of the images in the map's view, drawn where their points are."""

import base64
import io

import numpy as np
from PIL import Image

from explorer.atlas import FRAME, RING, picture_px, render, to_data_uri

COLORS = ["#ff0000", "#00ff00", "#0000ff"]


def solid(colours) -> np.ndarray:
    """(n, 8, 8, 3) pictures, each of one colour."""
    return np.repeat(np.asarray(colours, np.uint8)[:, None, None, :], 8, axis=1).repeat(8, axis=2)


def screen(x, y, view):
    """The pixel (column, row) where the map point (x, y) lands in the atlas of `view`."""
    (x0, x1), (y0, y1) = view["x"], view["y"]
    return round((x - x0) / (x1 - x0) * view["w"]), round((y1 - y) / (y1 - y0) * view["h"])


def test_each_picture_is_drawn_at_its_point_framed_in_its_clusters_colour():
    x, y = np.array([2.0, 5.0, 8.0], np.float32), np.array([2.5, 5.0, 7.5], np.float32)
    pixels = solid([(10, 20, 30), (40, 50, 60), (70, 80, 90)])
    cluster = np.array([0, 1, 2], np.int32)
    view = {"x": [0, 10], "y": [0, 10], "w": 800, "h": 600}  # pictures 96 px: whole inside it
    image, count = render(x, y, pixels, cluster, COLORS, view)
    assert count == 3 and image.shape == (600, 800, 4)
    side = picture_px(800, 600, 3)
    for i in range(3):
        cx, cy = screen(x[i], y[i], view)
        assert tuple(image[cy, cx]) == (*pixels[i, 0, 0], 255)  # the picture, at its point
        edge = image[cy, cx - side // 2]  # the frame, on the picture's left side
        assert tuple(edge[:3]) == tuple(int(COLORS[i][j : j + 2], 16) for j in (1, 3, 5))
    assert image[5, 5, 3] == 0  # nothing drawn far from every point: transparent


def test_a_view_with_more_than_the_limit_draws_nothing_and_says_how_many():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10, 500).astype(np.float32), rng.uniform(0, 10, 500).astype(np.float32)
    pixels = solid(rng.integers(0, 255, (500, 3)))
    cluster = rng.integers(0, 3, 500).astype(np.int32)
    image, count = render(x, y, pixels, cluster, COLORS, {"x": [0, 10], "y": [0, 10], "w": 300, "h": 300}, limit=100)
    assert image is None and count == 500
    narrow = {"x": [0, 2], "y": [0, 2], "w": 300, "h": 300}  # zoomed in: few enough
    image, count = render(x, y, pixels, cluster, COLORS, narrow, limit=100)
    inside = (x <= 2) & (y <= 2)
    assert image is not None and count == inside.sum() > 0


def test_hidden_clusters_images_off_this_map_and_images_outside_the_view_are_left_out():
    x = np.array([2.0, 5.0, np.nan, 20.0], np.float32)
    y = np.array([2.0, 5.0, 5.0, 5.0], np.float32)
    pixels = solid([(200, 0, 0), (0, 200, 0), (0, 0, 200), (9, 9, 9)])
    cluster = np.array([0, 1, 1, -1], np.int32)  # -1: outside a drill-down
    view = {"x": [0, 10], "y": [0, 10], "w": 200, "h": 200}
    image, count = render(x, y, pixels, cluster, COLORS, view, hidden=[1])
    assert count == 1
    cx, cy = screen(2.0, 2.0, view)
    assert tuple(image[cy, cx, :3]) == (200, 0, 0)
    cx, cy = screen(5.0, 5.0, view)
    assert image[cy, cx, 3] == 0  # cluster 1 is hidden


def test_a_ringed_image_lies_on_top_framed_in_the_ring_colour():
    x, y = np.array([5.0, 5.1], np.float32), np.array([5.0, 5.0], np.float32)  # overlapping
    pixels = solid([(1, 2, 3), (4, 5, 6)])
    cluster = np.array([0, 0], np.int32)
    view = {"x": [0, 10], "y": [0, 10], "w": 200, "h": 200}
    cx, cy = screen(5.0, 5.0, view)
    plain, _ = render(x, y, pixels, cluster, COLORS, view)
    assert tuple(plain[cy, cx, :3]) == (4, 5, 6)  # id order: the later on top
    ringed, _ = render(x, y, pixels, cluster, COLORS, view, ringed=[0])
    assert tuple(ringed[cy, cx, :3]) == (1, 2, 3)
    side = picture_px(200, 200, 2)
    assert tuple(ringed[cy, cx - side // 2 + FRAME // 2, :3]) == RING


def test_the_atlas_travels_as_webp_with_its_transparency():
    image = np.zeros((40, 60, 4), np.uint8)
    image[10:20, 10:20] = (255, 0, 0, 255)
    uri = to_data_uri(image)
    assert uri.startswith("data:image/webp;base64,")
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))
    assert back.shape == (40, 60, 4)
    assert back[15, 15, 3] == 255 and back[30, 50, 3] == 0
