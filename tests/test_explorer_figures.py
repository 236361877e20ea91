"""The map figure: one WebGL trace per cluster, compact arrays, escaped labels."""

import numpy as np
import plotly.io as pio
import pytest

from explorer.data import Clustering
from explorer.figures import (cluster_colors, highlight_patch, legend_label, make_map_figure,
                              marker_size, point_ids)


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
    assert fig.data[-1].meta == "highlight" and fig.data[-1].showlegend is False
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


def test_colours_are_told_apart():
    """No two colours closer than these CIELAB distances (Tableau 20 had pairs at 5)."""
    from plotly.colors import hex_to_rgb

    from explorer.figures import _lab

    for k, apart in ((3, 40), (10, 15), (26, 15), (60, 10)):
        colors = cluster_colors(k)
        lab = _lab(np.array([hex_to_rgb(c) for c in colors], dtype=float))
        d = np.linalg.norm(lab[:, None] - lab[None], axis=2) + np.eye(k) * 1e9
        assert len(set(colors)) == k and d.min() > apart, (k, d.min())
    assert cluster_colors(10)[:3] == ["#4e79a7", "#f28e2b", "#59a14f"]


def test_marker_size_shrinks_with_more_points():
    assert marker_size(300) > marker_size(100_000) >= marker_size(1_000_000) >= 2
