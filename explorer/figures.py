"""Pure functions that build the map figure and the patches that change parts of it.

One WebGL trace per cluster, its points sent as typed arrays (plotly encodes numpy
arrays as base64), with `customdata` = image_id. Plotly's own hover box is off: the
app shows a dcc.Tooltip with the thumbnail instead.
"""

from __future__ import annotations

import html

import colorcet
import numpy as np
import plotly.graph_objects as go
from dash import Patch

from .data import Clustering

HIGHLIGHT = "#111111"
SCORE_COLORS = "Plasma"  # the teach loop's overlay: dark at even odds, bright where sure
LEGEND_CHARS = 32  # longer cluster labels are cut in the legend (the panel shows them whole)
ANCHORED_MAX = 20_000  # points drawn up to which plotly keeps the map's aspect (make_map_figure)


def cluster_colors(k: int) -> list[str]:
    """k colours to tell apart on the white map: colorcet's glasbey_category10, 256 categorical
    colours (matplotlib's ten first, then each next one the farthest in perceived distance from
    all before it). Past 256 clusters the colours repeat."""
    return [PALETTE[c % len(PALETTE)] for c in range(k)]


PALETTE = colorcet.palette["glasbey_category10"]


def cluster_label(cluster: int, names: dict[int, str]) -> str:
    """The text for a cluster: 'name (3)' or 'cluster 3'."""
    name = names.get(cluster)
    return f"{name} ({cluster})" if name else f"cluster {cluster}"


def legend_label(cluster: int, names: dict[int, str], size: int) -> str:
    """A legend entry, cut to LEGEND_CHARS. Plotly reads a few HTML tags in labels, so
    the text is escaped and `<b>` in a name shows as typed."""
    label = cluster_label(cluster, names)
    if len(label) > LEGEND_CHARS:
        label = label[: LEGEND_CHARS - 1] + "…"
    return html.escape(f"{label} · {size:,}", quote=False)  # plotly shows &quot; as typed


def marker_size(n: int) -> float:
    """Smaller dots for bigger maps: 7 px at a few hundred points, 2 px at a million."""
    return float(np.clip(10.5 - 1.4 * np.log10(max(n, 1)), 2.0, 7.0))


def drawn_members(clustering: Clustering, cluster: int, drawn: np.ndarray | None) -> np.ndarray:
    """The image ids trace `cluster` of the map holds: the cluster's members (nearest its
    centre first) that the map draws (`drawn`, explorer.density.drawn_mask; None: all)."""
    members = clustering.members(cluster)
    return members if drawn is None else members[drawn[members]]


