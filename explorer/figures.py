"""Pure functions that build the map figure and the patches that change parts of it.

One WebGL trace per cluster, its points sent as typed arrays (plotly encodes numpy
arrays as base64), with `customdata` = image_id. Plotly's own hover box is off: the
app shows a dcc.Tooltip with the thumbnail instead.
"""

from __future__ import annotations

import functools
import html

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb
from dash import Patch

from .data import Clustering

# Tableau 10; then colours picked one by one, each the farthest from all before it (cluster_colors).
# Tableau 20's second ten are lighter twins of the first (#76b7b2 and #86bcb6): a 26-cluster
# map had neighbours one could not tell apart.
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]
HIGHLIGHT = "#111111"
LEGEND_CHARS = 32  # longer cluster labels are cut in the legend (the panel shows them whole)


def cluster_colors(k: int) -> list[str]:
    """k colours to tell apart on the white map: the palette, then each next colour the one
    of an sRGB grid (neither near white nor near black) farthest in CIELAB from all chosen."""
    return list(_colors(k))


@functools.lru_cache(maxsize=32)
def _colors(k: int) -> tuple[str, ...]:
    chosen = PALETTE[:k]
    if k <= len(chosen):
        return tuple(chosen)
    levels = np.linspace(0, 255, 13)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = _lab(grid)
    seen = (lab[:, 0] > 30) & (lab[:, 0] < 85)  # lightness: neither lost on white nor near black
    grid, lab = grid[seen], lab[seen]
    taken = _lab(np.array([hex_to_rgb(c) for c in chosen], dtype=float))
    nearest = np.min(np.linalg.norm(lab[:, None] - taken[None], axis=2), axis=1)
    for _ in range(k - len(chosen)):
        best = int(np.argmax(nearest))
        chosen.append("#" + "".join(f"{int(round(v)):02x}" for v in grid[best]))
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[best], axis=1))
    return tuple(chosen)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB in 0..255 -> (n, 3) CIELAB (D65), where distance is close to perceived."""
    c = rgb / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def cluster_label(cluster: int, names: dict[int, str]) -> str:
    """The text for a cluster: 'name (3)' or 'cluster 3'."""
    name = names.get(cluster)
    return f"{name} ({cluster})" if name else f"cluster {cluster}"


def legend_label(cluster: int, names: dict[int, str], size: int) -> str:
    """A legend entry, cut to LEGEND_CHARS. Plotly reads a few HTML tags in labels, so
    the text is escaped and `<b>` in a name shows as typed."""
    label = cluster_label(cluster, names)
    if len(label) > LEGEND_CHARS:
        label = label[:LEGEND_CHARS - 1] + "…"
    return html.escape(f"{label} · {size:,}", quote=False)  # plotly shows &quot; as typed


def marker_size(n: int) -> float:
    """Smaller dots for bigger maps: 7 px at a few hundred points, 2 px at a million."""
    return float(np.clip(10.5 - 1.4 * np.log10(max(n, 1)), 2.0, 7.0))


def make_map_figure(x: np.ndarray, y: np.ndarray, clustering: Clustering,
                    names: dict[int, str]) -> go.Figure:
    """The map: trace c (0..k-1) holds cluster c; trace k holds the highlighted points."""
    colors = cluster_colors(clustering.k)
    size = marker_size(len(x))
    traces = []
    for c in range(clustering.k):
        ids = clustering.members(c)
        traces.append(go.Scattergl(
            x=x[ids], y=y[ids], customdata=ids.astype(np.int32), mode="markers",
            name=legend_label(c, names, len(ids)), meta="cluster",
            marker=dict(color=colors[c], size=size, line=dict(width=0)),
            hoverinfo="none", hovertemplate=None))
    traces.append(go.Scattergl(
        x=np.zeros(0, np.float32), y=np.zeros(0, np.float32), customdata=np.zeros(0, np.int32),
        mode="markers", name="highlight", meta="highlight", showlegend=False, hoverinfo="skip",
        marker=dict(size=max(9.0, 2 * size), color="rgba(0,0,0,0)",
                    line=dict(width=2, color=HIGHLIGHT))))
    fig = go.Figure(traces)
    fig.update_layout(
        template="none", margin=dict(l=0, r=0, t=30, b=0), paper_bgcolor="white",  # t: the modebar, above the legend
        plot_bgcolor="white", dragmode="lasso", hovermode="closest", uirevision="map",
        # one unit is as long across as up, whatever the window's shape: a map's distances
        xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x", scaleratio=1),
        # beside the map, not over it, where it hid a cluster's points from hover and clicks;
        # plotly scrolls it when it is taller than the map
        legend=dict(x=1.0, xanchor="left", y=1.0, yanchor="top", bgcolor="rgba(255,255,255,0.85)",
                    itemsizing="constant", font=dict(size=12)),
    )
    return fig


def highlight_patch(clustering: Clustering, x: np.ndarray, y: np.ndarray, ids) -> Patch:
    """A Patch that rings the given images on the map (and only touches that trace)."""
    ids = np.asarray(ids, dtype=np.int64)
    patch = Patch()
    trace = patch["data"][clustering.k]
    trace["x"], trace["y"] = x[ids].tolist(), y[ids].tolist()
    trace["customdata"] = ids.tolist()
    return patch


def point_ids(clustering: Clustering, curve: int, points) -> np.ndarray:
    """image ids of points of one trace of make_map_figure, by their point numbers.

    Plotly's WebGL events carry curve and point numbers but not customdata. The
    highlight trace (curve k) and unknown curves give no ids.
    """
    if not 0 <= int(curve) < clustering.k:
        return np.zeros(0, np.int64)
    members = clustering.members(int(curve))
    points = np.asarray(points, dtype=np.int64)
    return members[points[(points >= 0) & (points < len(members))]].astype(np.int64)
