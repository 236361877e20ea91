"""Similarity search in embedding space with the run's FAISS index (inner product = cosine)."""

from __future__ import annotations

import numpy as np

from ice.errors import IceError

from .data import RunData


def neighbours(data: RunData, image_id: int, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The k images most similar to one image, itself left out: (ids (k,) int64, cosine (k,))."""
    (image_id,) = data.check_ids([image_id])
    query = np.ascontiguousarray(data.embeddings[image_id : image_id + 1], dtype=np.float32)
    scores, ids = data.index.search(query, min(k + 1, data.n))
    keep = (ids[0] != image_id) & (ids[0] >= 0)
    return ids[0][keep][:k].astype(np.int64), scores[0][keep][:k]


WEAK_NEGATIVE = 0.3  # an unmarked image's weight as a negative, against 1 for one marked out
UNMARKED_SAMPLE = 20_000  # unmarked images drawn as weak negatives: the fit stays bounded at any n
C = 0.3  # the inverse regularisation: at 10 marks in, no worse than the mean embedding (BENCHMARKS.md)


def direction(embeddings, positives, negatives=(), seed: int = 0) -> np.ndarray:
    """(d,) float32: the weights of a logistic regression on the embeddings, the images given
    (positives) against those marked out and a seeded draw of the others as weak negatives
    (most images of a collection are not in the group one looks for), the two sides balanced.
    Above UNMARKED_SAMPLE unmarked images, the fit is the one a collection of that size gets,
    so the marks weigh the same in a run of any size.
    Ranking by the inner product with it ranks by the model's odds, so one FAISS search of the
    run's inner-product index ranks all n images."""
    from sklearn.linear_model import LogisticRegression

    n = len(embeddings)
    positives = np.unique(np.asarray(positives, dtype=np.int64))
    negatives = np.setdiff1d(np.asarray(negatives, dtype=np.int64), positives)
    unmarked = np.ones(n, bool)
    unmarked[positives] = unmarked[negatives] = False
    rng = np.random.default_rng(seed)
    weak = np.flatnonzero(unmarked)
    if len(weak) > UNMARKED_SAMPLE:
        weak = np.sort(rng.choice(weak, UNMARKED_SAMPLE, replace=False))
    rows = np.concatenate([positives, negatives, weak])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives) + len(weak))])
    weight = np.concatenate([np.zeros(len(positives)), np.ones(len(negatives)), np.full(len(weak), WEAK_NEGATIVE)])
    if not weight.sum():  # every image given: nothing to tell them from
        return np.asarray(embeddings[positives], dtype=np.float32).mean(axis=0)
    weight[: len(positives)] = weight.sum() / len(positives)
    order = np.argsort(rows, kind="stable")  # a memory map reads sorted rows faster
    x = np.empty((len(rows), embeddings.shape[1]), np.float32)
    x[order] = np.asarray(embeddings[rows[order]], dtype=np.float32)
    model = LogisticRegression(C=C, max_iter=500, random_state=seed)
    model.fit(x, y, sample_weight=weight)
    return model.coef_[0].astype(np.float32)


def rank_like(data: RunData, image_ids, top: int = 200, negatives=()) -> tuple[np.ndarray, np.ndarray]:
    """Rank every image by how like the given ones it is, and unlike the `negatives` (images
    a person marked out): by a linear model of the embeddings learned from them (`direction`);
    return the top.

    The model is one direction in embedding space, so one FAISS inner-product search ranks
    all n images. The given images are ranked too (they usually come first). Returns
    (ids (m,) int64, scores (m,) float32: the inner products), best first.
    """
    ids = data.check_ids(image_ids)
    negatives = data.check_ids(negatives)
    if len(ids) == 0:
        raise IceError("find more like these: select some images first")
    if top < 1:
        raise IceError(f"top {top}: must be at least 1")
    query = direction(data.embeddings, ids, negatives)
    scores, found = data.index.search(np.ascontiguousarray(query[None, :]), min(top, data.n))
    keep = found[0] >= 0
    return found[0][keep].astype(np.int64), scores[0][keep]
