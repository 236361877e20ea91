"""The teach loop's pixel features (embeddings.patches): the model, the features, and the
run's copy of them that the rounds read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embeddings import patches
from ice import run_dir as rd


@pytest.fixture
def run_copy(small_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(small_run, out, ignore=shutil.ignore_patterns("annotations.sqlite*", "teach"))
    return out


def test_features_are_seeded_blind_to_a_mirror_and_tell_the_digits_apart(small_run):
    """On the small run's pixels: the same seed gives the same model, a mirrored image the same
    features, and a linear model on the features tells the ten digits apart (held-out
    accuracy), which the features of noise do not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    pixels = np.load(small_run / rd.PIXELS)
    model = patches.fit(pixels, k=32, sample=5000)
    again = patches.fit(pixels, k=32, sample=5000)
    assert all(np.array_equal(model[key], again[key]) for key in model)
    features = patches.apply(model, pixels)
    assert features.shape == (len(pixels), 128) and np.isfinite(features).all()
    # standardised over the square root of the width: a row about as long as an embedding
    assert 0.5 < np.linalg.norm(features, axis=1).mean() < 2
    mirrored = patches.apply(model, np.ascontiguousarray(pixels[:, :, ::-1]))
    np.testing.assert_allclose(mirrored, features, rtol=1e-4, atol=1e-3)
    digits = pd.read_parquet(small_run / rd.ITEMS, columns=["label"])["label"].to_numpy()
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), features, digits, cv=3).mean()
    assert accuracy >= 0.8, accuracy
    noise = np.random.default_rng(0).integers(0, 256, pixels.shape, dtype=np.uint8)
    chance = cross_val_score(LogisticRegression(max_iter=2000), patches.apply(model, noise), digits, cv=3).mean()
    assert chance < 0.3, chance


def test_a_runs_features_are_made_once_and_extended_to_added_images(run_copy):
    """ensure() fits the model and writes every image's features into teach/; called again it
    reads them; where fewer rows were kept (images added since), it makes only the rest, with
    the same model; and a temporary file a killed process left is removed."""
    n = len(np.load(run_copy / rd.PIXELS, mmap_mode="r"))
    features = patches.ensure(run_copy, n)
    kept, model_file = run_copy / rd.TEACH / patches.FEATURES, run_copy / rd.TEACH / patches.MODEL
    assert features.shape == (n, 4 * patches.CENTROIDS) and features.dtype == np.float16
    whole = np.asarray(features, dtype=np.float32)
    pixels = np.load(run_copy / rd.PIXELS)
    np.testing.assert_allclose(whole, patches.apply(patches.read_model(run_copy), pixels), atol=2e-3, rtol=1e-3)
    stamps = kept.stat().st_mtime_ns, model_file.stat().st_mtime_ns
    np.testing.assert_array_equal(patches.ensure(run_copy, n), features)
    np.testing.assert_array_equal(patches.ensure(run_copy, n - 50), features[: n - 50])
    assert (kept.stat().st_mtime_ns, model_file.stat().st_mtime_ns) == stamps

    rd.save_npy(kept, np.asarray(features[:200]))  # as before an addition of n - 200 images
    (run_copy / rd.TEACH / f".{patches.FEATURES}.killed{rd.TEMPORARY_END}.npy").write_bytes(b"half")
    calls = []
    grown = patches.ensure(run_copy, n, on_step=lambda done, todo: calls.append((done, todo)))
    assert calls[-1] == (n - 200, n - 200) and model_file.stat().st_mtime_ns == stamps[1]
    np.testing.assert_array_equal(grown, features)
    assert sorted(p.name for p in (run_copy / rd.TEACH).iterdir()) == sorted(
        [patches.FEATURES, patches.MODEL, patches.LOCK]
    )


def test_a_run_that_cannot_be_written_gets_its_features_all_the_same(run_copy):
    """Where teach/ cannot be made (here a file is in its way), the features are made for the
    caller alone, and nothing is written."""
    (run_copy / rd.TEACH).write_text("not a folder")
    before = sorted(os.listdir(run_copy))
    n = len(np.load(run_copy / rd.PIXELS, mmap_mode="r"))
    features = patches.ensure(run_copy, n)
    assert features.shape == (n, 4 * patches.CENTROIDS) and np.isfinite(features).all()
    assert (run_copy / rd.TEACH).read_text() == "not a folder" and sorted(os.listdir(run_copy)) == before


def test_scores_of_wide_features_are_read_a_bounded_block_at_a_time(monkeypatch):
    """ice.likeness.scores with the pixel features beside the embeddings reads blocks of
    BLOCK_VALUES numbers: the scores, in the order of the ids given, are those of one product."""
    from ice import likeness

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(5000, 8)).astype(np.float32)
    pixels = rng.normal(size=(5000, 40)).astype(np.float16)
    x = likeness.Features(embeddings, patches=pixels)
    w = rng.normal(size=48).astype(np.float32)
    ids = rng.permutation(5000)[:3000]
    whole = np.hstack([embeddings, pixels.astype(np.float32)])[ids] @ w
    reads = []
    monkeypatch.setattr(likeness, "BLOCK_VALUES", 1024 * 48)
    monkeypatch.setattr(likeness.Features, "__getitem__", _counted(likeness.Features.__getitem__, reads))
    np.testing.assert_allclose(likeness.scores(x, w, ids=ids), whole, rtol=1e-5, atol=1e-4)
    assert reads == [1024, 1024, 952]


def _counted(getitem, reads):
    def counted(self, rows):
        reads.append(len(rows))
        return getitem(self, rows)

    return counted


def test_larger_images_give_the_features_of_their_32_pixel_average(small_run):
    """Images above 32 pixels are area-averaged to 32 first: the small run's 16-pixel digits
    blown up to 32 and to 64 (each pixel repeated) give the same model and the same features."""
    pixels = np.load(small_run / rd.PIXELS)
    at32 = pixels.repeat(2, axis=1).repeat(2, axis=2)
    at64 = at32.repeat(2, axis=1).repeat(2, axis=2)
    model = patches.fit(at32, k=32, sample=5000)
    again = patches.fit(at64, k=32, sample=5000)
    assert all(np.allclose(model[key], again[key], atol=1e-4) for key in model)
    np.testing.assert_allclose(patches.apply(model, at64), patches.apply(model, at32), atol=1e-4)
