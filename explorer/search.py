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


def rank_like(data: RunData, image_ids, top: int = 200, negatives=()) -> tuple[np.ndarray, np.ndarray]:
    """Rank every image by its mean cosine similarity to the given ones, less its mean cosine
    to the `negatives` (images a person marked out); return the top.

    The mean of the cosines to a set equals the inner product with the set's mean
    embedding, so one FAISS search ranks all n images. The given images are ranked too
    (they usually come first). Returns (ids (m,) int64, scores (m,) float32), best first.
    """
    ids = data.check_ids(image_ids)
    negatives = data.check_ids(negatives)
    if len(ids) == 0:
        raise IceError("find more like these: select some images first")
    if top < 1:
        raise IceError(f"top {top}: must be at least 1")
    query = np.asarray(data.embeddings[np.sort(np.unique(ids))], dtype=np.float32).mean(axis=0)
    if len(negatives):
        query -= np.asarray(data.embeddings[np.sort(np.unique(negatives))], dtype=np.float32).mean(axis=0)
    scores, found = data.index.search(np.ascontiguousarray(query[None, :]), min(top, data.n))
    keep = found[0] >= 0
    return found[0][keep].astype(np.int64), scores[0][keep]
