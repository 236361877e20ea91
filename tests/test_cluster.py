import faiss
import numpy as np
import pytest

from embeddings import project
from embeddings.cluster import (
    KMeans,
    build_index,
    candidate_ks,
    choose_k,
    cluster_metrics,
    pq_index_key,
    train_ivf,
    two_level_centres,
)
from embeddings.project import knn_graph, seed_graph, umap_reduce
from ice.errors import IceError


def blobs(k=4, per=200, d=8, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), per)


def test_kmeans_recovers_separated_blobs():
    x, y = blobs()
    km = KMeans(4, n_iter=20, n_init=2, seed=0).fit(x)
    assert km.centroids_.shape == (4, 8) and km.centroids_.dtype == np.float32
    assert km.labels_.shape == (800,) and km.distances_.shape == (800,)
    assert cluster_metrics(y, km.labels_)["accuracy"] == 1.0
    # distances are squared L2 to the assigned centroid
    i = 17
    assert km.distances_[i] == pytest.approx(((x[i] - km.centroids_[km.labels_[i]]) ** 2).sum(), rel=1e-4)


def test_assign_finds_the_nearest_centroid_far_from_the_origin():
    from embeddings.cluster import assign

    rng = np.random.default_rng(0)
    c = rng.normal(size=(50, 32)).astype(np.float32)
    pairs = rng.integers(50, size=(20_000, 2))  # rows near the border between two centroids
    x = ((c[pairs[:, 0]] + c[pairs[:, 1]]) / 2 + rng.normal(scale=0.3, size=(20_000, 32))).astype(np.float32)
    x, c = x + 100, c + 100  # |x|^2 ~ 3e5: float32's expanded form is off by ~0.1 there
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    exact = (c64 * c64).sum(1) - 2 * x64 @ c64.T + (x64 * x64).sum(1)[:, None]
    dist, labels = assign(x, c)
    assert (labels == exact.argmin(1)).all()
    assert dist == pytest.approx(exact.min(1), rel=1e-3)


def test_assign_gives_the_same_answer_in_any_blocks_and_threads():
    from embeddings.cluster import assign

    x, _ = blobs(k=5, per=4000, d=16, spread=1.0)
    c = x[::997][:5].copy()
    dist, labels = assign(x, c)  # one block at K=5
    exact = ((x[:, None, :] - c[None]) ** 2).sum(2)
    assert labels.dtype == np.int32 and dist.dtype == np.float32
    assert (labels == exact.argmin(1)).mean() > 0.9999
    assert dist == pytest.approx(exact.min(1), rel=1e-4, abs=1e-5)
    for chunk, threads in ((8192, 1), (8192, 2), (1000, 3)):  # 20k rows: blocks taken by turns
        d, lab = assign(x, c, chunk=chunk, threads=threads)
        assert np.array_equal(lab, labels) and np.array_equal(d, dist)
    d, lab = assign(np.asfortranarray(x[:5000]).astype(np.float64), c, chunk=999, threads=2)  # copied per block
    assert np.array_equal(lab, labels[:5000]) and np.array_equal(d, dist[:5000])


def test_kmeans_is_seeded():
    x, _ = blobs(k=6, spread=1.0)
    a = KMeans(6, seed=3).fit(x).labels_
    b = KMeans(6, seed=3).fit(x).labels_
    assert np.array_equal(a, b)


def test_kmeans_on_few_rows_a_centroid_prints_nothing(capfd):
    """faiss warns on stderr below 39 rows a centroid; small collections are normal here."""
    x, _ = blobs(k=6, per=20)
    assert len(np.unique(KMeans(6, n_init=2).fit(x).labels_)) == 6
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err + captured.out


def test_kmeans_restarts_from_the_largest_seed():
    """faiss takes an int32 seed, and restart r uses seed + r: past 2**31 - 1 it overflowed."""
    x, y = blobs(k=3)
    labels = KMeans(3, n_init=3, seed=2**31 - 1).fit(x).labels_
    assert len(np.unique(labels)) == 3


