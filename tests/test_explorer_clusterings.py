"""Re-clustering with another K, stored beside the job's clustering."""

import numpy as np
import pytest

from explorer.clusterings import list_clusterings, load_clustering, recluster
from explorer.data import RUN_CLUSTERING, load_run
from ice.errors import IceError


def test_recluster_stores_and_reloads(explorer_run):
    data = load_run(explorer_run)
    c = recluster(data, 7)
    assert c.key == "k7" and c.k == 7
    assert c.cluster.shape == (data.n,) and c.cluster.dtype == np.int32
    assert set(np.unique(c.cluster)) <= set(range(7))
    with np.load(explorer_run / "clusterings" / "k7.npz") as z:
        assert z["centroids"].shape == (7, np.load(explorer_run / "manifold.npy").shape[1])
        # distance is the squared L2 distance to the own centroid, in the manifold space
        x = np.load(explorer_run / "manifold.npy")
        expected = ((x - z["centroids"][z["cluster"]]) ** 2).sum(axis=1)
        assert np.allclose(z["distance"], expected, rtol=1e-3, atol=1e-4)
    assert list_clusterings(explorer_run) == [RUN_CLUSTERING, "k7"]
    again = load_clustering(explorer_run, "k7")
    assert np.array_equal(again.cluster, c.cluster)
    # the job's own clustering is untouched
    assert np.array_equal(
        load_run(explorer_run).clustering(RUN_CLUSTERING).cluster, data.clustering(RUN_CLUSTERING).cluster
    )


def test_clusterings_sort_by_k(explorer_run):
    data = load_run(explorer_run)
    for k in (12, 3):
        recluster(data, k)
    assert list_clusterings(explorer_run) == [RUN_CLUSTERING, "k3", "k12"]


@pytest.mark.parametrize("k", [1, 0, -3, 301, None, 2.5])
def test_bad_k(explorer_run, k):
    with pytest.raises(IceError, match="K[ :]"):
        recluster(load_run(explorer_run), k)
    assert not (explorer_run / "clusterings").exists()


def test_read_only_cannot_recluster(explorer_run):
    with pytest.raises(IceError, match="read-only"):
        recluster(load_run(explorer_run, read_only=True), 4)


def test_a_re_clustering_that_cannot_be_stored_is_one_error(explorer_run):
    """The system refusing the write (here a file where the clusterings folder goes; a full
    disk alike) is a message for the page, and the clustering is not offered."""
    (explorer_run / "clusterings").write_text("in the way")
    data = load_run(explorer_run)
    with pytest.raises(IceError, match="could not store the re-clustering k4: .*clusterings"):
        recluster(data, 4)
    with pytest.raises(IceError, match="k4"):
        data.clustering("k4")


def test_re_clustering_without_the_manifold_is_one_error(explorer_run):
    if load_run(explorer_run).manifest.get("cluster_space") != "manifold":
        pytest.skip("this run clustered its embeddings")
    (explorer_run / "manifold.npy").unlink()
    with pytest.raises(IceError, match="manifold.npy: cannot re-cluster without it"):
        recluster(load_run(explorer_run), 4)


@pytest.mark.parametrize("key", ["k9", "../items", "k0", "x"])
def test_unknown_clustering(small_run, key):
    with pytest.raises(IceError, match="clustering"):
        load_clustering(small_run, key)


def test_same_k_again_reuses_the_stored_clustering(explorer_run):
    data = load_run(explorer_run)
    first = recluster(data, 5)
    path = explorer_run / "clusterings" / "k5.npz"
    stamp = path.stat().st_mtime_ns
    data.annotations.set_cluster_name("k5", 0, "kept")
    again = recluster(load_run(explorer_run), 5)
    assert path.stat().st_mtime_ns == stamp and np.array_equal(again.cluster, first.cluster)
    assert data.annotations.cluster_names("k5") == {0: "kept"}


def test_recluster_at_the_jobs_k_gives_the_jobs_clusters_before_self_labelling(explorer_run):
    data = load_run(explorer_run)
    assert data.manifest["config"]["refine"] == "gmm" and data.manifest["config"]["kmeans_restarts"] == 1
    c = recluster(data, data.manifest["clusters"])
    with np.load(explorer_run / "assign.npz") as z:
        first = z["first_cluster"]
    assert np.array_equal(c.cluster, first), "the same mixture, the same seed, the same space"


def test_recluster_climbs_the_graph_the_job_climbed(tmp_path):
    """Where the job climbed the neighbour graph after the mixture (graph_rounds), it keeps
    the graph (neighbours.npy), and a re-clustering climbs it too; a run that does not climb
    keeps none. A graph that does not fit the run is one error."""
    from PIL import Image

    from embeddings.cluster import climb_modularity, fit_clusters
    from embeddings.config import Config
    from embeddings.pipeline import run_embed
    from explorer.clusterings import KMEANS_ITERS
    from tests.conftest import TINY

    rng = np.random.default_rng(0)  # noise: the manifold's clusters and the graph's disagree
    (tmp_path / "in").mkdir()
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i:02d}.png")
    run = tmp_path / "run"
    run_embed(tmp_path / "in", run, Config(**{**TINY, "clusters": 3, "graph_rounds": 20}), log=lambda *a: None)
    neighbours = np.load(run / "neighbours.npy")
    assert neighbours.shape == (60, TINY["neighbors"]) and neighbours.dtype == np.int32
    assert not (run / "knn.npz").exists()

    c = recluster(load_run(run), 8)
    plain = fit_clusters(np.load(run / "manifold.npy"), 8, "gmm", 1, KMEANS_ITERS, 0).labels_
    climbed = np.unique(climb_modularity(plain, neighbours, 20), return_inverse=True)[1]
    assert not np.array_equal(plain, climbed)  # else this test could not tell
    assert np.array_equal(c.cluster, climbed)

    np.save(run / "neighbours.npy", neighbours[:10])
    with pytest.raises(IceError, match=r"neighbours.npy: shape \(10, 8\)"):
        recluster(load_run(run), 4)

    run_embed(
        tmp_path / "in", run, Config(**{**TINY, "clusters": 3, "graph_rounds": 0}), force=True, log=lambda *a: None
    )
    assert not (run / "neighbours.npy").exists()
