"""The image atlas: the pictures themselves drawn on the map where the view holds few enough.

The server draws the thumbnails of the images in the view at their map positions into one
image of the map's size, and the browser lays it over the points (assets/map.js), under the
legend and the lasso. Hover, click and selection still go to the points beneath it.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

ATLAS_MAX = 3000  # pictures drawn at most: a view that holds more shows the points
MIN_PX, MAX_PX = 16, 96  # a picture's side on the screen, in pixels
FRAME = 2  # pixels of the cluster's colour around each picture
RING = (17, 17, 17)  # the frame of a ringed image: the map's ring colour (figures.HIGHLIGHT)
MAX_SIDE = 2400  # the drawn image's longest side (a larger map gets it stretched)


def in_view(x: np.ndarray, y: np.ndarray, view: dict, cluster: np.ndarray, hidden=()) -> np.ndarray:
    """ids of the images inside the view's ranges, in clusters that are not hidden (images
    with no place on this map, NaN, are never inside)."""
    (x0, x1), (y0, y1) = sorted(view["x"]), sorted(view["y"])
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (cluster >= 0)
    if len(hidden):
        inside &= ~np.isin(cluster, np.asarray(hidden, dtype=cluster.dtype))
    return np.flatnonzero(inside)


def picture_px(width: int, height: int, count: int) -> int:
    """The side of each picture: about the room each has in the view, within MIN_PX..MAX_PX."""
    return int(np.clip(0.9 * np.sqrt(width * height / max(count, 1)), MIN_PX, MAX_PX))


def rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def render(
    x: np.ndarray,
    y: np.ndarray,
    pixels: np.ndarray,
    cluster: np.ndarray,
    colors: list[str],
    view: dict,
    hidden=(),
    ringed=(),
    limit: int = ATLAS_MAX,
) -> tuple[np.ndarray | None, int]:
    """(an RGBA image of the view, (h, w, 4) uint8, or None when more than `limit` images are in
    it; how many are). `view` holds the map's ranges, `x` and `y` ([lo, hi]), and its size in
    screen pixels, `w` and `h`. Each picture is centred on its point, framed in its cluster's
    colour; the rest is transparent. Images are drawn in id order, so a later one lies on top,
    and the `ringed` ones (the map's neighbour rings) last, framed in RING."""
    ids = in_view(x, y, view, cluster, hidden)
    if len(ids) > limit:
        return None, len(ids)
    w, h = max(int(view["w"]), 1), max(int(view["h"]), 1)
    scale = min(1.0, MAX_SIDE / max(w, h))
    w, h = max(round(w * scale), 1), max(round(h * scale), 1)
    side = max(round(picture_px(view["w"], view["h"], len(ids)) * scale), 4)
    pad = side + 2 * FRAME  # a picture at the edge is drawn on a margin, then cut off with it
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 4), np.uint8)
    ring = np.isin(ids, np.asarray(ringed, dtype=np.int64))
    ids, ring = np.concatenate([ids[~ring], ids[ring]]), np.sort(ring)  # the ringed last, on top
    (x0, x1), (y0, y1) = sorted(view["x"]), sorted(view["y"])
    px = ((x[ids] - x0) / max(x1 - x0, 1e-12) * w).astype(np.float64)
    py = ((y1 - y[ids]) / max(y1 - y0, 1e-12) * h).astype(np.float64)  # screen rows run down
    inner = side - 2 * FRAME
    colours = [rgb(c) for c in colors]
    for i, image_id in enumerate(ids):
        left, top = pad + round(px[i]) - side // 2, pad + round(py[i]) - side // 2
        tile = canvas[top : top + side, left : left + side]
        tile[..., :3] = RING if ring[i] else colours[int(cluster[image_id]) % len(colours)]
        tile[..., 3] = 255
        picture = Image.fromarray(np.ascontiguousarray(pixels[image_id]), "RGB")
        if picture.size != (inner, inner):
            resample = Image.NEAREST if inner >= picture.size[0] else Image.BILINEAR
            picture = picture.resize((inner, inner), resample)
        tile[FRAME : FRAME + inner, FRAME : FRAME + inner, :3] = np.asarray(picture)
    return canvas[pad : pad + h, pad : pad + w], len(ids)


def to_data_uri(image: np.ndarray) -> str:
    """The atlas as a WebP data URI: lossy colour with exact transparency, much smaller than a
    PNG of photos and quicker to encode."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buf, format="WEBP", quality=85, method=0)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
