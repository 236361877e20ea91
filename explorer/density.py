"""The map of a large run: a sample of its points drawn as points, over a density image of all
of them, coloured by cluster, that the server renders for each view with datashader.

Up to LOD_MIN images the map draws every point, as it always did. Above, it draws a fixed
sample of SAMPLE images (the images with the lowest keys, ice/tiles.py: the same on every view,
so points do not flicker as the view moves), and assets/map.js lays the view's density image
under them. Where the run has tiles, each view also gets up to DETAIL more of its own points,
the next keys up, from them (`detail`): all of the view's points once it is narrow enough.
Selections are resolved against every image (explorer/region.py), not only the drawn ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import base64

import numpy as np

from ice import tiles as map_tiles

from .atlas import rgb as atlas_rgb

LOD_MIN = 200_000  # images up to which the map draws every point
SAMPLE = 50_000  # images drawn as points above it
DETAIL = 20_000  # points of its own that a view of such a map gets at most
ZOOMED = 0.5  # views at most this part of the map across get them
COLUMNS = 65536  # points_frame orders the points by which of this many columns of x they lie in
MAX_SIDE = 2400  # the density image's longest side (a larger map gets it stretched)


@lru_cache(maxsize=4)
def _sample(n: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """The SAMPLE lowest keys of a map of n (ice/tiles.py): which images they are, and the key
    below which they lie. Both come from one pass over n keys (a second or so at 10M)."""
    k = map_tiles.keys(np.arange(n), seed)
    below = float(np.partition(k, SAMPLE)[SAMPLE]) if SAMPLE < n else map_tiles.LEAF_T
    mask = k < below
    mask.setflags(write=False)
    return mask, below


def drawn_mask(n: int, seed: int = 0) -> np.ndarray | None:
    """(n,) bool: the images a map of n draws as points; None when it draws them all."""
    return None if n <= LOD_MIN else _sample(n, seed)[0]


def sample_key(n: int) -> float:
    """The key below which drawn_mask(n) draws an image."""
    return _sample(n)[1]


def zoomed(tiles, view: dict) -> bool:
    """Whether a view is narrow enough to get points of its own: at most half the map across.
    Wider, the sample over the density image is the map, and the first view stays light."""
    span = max(abs(view["x"][1] - view["x"][0]), abs(view["y"][1] - view["y"][0]))
    return span <= ZOOMED * tiles.side


def detail(tiles, view: dict, n: int, cluster: np.ndarray, k: int, keep: np.ndarray | None) -> dict:
    """The view's own points beyond the drawn sample, from the run's tiles, as map.js draws
    them: positions and image ids as little-endian base64 arrays, cluster 0's first, then
    cluster 1's, and so on, with `counts` per cluster (k); `all` when they are every image of
    the view. `keep`: (n,) bool, the images of clusters not hidden."""
    ids, complete = tiles.view(view, DETAIL, above=sample_key(n), keep=keep)
    c = cluster[ids]
    order = np.argsort(c, kind="stable")
    order = order[(c[order] >= 0) & (c[order] < k)]  # grouped by cluster; none outside the k
    ids, c = ids[order], c[order]

    def b64(a, dtype):
        return base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode("ascii")

    return {
        "n": len(ids),
        "x": b64(tiles.x[ids], "<f4"),
        "y": b64(tiles.y[ids], "<f4"),
        "id": b64(ids, "<i4"),
        "counts": np.bincount(c, minlength=k).tolist(),
        "all": complete,
    }


@dataclass
class PointsFrame:
    """points_frame's DataFrame, and which column of x (lo + code / scale) each row lies in,
    ascending. Not in the DataFrame's attrs: pandas deep-copies those on every operation."""

    df: object
    lo: float
    scale: float
    code: np.ndarray

    def view_rows(self, x0: float, x1: float):
        """The rows in the columns of x from x0 to x1: a slice of df."""
        first, last = (int(np.clip((v - self.lo) * self.scale, 0, COLUMNS - 1)) for v in (x0, x1))
        return self.df.iloc[np.searchsorted(self.code, first, "left") : np.searchsorted(self.code, last, "right")]


