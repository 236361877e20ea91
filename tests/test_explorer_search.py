"""Neighbours and "find more like these", checked against brute force in numpy."""

import numpy as np
import pytest

from explorer.data import load_run
from explorer.search import neighbours, rank_like
from ice.errors import IceError


@pytest.fixture(scope="module")
def data(small_run):
    return load_run(small_run, read_only=True)


def test_neighbours_are_the_most_similar_others(data):
    emb = np.asarray(data.embeddings)
    ids, scores = neighbours(data, 7, k=5)
    assert 7 not in ids and len(ids) == 5
    cos = emb @ emb[7]
    cos[7] = -np.inf
    assert np.allclose(scores, np.sort(cos)[::-1][:5], atol=1e-5)
    assert np.allclose(cos[ids], scores, atol=1e-5)


def test_rank_like_orders_by_mean_similarity(data):
    emb = np.asarray(data.embeddings)
    chosen = [3, 40, 41]
    ids, scores = rank_like(data, chosen, top=30)
    mean_cos = (emb @ emb[chosen].T).mean(axis=1)
    assert np.allclose(scores, mean_cos[ids], atol=1e-5)
    assert np.all(np.diff(scores) <= 1e-6)
    assert np.isclose(scores[0], mean_cos.max(), atol=1e-5)
    assert len(ids) == 30 and len(set(ids.tolist())) == 30


def test_rank_like_caps_top_at_the_run(data):
    ids, _ = rank_like(data, [0], top=10_000)
    assert sorted(ids.tolist()) == list(range(data.n))


def test_rank_like_needs_images(data):
    with pytest.raises(IceError, match="select some images"):
        rank_like(data, [], top=5)
    with pytest.raises(IceError, match="image_id 999"):
        rank_like(data, [999], top=5)
    with pytest.raises(IceError, match="top 0"):
        rank_like(data, [1], top=0)
