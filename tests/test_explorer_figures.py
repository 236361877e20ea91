"""The map figure: one WebGL trace per cluster, compact arrays, escaped labels."""

import numpy as np
import plotly.io as pio
import pytest

from explorer.data import Clustering
from explorer.figures import cluster_colors, highlight_patch, legend_label, make_map_figure, marker_size, point_ids


@pytest.fixture
def clustering():
    rng = np.random.default_rng(0)
    cluster = rng.integers(0, 4, size=500).astype(np.int32)
    return Clustering("run", 4, cluster, rng.random(500).astype(np.float32))


@pytest.fixture
def xy():
    rng = np.random.default_rng(1)
    return rng.normal(size=500).astype(np.float32), rng.normal(size=500).astype(np.float32)


def test_one_webgl_trace_per_cluster(clustering, xy):
    fig = make_map_figure(*xy, clustering, {2: "planes"})
    clusters = [t for t in fig.data if t.meta == "cluster"]
    assert len(clusters) == 4 and all(t.type == "scattergl" for t in fig.data)
    highlight, scores = fig.data[4], fig.data[5]  # trace k, k + 1
    assert len(fig.data) == 6 and highlight.meta == "highlight" and scores.meta == "scores"
    assert highlight.showlegend is False and scores.showlegend is False and len(scores.x) == 0
    ids = np.concatenate([np.asarray(t.customdata) for t in clusters])
    assert sorted(ids.tolist()) == list(range(500))
    for c, t in enumerate(clusters):
        assert (clustering.cluster[np.asarray(t.customdata)] == c).all()
        assert np.array_equal(np.asarray(t.x), xy[0][np.asarray(t.customdata)])
    assert clusters[2].name.startswith("planes (2)")
    assert fig.layout.dragmode == "lasso"


def test_points_travel_as_typed_arrays(clustering, xy):
    text = pio.to_json(make_map_figure(*xy, clustering, {}))
    assert '"bdata"' in text
    # no per-point lists: 500 points would need far more than this as JSON numbers
    assert len(text) < 20_000


def test_legend_shows_names_as_typed():
    label = legend_label(0, {0: "<b>bold</b> & <script>"}, 1234)
    assert "<" not in label and "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in label
    assert label.endswith("· 1,234")
    assert len(legend_label(1, {1: "x" * 300}, 5)) < 60
    assert legend_label(2, {2: 'say "hi"'}, 3).startswith('say "hi"')  # plotly shows &quot; as typed


def test_point_ids_follow_the_traces(clustering, xy):
    fig = make_map_figure(*xy, clustering, {})
    for curve in range(4):
        customdata = np.asarray(fig.data[curve].customdata)
        assert point_ids(clustering, curve, [0, 2]).tolist() == customdata[[0, 2]].tolist()
    assert point_ids(clustering, 4, [0]).size == 0  # the highlight trace
    assert point_ids(clustering, 0, [10_000]).size == 0


def test_highlight_patch_only_touches_the_highlight_trace(clustering, xy):
    patch = highlight_patch(clustering, *xy, [3, 9])
    ops = patch.to_plotly_json()["operations"]
    assert {tuple(op["location"][:2]) for op in ops} == {("data", 4)}
    values = {op["location"][2]: op["params"]["value"] for op in ops}
    assert values["customdata"] == [3, 9] and values["x"] == pytest.approx(xy[0][[3, 9]].tolist())


def lab(hex_colours: list[str]) -> np.ndarray:
    """(n, 3) CIELAB (D65) of sRGB colours, where distance is close to perceived."""
    from plotly.colors import hex_to_rgb

    c = np.array([hex_to_rgb(h) for h in hex_colours], dtype=float) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def test_colours_are_told_apart():
    """No two colours closer than these CIELAB distances (Tableau 20 had pairs at 5), and 30
    or more clusters each get a colour of their own."""
    for k, apart in ((3, 40), (10, 15), (30, 15), (60, 10)):
        colors = cluster_colors(k)
        points = lab(colors)
        d = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(k) * 1e9
        assert len(set(colors)) == k and d.min() > apart, (k, d.min())
    assert cluster_colors(10)[:3] == ["#1f77b3", "#ff7e0e", "#2ba02b"]  # matplotlib's, as colorcet rounds them


def test_marker_size_shrinks_with_more_points():
    assert marker_size(300) > marker_size(100_000) >= marker_size(1_000_000) >= 2


def test_the_map_before_its_points_is_one_empty_webgl_trace():
    from explorer.figures import empty_map_figure

    fig = empty_map_figure()
    assert [t.type for t in fig.data] == ["scattergl"] and len(fig.data[0].x) == 0
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False


def test_the_overlay_draws_scores_of_placed_images_best_on_top(clustering, xy):
    from explorer.figures import overlay_patch

    x, y = xy[0].copy(), xy[1].copy()
    x[7] = np.nan  # not on this map (outside a drill-down)
    patch = overlay_patch(clustering, x, y, [3, 7, 9], [0.9, 0.8, 0.6]).to_plotly_json()
    ops = {tuple(op["location"]): op["params"]["value"] for op in patch["operations"]}
    trace = ("data", clustering.k + 1)
    assert ops[trace + ("marker", "color")] == [0.6, 0.9]  # the best drawn last, on top
    assert ops[trace + ("x",)] == [round(float(x[9]), 4), round(float(x[3]), 4)]
    assert ops[trace + ("marker", "showscale")] is True
    off = overlay_patch(clustering, x, y, [], []).to_plotly_json()
    assert {tuple(op["location"]): op["params"]["value"] for op in off["operations"]}[
        trace + ("marker", "showscale")
    ] is False


def test_a_large_map_gets_a_trace_of_the_views_points_per_cluster_in_its_colour(clustering, xy):
    drawn = np.arange(500) % 3 == 0
    fig = make_map_figure(*xy, clustering, {}, drawn)
    clusters = [t for t in fig.data if t.meta == "cluster"]
    views = fig.data[6:]  # trace k + 2 + c: cluster c's points of the view
    assert len(fig.data) == 10 and all(t.meta == "detail" and len(t.x) == 0 for t in views)
    assert [t.marker.color for t in views] == [t.marker.color for t in clusters] == cluster_colors(4)
    assert all(t.showlegend is False for t in views)
    ids = np.concatenate([np.asarray(t.customdata) for t in clusters])
    assert sorted(ids.tolist()) == np.flatnonzero(drawn).tolist()