def test_kmeans_plus_plus_seeds_every_separated_blob_once_from_its_sample():
    from embeddings.cluster import kmeans_plus_plus

    x, y = blobs(k=12, per=600, d=16, spread=0.01)  # 7,200 rows, more than the sample
    rows = {r.tobytes(): i for i, r in enumerate(x)}
    for seed in range(5):
        seeds = kmeans_plus_plus(x, 12, np.random.default_rng(seed), sample=3000)
        assert seeds.shape == (12, 16) and seeds.dtype == np.float32
        picked = [rows[s.tobytes()] for s in seeds]  # every seed is a row of x
        assert sorted(y[picked].tolist()) == list(range(12))  # one in each blob
    same = np.ones((50, 4), dtype=np.float32)  # no distance left to draw by: any rows will do
    assert np.array_equal(kmeans_plus_plus(same, 3, np.random.default_rng(0)), same[:3])


@pytest.mark.parametrize("k", [0, 1, 10_000])
def test_kmeans_rejects_bad_k(k):
    with pytest.raises(IceError, match=str(k)):
        KMeans(k).fit(blobs()[0])


def test_choose_k_finds_the_number_of_blobs():
    x, _ = blobs(k=7, per=150)
    k, scores = choose_k(x)
    assert k == 7, scores


def test_choose_k_scores_are_the_silhouettes_of_its_sample():
    from sklearn.metrics import silhouette_score

    x, _ = blobs(k=7, per=150)
    _, scores = choose_k(x, seed=3, sample=400)
    pick = np.random.default_rng(3).choice(len(x), size=400, replace=False)
    for k in (5, 7, 12):
        labels = KMeans(k, n_iter=25, n_init=3, seed=3).fit(x).labels_[pick]
        assert scores[k] == pytest.approx(silhouette_score(x[pick], labels), abs=1e-6)


def test_graph_modularity_of_two_linked_pairs():
    from embeddings.cluster import graph_modularity

    pairs = np.array([[1], [0], [3], [2]])  # 0 and 1 name each other, as do 2 and 3
    assert graph_modularity(np.array([0, 0, 1, 1]), pairs) == pytest.approx(0.5)  # 1 - (1/2 1/2 + 1/2 1/2)
    assert graph_modularity(np.array([0, 1, 0, 1]), pairs) == pytest.approx(-0.5)
    assert graph_modularity(np.array([0, 0, 0, 0]), pairs) == pytest.approx(0.0)
    with_self = np.array([[0, 1], [1, 0], [2, 3], [3, 2]])  # a row among its own neighbours is left out
    assert graph_modularity(np.array([0, 0, 1, 1]), with_self) == pytest.approx(0.5)


def test_the_graph_steps_skip_the_padding_of_an_approximate_graph():
    """An IVF search that found fewer than j rows pads with -1; read as an index it would be
    the last row, linking every padded row to that row's cluster."""
    from embeddings.cluster import graph_modularity

    padded = np.array([[1, -1], [0, -1], [3, -1], [2, -1]])
    assert graph_modularity(np.array([0, 0, 1, 1]), padded) == pytest.approx(0.5)


