"""UMAP: the 2-D map, and the low-dimensional manifold that k-means can run on (N2D)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .progress import progress

EXACT_KNN_MAX = 100_000  # rows; above, the neighbour graph is approximate (_grouped_knn)
LIST_PROBES = 8  # _grouped_knn: a group's candidates are the members of its 8 nearest groups
LONG_FIT_EPOCHS = 100  # layout epochs above 10k rows (UMAP's own default there is 200)
# above `sample` rows, this many are laid out first, and every other row is placed from them
SEED_LAYOUT_ROWS = 100_000
REFINE_EPOCHS = 60  # then epochs over every row and the whole graph (30 kept fewer neighbours)
PLACE_NEIGHBOURS = 3  # umap_reduce(refine=False): each other row placed between its 3 nearest laid-out rows
PLACE_GATE = 2.0  # of those, the ones laid out within 2x the nearest one's local scale


def warm_up_umap(manifold_dim: int):
    """Start a child process that runs both UMAPs (the manifold_dim manifold and the 2-D map)
    once on 2,000 random points and exits; returns it (a subprocess.Popen). Seeded or not
    makes no difference here: umap-learn caches neither layout function on disk.

    Most of UMAP's first call in a process is numba compiling it, and part of that compiled
    code is kept in numba's on-disk cache, which roughly halves a fresh install's first UMAP.
    The pipeline starts it only while training runs on a GPU, when the CPU is otherwise idle.
    """
    import subprocess
    import sys

    code = (
        "import numpy as np; from embeddings.project import umap_reduce; "
        "x = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32); "
        f"umap_reduce(x, {int(manifold_dim)}, neighbors=15, min_dist=0.0, sample=10**6, seed=0, desc='warm-up'); "
        "umap_reduce(x, 2, neighbors=15, min_dist=0.1, sample=10**6, seed=0, desc='warm-up')"
    )
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def knn_graph(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows, itself first: (indices (n, k) int64, Euclidean distances (n, k) float32).

    FAISS instead of UMAP's NN-descent, which is faster: exact (IndexFlatL2) up to
    EXACT_KNN_MAX rows; above, approximate (_grouped_knn).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n <= EXACT_KNN_MAX:
        index = faiss.IndexFlatL2(d)
        index.add(x)
        dist = np.empty((n, k), dtype=np.float32)
        ind = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, 65_536):
            dist[start : start + 65_536], ind[start : start + 65_536] = index.search(x[start : start + 65_536], k)
    else:
        ind, dist = _grouped_knn(x, k, seed)
    # UMAP expects each row first in its own list; a duplicate of it may have come first
    for r in np.flatnonzero(ind[:, 0] != np.arange(n)):
        where = np.flatnonzero(ind[r] == r)
        j = where[0] if len(where) else k - 1  # not found at all: drop the farthest
        ind[r] = np.concatenate([[r], np.delete(ind[r], j)])
        dist[r] = np.concatenate([[0], np.delete(dist[r], j)])
    found = ind >= 0  # an IVF search that found fewer than k rows pads with -1, which UMAP skips
    if not found.all():
        dist = np.where(found, dist, np.max(np.where(found, dist, 0), axis=1, keepdims=True))
    return ind, np.sqrt(np.maximum(dist, 0))


def _grouped_knn(x: np.ndarray, k: int, seed: int, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest rows (indices (n, k) int64, -1 where fewer were found; squared
    distances (n, k) float32), in the order of an IVF index turned around. With `base`, each
    row of x gets its nearest rows of base (indices into base) instead of its own.

    The rows are split into sqrt(n) groups by FAISS k-means; the neighbours of a group's
    members are searched, in one batch, among the members of its LIST_PROBES nearest
    groups: one batched search per group, about three times faster than searching a faiss
    IVF index row by row, at a recall near 0.97 (BENCHMARKS.md history).
    """
    import faiss

    from .cluster import assign

    base = x if base is None else base
    d = x.shape[1]
    groups = max(1, int(np.sqrt(len(base))))
    km = faiss.Kmeans(d, groups, niter=10, seed=seed, max_points_per_centroid=64, verbose=False)
    km.train(base)
    _, near = km.index.search(km.centroids, min(LIST_PROBES, groups))

    def by_group(rows: np.ndarray) -> list[np.ndarray]:
        group = assign(rows, km.centroids)[1]  # faster here than faiss's own search
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(groups + 1))
        return [order[bounds[g] : bounds[g + 1]] for g in range(groups)]

    members = by_group(base)
    queries = members if base is x else by_group(x)
    ind = np.full((len(x), k), -1, dtype=np.int64)
    dist = np.zeros((len(x), k), dtype=np.float32)
    for g, rows in enumerate(queries):
        if len(rows):
            cand = np.concatenate([members[j] for j in near[g] if j >= 0])
            found_d, found = faiss.knn(x[rows], base[cand], min(k, len(cand)))
            ind[rows, : found.shape[1]] = np.where(found >= 0, cand[found], -1)
            dist[rows, : found.shape[1]] = found_d
    return ind, dist


