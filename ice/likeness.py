"""Learning a group from a person's marks on the run's own features, in a fraction of a second:
a logistic regression of the images marked in against those marked out and a sample of the
rest. The explorer's "More like these" ranks by it, and the teach loop averages it with its
network's scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .run_dir import MANIFOLD, take_rows

WEAK_NEGATIVE = 0.3  # an unmarked image's weight as a negative, against 1 for one marked out
UNMARKED_SAMPLE = 20_000  # unmarked images drawn as weak negatives: the fit stays bounded at any n
C = 0.3  # the inverse regularisation; of 0.3, 1 and 3, the best at 10 marks in on MNIST 10k
PATCH_C = 3.0  # the same with the pixel features: of 0.3, 1 and 3, the best on CIFAR-10 10k


def direction(embeddings, positives, negatives=(), seed: int = 0) -> np.ndarray:
    """(d,) float32: `logistic`'s weights. Ranking by the inner product with them ranks by the
    model's odds, so one FAISS search of an inner-product index ranks all n images."""
    return logistic(embeddings, positives, negatives, seed)[0]


def logistic(embeddings, positives, negatives=(), seed: int = 0, c: float = C) -> tuple[np.ndarray, float]:
    """((d,) float32, intercept): a logistic regression on `embeddings` (or any features of the
    images, one row each), the images given (positives) against those marked out and a seeded
    draw of the others as weak negatives (most images of a collection are not in the group one
    looks for), the two sides balanced. Above UNMARKED_SAMPLE unmarked images, the fit is the
    one a collection of that size gets, so the marks weigh the same in a run of any size. `c`:
    the inverse regularisation."""
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
        return np.asarray(embeddings[positives], dtype=np.float32).mean(axis=0), 0.0
    weight[: len(positives)] = weight.sum() / len(positives)
    x = take_rows(embeddings, rows)
    model = LogisticRegression(C=c, max_iter=500, random_state=seed)
    model.fit(x, y, sample_weight=weight)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


MANIFOLD_WEIGHT = 0.3  # the standardised manifold's scale against the unit-length embeddings


class Features:
    """What a group is learned on, read by rows: each image's embedding, followed by its
    manifold coordinates (standardised by `mean` and `scale`, times MANIFOLD_WEIGHT) where the
    run has them: the manifold is the space the clusters were found in. The two together rank
    MNIST's classes about as well as the manifold alone, and CIFAR-10's better than either
    (BENCHMARKS.md, find_group). Then, where given, the images' pixel features
    (embeddings.patches, about as long as an embedding), which the teach loop adds. Nothing is
    held for the whole run."""

    def __init__(self, embeddings, manifold=None, mean=None, scale=None, patches=None):
        self.embeddings, self.manifold, self.patches = embeddings, manifold, patches
        if manifold is not None:
            self.mean = np.asarray(mean, dtype=np.float32)
            self.scale = np.asarray(scale, dtype=np.float32) / MANIFOLD_WEIGHT
        width = embeddings.shape[1] + sum(0 if a is None else a.shape[1] for a in (manifold, patches))
        self.shape = (len(embeddings), width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        x = [np.asarray(self.embeddings[rows], dtype=np.float32)]
        if self.manifold is not None:
            x.append((np.asarray(self.manifold[rows], dtype=np.float32) - self.mean) / self.scale)
        if self.patches is not None:
            x.append(np.asarray(self.patches[rows], dtype=np.float32))
        return x[0] if len(x) == 1 else np.hstack(x)


def manifold_scaling(manifold) -> tuple[np.ndarray, np.ndarray]:
    """(mean, spread) of each column of a run's manifold coordinates, from a seeded sample."""
    n = len(manifold)
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, 100_000), replace=False))
    sample = np.asarray(manifold[rows], dtype=np.float64)
    scale = sample.std(0)
    scale[scale == 0] = 1.0
    return sample.mean(0).astype(np.float32), scale.astype(np.float32)


def read_manifold(run_dir: Path, n: int):
    """The run's manifold coordinates (manifold.npy, memory-mapped, its first n rows), or None
    where it has none that covers its n images."""
    try:
        raw = np.load(Path(run_dir) / MANIFOLD, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return raw[:n] if raw.ndim == 2 and len(raw) >= n > 0 else None


def fit(embeddings, manifold, positives, negatives=(), seed: int = 0, c: float = C, patches=None) -> dict:
    """A group's model from its marks (`logistic` on the `Features` of the embeddings, the
    manifold and the pixel features; None for none), as plain numbers, so that it can be kept
    with a teach round and applied to images added later: {"w", "b", "mean", "scale",
    "patches"}, the last the pixel features' width (None without them)."""
    mean = scale = None
    if manifold is not None:
        mean, scale = manifold_scaling(manifold)
    x = Features(embeddings, manifold, mean, scale, patches)
    w, b = logistic(x, positives, negatives, seed, c)
    listed = lambda a: None if a is None else [float(v) for v in a]  # noqa: E731
    width = None if patches is None else int(patches.shape[1])
    return {"w": listed(w), "b": float(b), "mean": listed(mean), "scale": listed(scale), "patches": width}


def apply(model: dict, embeddings, manifold, ids=None, probability: bool = True, patches=None) -> np.ndarray:
    """`fit`'s model on images (their embeddings, manifold rows and pixel features; the
    manifold is left out where the model was fitted without one): (len(ids),) float32, the
    probabilities of being in the group, or with probability=False the inner products with the
    weights. ValueError where the model was fitted on pixel features and none are given."""
    if model["mean"] is None:
        manifold = None
    if not model.get("patches"):
        patches = None
    elif patches is None or patches.shape[1] != model["patches"]:
        raise ValueError(f"the model was fitted on {model['patches']} pixel features per image; give them")
    x = Features(embeddings, manifold, model["mean"], model["scale"], patches)
    return scores(x, np.asarray(model["w"], dtype=np.float32), model["b"], ids, probability)


BLOCK_VALUES = 1 << 26  # `scores` reads this many numbers at a time (256 MB as float32)


def scores(x, w: np.ndarray, b: float = 0.0, ids=None, probability: bool = False) -> np.ndarray:
    """(len(ids),) float32 for `ids` (default every row of `x`): the inner products with `w`,
    or with `probability` the model's probabilities, a bounded block of rows at a time."""
    rows = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)
    order = np.argsort(rows, kind="stable")  # a memory map reads sorted rows faster
    out = np.empty(len(rows), np.float32)
    step = min(1 << 20, max(1024, BLOCK_VALUES // max(1, x.shape[1])))
    for start in range(0, len(rows), step):
        block = order[start : start + step]
        out[block] = x[rows[block]] @ w
    return (1 / (1 + np.exp(-(out + b)))).astype(np.float32) if probability else out
