"""Re-clustering with another K, stored as `clusterings/k{K}.npz` beside the job's own.

It runs the job's method on the space the job clustered (manifest `cluster_space`): the
UMAP manifold (`manifold.npy`) or the embeddings, with the Gaussian mixture when the job
refined with one (`refine` "gmm"), else k-means, and where the job then climbed the
neighbour graph's modularity (`graph_rounds`), the same climb along the graph it kept
(`neighbours.npy`). It leaves out the job's self-labelling, which fine-tunes the encoder for
minutes. The 2-D map is not recomputed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ice.errors import IceError
from ice.run_dir import NEIGHBOURS, atomic_path

from .data import CLUSTERINGS, MANIFOLD, RUN_CLUSTERING, Clustering, RunData

KEY = re.compile(r"k([1-9][0-9]{0,5})")
MAX_K = 500  # more clusters than anyone can name
KMEANS_ITERS = 25  # fewer than the job's: the app should answer in seconds
STARTS = 1  # the job's default is 5; on the MNIST manifold one start of the mixture gave the
# same clusters as five, in a fraction of the time


def clustering_path(run_dir: Path, key: str) -> Path:
    match = KEY.fullmatch(key)
    if not match:
        raise IceError(f"clustering {key!r}: expected {RUN_CLUSTERING!r} or k<K>, e.g. k12")
    return run_dir / CLUSTERINGS / f"{key}.npz"


def load_clustering(run_dir: Path, key: str) -> Clustering:
    """The re-clustering called `key` ("k{K}") from disk; IceError if there is none.

    The job's own clustering ("run") comes with the items (explorer.data.load_run).
    """
    path = clustering_path(run_dir, key)
    try:
        with np.load(path) as z:
            cluster, distance, centroids = z["cluster"], z["distance"], z["centroids"]
    except FileNotFoundError:
        raise IceError(f"clustering {key!r}: not found in {run_dir / CLUSTERINGS}") from None
    except (OSError, ValueError, KeyError) as e:
        raise IceError(f"{path}: unreadable ({e})") from None
    return Clustering(key, len(centroids), cluster.astype(np.int32), distance.astype(np.float32))


def list_clusterings(run_dir: Path) -> list[str]:
    """ "run", then the stored re-clusterings by K."""
    folder = Path(run_dir) / CLUSTERINGS
    keys = [p.stem for p in folder.glob("k*.npz") if KEY.fullmatch(p.stem)] if folder.is_dir() else []
    return [RUN_CLUSTERING] + sorted(keys, key=lambda key: int(key[1:]))


def clustering_space(data: RunData) -> np.ndarray:
    """(n, m) float32: the points k-means runs on, as the job chose."""
    space = data.manifest.get("cluster_space", "embeddings")
    if space == "manifold":
        try:
            return np.ascontiguousarray(np.load(data.run_dir / MANIFOLD), dtype=np.float32)
        except (OSError, ValueError) as e:
            raise IceError(f"{data.run_dir / MANIFOLD}: cannot re-cluster without it ({e})") from None
    if space == "embeddings":
        return np.ascontiguousarray(data.embeddings, dtype=np.float32)
    raise IceError(f"{data.run_dir}: unknown cluster_space {space!r} in the manifest")


def job_neighbours(data: RunData) -> np.ndarray | None:
    """(n, j) int32: the neighbour graph the job climbed along, or None where it did not climb
    (or ran before ICE kept the graph)."""
    path = data.run_dir / NEIGHBOURS
    if not data.manifest.get("config", {}).get("graph_rounds") or not path.exists():
        return None
    try:
        neighbours = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise IceError(f"{path}: unreadable ({e})") from None
    if neighbours.ndim != 2 or len(neighbours) != data.n:
        raise IceError(f"{path}: shape {neighbours.shape}, expected ({data.n}, neighbours)")
    return np.asarray(neighbours)


def recluster(data: RunData, k: int) -> Clustering:
    """Cluster with K clusters as the batch job did before self-labelling (module doc), with
    one start; store it as clusterings/k{K}.npz and return it. The mixture may leave a
    component without images: the clustering then has fewer than K clusters.

    A K that was clustered before is not run again: names given to its clusters stay right.
    The mixture, as in the job, keeps elongated groups whole where k-means alone cuts them.
    """
    from embeddings.cluster import fit_clusters

    if data.read_only:
        raise IceError("the explorer is read-only (--read-only); cannot store a re-clustering")
    data.check_unchanged()  # the run on disk is still the one shown
    if not isinstance(k, (int, np.integer)) or not 2 <= k <= min(MAX_K, data.n):
        given = "" if k is None else f" {k!r}"  # the box sends None for an empty or fractional K
        raise IceError(f"K{given}: must be a whole number from 2 to {min(MAX_K, data.n)}")
    key = f"k{int(k)}"
    if clustering_path(data.run_dir, key).exists():  # made before: reuse it, and its names
        return data.clustering(key)
    x = clustering_space(data)
    job = data.manifest.get("config", {})
    km = fit_clusters(
        x,
        int(k),
        job.get("refine", "none"),
        STARTS,
        KMEANS_ITERS,
        int(job.get("seed", 0)),
        neighbours=job_neighbours(data),
        pick="likelihood",  # one start: none to choose
        graph_rounds=int(job.get("graph_rounds") or 0),
    )
    clustering = Clustering(key, len(km.centroids_), km.labels_, km.distances_)
    try:
        save_clustering(data.run_dir, clustering, km.centroids_)
    except OSError as e:  # atomic_path names the path the system refused
        raise IceError(f"could not store the re-clustering {key}: {e}") from None
    data.add_clustering(clustering)
    return clustering


def save_clustering(run_dir: Path, clustering: Clustering, centroids: np.ndarray) -> Path:
    """Write clusterings/<key>.npz atomically."""
    path = clustering_path(run_dir, clustering.key)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, cluster=clustering.cluster, distance=clustering.distance, centroids=centroids)
    return path