def _place_between(
    x: np.ndarray, seed_rows: np.ndarray, laid: np.ndarray, seed_ind: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Every row's position from the laid-out rows' (`laid`, the layout of x[seed_rows], whose
    neighbour graph is `seed_ind`): the inverse-distance mean of its PLACE_NEIGHBOURS nearest
    laid-out rows, counting only those laid out within PLACE_GATE x the nearest one's scale
    (the median layout distance to its graph neighbours), plus a jitter of 1% of that scale.

    The gate keeps a row whose nearest laid-out rows sit in two clusters out of the empty
    space between them: without it, MNIST's map showed a haze of such rows between the
    digits, and the clusters on the manifold lost accuracy. The jitter parts rows that would
    land on one spot.
    """
    near, d2 = _grouped_knn(x, PLACE_NEIGHBOURS, int(rng.integers(2**31)), base=np.ascontiguousarray(x[seed_rows]))
    graph = seed_ind[:, 1:]
    apart = np.linalg.norm(laid[np.maximum(graph, 0)] - laid[:, None], axis=2)
    scale = np.nanmedian(np.where(graph >= 0, apart, np.nan), axis=1)
    scale = np.where(np.isfinite(scale), scale, 0).astype(np.float32)
    first = np.maximum(near[:, 0], 0)
    pos = laid[np.maximum(near, 0)]  # (n, PLACE_NEIGHBOURS, c)
    ok = (near >= 0) & (np.linalg.norm(pos - laid[first][:, None], axis=2) <= PLACE_GATE * scale[first][:, None])
    ok[:, 0] = True
    weight = np.where(ok, 1 / (np.sqrt(np.maximum(d2, 0)) + 1e-12), 0)
    out = (pos * weight[..., None]).sum(1) / weight.sum(1, keepdims=True)
    out += rng.normal(size=out.shape) * (0.01 * scale[first])[:, None]
    out[seed_rows] = laid
    return out.astype(np.float32)


def _place_from_neighbours(pos: np.ndarray, ind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the NaN rows of pos (n, c) with the mean position of their placed neighbours
    (rows of ind, the kNN graph), pass after pass; rows still unplaced go to the mean."""
    for _ in range(20):
        missing = np.flatnonzero(np.isnan(pos[:, 0]))
        if not len(missing):
            break
        for start in range(0, len(missing), 100_000):
            rows = missing[start : start + 100_000]
            nb = ind[rows, 1:]
            near = pos[np.maximum(nb, 0)]
            ok = (nb >= 0) & ~np.isnan(near[..., 0])
            count = ok.sum(1)
            total = np.where(ok[..., None], near, 0).sum(1)
            placed = count > 0
            pos[rows[placed]] = total[placed] / count[placed, None]
    missing = np.isnan(pos[:, 0])
    pos[missing] = np.nanmean(pos, axis=0)
    spread = np.nanstd(pos, axis=0) * 1e-4  # apart, so that no two rows start on one spot
    return (pos + rng.normal(size=pos.shape) * spread).astype(np.float32)


def layout_rows(n: int, sample: int, seed: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The rows that umap_reduce lays out first above `sample` rows: a random SEED_LAYOUT_ROWS
    of the n, sorted, drawn from `rng` (default: a new one from `seed`)."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(sample, SEED_LAYOUT_ROWS), replace=False))


def seed_graph(x: np.ndarray, neighbors: int, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """knn_graph of the rows that umap_reduce(x, ..., sample, seed) lays out first (x has more
    than `sample` rows), for callers that run it more than once on the same x: exact, and
    the costliest part of a large layout, so it is built once."""
    rows = layout_rows(len(x), sample, seed)
    return knn_graph(np.ascontiguousarray(x[rows], dtype=np.float32), min(neighbors, len(rows) - 1), seed)


def umap_reduce(
    x: np.ndarray,
    n_components: int,
    *,
    neighbors: int,
    min_dist: float,
    sample: int,
    seed: int,
    desc: str,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    seed_knn: tuple[np.ndarray, np.ndarray] | None = None,
    parallel: bool = False,
    refine: bool = True,
) -> np.ndarray:
    """(n, d) -> (n, n_components) float32, seeded; with `parallel`, the layout epochs run on
    every core and are not reproducible (umap-learn runs them in parallel only unseeded).

    Up to `sample` rows UMAP fits on every row, on a FAISS neighbour graph (knn_graph) and
    with LONG_FIT_EPOCHS layout epochs above 10k rows: on MNIST the clusters were far more
    accurate so than from a fit on a sample with the rest transformed, in less time.

    Above `sample` rows, a random SEED_LAYOUT_ROWS of them are laid out first. With `refine`
    (the manifold that the clusters come from), every other row starts at the mean of its
    laid-out neighbours, and UMAP then runs REFINE_EPOCHS epochs over every row on the whole
    graph. Without (the 2-D map), every other row is placed between its nearest laid-out rows
    (_place_between) and nothing is refined: about ten times faster than a full fit at 1M
    points, keeping more of each row's neighbours (BENCHMARKS.md); on the manifold placing cost
    the clusters accuracy, so it refines. Fitting a sample and transforming the rest (umap's
    own way) kept under half of a full fit's neighbours.

    `knn` is knn_graph(x, min(neighbors, n - 1), seed) where the caller has it already (not
    needed above `sample` without `refine`), and `seed_knn` seed_graph(x, neighbors, sample, seed).
    """
    import umap  # slow to import (numba); only the stages that need it pay

    x = np.ascontiguousarray(x, dtype="float32")
    n = len(x)
    k = min(neighbors, n - 1)
    options = dict(
        n_components=n_components,
        n_neighbors=k,
        min_dist=min_dist,
        metric="euclidean",
        random_state=None if parallel else seed,
        low_memory=True,
        verbose=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n <= sample:
            with progress(n, desc) as bar:
                knn = knn if knn is not None else knn_graph(x, k, seed)
                out = umap.UMAP(
                    **options, precomputed_knn=(*knn, None), n_epochs=LONG_FIT_EPOCHS if n > 10_000 else None
                ).fit_transform(x)
                bar.update(n)
            return out.astype(np.float32)
        with progress(n, desc) as bar:
            rng = np.random.default_rng(seed)
            seed_rows = layout_rows(n, sample, seed, rng)
            seed_knn = seed_knn if seed_knn is not None else seed_graph(x, neighbors, sample, seed)
            laid = umap_reduce(
                x[seed_rows],
                n_components,
                neighbors=neighbors,
                min_dist=min_dist,
                sample=len(seed_rows),
                seed=seed,
                desc=desc,
                knn=seed_knn,
                parallel=parallel,
            )
            bar.update(len(seed_rows))
            if not refine:
                out = _place_between(x, seed_rows, laid, seed_knn[0], rng)
                bar.update(n - len(seed_rows))
                return out
            knn = knn if knn is not None else knn_graph(x, k, seed)
            pos = np.full((n, n_components), np.nan, dtype=np.float32)
            pos[seed_rows] = laid
            init = _place_from_neighbours(pos, knn[0], rng)
            out = umap.UMAP(**options, precomputed_knn=(*knn, None), init=init, n_epochs=REFINE_EPOCHS).fit_transform(x)
            bar.update(n - len(seed_rows))
    return out.astype(np.float32)
