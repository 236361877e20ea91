"""A lasso or box drawn on the map, resolved on the server against every image of the map.

The browser sends the outline it drew, not the points plotly found inside it: the map may draw
pictures or fewer points than it holds, and an outline is a few hundred numbers where 100k
point numbers were megabytes. An image is inside by the even-odd rule, as plotly tests it.
"""

from __future__ import annotations

import numpy as np

from ice.errors import IceError

MAX_VERTICES = 20_000  # a lasso's outline points; plotly's run to a few hundred


def _kernel():
    global _inside
    if _inside is None:
        import numba

        from embeddings._kernels import compiled

        @compiled(parallel=True, boundscheck=False)
        def inside(px, py, vx, vy, out):  # pragma: no cover (compiled)
            m = len(vx)
            for i in numba.prange(len(px)):
                x, y, crossed, j = px[i], py[i], False, m - 1
                for k in range(m):
                    if (vy[k] > y) != (vy[j] > y) and x < (vx[j] - vx[k]) * (y - vy[k]) / (vy[j] - vy[k]) + vx[k]:
                        crossed = not crossed
                    j = k
                out[i] = crossed

        _inside = inside
    return _inside


_inside = None


def outline(region: dict) -> tuple[np.ndarray, np.ndarray]:
    """The polygon (xs, ys) of {"lasso": {"x": [...], "y": [...]}} or {"box": {"x": [x0, x1],
    "y": [y0, y1]}}; IceError for anything else."""
    try:
        if "lasso" in region:
            vx = np.asarray(region["lasso"]["x"], np.float64)
            vy = np.asarray(region["lasso"]["y"], np.float64)
        else:
            (x0, x1), (y0, y1) = region["box"]["x"], region["box"]["y"]
            vx, vy = np.array([x0, x1, x1, x0], np.float64), np.array([y0, y0, y1, y1], np.float64)
    except (KeyError, TypeError, ValueError):
        raise IceError("a map selection is a lasso's or a box's outline") from None
    if vx.shape != vy.shape or vx.ndim != 1 or not 3 <= len(vx) <= MAX_VERTICES or not np.isfinite(vx + vy).all():
        raise IceError(f"a map selection's outline has 3 to {MAX_VERTICES:,} finite points")
    return vx, vy


def ids_in_region(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, region: dict, hidden=()) -> np.ndarray:
    """ids of the images inside the region's outline, in clusters not hidden (those with no
    place on this map, NaN, or outside a drill-down, cluster -1, are never inside), ascending."""
    vx, vy = outline(region)
    candidates = (x >= vx.min()) & (x <= vx.max()) & (y >= vy.min()) & (y <= vy.max()) & (cluster >= 0)
    if len(hidden):
        candidates &= ~np.isin(cluster, np.asarray(hidden, dtype=cluster.dtype))
    ids = np.flatnonzero(candidates)
    out = np.zeros(len(ids), np.bool_)
    _kernel()(x[ids].astype(np.float64), y[ids].astype(np.float64), vx, vy, out)
    return ids[out]