def planted_graph(groups=3, per=40, own=8, other=2, seed=0):
    """Rows in `groups` groups, each naming `own` random rows of its group and `other` random
    rows elsewhere as its neighbours."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(groups), per)
    graph = np.stack(
        [
            np.concatenate([rng.choice(np.flatnonzero(y == g), own), rng.choice(np.flatnonzero(y != g), other)])
            for g in y
        ]
    )
    return y, graph


def test_climb_modularity_moves_rows_to_the_group_their_links_name():
    from embeddings.cluster import climb_modularity, graph_modularity

    y, graph = planted_graph()
    rng = np.random.default_rng(1)
    noisy = y.copy()
    wrong = rng.choice(len(y), 24, replace=False)
    noisy[wrong] = (y[wrong] + rng.integers(1, 3, len(wrong))) % 3  # a fifth of the rows in another group
    climbed = climb_modularity(noisy, graph)
    assert climbed.dtype == np.int32 and (climbed == y).all()
    assert graph_modularity(climbed, graph) > graph_modularity(noisy, graph)
    assert (climb_modularity(noisy, graph, rounds=0) == noisy).all()
    assert (climb_modularity(y, graph) == y).all()  # at the peak already: nothing moves


def test_climb_modularity_skips_self_links_and_padding_and_never_lowers_the_modularity():
    from embeddings.cluster import climb_modularity, graph_modularity

    y, graph = planted_graph()
    labels = y.copy()
    labels[0] = 2  # row 0 of group 0, labelled as the last row's group
    rows = np.arange(len(y))[:, None]
    padded = np.concatenate([rows, graph[:, :1], np.full((len(y), 4), -1)], axis=1)  # itself, one link, padding
    padded[0, 1] = 5  # row 0's one link: a row of its own group
    # read as an index, -1 would be the last row: four links to group 2 against one to group 0
    assert climb_modularity(labels, padded)[0] == 0
    pairs = np.array([[1], [0], [3], [2]])  # 0 and 1 name each other, as do 2 and 3
    split = np.array([0, 1, 0, 1])  # every row would follow its pair at once: a swap, no better
    assert (climb_modularity(split, pairs) == split).all()
    for seed in range(5):  # random graphs, random labels
        rng = np.random.default_rng(seed)
        graph = rng.integers(-1, 50, size=(50, 4))
        labels = rng.integers(0, 5, 50)
        assert graph_modularity(climb_modularity(labels, graph), graph) >= graph_modularity(labels, graph)


def test_mixture_keeps_the_start_whose_clusters_follow_the_neighbour_graph():
    """A round blob cut in two: the mixture's starts cut it at different angles, all about as
    likely. The neighbour graph links each row to random rows of its own half, as embeddings
    can hold what the manifold lost: judged by it, the kept start is the one closest to the
    halves; each start on its own is refitted to check."""
    from sklearn.mixture import GaussianMixture as SkGMM

    from embeddings.cluster import GaussianMixture, fit_clusters, graph_modularity

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 2)).astype(np.float32)
    halves = (x @ np.array([-0.866, 0.5], dtype=np.float32) > 0).astype(int)  # cut at 150 degrees
    graph = np.stack([rng.choice(np.flatnonzero(halves == h), 10) for h in halves])
    gmm = GaussianMixture(2, n_init=8, seed=0, score=lambda labels: graph_modularity(labels, graph)).fit(x)
    each = [
        cluster_metrics(
            halves,
            SkGMM(2, covariance_type="full", n_init=1, reg_covar=1e-4, max_iter=200, random_state=i).fit(x).predict(x),
        )["accuracy"]
        for i in range(8)
    ]
    assert len(gmm.scores_) == 8 and max(each) - min(each) > 0.1  # the starts differ
    assert cluster_metrics(halves, gmm.labels_)["accuracy"] == pytest.approx(max(each), abs=0.01)
    by_likelihood = GaussianMixture(2, n_init=8, seed=0).fit(x)  # here it keeps a cut at about 120 degrees
    assert cluster_metrics(halves, by_likelihood.labels_)["accuracy"] < max(each) - 0.05
    picked = fit_clusters(x, 2, "gmm", 8, 20, 0, neighbours=graph)  # "graph" by default
    assert (picked.labels_ == gmm.labels_).all() or (picked.labels_ == 1 - gmm.labels_).all()
    climbed = fit_clusters(x, 2, "gmm", 8, 20, 0, neighbours=graph, graph_rounds=20)  # the job's call
    assert cluster_metrics(halves, climbed.labels_)["accuracy"] == 1.0  # the graph's own halves
    assert np.allclose(climbed.centroids_, [x[climbed.labels_ == c].mean(0) for c in (0, 1)], atol=1e-5)


def test_candidate_ks_range():
    assert candidate_ks(10) == [2]
    assert candidate_ks(1797)[0] == 5 and candidate_ks(1797)[-1] == 29
    assert candidate_ks(10**7)[-1] == 50


def test_metrics_match_by_hungarian():
    y = np.array(["a", "a", "b", "b", "c", "c"])
    m = cluster_metrics(y, np.array([2, 2, 0, 0, 1, 1]))
    assert m == {"accuracy": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    assert cluster_metrics(y, np.array([0, 0, 0, 0, 1, 1]))["accuracy"] == pytest.approx(4 / 6)


def test_index_returns_itself_first():
    x, _ = blobs()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_index(x)
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == len(x)
    scores, ids = index.search(x[:5], 3)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert scores[:, 0] == pytest.approx(1.0, abs=1e-5)


def recall_at_10(index, x, queries) -> float:
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    truth, found = exact.search(queries, 10)[1], index.search(queries, 10)[1]
    return float(np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(truth, found, strict=True)]))


def test_two_level_centres_cover_the_rows_and_search_as_well_as_one_kmeans():
    x, _ = blobs(k=40, per=400, d=16, spread=0.3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centres = two_level_centres(x, 256, seed=0)
    assert centres.shape == (256, 16) and centres.dtype == np.float32
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-4)  # spherical: for an inner-product index
    assert np.array_equal(centres, two_level_centres(x, 256, seed=0)), "seeded"
    queries = x[::97]
    recalls = {}
    for how in ("one k-means", "two-level"):
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 256, faiss.METRIC_INNER_PRODUCT)
        train_ivf(index, x, seed=0, two_level_from=10**9 if how == "one k-means" else 1)
        assert index.is_trained and index.quantizer.ntotal == 256
        index.add(x)
        sizes = np.array([index.invlists.list_size(i) for i in range(256)])
        assert sizes.max() < 8 * len(x) / 256, f"{how}: a list holds {sizes.max()} rows"
        index.nprobe = 8
        recalls[how] = recall_at_10(index, x, queries)
    assert recalls["two-level"] >= recalls["one k-means"] - 0.02, recalls
    few = two_level_centres(x[:300], 256, seed=0)  # about one row a centre: every centre still made
    assert few.shape == (256, 16) and np.isfinite(few).all()


def test_train_ivf_trains_the_rotation_and_codes_of_an_opq_ivf_pq_index_around_two_level_centres():
    x, _ = blobs(k=40, per=400, d=16, spread=0.3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    recalls = {}
    for how in ("one k-means", "two-level"):
        index = faiss.index_factory(16, pq_index_key(len(x), 16, lists=128), faiss.METRIC_INNER_PRODUCT)
        assert isinstance(index, faiss.IndexPreTransform)
        train_ivf(index, x, seed=0, two_level_from=10**9 if how == "one k-means" else 1)
        ivf = faiss.extract_index_ivf(index)
        assert index.is_trained and ivf.is_trained and ivf.quantizer.ntotal == 128
        index.add(x)
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", 16)
        recalls[how] = recall_at_10(index, x, x[::23])
    # 8-byte codes of 16 dimensions on tight blobs: approximate (about 0.2), far from random (0.001)
    assert recalls["two-level"] > 0.1 and recalls["two-level"] >= recalls["one k-means"] - 0.03, recalls


def test_umap_keeps_blobs_apart_and_samples_above_threshold():
    x, y = blobs(k=3, per=1500, d=16)  # 4,500 rows: past UMAP's small-data path, so the FAISS graph is used
    full = umap_reduce(x, 2, neighbors=10, min_dist=0.1, sample=10_000, seed=0, desc="t")
    assert full.shape == (4500, 2) and full.dtype == np.float32
    sampled = umap_reduce(x, 2, neighbors=10, min_dist=0.1, sample=1000, seed=0, desc="t")
    assert sampled.shape == (4500, 2) and np.isfinite(sampled).all()
    for xy in (full, sampled):  # each blob lands in its own cluster on the map
        assert cluster_metrics(y, KMeans(3, seed=0).fit(xy).labels_)["accuracy"] == 1.0
    given = umap_reduce(
        x, 2, neighbors=10, min_dist=0.1, sample=1000, seed=0, desc="t", seed_knn=seed_graph(x, 10, 1000, 0)
    )
    assert np.array_equal(given, sampled), "the laid-out rows' graph, passed in, is the one it would build"
    placed = umap_reduce(x, 2, neighbors=10, min_dist=0.1, sample=1000, seed=0, desc="t", refine=False)
    assert placed.shape == (4500, 2) and placed.dtype == np.float32 and np.isfinite(placed).all()
    assert cluster_metrics(y, KMeans(3, seed=0).fit(placed).labels_)["accuracy"] == 1.0
    rows = project.layout_rows(4500, 1000, 0)
    assert np.array_equal(
        placed[rows], umap_reduce(x[rows], 2, neighbors=10, min_dist=0.1, sample=1000, seed=0, desc="t")
    ), "the laid-out rows keep their layout"
    assert len(np.unique(placed, axis=0)) == 4500
    again = umap_reduce(
        x,
        2,
        neighbors=10,
        min_dist=0.1,
        sample=1000,
        seed=0,
        desc="t",
        seed_knn=seed_graph(x, 10, 1000, 0),
        refine=False,
    )
    assert np.array_equal(again, placed), "seeded, the placement repeats (docs/reproducibility.md: same seed, same map)"


@pytest.mark.parametrize("sample", [10_000, 1000])  # all rows at once; a sample first, then the rest
def test_umap_in_parallel_keeps_blobs_apart(sample):
    x, y = blobs(k=3, per=1500, d=16)
    xy = umap_reduce(x, 10, neighbors=10, min_dist=0.0, sample=sample, seed=0, desc="t", parallel=True)
    assert xy.shape == (4500, 10) and np.isfinite(xy).all()
    assert cluster_metrics(y, KMeans(3, seed=0).fit(xy).labels_)["accuracy"] == 1.0


def brute_force_knn(x, k):
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(2)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("exact_max", [10_000, 100])  # exact, then the IVF index
def test_knn_graph_matches_brute_force_and_puts_each_row_first(monkeypatch, exact_max):
    monkeypatch.setattr(project, "EXACT_KNN_MAX", exact_max)
    x, _ = blobs(k=4, per=300, d=8, spread=0.5)
    x[1] = x[0]  # a duplicate: row 1 may come before row 0 in row 0's own list
    ind, dist = knn_graph(x, 10)
    assert ind.shape == dist.shape == (1200, 10) and dist.dtype == np.float32
    assert (ind[:, 0] == np.arange(1200)).all() and (dist[:, 0] == 0).all()
    assert set(ind[0, :2]) == {0, 1} and set(ind[1, :2]) == {0, 1}
    truth = brute_force_knn(x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ind, truth)])
    assert recall > (0.999 if exact_max > 1200 else 0.9)
    i = 17
    assert dist[i, 3] == pytest.approx(np.linalg.norm(x[i] - x[ind[i, 3]]), rel=1e-3)


def test_large_index_is_ivf_and_finds_near_duplicates(monkeypatch, tmp_path):
    import embeddings.cluster as cluster

    monkeypatch.setattr(cluster, "EXACT_INDEX_MAX", 1000)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = cluster.build_index(x)
    assert isinstance(index, faiss.IndexIVFFlat) and index.ntotal == 5000 and index.nprobe == 64
    q = x[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    _, ids = index.search(q, 1)
    assert ids[:, 0].tolist() == list(range(20))
    path = str(tmp_path / "index.faiss")
    faiss.write_index(index, path)
    assert faiss.read_index(path).nprobe == 64


def test_gaussian_mixture_follows_each_groups_spread_where_kmeans_cuts_at_the_midpoint():
    from embeddings.cluster import GaussianMixture

    rng = np.random.default_rng(0)
    wide, tight = rng.normal(0, 3, (600, 2)), rng.normal(0, 0.3, (200, 2)) + [7, 0]
    x, y = np.concatenate([wide, tight]).astype(np.float32), np.repeat([0, 1], [600, 200])
    assert cluster_metrics(y, KMeans(2, seed=0).fit(x).labels_)["accuracy"] < 0.9
    gmm = GaussianMixture(2, n_init=3, seed=0).fit(x)
    assert cluster_metrics(y, gmm.labels_)["accuracy"] > 0.99
    assert gmm.centroids_.shape == (2, 2) and gmm.distances_.shape == (800,)
    i = 5
    assert gmm.distances_[i] == pytest.approx(((x[i] - gmm.centroids_[gmm.labels_[i]]) ** 2).sum(), rel=1e-4)


def test_place_from_neighbours_fills_every_row_from_laid_out_ones():
    # rows 0..5 in a chain (each row's neighbours: itself, then the next rows); 0 and 5 laid out
    ind = np.array([[0, 1, -1], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, 5], [5, 4, -1], [6, -1, -1]])
    pos = np.full((7, 2), np.nan, dtype=np.float32)
    pos[0], pos[5] = (0, 0), (10, 10)
    out = project._place_from_neighbours(pos, ind, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out[1] == pytest.approx([0, 0], abs=0.01) and out[4] == pytest.approx([10, 10], abs=0.01)
    assert out[2] == pytest.approx([0, 0], abs=0.01) and out[3] == pytest.approx([10, 10], abs=0.01)
    assert out[6] == pytest.approx(np.mean(out[:6], axis=0), abs=0.1)  # no neighbour: the mean
    assert len(np.unique(out, axis=0)) == 7  # no two rows start on one spot


def test_place_between_interpolates_within_a_cluster_of_the_layout_and_never_across_two():
    # laid out (rows 0-3): two clusters far apart on the map; each row's graph stays in its cluster
    x = np.array([[0.0], [1.0], [3.0], [4.0], [0.4], [1.9], [3.3]], dtype=np.float32) @ np.float32([[1.0, 0.0]])
    laid = np.array([[0, 0], [1, 0], [100, 0], [101, 0]], dtype=np.float32)
    seed_ind = np.array([[0, 1, -1], [1, 0, -1], [2, 3, -1], [3, 2, -1]])
    out = project._place_between(x, np.arange(4), laid, seed_ind, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.array_equal(out[:4], laid)
    # 0.4: between its two nearest, weighted by inverse distance (0.4 and 0.6)
    assert out[4] == pytest.approx([0.4, 0], abs=0.05)
    # 1.9: its second nearest (3.0, at 1.1) is laid out in the other cluster, so it does not count
    # (counting it would put the row at x=36, in the empty space between the clusters)
    assert out[5] == pytest.approx([(1 / 0.9) / (1 / 0.9 + 1 / 1.9), 0], abs=0.05)
    assert out[6] == pytest.approx([(100 / 0.3 + 101 / 0.7) / (1 / 0.3 + 1 / 0.7), 0], abs=0.05)


def test_kernels_compile_without_a_cache_folder():
    from embeddings._kernels import compiled

    namespace = {}
    exec("def double(a):\n    return a * 2\n", namespace)  # no source file: numba has nowhere to cache it
    with pytest.raises(RuntimeError, match="cannot cache"):
        __import__("numba").njit(cache=True)(namespace["double"])
    assert compiled()(namespace["double"])(21) == 42


def test_assign_takes_the_first_of_equal_centroids_and_handles_one_centroid():
    from embeddings.cluster import assign

    x, _ = blobs(k=3, per=3000, d=8, spread=1.0)
    c = np.repeat(x[:2], 2, axis=0)  # centroids 0 = 1 and 2 = 3
    dist, labels = assign(x, c, chunk=8192)  # 9,000 rows: a chunk and a part of one
    assert set(np.unique(labels)) <= {0, 2}
    assert (labels == np.where(((x - c[0]) ** 2).sum(1) <= ((x - c[2]) ** 2).sum(1), 0, 2)).mean() > 0.9999
    dist1, labels1 = assign(x, c[:1])
    assert (labels1 == 0).all() and dist1 == pytest.approx(((x - c[0]) ** 2).sum(1), rel=1e-4, abs=1e-5)


def test_umap_warm_up_child_fills_numbas_cache(tmp_path, monkeypatch):
    """The child that a GPU run starts during training (project.warm_up_umap) must really run
    both UMAPs: its output goes nowhere, so a broken one would only show as a slower run."""
    from embeddings.project import warm_up_umap

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    child = warm_up_umap(10)
    assert child.wait(timeout=300) == 0
    assert len(list((tmp_path / "numba").rglob("*.nbi"))) > 10, "numba cached nothing"
