"""Neighbours and "find more like these", checked against brute force in numpy."""

import numpy as np
import pytest

from explorer.data import load_run
from explorer import search
from explorer.search import like_scores, neighbours, rank_like
from ice.likeness import C, MANIFOLD_WEIGHT, WEAK_NEGATIVE, Features, direction, manifold_scaling
from ice.errors import IceError
from ice.run_dir import read_items


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


def features_of(data):
    if data.manifold is None:
        return Features(data.embeddings)
    return Features(data.embeddings, data.manifold, *manifold_scaling(data.manifold))


def logistic_odds(emb, positives, negatives):
    """A logistic regression fitted directly with scikit-learn, as `direction` describes it:
    every unmarked image a weak negative (the run is under the sample size)."""
    from sklearn.linear_model import LogisticRegression

    y = np.zeros(len(emb))
    y[positives] = 1
    weight = np.full(len(emb), WEAK_NEGATIVE)
    weight[negatives] = 1.0
    weight[positives] = weight[y == 0].sum() / len(positives)
    model = LogisticRegression(C=C, max_iter=500, random_state=0)
    return model.fit(emb, y, sample_weight=weight).decision_function(emb)


def test_features_are_the_embeddings_then_the_standardised_manifold(data):
    raw = np.load(data.run_dir / "manifold.npy")
    x = features_of(data)
    assert x.shape == (data.n, data.embeddings.shape[1] + raw.shape[1])
    rows = np.array([0, 7, 250])
    got = x[rows]
    assert np.allclose(got[:, : data.embeddings.shape[1]], np.asarray(data.embeddings)[rows])
    standard = (raw - raw.mean(0)) / raw.std(0)
    assert np.allclose(got[:, data.embeddings.shape[1] :], MANIFOLD_WEIGHT * standard[rows], atol=1e-4)


@pytest.mark.parametrize("manifold", [True, False], ids=["with-manifold", "embeddings-only"])
def test_rank_like_orders_by_the_learned_odds(data, manifold):
    if not manifold:  # a run without manifold.npy: the embeddings alone, through the FAISS index
        data = load_run(data.run_dir, read_only=True)
        data.__dict__["manifold"] = None
    x = features_of(data)
    feats = x[np.arange(data.n)]
    chosen, out = [3, 40, 41], [5, 6]
    ids, scores = rank_like(data, chosen, top=30, negatives=out)
    w = direction(x, chosen, out)
    assert np.allclose(scores, feats[ids] @ w, atol=1e-4)
    assert np.all(np.diff(scores) <= 1e-6)
    assert np.isclose(scores[0], (feats @ w).max(), atol=1e-4)
    assert len(ids) == 30 and len(set(ids.tolist())) == 30
    # the same order as scikit-learn's own fit on every row, up to ties at float32
    odds = logistic_odds(feats, chosen, out)
    assert np.corrcoef(odds, feats @ w)[0, 1] > 0.9999
    assert len(set(ids[:20].tolist()) & set(np.argsort(-odds)[:20].tolist())) >= 19


