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


@compiled(nogil=True, boundscheck=False)
def nearest_columns(scores, offsets, x, centroids, labels, dist):  # pragma: no cover (compiled)
    """For each column i of scores (k, n) + offsets (k,): labels[i] = the row with the smallest
    sum (the first of equals) and dist[i] = |x[i] - centroids[labels[i]]|^2, in float32.

    The minimum runs along rows, 512 columns at a time, so each step compares contiguous
    memory and compiles to vector selects. One thread: assign runs one call per thread, so
    that a block's product and its minimum run on the core that holds the block in cache.
    """
    k, n = scores.shape
    block = 512
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        best = scores[0, lo:hi] + offsets[0]
        lab = np.zeros(hi - lo, np.int32)
        for j in range(1, k):
            row = scores[j, lo:hi]
            off = offsets[j]
            for i in range(hi - lo):
                v = row[i] + off
                lower = v < best[i]
                lab[i] = j if lower else lab[i]
                best[i] = v if lower else best[i]
        for i in range(hi - lo):
            labels[lo + i] = lab[i]
            dist[lo + i] = squared_distance(x[lo + i], centroids[lab[i]])


@compiled(nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
def squared_distance(a, b):  # pragma: no cover (compiled)
    """|a - b|^2 of two float32 vectors, summed in any order (reassoc): so it vectorises, where
    the sum in order is a chain of dependent adds, several times slower."""
    total = np.float32(0.0)
    for d in range(a.shape[0]):
        diff = a[d] - b[d]
        total += diff * diff
    return total
