"""UMAP: the 2-D map, and the low-dimensional manifold that k-means can run on (N2D)."""

from __future__ import annotations

import warnings

import numpy as np
from .progress import progress


def umap_reduce(x: np.ndarray, n_components: int, neighbors: int, min_dist: float,
                sample: int, seed: int, desc: str) -> np.ndarray:
    """(n, d) -> (n, n_components) float32, seeded.

    Above `sample` rows, UMAP fits on a random sample of that size and transforms the
    rest in chunks: the fit is the expensive part, and it grows faster than linearly.
    """
    import umap  # slow to import (numba); only the stages that need it pay

    x = np.ascontiguousarray(x, dtype="float32")
    n = len(x)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(neighbors, n - 1), min_dist=min_dist,
                        metric="euclidean", random_state=seed, low_memory=True, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n <= sample:
            with progress(n, desc) as bar:
                out = reducer.fit_transform(x)
                bar.update(n)
            return out.astype(np.float32)
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(n, size=sample, replace=False))
        out = np.empty((n, n_components), dtype=np.float32)
        with progress(n, desc) as bar:
            out[fit_rows] = reducer.fit_transform(x[fit_rows])
            bar.update(sample)
            rest = np.setdiff1d(np.arange(n), fit_rows)
            for start in range(0, len(rest), 50_000):
                rows = rest[start:start + 50_000]
                out[rows] = reducer.transform(x[rows])
                bar.update(len(rows))
    return out
