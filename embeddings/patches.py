"""Pixel features for the teach loop: single-layer k-means features of image patches (Coates,
Lee and Ng, "An analysis of single-layer networks in unsupervised feature learning", AISTATS
2011), learned without labels from a run's own pixels, with no training loop.

Images larger than SIZE are area-averaged to SIZE x SIZE first, so the features cost the same
at any working size. `fit` draws SAMPLE patches of PATCH x PATCH pixels (seeded), normalises each one's brightness
and contrast, ZCA-whitens them and finds CENTROIDS k-means centres; it then sets each feature's
mean and spread from a seeded sample of images. `apply` is a pure function of one image: every
patch (stride 1) gets the "triangle" activation max(0, mean distance - distance to centre k),
summed over the image's four quadrants and added to its mirror image's (a left-right flip
changes nothing), standardised, over the square root of the width, so that a row is about as
long as a unit-length embedding. The teach loop's regression reads them beside the embeddings
(ice.likeness): on CIFAR-10 they hold what the CPU encoder misses (BENCHMARKS.md, find_group).

A run's features are kept in `teach/` (`ensure`), made the first time a round asks for them and
extended to the images an addition brought, as the explorer's other state is.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ice import run_dir as rd

PATCH = 6
SIZE = 32  # larger images are area-averaged to SIZE x SIZE first: 64 would cost 4.8 times as much
CENTROIDS = 400
SAMPLE = 200_000  # patches the whitening and the centres are fitted on
PER_IMAGE = 100  # at most this many patches an image: a run of 300 images fits on 30,000
MIN_IMAGES = 40  # fewer, and the teach loop does without them (4,000 patches for 400 centres)
SPREAD_SAMPLE = 20_000  # images each feature's mean and spread are taken from
BRIGHTNESS = 10.0  # added to a patch's variance before it is divided by it (0-255 values)
WHITEN = 0.1  # added to the eigenvalues of the patches' covariance
BATCH = 100  # images a step of `apply`

FEATURES = "patches.npy"  # in teach/: (n, 4 * CENTROIDS) float16, row i is image_id i
MODEL = "patches-model.npz"  # in teach/: `fit`'s arrays
LOCK = "patches.lock"  # in teach/: flock'ed while the features are made


def _normalised(patches: np.ndarray) -> np.ndarray:
    """Each patch (row) less its mean, over its spread."""
    return (patches - patches.mean(-1, keepdims=True)) / np.sqrt(patches.var(-1, keepdims=True) + BRIGHTNESS)


def fit(pixels, k: int = CENTROIDS, sample: int = SAMPLE, seed: int = 0) -> dict:
    """The model, from seeded samples of `pixels` ((n, s, s, c) uint8; a memory map or Rows is
    fine, only sampled rows are read): {"mean", "whiten", "centroids", "centre", "spread"}."""
    return _fit(pixels, k, sample, seed)[0]


def _fit(pixels, k: int, sample: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """`fit`'s model, the images its spread was taken from (sorted ids) and their features."""
    from .cluster import KMeans

    n, h, w, c = pixels.shape
    if h < PATCH or w < PATCH:
        raise ValueError(f"images of {h}x{w} pixels: patch features need at least {PATCH}x{PATCH}")
    h, w = min(h, SIZE), min(w, SIZE)
    sample = min(sample, PER_IMAGE * n)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.integers(0, n, sample))  # in order: a memory map reads them faster
    ys, xs = rng.integers(0, h - PATCH + 1, sample), rng.integers(0, w - PATCH + 1, sample)
    patches = np.empty((sample, PATCH * PATCH * c), np.float32)
    for start in range(0, sample, 1000):
        block = slice(start, start + 1000)
        images = _images(rd.take_rows(pixels, rows[block], dtype=np.uint8)).permute(0, 2, 3, 1).numpy()
        for j, (y, x) in enumerate(zip(ys[block], xs[block])):
            patches[start + j] = images[j, y : y + PATCH, x : x + PATCH].reshape(-1)
    patches = _normalised(patches)
    mean = patches.mean(0)
    values, vectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
    whiten = (vectors @ np.diag(1 / np.sqrt(values + WHITEN)) @ vectors.T).astype(np.float32)
    centroids = KMeans(k, n_iter=20, n_init=1, seed=seed).fit((patches - mean) @ whiten).centroids_
    model = {"mean": mean.astype(np.float32), "whiten": whiten, "centroids": centroids.astype(np.float32)}
    some = np.sort(rng.choice(n, min(n, SPREAD_SAMPLE), replace=False))
    raw = _raw(model, rd.take_rows(pixels, some, dtype=np.uint8))
    spread = raw.std(0)
    spread[spread == 0] = 1.0
    model = {**model, "centre": raw.mean(0), "spread": (spread * np.sqrt(raw.shape[1])).astype(np.float32)}
    return model, some, (raw - model["centre"]) / model["spread"]


