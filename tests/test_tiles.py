"""Map tiles (ice/tiles.py): built on a small map with a small cap, checked against a brute-force
search of the same map."""

import numpy as np
import pytest

from ice import tiles


def clustered_map(n, seed=0):
    rng = np.random.default_rng(seed)
    spots = rng.uniform(-10, 10, size=(8, 2))
    xy = (spots[rng.integers(0, 8, n)] + rng.normal(scale=0.7, size=(n, 2))).astype(np.float32)
    return xy[:, 0].copy(), xy[:, 1].copy()


def brute(x, y, view, lo, hi):
    """The images of a view with a key in [lo, hi)."""
    (x0, x1), (y0, y1) = sorted(view["x"]), sorted(view["y"])
    k = tiles.keys(np.arange(len(x)))
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (k >= lo) & (k < hi)
    return np.flatnonzero(inside)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    x, y = clustered_map(30_000)
    x[:5] = np.nan  # images with no place on the map
    run = tmp_path_factory.mktemp("tiles-run")
    tiles.write(run, x, y, cap=500)
    return run, x, y


def test_every_placed_image_lies_in_one_leaf_and_nodes_keep_their_cap(built):
    run, x, y = built
    t = tiles.Tiles.load(run, x, y)
    assert t is not None and t.depth > 3
    leaves = t.t >= tiles.LEAF_T
    held = np.concatenate([t.ids[s : s + c] for s, c in zip(t.start[leaves], t.count[leaves], strict=True)])
    assert sorted(held.tolist()) == list(range(5, len(x)))
    assert (t.count <= 500).all() and (t.count[~leaves] == 500).all()
    # a parent's sample is the lowest keys of its square: every key it holds lies under its t
    for i in np.flatnonzero(~leaves)[:20]:
        assert (tiles.keys(t.ids[t.start[i] : t.start[i] + t.count[i]]) < t.t[i]).all()


@pytest.mark.parametrize(
    "view",
    [
        {"x": [-15, 15], "y": [-15, 15]},  # the whole map
        {"x": [-3, 4], "y": [-2, 5]},
        {"x": [0.1, 0.6], "y": [0.2, 0.5]},
        {"x": [3.0, 2.0], "y": [1.0, -1.0]},  # reversed ranges
    ],
)
def test_a_view_gets_every_image_of_it_under_its_threshold(built, view):
    run, x, y = built
    t = tiles.Tiles.load(run, x, y)
    nodes = t.nodes_of(view)
    assert 0 < len(nodes) <= tiles.MAX_NODES
    threshold = min(t.t[i] for i in nodes)
    got, complete = t.view(view, budget=10**9)
    assert got.tolist() == brute(x, y, view, 0.0, threshold).tolist()
    assert complete == (threshold >= tiles.LEAF_T)
    # above: what the map draws from afar is left out
    above = tiles.sample_key(len(x), 2_000)
    got, _ = t.view(view, budget=10**9, above=above)
    assert got.tolist() == brute(x, y, view, above, threshold).tolist()


def test_a_narrow_view_gets_all_its_images_and_a_budget_keeps_the_lowest_keys(built):
    run, x, y = built
    t = tiles.Tiles.load(run, x, y)
    view = {"x": [float(x[100]) - 0.05, float(x[100]) + 0.05], "y": [float(y[100]) - 0.05, float(y[100]) + 0.05]}
    got, complete = t.view(view, budget=10**9)
    assert complete and got.tolist() == brute(x, y, view, 0.0, 2.0).tolist() and 100 in got
    wide = {"x": [-15, 15], "y": [-15, 15]}
    got, complete = t.view(wide, budget=300)
    everything, _ = t.view(wide, budget=10**9)
    assert len(got) == 300 and not complete
    k = tiles.keys(everything)
    assert got.tolist() == np.sort(everything[np.argsort(k)[:300]]).tolist()
    keep = np.zeros(len(x), np.bool_)
    keep[::2] = True
    got, _ = t.view(wide, budget=10**9, keep=keep)
    assert got.tolist() == everything[keep[everything]].tolist()


def test_tiles_of_another_map_or_broken_ones_are_not_used(built, tmp_path):
    run, x, y = built
    assert tiles.Tiles.load(tmp_path, x, y) is None  # a run written before tiles
    moved = x.copy()
    moved[::100] += 1
    assert tiles.Tiles.load(run, moved, y) is None
    (tmp_path / tiles.TILES).write_text((run / tiles.TILES).read_text())
    (tmp_path / tiles.TILE_IDS).write_bytes(b"not a numpy file")
    assert tiles.Tiles.load(tmp_path, x, y) is None


def test_images_added_after_the_tiles_are_found_too(built):
    run, x, y = built
    rng = np.random.default_rng(1)
    x2 = np.r_[x, rng.uniform(-1, 1, 200).astype(np.float32)]
    y2 = np.r_[y, rng.uniform(-1, 1, 200).astype(np.float32)]
    t = tiles.Tiles.load(run, x2, y2)
    assert t is not None and t.n == len(x)
    view = {"x": [-1.0, 1.0], "y": [-1.0, 1.0]}
    threshold = min(t.t[i] for i in t.nodes_of(view))
    got, _ = t.view(view, budget=10**9)
    assert got.tolist() == brute(x2, y2, view, 0.0, threshold).tolist()
    assert (got >= len(x)).any()


def test_keys_are_uniform_and_fixed_per_image():
    k = tiles.keys(np.arange(100_000))
    assert 0 <= k.min() and k.max() < 1 and abs(k.mean() - 0.5) < 0.01
    assert (tiles.keys(np.arange(50, 60)) == k[50:60]).all()
    assert (k < tiles.sample_key(100_000, 1_000)).sum() == 1_000


def test_a_run_made_before_tiles_opens_without_them_until_ice_tiles_builds_them(tmp_path, capsys):
    from benchmarks.load import make_synthetic_run
    from explorer.data import load_run
    from ice.cli import main

    run = make_synthetic_run(tmp_path / "run", 3000, clusters=5, image_size=8, tiles=False)
    assert load_run(run).tiles is None  # the explorer draws its sample over the density image
    assert main(["tiles", str(run)]) == 0
    assert "wrote the tiles of 3,000 images" in capsys.readouterr().out
    data = load_run(run)
    view = {"x": [-100, 100], "y": [-100, 100]}
    got, complete = data.tiles.view(view, budget=10**9)
    assert complete and got.tolist() == list(range(3000))  # one leaf: every image
    assert main(["tiles", str(tmp_path / "nothing")]) == 1
