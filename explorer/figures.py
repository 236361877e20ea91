"""Pure functions that build the map figure and the patches that change parts of it.

One WebGL trace per cluster, its points sent as typed arrays (plotly encodes numpy
arrays as base64), with `customdata` = image_id. Plotly's own hover box is off: the
app shows a dcc.Tooltip with the thumbnail instead.
"""

from __future__ import annotations

import colorsys
import html

import numpy as np
import plotly.graph_objects as go
from dash import Patch

from .data import Clustering

# Tableau 20, reordered so that neighbouring clusters differ most.
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#8cd17d", "#ff9d9a",
           "#86bcb6", "#f1ce63", "#d4a6c8", "#fabfd2", "#d7b5a6", "#79706e"]
HIGHLIGHT = "#111111"
LEGEND_CHARS = 32  # longer cluster labels are cut in the legend (the panel shows them whole)


def cluster_colors(k: int) -> list[str]:
    """k distinct colours: the palette, then hues spaced by the golden angle."""
    colors = PALETTE[:k]
    for i in range(len(colors), k):
        r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.5, 0.55)
        colors.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return colors


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