def _images(pixels):
    """(b, c, h, w) float32 tensor of (b, h, w, c) uint8 images, area-averaged to SIZE x SIZE
    where they are larger."""
    import torch

    images = torch.from_numpy(np.asarray(pixels, dtype=np.float32)).permute(0, 3, 1, 2)
    if images.shape[2] > SIZE or images.shape[3] > SIZE:
        size = (min(images.shape[2], SIZE), min(images.shape[3], SIZE))
        images = torch.nn.functional.interpolate(images, size=size, mode="area")
    return images


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


def _raw(model: dict, pixels) -> np.ndarray:
    """(n, 4k) float32: each image's pooled activations plus its mirror image's, unscaled."""
    import torch

    out = np.empty((len(pixels), 4 * len(model["centroids"])), np.float32)
    with torch.no_grad():
        for start in range(0, len(pixels), BATCH):
            images = _images(pixels[start : start + BATCH])
            out[start : start + len(images)] = (_pooled(model, images) + _pooled(model, images.flip(3))).numpy()
    return out


def apply(model: dict, pixels) -> np.ndarray:
    """(n, 4k) float32: the features of every image of `pixels` ((n, s, s, c) uint8)."""
    return (_raw(model, pixels) - model["centre"]) / model["spread"]


def ensure(run_dir: Path, n: int, on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The run's features of its first n images ((n, 4k) float16, memory-mapped), from
    teach/patches.npy: fitted on the run's pixels the first time, and extended with the images
    added since (the same model applies to them). One process makes them at a time; another
    waits and reads them. `on_step(done, todo)` is called as images are done."""
    folder = Path(run_dir) / rd.TEACH
    try:
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a run one may only read: made for this process alone
        pixels = rd.open_rows(run_dir, rd.PIXELS, n)
        return apply(read_model(run_dir) or fit(pixels), pixels).astype(np.float16)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _ensure(Path(run_dir), folder, n, on_step)
    finally:
        os.close(fd)


def _ensure(run_dir: Path, folder: Path, n: int, on_step) -> np.ndarray:
    for name in (FEATURES, MODEL):  # what a process killed while it wrote them left
        for left in folder.glob(f".{name}.*{rd.TEMPORARY_END}*"):
            left.unlink(missing_ok=True)
    pixels = rd.open_rows(run_dir, rd.PIXELS, n)
    model = read_model(run_dir)
    kept = None
    if model is None or model["centroids"].shape[1] != PATCH * PATCH * pixels.shape[3]:
        model, some, features = _fit(pixels, CENTROIDS, SAMPLE, 0)
        with rd.atomic_path(folder / MODEL, suffix=".npz") as tmp:
            np.savez(tmp, **model)
        (folder / FEATURES).unlink(missing_ok=True)  # of another model
        if len(some) == n:  # a run of up to SPREAD_SAMPLE images: every image's features are made
            kept = features.astype(np.float16)
    if kept is None:
        try:
            kept = np.load(folder / FEATURES, mmap_mode="r")
        except (OSError, ValueError):
            kept = np.zeros((0, 4 * len(model["centroids"])), np.float16)
    if len(kept) >= n and kept.shape[1] == 4 * len(model["centroids"]) and isinstance(kept, np.memmap):
        return kept[:n]
    done = len(kept) if kept.shape[1] == 4 * len(model["centroids"]) else 0
    with rd.atomic_path(folder / FEATURES, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, 4 * len(model["centroids"])))
        out[:done] = kept[:done]
        step = 10 * BATCH
        for start in range(done, n, step):
            out[start : start + step] = apply(model, pixels[start : start + step])
            if on_step is not None:
                on_step(min(start + step, n) - done, n - done)
        out.flush()
        del out
    return np.load(folder / FEATURES, mmap_mode="r")[:n]


def read_model(run_dir: Path) -> dict | None:
    """The run's patch model (teach/patches-model.npz), or None where it has none."""
    try:
        with np.load(Path(run_dir) / rd.TEACH / MODEL) as f:
            return {name: f[name] for name in f.files}
    except (OSError, ValueError, KeyError):
        return None