def points_frame(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, colors: list[str], hidden=()) -> PointsFrame:
    """The images a density image counts, as datashader reads them: a DataFrame of x, y and
    their cluster's colour r, g, b. Images with no place on this map (NaN), outside a
    drill-down (cluster -1) or in hidden clusters are left out. Built once per map and legend,
    since at 10M images building it costs more than rendering a view from it."""
    import pandas as pd

    keep = (cluster >= 0) & np.isfinite(x) & np.isfinite(y)
    if len(hidden):
        keep &= ~np.isin(cluster, np.asarray(hidden, dtype=cluster.dtype))
    rgb = np.array([atlas_rgb(c) for c in colors], np.float32)
    kept = None if keep.all() else np.flatnonzero(keep)
    xs = x if kept is None else x[kept]
    # ordered by a column code of x (a radix sort, fast), so that a view renders its own slice
    lo, hi = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    scale = (COLUMNS - 1) / max(hi - lo, 1e-12)
    code = ((xs - lo) * scale).astype(np.uint16)
    order = np.argsort(code, kind="stable")
    ids, code = (order if kept is None else kept[order]), code[order]
    c = cluster[ids] % len(rgb)
    columns = {"x": x[ids], "y": y[ids], **{band: rgb[:, i].copy()[c] for i, band in enumerate("rgb")}}
    frame = pd.DataFrame(columns, copy=False)  # not copied into one block: a second of 10M rows
    return PointsFrame(frame, lo, scale, code)


def render(frame: PointsFrame, view: dict) -> np.ndarray:
    """An RGBA image (h, w, 4) uint8 of the view of `frame` (points_frame): each pixel holds
    the mean colour of the clusters of the images in it, weighted by their counts, and is more
    opaque the more images it holds (on a log scale, the fullest pixel opaque); empty pixels
    are transparent."""
    import datashader as ds

    w, h = max(int(view["w"]), 1), max(int(view["h"]), 1)
    scale = min(1.0, MAX_SIDE / max(w, h))
    w, h = max(round(w * scale), 1), max(round(h * scale), 1)
    (x0, x1), (y0, y1) = sorted(view["x"]), sorted(view["y"])
    rows = frame.view_rows(x0, x1)  # datashader would read every row
    canvas = ds.Canvas(plot_width=w, plot_height=h, x_range=(x0, x1), y_range=(y0, y1))
    agg = canvas.points(rows, "x", "y", agg=ds.summary(n=ds.count(), r=ds.sum("r"), g=ds.sum("g"), b=ds.sum("b")))
    n = agg["n"].values[::-1].astype(np.float32)  # datashader's rows run up the map; an image's down
    image = np.zeros((h, w, 4), np.uint8)
    full = n > 0
    if full.any():
        for i, band in enumerate("rgb"):
            image[..., i][full] = np.clip(agg[band].values[::-1][full] / n[full], 0, 255).astype(np.uint8)
        image[..., 3][full] = (96 + 159 * np.log1p(n[full]) / np.log1p(n.max())).astype(np.uint8)
    return image


def warm_up(n: int) -> None:
    """Render a tiny view in a thread: datashader compiles its loops (numba) on its first call
    in a process, a second or more that the first view would wait for. Also find the sample of
    a map of n, which the first view of the map and of a zoomed view need."""

    def run():
        _sample(n)
        x = np.random.default_rng(0).normal(size=100).astype(np.float32)
        render(points_frame(x, x, np.zeros(100, np.int32), ["#000000"]), {"x": [-3, 3], "y": [-3, 3], "w": 8, "h": 8})

    threading.Thread(target=run, name="ice-datashader-warm-up", daemon=True).start()