def make_map_figure(
    x: np.ndarray, y: np.ndarray, clustering: Clustering, names: dict[int, str], drawn: np.ndarray | None = None
) -> go.Figure:
    """The map: trace c (0..k-1) holds cluster c (its images that `drawn` keeps, all with
    None); trace k holds the highlighted points, trace k + 1 the teach loop's scores
    (overlay_patch). A large map (`drawn` given) has k more: trace k + 2 + c holds cluster c's
    points of the view beyond `drawn`, with their image ids as customdata
    (explorer.density.detail); one colour a trace, since plotly parses per-point colours again
    on every draw. The legend counts every member."""
    colors = cluster_colors(clustering.k)
    drawn_points = len(x) if drawn is None else int(drawn.sum())
    size = marker_size(drawn_points)
    traces = []
    for c in range(clustering.k):
        ids = drawn_members(clustering, c, drawn)
        traces.append(
            go.Scattergl(
                x=x[ids],
                y=y[ids],
                customdata=ids.astype(np.int32),
                mode="markers",
                name=legend_label(c, names, int(clustering.sizes[c])),
                meta="cluster",
                marker=dict(color=colors[c], size=size, line=dict(width=0)),
                hoverinfo="none",
                hovertemplate=None,
            )
        )
    traces.append(
        go.Scattergl(
            x=np.zeros(0, np.float32),
            y=np.zeros(0, np.float32),
            customdata=np.zeros(0, np.int32),
            mode="markers",
            name="highlight",
            meta="highlight",
            showlegend=False,
            hoverinfo="skip",
            marker=dict(size=max(9.0, 2 * size), color="rgba(0,0,0,0)", line=dict(width=2, color=HIGHLIGHT)),
        )
    )
    traces.append(
        go.Scattergl(
            x=np.zeros(0, np.float32),
            y=np.zeros(0, np.float32),
            mode="markers",
            name="scores",
            meta="scores",
            showlegend=False,
            hoverinfo="skip",
            marker=dict(
                size=size + 1,
                color=np.zeros(0, np.float32),
                colorscale=SCORE_COLORS,
                cmin=0.5,
                cmax=1.0,
                showscale=False,
                line=dict(width=0),
                colorbar=dict(
                    title=dict(text="score", side="right"),
                    thickness=10,
                    len=0.4,
                    x=0.0,
                    xanchor="left",
                    y=0.0,
                    yanchor="bottom",
                ),
            ),
        )
    )
    for c in range(clustering.k if drawn is not None else 0):
        traces.append(  # a large map's view: its own points beyond the sample (assets/map.js fills them)
            go.Scattergl(
                x=np.zeros(0, np.float32),
                y=np.zeros(0, np.float32),
                mode="markers",
                name=f"view {c}",
                meta="detail",
                showlegend=False,
                hoverinfo="none",
                hovertemplate=None,
                marker=dict(color=colors[c], size=size, line=dict(width=0)),
            )
        )
    fig = go.Figure(traces)
    fig.update_layout(
        template="none",
        margin=dict(l=0, r=0, t=30, b=0),
        paper_bgcolor="white",  # t: the modebar, above the legend
        plot_bgcolor="white",
        dragmode="lasso",
        hovermode="closest",
        uirevision="map",
        # one unit as long across as up: plotly keeps it so on a small map; on a larger one,
        # where scaleanchor would compute every trace again on each pan, assets/map.js does
        xaxis=dict(visible=False),
        yaxis=dict(visible=False, **(dict(scaleanchor="x", scaleratio=1) if drawn_points <= ANCHORED_MAX else {})),
        # beside the map, not over it, where it hid a cluster's points from hover and clicks;
        # plotly scrolls it when it is taller than the map
        legend=dict(
            x=1.0,
            xanchor="left",
            y=1.0,
            yanchor="top",
            bgcolor="rgba(255,255,255,0.85)",
            itemsizing="constant",
            font=dict(size=12),
        ),
    )
    return fig


def empty_map_figure() -> go.Figure:
    """The map before its points come: none, but one WebGL trace, so that the browser makes the
    map's WebGL contexts while the server builds the figure rather than after it comes."""
    fig = go.Figure(go.Scattergl(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False))
    fig.update_layout(
        template="none",
        margin=dict(l=0, r=0, t=30, b=0),
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
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


def overlay_patch(clustering: Clustering, x: np.ndarray, y: np.ndarray, ids, scores) -> Patch:
    """A Patch that draws the teach loop's scores of the given images on the map, coloured by
    score (no ids: takes the overlay off); images with no place on this map are left out."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    placed = np.isfinite(x[ids]) & np.isfinite(y[ids])
    ids, scores = ids[placed][::-1], scores[placed][::-1]  # the best drawn last, on top
    patch = Patch()
    trace = patch["data"][clustering.k + 1]
    trace["x"], trace["y"] = (v[ids].astype(np.float64).round(4).tolist() for v in (x, y))  # short JSON
    trace["marker"]["color"] = scores.astype(np.float64).round(3).tolist()
    trace["marker"]["showscale"] = bool(len(ids))
    return patch


def point_ids(clustering: Clustering, curve: int, points, drawn: np.ndarray | None = None) -> np.ndarray:
    """image ids of points of one trace of make_map_figure(..., drawn), by their point numbers.

    Plotly's WebGL events carry curve and point numbers, and customdata only where it is a
    plain array, as on the view's traces (curves from k + 2, which event_image_id reads). The
    highlight trace (curve k) and unknown curves give no ids.
    """
    if not 0 <= int(curve) < clustering.k:
        return np.zeros(0, np.int64)
    members = drawn_members(clustering, int(curve), drawn)
    points = np.asarray(points, dtype=np.int64)
    return members[points[(points >= 0) & (points < len(members))]].astype(np.int64)