def test_rank_like_in_a_large_run_scores_a_candidate_set(data, monkeypatch):
    """Above EXACT_LIMIT images, the model scores a candidate set (the index's first by its
    embedding weights, the manifold's first by its manifold weights, the images given), not
    every image: the same model's scores, and nearly the same top as scoring every image."""
    chosen, out = [3, 40, 41], [5, 6]
    exact_ids, _ = rank_like(data, chosen, top=30, negatives=out)
    monkeypatch.setattr(search, "EXACT_LIMIT", 0)
    monkeypatch.setattr(search, "CANDIDATES", data.n // 3)
    ids, scores = rank_like(data, chosen, top=30, negatives=out)
    assert np.allclose(scores, like_scores(data, chosen, out, ids), atol=1e-5)
    assert np.all(np.diff(scores) <= 1e-6)
    assert len(set(ids.tolist()) & set(exact_ids.tolist())) >= 27
    model = search.likeness.fit(data.embeddings, data.manifold, chosen, out)
    pool = search.candidates(data, model, np.array(chosen), data.n // 3)
    assert set(chosen) <= set(pool.tolist()) and len(pool) < data.n
    assert np.all(np.diff(pool) > 0)


def test_rank_like_learns_a_class_better_than_the_mean(demo_run):
    """Ten images of a digit, and ten others marked out, on the demo's run: the learned
    direction finds the digit's others better than the mean embedding of the ten does, and
    better than that mean less the mean of those marked out (the rule it replaced)."""
    data = load_run(demo_run[0], read_only=True)
    labels = read_items(data.run_dir, columns=["label"])["label"].to_numpy()
    rng = np.random.default_rng(0)
    emb = np.asarray(data.embeddings, dtype=np.float32)
    hits = {"learned": [], "mean": [], "mean less out": []}
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        others = np.flatnonzero(labels != digit)
        chosen, out = rng.choice(members, 10, replace=False), rng.choice(others, 10, replace=False)
        size = len(members)
        ids, _ = rank_like(data, chosen, top=size, negatives=out)
        hits["learned"].append(np.isin(ids, members).mean())
        mean = emb @ emb[chosen].mean(0)
        hits["mean"].append(np.isin(np.argsort(-mean)[:size], members).mean())
        minus = emb @ (emb[chosen].mean(0) - emb[out].mean(0))  # the rule before the learned one
        hits["mean less out"].append(np.isin(np.argsort(-minus)[:size], members).mean())
        feats = features_of(data)[np.arange(data.n)]
        w = direction(features_of(data), chosen, out)
        assert (feats[out] @ w).mean() < (feats[chosen] @ w).mean()
    print({k: round(float(np.mean(v)), 3) for k, v in hits.items()})
    assert np.mean(hits["learned"]) > max(np.mean(hits["mean"]), np.mean(hits["mean less out"])), hits


def test_direction_samples_the_unmarked_at_a_fixed_seed(monkeypatch, data):
    from ice import likeness

    monkeypatch.setattr(likeness, "UNMARKED_SAMPLE", 50)
    w = direction(data.embeddings, [3, 40, 41], [5])
    assert np.array_equal(w, direction(data.embeddings, [3, 40, 41], [5]))
    assert not np.allclose(w, direction(data.embeddings, [3, 40, 41], [5], seed=1))


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


def test_a_mixed_cluster_card_shows_what_it_mixes(demo_run):
    """Two digits made one cluster: the card's thumbnails, one per part of the cluster, show
    both, where the images nearest its centre may show one only."""
    from explorer.data import Clustering

    data = load_run(demo_run[0], read_only=True)
    labels = read_items(data.run_dir, columns=["label"])["label"].to_numpy()
    emb = np.asarray(data.embeddings, dtype=np.float32)
    kinds = np.unique(labels)
    cluster = np.searchsorted(kinds, labels).astype(np.int32)
    cluster[cluster == 1] = 0  # the digits 0 and 1 as one cluster
    cluster[cluster > 1] -= 1
    k = len(kinds) - 1
    centres = np.stack([emb[cluster == c].mean(0) for c in range(k)])
    distance = ((emb - centres[cluster]) ** 2).sum(1).astype(np.float32)
    clustering = Clustering("mixed", k, cluster, distance)
    reps = clustering.representatives(0, data.embeddings, 6)
    assert len(reps) == 6 and len(set(reps.tolist())) == 6 and (cluster[reps] == 0).all()
    assert set(labels[reps].tolist()) == set(kinds[:2].tolist())
    assert np.array_equal(reps, clustering.representatives(0, data.embeddings, 6))
    small = Clustering("small", 2, np.array([0, 0, 0, 1, 1], np.int32), np.zeros(5, np.float32))
    assert sorted(small.representatives(0, data.embeddings, 6).tolist()) == [0, 1, 2]
