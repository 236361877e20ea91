"""Similarity search: an image's neighbours in embedding space with the run's FAISS index
(inner product = cosine), and "More like these", learned from a person's marks (ice.likeness)."""

from __future__ import annotations

import numpy as np

from ice.errors import IceError
from ice import likeness, search_index
from ice.likeness import direction

from .data import RunData

# Above EXACT_LIMIT images, "More like these" scores a candidate set instead of every image
# (10M rows of embeddings and manifold are 3 GB to read per click): `candidates`, CANDIDATES
# from the index and as many from a scan of the manifold.
EXACT_LIMIT = 1_000_000
CANDIDATES = 50_000


def neighbours(data: RunData, image_id: int, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The k images most similar to one image, itself left out: (ids (k,) int64, cosine (k,))."""
    (image_id,) = data.check_ids([image_id])
    query = np.ascontiguousarray(data.embeddings[image_id : image_id + 1], dtype=np.float32)
    scores, ids = search_index.search(data.index, data.embeddings, query, min(k + 1, data.n))
    keep = (ids[0] != image_id) & (ids[0] >= 0)
    return ids[0][keep][:k].astype(np.int64), scores[0][keep][:k]


def like_scores(data: RunData, positives, negatives=(), ids=None, probability: bool = False) -> np.ndarray:
    """How like `positives` and unlike `negatives` each image of `ids` (default: every image)
    is: (len(ids),) float32, higher more like, by a logistic regression on the run's features
    (ice.likeness): the inner products with its weights, or with `probability` its
    probabilities."""
    model = likeness.fit(data.embeddings, data.manifold, positives, negatives)
    return likeness.apply(model, data.embeddings, data.manifold, ids, probability)


def rank_like(data: RunData, image_ids, top: int = 200, negatives=()) -> tuple[np.ndarray, np.ndarray]:
    """Rank every image by how like the given ones it is, and unlike the `negatives` (images
    a person marked out): by a linear model learned from them (`direction`) on the run's
    `Features` (where the run has no manifold, on its embeddings alone, which one FAISS
    inner-product search ranks; above EXACT_LIMIT images, the `candidates` only); return the top.

    The given images are ranked too (they usually come first). Returns (ids (m,) int64,
    scores (m,) float32), best first.
    """
    ids = data.check_ids(image_ids)
    negatives = data.check_ids(negatives)
    if len(ids) == 0:
        raise IceError("find more like these: select some images first")
    if top < 1:
        raise IceError(f"top {top}: must be at least 1")
    top = min(top, data.n)
    if data.manifold is not None:
        model = likeness.fit(data.embeddings, data.manifold, ids, negatives)
        pool = None if data.n <= EXACT_LIMIT else candidates(data, model, ids, max(CANDIDATES, 2 * top))
        scores = likeness.apply(model, data.embeddings, data.manifold, pool, probability=False)
        top = min(top, len(scores))
        best = np.argpartition(-scores, top - 1)[:top] if top < len(scores) else np.arange(len(scores))
        found = best if pool is None else pool[best]
        order = np.lexsort((found, -scores[best]))
        return found[order].astype(np.int64), scores[best][order]
    query = direction(data.embeddings, ids, negatives)
    scores, found = search_index.search(data.index, data.embeddings, query[None, :], top)
    keep = found[0] >= 0
    return found[0][keep].astype(np.int64), scores[0][keep]


def candidates(data: RunData, model: dict, given: np.ndarray, k: int) -> np.ndarray:
    """The images worth scoring with `model` in a large run (sorted ids, int64): the k that the
    run's index ranks first by the model's weights on the embeddings, the k whose manifold
    coordinates score highest by its weights on them (a scan of the manifold, about a seventh of
    what scoring every image reads), and `given`. The score is the sum of the two parts, so an
    image that neither part ranks high seldom makes the top."""
    d = data.embeddings.shape[1]
    k = min(k, data.n)
    w = np.asarray(model["w"], dtype=np.float32)
    _, found = data.index.search(np.ascontiguousarray(w[None, :d]), k)
    pool = [found[0][found[0] >= 0], np.asarray(given, dtype=np.int64)]
    if model["mean"] is not None and data.manifold is not None:
        x = likeness.Features(np.zeros((data.n, 0), np.float32), data.manifold, model["mean"], model["scale"])
        part = likeness.scores(x, w[d:])
        pool.append(np.argpartition(-part, k - 1)[:k] if k < data.n else np.arange(data.n))
    return np.unique(np.concatenate(pool)).astype(np.int64)
