"""FAISS k-means, sklearn-style, and the automatic choice of K."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from ice.errors import IceError

if TYPE_CHECKING:
    from scipy import sparse


def faiss_gpus() -> int:
    """How many GPUs this faiss build can use (0 for faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


KMEANS_SAMPLE_ABOVE = 200_000  # rows; above this, k-means iterates on 256 rows per centroid and
# only assigns the rest: many times faster, for a slightly worse objective (BENCHMARKS.md history)


class KMeans:
    """k-means with FAISS: on a GPU when faiss sees one, else on the CPU.

    fit(x) with x (n, m) float32 sets centroids_ (k, m) float32, labels_ (n,) int32 and
    distances_ (n,) float32, the squared L2 distance of each row to its centroid.
    """

    def __init__(self, n_clusters: int, n_iter: int = 50, n_init: int = 5, seed: int = 0):
        self.n_clusters, self.n_iter, self.n_init, self.seed = n_clusters, n_iter, n_init, seed

    def fit(self, x: np.ndarray) -> "KMeans":
        x = np.ascontiguousarray(x, dtype="float32")
        if self.n_clusters < 2:
            raise IceError(f"--clusters {self.n_clusters}: must be 2 or more")
        if self.n_clusters > len(x):
            raise IceError(f"--clusters {self.n_clusters}: more clusters than the {len(x)} images")
        rng = np.random.default_rng(self.seed)
        train_x = x
        if len(x) > KMEANS_SAMPLE_ABOVE:  # iterate on 256 rows per centroid, then assign every row
            train_x = x[np.sort(rng.choice(len(x), size=min(len(x), 256 * self.n_clusters), replace=False))]
        best, best_obj = None, np.inf
        for restart in range(self.n_init):
            # faiss starts from random rows; k-means++ seeds escape far more bad local minima
            init = kmeans_plus_plus(train_x, self.n_clusters, rng, sample=min(20_000, 500_000 // self.n_clusters))
            # min_points_per_centroid=1: faiss prints a warning to stderr for fewer than 39 rows a
            # centroid, once per restart and K tried (choose_k on 364 images printed 39 lines)
            km = faiss.Kmeans(
                x.shape[1],
                self.n_clusters,
                niter=self.n_iter,
                seed=(self.seed + restart) % 2**31,
                gpu=faiss_gpus() > 0,
                verbose=False,
                min_points_per_centroid=1,
                max_points_per_centroid=len(train_x) // self.n_clusters + 1,
            )
            with _direct_distances(self.n_clusters):
                km.train(train_x, init_centroids=init)
            if km.obj[-1] < best_obj:
                best, best_obj = km, km.obj[-1]
        self.centroids_ = best.centroids.astype(np.float32)
        self.distances_, self.labels_ = assign(x, self.centroids_)
        return self


_BLAS_SETTING = threading.Lock()


@contextlib.contextmanager
def _direct_distances(k: int):
    """Inside the block, faiss computes distances to the k centroids directly rather than
    through a BLAS matrix product, where that measured faster: k <= 20, whatever the width
    (whole fits timed both ways over widths, K and sizes; BENCHMARKS.md history, 2026-11-30).

    The threshold is one global of faiss's, so the lock keeps two threads from restoring each
    other's values; it changes speed, never results.
    """
    if k > 20:
        yield
        return
    with _BLAS_SETTING:
        before = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 2**30
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = before


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, sample: int = 20_000) -> np.ndarray:
    """Greedy k-means++ seeds (k, d) float32, drawn from a sample of at most `sample` rows.

    Distances to the candidate seeds come from one matrix product per step
    (|x|^2 + |c|^2 - 2 c.x), far faster than broadcasting. The candidates' distances are rows,
    not columns, which is faster to reduce, and numpy's BLAS runs on one thread: after a
    product on two threads OpenBLAS's idle thread spins, and took a core from the faiss
    training that follows (BENCHMARKS.md history).
    """
    if len(x) > sample:
        x = x[np.sort(rng.choice(len(x), size=sample, replace=False))]
    x = np.ascontiguousarray(x, dtype=np.float32)
    x_t = np.ascontiguousarray(x.T)
    norms = np.einsum("ij,ij->i", x, x)
    trials = 2 + int(np.log(k))
    first = int(rng.integers(len(x)))
    centres = [first]
    with threadpool_limits(1, user_api="blas"):
        d2 = np.maximum(norms + norms[first] - 2 * (x[first] @ x_t), 0)
        for _ in range(1, k):
            total = float(d2.sum())
            if total > 0:  # what rng.choice(len(x), trials, p=d2 / total) draws, without its checks
                cdf = (d2 / total).astype(np.float64).cumsum()
                cdf /= cdf[-1]
                cand = cdf.searchsorted(rng.random(trials), side="right")
            else:
                cand = rng.integers(len(x), size=trials)
            cand_d2 = np.minimum(d2, np.maximum(norms + norms[cand, None] - 2 * (x[cand] @ x_t), 0))
            pick = int(np.argmin(cand_d2.sum(1)))
            centres.append(int(cand[pick]))
            d2 = cand_d2[pick]
    return x[centres].copy()


ASSIGN_SCORES = 1 << 19  # scores in one block of assign (2 MiB): at K=100, 5,243 rows


def assign(
    x: np.ndarray, centroids: np.ndarray, chunk: int | None = None, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(squared L2 distance to the nearest centroid (n,) float32, its index (n,) int32).

    Block by block (`chunk` rows, by default ASSIGN_SCORES scores a block): one matrix product
    gives the scores |x-c|^2 - |x|^2 = |c|^2 - 2c.x as a (k, chunk) block, then a compiled
    kernel (_kernels.nearest_columns) takes each column's minimum and measures the distance to
    that centroid directly (the expanded form cancels badly near a centroid).

    `threads` (default: faiss's OpenMP count, the cores) each take the next block and run both
    its product (numpy's BLAS, on one thread) and its kernel: the block stays in the cache of
    the core that made it, and the threads meet once per call (before, torch's product and the
    kernel each woke every core, twice a block, which cost most on the AMD EPYC).

    The scores are those of the centroids moved by their mean m (|c-m|^2 - 2(c-m).(x-m), the
    same ranking): in float32 the plain form loses the nearest centroid when the points sit
    far from the origin (at an offset of 100, 4,250 of 200k rows took the wrong one; moved,
    none did).
    """
    from ._kernels import nearest_columns

    c = np.ascontiguousarray(centroids, dtype=np.float32)
    mean = c.astype(np.float64).mean(0)
    moved = c - mean
    c_norms = ((moved * moved).sum(1) + 2 * moved @ mean).astype(np.float32)
    minus_2c = np.ascontiguousarray(-2 * moved, dtype=np.float32)
    labels, dist = np.empty(len(x), dtype=np.int32), np.empty(len(x), dtype=np.float32)
    chunk = chunk or max(256, ASSIGN_SCORES // len(c))
    starts = iter(range(0, len(x), chunk))  # shared: each thread takes the next block

    def work() -> None:
        scores = np.empty((len(c), chunk), dtype=np.float32)
        for start in starts:
            xb = x[start : start + chunk]
            if not (xb.dtype == np.float32 and xb.flags.c_contiguous and xb.flags.writeable):
                xb = np.array(xb, dtype=np.float32, order="C")  # a copy: x may be a read-only memmap
            out = scores if len(xb) == chunk else np.empty((len(c), len(xb)), dtype=np.float32)
            np.matmul(minus_2c, xb.T, out=out)
            nearest_columns(out, c_norms, xb, c, labels[start : start + len(xb)], dist[start : start + len(xb)])

    threads = min(threads or faiss.omp_get_max_threads(), -(-len(x) // chunk))
    with threadpool_limits(1, user_api="blas"):  # one BLAS thread per thread of ours
        if threads <= 1:
            work()
        else:
            with ThreadPoolExecutor(threads) as pool:
                for done in [pool.submit(work) for _ in range(threads)]:
                    done.result()
    return dist, labels


class GaussianMixture:
    """A full-covariance Gaussian mixture over x (n, m), fitted on at most `sample` rows.

    k-means cuts elongated groups in two and merges round neighbours; on a UMAP manifold
    the mixture follows each group's shape (N2D's choice). fit(x) sets centroids_ (the
    means), labels_ and distances_ (squared L2 to the assigned mean), like KMeans.

    With `score` (a function of the labels of all rows, higher is better), each of the n_init
    fits labels every row and the one that scores highest is kept; without it, sklearn keeps
    the fit with the highest likelihood.
    """

    def __init__(
        self,
        n_components: int,
        n_init: int = 5,
        seed: int = 0,
        sample: int = 100_000,
        score: Callable[[np.ndarray], float] | None = None,
    ):
        self.n_components, self.n_init, self.seed, self.sample = n_components, n_init, seed, sample
        self.score = score

    def fit(self, x: np.ndarray) -> "GaussianMixture":
        from sklearn.mixture import GaussianMixture as SkGMM

        x = np.ascontiguousarray(x, dtype="float32")
        rng = np.random.default_rng(self.seed)
        fit_rows = x if len(x) <= self.sample else x[np.sort(rng.choice(len(x), self.sample, replace=False))]

        def fitted(n_init: int, seed: int):
            gmm = SkGMM(
                self.n_components,
                covariance_type="full",
                n_init=n_init,
                max_iter=200,
                reg_covar=1e-4,
                random_state=seed,
            ).fit(fit_rows)
            return gmm, np.concatenate([gmm.predict(x[i : i + 200_000]) for i in range(0, len(x), 200_000)])

        if self.score is None:
            gmm, labels = fitted(self.n_init, self.seed)
        else:  # one start at a time, keeping the best: at 1M rows each start's labels take 8 MB
            self.scores_, best = [], None
            for i in range(self.n_init):
                gmm, labels = fitted(1, self.seed + i)
                self.scores_.append(float(self.score(labels)))
                if best is None or self.scores_[-1] > max(self.scores_[:-1]):
                    best = gmm, labels
            gmm, labels = best
        used, self.labels_ = np.unique(labels, return_inverse=True)  # a component may win no row
        self.labels_ = self.labels_.astype(np.int32)
        self.centroids_ = gmm.means_[used].astype(np.float32)
        diff = x - self.centroids_[self.labels_]
        self.distances_ = (diff * diff).sum(1).astype(np.float32)
        return self


def fit_clusters(
    x: np.ndarray,
    k: int,
    refine: str,
    starts: int,
    kmeans_iters: int,
    seed: int,
    *,
    neighbours: np.ndarray | None = None,
    pick: str = "graph",
    graph_rounds: int = 0,
):
    """The batch job's clustering of x (n, m) into k: the Gaussian mixture (which seeds itself
    with k-means) when `refine` is "gmm" and there are more than 2k rows, else k-means. The
    job and the explorer's re-clustering both call this; returns the fitted model (centroids_,
    labels_, distances_). Given the rows' neighbours (n, j): with pick "graph" the mixture's
    `starts` fits are judged by their clusters' modularity on that graph (graph_modularity),
    not by likelihood; then, with graph_rounds, the rows move along the graph to a local peak
    of the clusters' modularity (climb_modularity)."""
    if refine == "gmm" and len(x) > 2 * k:

        def modularity(labels: np.ndarray) -> float:
            return graph_modularity(labels, neighbours)

        judged = modularity if pick == "graph" and neighbours is not None else None
        fitted = GaussianMixture(k, starts, seed, score=judged).fit(x)
        if neighbours is not None and graph_rounds > 0:
            fitted.labels_ = climb_modularity(fitted.labels_, neighbours, graph_rounds)
            fitted.labels_ = np.unique(fitted.labels_, return_inverse=True)[1].astype(np.int32)
            fitted.centroids_, fitted.distances_ = centres_and_distances(x, fitted.labels_)
        return fitted
    return KMeans(k, kmeans_iters, starts, seed).fit(x)


def is_link(targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which entries `targets` of a neighbour graph, listed for `rows`, are links (bool, same
    shape): not the row itself (a search returns each row among its own neighbours), and not the
    -1 an approximate graph pads with where it found fewer. The graph steps all count links so."""
    return (targets != rows) & (targets >= 0)


def cluster_links(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(m, m) float64: how many links of the neighbour graph (n, j) (each row's j nearest rows;
    is_link) go from a row of cluster a to a row of cluster b, for labels (n,) 0..m-1. Counted a
    column at a time: at 1M rows, no (n, j) temporaries."""
    labels = np.asarray(labels, dtype=np.int64)
    rows, m = np.arange(len(labels)), int(labels.max()) + 1
    links = np.zeros(m * m)
    for column in neighbours.T:
        link = is_link(column, rows)
        links += np.bincount(labels[link] * m + labels[column[link]], minlength=m * m)
    return links.reshape(m, m)


def graph_modularity(labels: np.ndarray, neighbours: np.ndarray) -> float:
    """Modularity of the clusters `labels` (n,) on the directed neighbour graph (n, j)
    (cluster_links): the share of links that stay inside a cluster, less the share expected if
    links ignored the clusters (for each cluster, its share of links out times its share of
    links in; Leicht and Newman's directed form).

    Why: on a UMAP manifold the mixture's likelihood did not tell its better fits from its
    worse, while the graph of the embeddings themselves, which the manifold only
    approximates, did (BENCHMARKS.md history, 2026-11-30)."""
    share = cluster_links(labels, neighbours)
    share /= share.sum()
    return float(np.trace(share) - share.sum(1) @ share.sum(0))


def climb_modularity(labels: np.ndarray, neighbours: np.ndarray, rounds: int = 20, chunk: int = 200_000) -> np.ndarray:
    """Labels (n,) 0..m-1 moved along the neighbour graph (n, j; is_link) to a local peak of its
    modularity (graph_modularity), at most `rounds` rounds; int32, the same m labels. In each
    round every row that would raise the modularity by joining another cluster linked to it
    (Louvain's move, with the number of clusters fixed) joins the best such cluster, all at
    once; a round that does not raise the modularity of the whole is undone and ends the climb.
    Rows are weighed `chunk` at a time, to bound the memory at 1M rows.

    Why: the mixture is fitted on the UMAP manifold, which only approximates the graph; moving
    its rows along the graph raised accuracy on the contrastive embeddings (BENCHMARKS.md
    history, 2026-11-30)."""
    from scipy import sparse  # here, as sklearn below: the job's process holds neither before its fits

    labels = np.asarray(labels, dtype=np.int64).copy()
    n, j = neighbours.shape
    m = int(labels.max()) + 1
    cols = np.asarray(neighbours, dtype=np.int64).ravel()
    link = is_link(cols, np.repeat(np.arange(n), j))
    out = sparse.csr_matrix(
        (link.astype(np.float32), np.where(link, cols, 0), np.arange(0, n * j + 1, j)), shape=(n, n)
    )
    out.eliminate_zeros()
    del cols, link
    edges = out.nnz
    if edges == 0 or m < 2:
        return labels.astype(np.int32)
    k_out, k_in = np.diff(out.indptr), np.bincount(out.indices, minlength=n)
    both = (out + out.T).tocsr()  # a row's links to others and theirs to it; a pair naming each other counts 2
    del out
    best = graph_modularity(labels, neighbours)
    for _ in range(rounds):
        v_out = np.bincount(labels, weights=k_out, minlength=m)
        v_in = np.bincount(labels, weights=k_in, minlength=m)
        onehot = sparse.csr_matrix((np.ones(n, np.float32), (np.arange(n), labels)), shape=(n, m))
        moved = labels.copy()
        for lo in range(0, n, chunk):
            rows = slice(lo, min(lo + chunk, n))
            moved[rows] = _best_moves(both[rows] @ onehot, labels[rows], k_out[rows], k_in[rows], v_out, v_in, edges)
        if (moved == labels).all():
            break
        score = graph_modularity(moved, neighbours)
        if score <= best:
            break
        labels, best = moved, score
    return labels.astype(np.int32)


def _best_moves(
    per: sparse.csr_matrix,
    labels: np.ndarray,
    k_out: np.ndarray,
    k_in: np.ndarray,
    v_out: np.ndarray,
    v_in: np.ndarray,
    edges: int,
) -> np.ndarray:
    """For rows with links `per` (r, m) to each cluster (both ways) and these labels (r,), the
    cluster each would join alone (its own where no other raises the modularity)."""
    r = np.repeat(np.arange(len(labels)), np.diff(per.indptr))
    c = per.indices
    own = c == labels[r]
    # the modularity, times the number of links, of row r in cluster c, the others as they are
    gain = per.data - (k_out[r] * (v_in[c] - own * k_in[r]) + k_in[r] * (v_out[c] - own * k_out[r])) / edges
    stay = -(k_out * (v_in[labels] - k_in) + k_in * (v_out[labels] - k_out)) / edges
    stay[r[own]] = gain[own]
    gain[own] = -np.inf
    filled = np.flatnonzero(np.diff(per.indptr))
    top = np.full(len(labels), -np.inf)
    top[filled] = np.maximum.reduceat(gain, per.indptr[filled])
    at_top = np.flatnonzero((top > stay + 1e-9)[r] & (gain == top[r]))
    first = at_top[np.unique(r[at_top], return_index=True)[1]]  # one cluster per moving row
    moved = labels.copy()
    moved[r[first]] = c[first]
    return moved


def centres_and_distances(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's mean in x (k, m) float32 and each row's squared L2 distance from its own
    (n,) float32, for labels 0..k-1 that all occur."""
    k = int(labels.max()) + 1
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    centres = (sums / np.bincount(labels, minlength=k)[:, None]).astype(np.float32)
    diff = x - centres[labels]
    return centres, (diff * diff).sum(1).astype(np.float32)


def candidate_ks(n: int) -> list[int]:
    """The K values the automatic choice tries: 5 (or 2 for tiny sets) up to sqrt(n/2), at most 50."""
    hi = int(min(50, max(2, np.sqrt(n / 2))))
    lo = min(5, hi)
    return list(range(max(2, lo), hi + 1))


def choose_k(x: np.ndarray, seed: int = 0, sample: int = 5000) -> tuple[int, dict[int, float]]:
    """The K in candidate_ks(n) whose k-means has the highest silhouette on a sample of x.

    The sample's distances are computed once for every K (100 MB at 5,000 rows): the same
    scores as silhouette_score on the rows, without computing them again for each K.
    """
    from sklearn.metrics import pairwise_distances, silhouette_score

    x = np.ascontiguousarray(x, dtype="float32")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    distances = pairwise_distances(x[pick])
    scores = {}
    for k in candidate_ks(len(x)):
        labels = KMeans(k, n_iter=25, n_init=3, seed=seed).fit(x).labels_[pick]
        if not 2 <= len(np.unique(labels)) < len(pick):  # the silhouette needs 2 to n - 1 labels
            continue
        scores[k] = float(silhouette_score(distances, labels, metric="precomputed"))
    if not scores:
        return 2, scores
    return max(scores, key=lambda k: (round(scores[k], 3), -k)), scores


EXACT_INDEX_MAX = 250_000  # above this many images the index is IVF (approximate, far faster)
# above this many the index keeps 32-byte product-quantized codes instead of the rows (256 bytes
# at 64 dimensions), as autofaiss chooses where the rows no longer fit in memory
PQ_INDEX_MIN = 10_000_000
INDEX_PROBES = 64  # lists an IVF index searches per query


def ivf_lists(n: int) -> int:
    """The IVF list count for n vectors, as autofaiss (criteo/autofaiss,
    get_optimal_nb_clusters) picks it: about 4 sqrt(n), a power of two, below 1M; then fixed
    counts that grow with n."""
    if n < 1_000_000:
        return int(2 ** round(np.log2(4 * np.sqrt(n))))
    return 16_384 if n < 10_000_000 else 65_536 if n < 300_000_000 else 131_072


def pq_index_key(n: int, d: int, lists: int | None = None) -> str:
    """The faiss index_factory key of the product-quantized index for n vectors of d dimensions,
    as autofaiss builds one: an OPQ rotation into a few more dimensions than d, IVF lists
    (found through an HNSW graph from 1,000 lists), and codes of m bytes (32 where d >= 64).
    `lists` replaces ivf_lists(n)'s count."""
    m = next((m for m in (32, 16, 8, 4) if m < d), 2)
    y = (min(d // m, 6) + 1) * m
    lists = lists or ivf_lists(n)
    return f"OPQ{m}_{y},IVF{lists}{'_HNSW32' if lists >= 1000 else ''},PQ{m}x8"


TWO_LEVEL_MIN = 8192  # IVF lists from which their centres are found by two_level_centres


def two_level_centres(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(k, d) float32 unit-length centres of the rows x (unit length): spherical k-means into
    about sqrt(k) groups, then each group into its share of the k, as faiss's
    contrib.clustering.two_level_clustering does for indexes of many lists. One k-means over
    all k reads every row against every centre each iteration; this reads it against sqrt(k)
    of them, at about the same search recall (BENCHMARKS.md, index_bench)."""
    n, d = x.shape
    k1 = max(1, min(int(round(np.sqrt(k))), n))
    top = faiss.Kmeans(d, k1, niter=20, spherical=True, seed=seed, max_points_per_centroid=2000)
    top.train(x)
    group = top.index.search(x, 1)[1][:, 0]
    sizes = np.bincount(group, minlength=k1)
    # each group's share of the k centres, in proportion to its rows, at least one where it has any
    share = np.where(sizes > 0, np.maximum(1, sizes * k // n), 0)
    while share.sum() > k:
        share[np.argmax(share)] -= 1
    while share.sum() < k:
        share[np.argmax(sizes / np.maximum(share, 1))] += 1
    share = np.minimum(share, sizes)  # never more centres than rows
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    centres = []
    for g in np.flatnonzero(share):
        rows = x[order[starts[g] : starts[g + 1]]]
        if share[g] == len(rows):
            centres.append(rows)
            continue
        km = faiss.Kmeans(d, int(share[g]), niter=20, spherical=True, seed=seed + int(g), min_points_per_centroid=1)
        km.train(np.ascontiguousarray(rows))
        centres.append(km.centroids)
    out = np.vstack(centres).astype(np.float32)
    if len(out) < k:  # some groups had fewer rows than their share: the rest are rows drawn at random
        out = np.vstack([out, x[np.random.default_rng(seed).choice(n, k - len(out), replace=False)]])
    return np.ascontiguousarray(out[:k])


def train_ivf(index: faiss.Index, x: np.ndarray, seed: int = 0, two_level_from: int = TWO_LEVEL_MIN) -> None:
    """Train an IVF index (or an OPQ + IVF-PQ one) on the rows x. From `two_level_from` lists
    the lists' centres come from two_level_centres, and then only the rest is trained (the OPQ
    rotation, the PQ codes); below, faiss trains it all."""
    ivf = faiss.extract_index_ivf(index)
    if ivf.nlist < two_level_from:
        index.train(x)
        return
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):  # the rotation first: the lists live in its space
        for i in range(outer.chain.size()):
            step = outer.chain.at(i)
            step.train(x)
            x = step.apply(x)
    ivf.quantizer.add(two_level_centres(x, ivf.nlist, seed))
    ivf.train(x)  # its quantizer holds its nlist centres already: only the codes are trained
    index.is_trained = True


def build_index(embeddings: np.ndarray, seed: int = 0) -> faiss.Index:
    """Inner-product index over L2-normalised rows: scores are cosine similarities.

    Exact (IndexFlatIP) up to EXACT_INDEX_MAX rows. Above, an IndexIVFFlat with about
    4 sqrt(n) lists, searching 64 of them: a query then reads about 1% of the rows instead of
    all of them. Above PQ_INDEX_MIN, pq_index_key's OPQ + IVF-PQ index. The IVF kinds are
    trained on a seeded sample of 64 rows per list; `embeddings` may be a memory map, read a
    chunk at a time.
    """
    n, d = embeddings.shape
    if n <= EXACT_INDEX_MAX:
        index = faiss.IndexFlatIP(d)
    else:
        if n > PQ_INDEX_MIN:
            index = faiss.index_factory(d, pq_index_key(n, d), faiss.METRIC_INNER_PRODUCT)
            lists = faiss.extract_index_ivf(index).nlist
        else:
            lists = int(4 * np.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size=min(n, 64 * lists), replace=False))
        train_ivf(index, np.ascontiguousarray(embeddings[rows], dtype="float32"), seed)
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", INDEX_PROBES)
        if n > PQ_INDEX_MIN and lists >= 1000:
            faiss.ParameterSpace().set_index_parameter(index, "quantizer_efSearch", 2 * INDEX_PROBES)
    for start in range(0, n, 262_144):
        index.add(np.ascontiguousarray(embeddings[start : start + 262_144], dtype="float32"))
    return index


def cluster_metrics(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Accuracy after Hungarian matching of clusters to labels, NMI and ARI."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    k = int(clusters.max()) + 1
    table = np.zeros((k, len(classes)), dtype=np.int64)
    np.add.at(table, (clusters, y), 1)
    rows, cols = linear_sum_assignment(-table)
    return {
        "accuracy": float(table[rows, cols].sum() / len(y)),
        "nmi": float(normalized_mutual_info_score(y, clusters)),
        "ari": float(adjusted_rand_score(y, clusters)),
    }
