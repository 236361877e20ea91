"""A large run's map: the sample it draws as points and the density image of every image."""

import numpy as np

from explorer import density
from explorer.figures import make_map_figure, point_ids


def test_up_to_lod_min_every_point_is_drawn_above_a_fixed_sample():
    assert density.drawn_mask(density.LOD_MIN) is None
    mask = density.drawn_mask(density.LOD_MIN + 1)
    assert mask.sum() == density.SAMPLE and np.array_equal(mask, density.drawn_mask(density.LOD_MIN + 1, 0))
    assert not np.array_equal(mask, density.drawn_mask(density.LOD_MIN + 1, 1))


def test_the_density_image_colours_each_place_by_its_clusters_and_counts():
    # cluster 0 (red) in the top-left quarter, cluster 1 (blue) in the bottom-right, both in the middle
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 4, 5000), rng.uniform(6, 10, 5000), np.full(200, 5.0)]).astype(np.float32)
    y = np.concatenate([rng.uniform(6, 10, 5000), rng.uniform(0, 4, 5000), np.full(200, 5.0)]).astype(np.float32)
    cluster = np.concatenate([np.zeros(5000), np.ones(5000), np.arange(200) % 2]).astype(np.int32)
    colors = ["#ff0000", "#0000ff"]
    view = {"x": [0, 10], "y": [0, 10], "w": 100, "h": 100}
    image = density.render(density.points_frame(x, y, cluster, colors), view)
    assert image.shape == (100, 100, 4)
    assert tuple(image[20, 20, :3]) == (255, 0, 0) and tuple(image[80, 80, :3]) == (0, 0, 255)  # rows run down
    assert image[20, 80, 3] == 0 and image[80, 20, 3] == 0  # nothing there: transparent
    middle = image[49:52, 49:52].reshape(-1, 4)
    assert middle[:, 3].max() == 255  # the fullest pixel
    r, b = middle[middle[:, 3] == 255][0, [0, 2]]
    assert abs(int(r) - int(b)) <= 2 and 120 <= r <= 135  # half red, half blue
    hidden = density.render(density.points_frame(x, y, cluster, colors, hidden=[0]), view)
    assert hidden[20, 20, 3] == 0 and tuple(hidden[80, 80, :3]) == (0, 0, 255)
    off_map = density.points_frame(np.array([np.nan, 1], np.float32), np.ones(2, np.float32), np.array([0, -1]), colors)
    assert len(off_map.df) == 0


def test_a_large_maps_traces_hold_the_sample_and_their_point_numbers_name_it(monkeypatch):
    from explorer.data import Clustering

    n = 5000
    monkeypatch.setattr(density, "LOD_MIN", 1000)
    monkeypatch.setattr(density, "SAMPLE", 700)
    density._sample.cache_clear()
    try:
        drawn = density.drawn_mask(n)
        rng = np.random.default_rng(0)
        c = Clustering("run", 4, rng.integers(0, 4, n).astype(np.int32), rng.random(n).astype(np.float32))
        x, y = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
        fig = make_map_figure(x, y, c, {}, drawn)
        held = [np.asarray(t.customdata) for t in fig.data[:4]]
        assert sum(len(h) for h in held) == 700 and drawn[np.concatenate(held)].all()
        assert [t.name.endswith(f"· {c.sizes[i]:,}") for i, t in enumerate(fig.data[:4])] == [True] * 4
        for curve in range(4):
            assert np.array_equal(point_ids(c, curve, np.arange(len(held[curve])), drawn), held[curve])
    finally:
        density._sample.cache_clear()


def test_a_view_gets_its_own_points_beyond_the_sample_from_the_tiles(tmp_path, monkeypatch):
    import base64

    from ice import tiles as map_tiles

    n = 20_000
    monkeypatch.setattr(density, "SAMPLE", 2_000)
    monkeypatch.setattr(density, "DETAIL", 1_500)
    monkeypatch.setattr(density, "LOD_MIN", 1_000)
    density._sample.cache_clear()
    try:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
        cluster = (x > 0).astype(np.int32) + 2 * (y > 0)
        map_tiles.write(tmp_path, x, y, cap=400)
        tiles = map_tiles.Tiles.load(tmp_path, x, y)
        drawn = density.drawn_mask(n, 0)

        def ids_of(answer):
            return np.frombuffer(base64.b64decode(answer["id"]), "<i4")

        narrow = {"x": [0.1, 0.3], "y": [0.1, 0.3]}
        answer = density.detail(tiles, narrow, n, cluster, 4, None)
        inside = np.flatnonzero((x >= 0.1) & (x <= 0.3) & (y >= 0.1) & (y <= 0.3))
        # all of the view's images: the sample's drawn already, the rest here
        assert answer["all"] and sorted(ids_of(answer)) == sorted(inside[~drawn[inside]])
        # grouped by cluster, cluster 0's first, with the count of each
        assert answer["counts"] == np.bincount(cluster[ids_of(answer)], minlength=4).tolist()
        assert (np.diff(cluster[ids_of(answer)]) >= 0).all()
        assert np.allclose(np.frombuffer(base64.b64decode(answer["x"]), "<f4"), x[ids_of(answer)])
        wide = density.detail(tiles, {"x": [-1, 1], "y": [-1, 1]}, n, cluster, 4, cluster != 3)
        got = ids_of(wide)
        assert not wide["all"] and len(got) == 1_500 and not drawn[got].any() and (cluster[got] != 3).all()
        assert wide["counts"][3] == 0 and sum(wide["counts"]) == 1_500
    finally:
        density._sample.cache_clear()
