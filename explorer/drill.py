"""Drilling into a cluster or a lasso: its images split into sub-clusters on a map of their own.

UMAP lays out only the subset, on a FAISS neighbour graph of its embeddings, starting from
where the parent map has the images (LAYOUT_EPOCHS), and FAISS k-means splits that sub-map,
so that the sub-clusters are what the person sees. On 10k MNIST images (2 cores) the
sub-clusters at k 10 were 0.952 pure against 0.654 for k-means on the embeddings, and the
layout took 2.1 s against 20.5 s for UMAP's own start (a spectral embedding) and 200 epochs.

A drill-down is a Clustering like any other, over every image: its
clusters hold the subset, the others have cluster -1 (and no place on its map, NaN), so the
map, hover, lasso and panels serve it unchanged. Its key ("d" and a hash of the parent, the
images and k) is the same each time, so names given to its sub-clusters stay with it. It is
stored as `clusterings/drill-<key>.npz` (ids, cluster, distance, x, y of the subset).
"""

from __future__ import annotations

import hashlib
import re
import threading
import warnings

import numpy as np

from ice.errors import IceError
from ice.run_dir import atomic_path

from .data import CLUSTERINGS, Clustering, RunData

DRILL_K = 6  # sub-clusters, unless the person asks for another number
MAX_DRILL_K = 50
NEIGHBOURS = 15  # UMAP's neighbours on the subset
LAYOUT_EPOCHS = 100  # from the parent map's layout; 50 lost purity on MNIST
KEY = re.compile(r"d[0-9a-f]{12}")


def drill_key(parent: str, ids: np.ndarray, k: int) -> str:
    digest = hashlib.sha1(f"{parent}|{k}|".encode() + np.sort(ids).astype(np.int64).tobytes())
    return "d" + digest.hexdigest()[:12]


def drill_path(data: RunData, key: str):
    if not KEY.fullmatch(key):
        raise IceError(f"drill-down {key!r}: not a drill-down's key")
    return data.run_dir / CLUSTERINGS / f"drill-{key}.npz"


def check_drill(data: RunData, ids, k) -> tuple[np.ndarray, int]:
    ids = np.unique(data.check_ids(ids))
    if not isinstance(k, (int, np.integer)) or not 2 <= k <= MAX_DRILL_K:
        raise IceError(f"sub-clusters {k!r}: give a whole number from 2 to {MAX_DRILL_K}")
    if len(ids) < 2 * k:
        raise IceError(f"{len(ids):,} images: too few to split into {k} sub-clusters (at least {2 * k})")
    return ids, int(k)


def split(data: RunData, parent: str, ids, k: int, report=lambda stage: None) -> Clustering:
    """The drill-down of `ids` (from the map `parent`) into k sub-clusters, computed once and
    then read from memory or disk. `report(stage)` is told each stage as it starts."""
    from embeddings.cluster import KMeans
    from embeddings.project import knn_graph

    ids, k = check_drill(data, ids, k)
    key = drill_key(parent, ids, k)
    if drill_path(data, key).exists() or key in data._clusterings:
        return data.clustering(key)
    x = np.ascontiguousarray(data.embeddings[ids], dtype=np.float32)
    seed = int(data.manifest.get("config", {}).get("seed", 0))
    report(f"neighbours of {len(ids):,} images")
    neighbours = min(NEIGHBOURS, len(ids) - 1)
    knn = knn_graph(x, neighbours, seed)
    report(f"UMAP map of {len(ids):,} images")
    px, py = data.map_xy(parent)
    xy = layout(x, knn, neighbours, seed, np.stack([px[ids], py[ids]], axis=1))
    report(f"k-means into {k}")
    km = KMeans(k, n_iter=25, n_init=3, seed=seed).fit(xy)
    clustering, xy_full = expand(data, key, ids, km.labels_, km.distances_, xy, k)
    data.add_clustering(clustering, xy_full)
    if not data.read_only:
        try:
            with atomic_path(drill_path(data, key)) as tmp, open(tmp, "wb") as f:
                np.savez(
                    f,
                    ids=ids,
                    cluster=km.labels_.astype(np.int32),
                    distance=km.distances_.astype(np.float32),
                    x=xy[:, 0],
                    y=xy[:, 1],
                )
        except OSError:
            pass  # kept in memory: the drill-down works, and is computed again after a restart
    return clustering


def layout(x: np.ndarray, knn, neighbours: int, seed: int, start: np.ndarray) -> np.ndarray:
    """(m, 2) float32: UMAP of the subset on its neighbour graph, seeded, starting from `start`
    (m, 2), the parent map's places, scaled to UMAP's usual spread."""
    import umap

    start = np.nan_to_num(start.astype(np.float64))
    start = (start - start.mean(axis=0)) / (start.std(axis=0) + 1e-9) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = umap.UMAP(
            n_components=2,
            n_neighbors=neighbours,
            min_dist=0.1,
            random_state=seed,
            precomputed_knn=(*knn, None),
            n_epochs=LAYOUT_EPOCHS,
            low_memory=True,
            init=start.astype(np.float32),
            verbose=False,
        ).fit_transform(x)
    return out.astype(np.float32)


_warm = threading.Lock()
_warmed: list = []


def warm_up() -> None:
    """Compile UMAP's layout (numba compiles it on its first call in a process) in a thread, once,
    so that the first drill-down answers in seconds. Called when the person opens the Clusters
    tab, not at start, where it would slow the first map."""

    def run():
        from embeddings.project import knn_graph

        x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
        layout(x, knn_graph(x, 15), 15, 0, x[:, :2])

    with _warm:
        if not _warmed:
            _warmed.append(threading.Thread(target=run, name="ice-umap-warm-up", daemon=True))
            _warmed[0].start()


def expand(data: RunData, key: str, ids, cluster, distance, xy, k: int) -> tuple[Clustering, tuple]:
    """The drill-down as a Clustering over every image, and its map's (x, y) over every image."""
    full = np.full(data.n, -1, np.int32)
    full[ids] = cluster
    dist = np.full(data.n, np.inf, np.float32)
    dist[ids] = distance
    x, y = np.full(data.n, np.nan, np.float32), np.full(data.n, np.nan, np.float32)
    x[ids], y[ids] = xy[:, 0], xy[:, 1]
    return Clustering(key, k, full, dist), (x, y)


def read_drill(data: RunData, key: str) -> tuple[Clustering, tuple]:
    """A drill-down computed before, from disk; IceError where there is none."""
    path = drill_path(data, key)
    try:
        with np.load(path) as z:
            ids, cluster, distance = z["ids"], z["cluster"], z["distance"]
            xy = np.stack([z["x"], z["y"]], axis=1)
    except FileNotFoundError:
        raise IceError(f"drill-down {key!r}: not found (split the cluster again)") from None
    except (OSError, ValueError, KeyError) as e:
        raise IceError(f"{path}: unreadable ({e})") from None
    return expand(data, key, data.check_ids(ids), cluster, distance, xy, int(cluster.max()) + 1)
