"""Single-layer k-means features of image patches (Coates, Lee and Ng, "An analysis of
single-layer networks in unsupervised feature learning", AISTATS 2011), learned without labels
from a run's own pixels, for the find_group learners `patches` and `patch-teach`.

`fit`: PATCH x PATCH patches drawn from the images (seeded), each brightness- and
contrast-normalised, ZCA-whitened, then FAISS k-means. `apply`: every patch of an image
(stride 1) gets the "triangle" activation max(0, mean distance - distance to centroid k),
summed over the image's four quadrants (4k numbers), plus the same for the mirror image, so
that the features do not change under a left-right flip. No training loop, so they cost the
same on any CPU; they measure whether the pixels hold what the learned encoder misses.
"""

from __future__ import annotations

import numpy as np

PATCH = 6
SAMPLE = 200_000  # patches the whitening and the centroids are fitted on
BRIGHTNESS = 10.0  # added to a patch's variance before it is divided by it (on 0-255 values)
WHITEN = 0.1  # added to the eigenvalues of the patches' covariance


def _normalised(patches):
    """Each patch (row) less its mean, over its spread."""
    return (patches - patches.mean(-1, keepdims=True)) / np.sqrt(patches.var(-1, keepdims=True) + BRIGHTNESS)


def fit(pixels, k: int = 400, sample: int = SAMPLE, seed: int = 0) -> dict:
    """The whitening and the k centroids, from `sample` patches of `pixels` ((n, h, w, c) uint8):
    {"mean", "whiten", "centroids"}, float32."""
    import faiss

    n, h, w, _ = pixels.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, sample)
    ys, xs = rng.integers(0, h - PATCH + 1, sample), rng.integers(0, w - PATCH + 1, sample)
    order = np.argsort(rows, kind="stable")  # rows read in order from a memory map
    patches = np.empty((sample, PATCH * PATCH * pixels.shape[3]), np.float32)
    for i in order:
        patches[i] = pixels[rows[i], ys[i] : ys[i] + PATCH, xs[i] : xs[i] + PATCH].reshape(-1)
    patches = _normalised(patches)
    mean = patches.mean(0)
    values, vectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
    whiten = (vectors @ np.diag(1 / np.sqrt(values + WHITEN)) @ vectors.T).astype(np.float32)
    kmeans = faiss.Kmeans(patches.shape[1], k, niter=20, seed=seed, verbose=False)
    kmeans.train(np.ascontiguousarray((patches - mean) @ whiten))
    return {"mean": mean.astype(np.float32), "whiten": whiten, "centroids": kmeans.centroids.astype(np.float32)}


def _pooled(model: dict, images):
    """(b, 4k) features of a (b, c, h, w) float tensor of images."""
    import torch

    centroids = torch.from_numpy(model["centroids"])
    k = len(centroids)
    b, c, h, w = images.shape
    u = torch.nn.functional.unfold(images, PATCH)  # (b, c*P*P, L), channels first
    cols = u.shape[2]
    u = u.view(b, c, PATCH, PATCH, cols).permute(0, 4, 2, 3, 1).reshape(b, cols, -1)  # as fit's rows
    u = (u - u.mean(2, keepdim=True)) / torch.sqrt(u.var(2, keepdim=True, unbiased=False) + BRIGHTNESS)
    u = (u - torch.from_numpy(model["mean"])) @ torch.from_numpy(model["whiten"])
    squared = (u**2).sum(2, keepdim=True) - 2 * u @ centroids.T + (centroids**2).sum(1)
    distance = torch.sqrt(torch.clamp(squared, min=0))
    active = torch.clamp(distance.mean(2, keepdim=True) - distance, min=0)
    active = active.view(b, h - PATCH + 1, w - PATCH + 1, k)
    y, x = active.shape[1] // 2, active.shape[2] // 2
    quadrants = [active[:, :y, :x], active[:, :y, x:], active[:, y:, :x], active[:, y:, x:]]
    return torch.cat([q.sum((1, 2)) for q in quadrants], 1)


def apply(model: dict, pixels, batch: int = 100) -> np.ndarray:
    """(n, 4k) float32: the features of every image of `pixels` ((n, h, w, c) uint8), each the
    sum of the image's and its mirror image's."""
    import torch

    out = np.empty((len(pixels), 4 * len(model["centroids"])), np.float32)
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            images = torch.from_numpy(np.asarray(pixels[start : start + batch], dtype=np.float32)).permute(0, 3, 1, 2)
            out[start : start + len(images)] = (_pooled(model, images) + _pooled(model, images.flip(3))).numpy()
    return out


def standardised(features: np.ndarray) -> np.ndarray:
    """Each column less its mean over its spread, over the square root of the width: a row about
    as long as a unit-length embedding, so that the two sit side by side in one regression."""
    spread = features.std(0)
    spread[spread == 0] = 1.0
    return ((features - features.mean(0)) / spread / np.sqrt(features.shape[1])).astype(np.float32)
