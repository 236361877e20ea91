"""Compiled (numba) loops for the arithmetic that numpy would do in several passes.

numba comes with umap-learn, which the batch job needs anyway. Each kernel is compiled on
its first call (about 2 s) and cached beside this file, or in numba's user cache where this
folder cannot be written, or in the folder `embeddings/__init__.py` makes under /tmp where
neither can be; where even that fails, it is compiled again in each process.
"""

from __future__ import annotations

import numba
import numpy as np


def compiled(**options):
    """numba.njit(cache=True, **options), or without the cache where numba finds no folder
    that it can write (a read-only install with no writable home): it refuses at definition."""
    def wrap(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(fn)
    return wrap


@compiled(parallel=True, boundscheck=False)
def nearest_columns(scores, x, centroids, labels, dist):  # pragma: no cover (compiled)
    """For each column i of scores (k, n): labels[i] = the row with the smallest score (the
    first of equals) and dist[i] = |x[i] - centroids[labels[i]]|^2, in float32.

    The minimum runs along rows, 512 columns at a time, so each step compares contiguous
    memory and compiles to vector selects; the blocks are shared between threads.
    """
    k, n = scores.shape
    block = 512
    for b in numba.prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        best = scores[0, lo:hi].copy()
        lab = np.zeros(hi - lo, np.int32)
        for j in range(1, k):
            row = scores[j, lo:hi]
            for i in range(hi - lo):
                v = row[i]
                lower = v < best[i]
                lab[i] = j if lower else lab[i]
                best[i] = v if lower else best[i]
        for i in range(hi - lo):
            nearest = lab[i]
            total = np.float32(0.0)
            for d in range(x.shape[1]):
                diff = x[lo + i, d] - centroids[nearest, d]
                total += diff * diff
            labels[lo + i] = nearest
            dist[lo + i] = total
