"""The teach loop's server side (explorer.teach): pages, rounds, undo and the overlay."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from embeddings.config import TeachSettings
from explorer import teach
from explorer.data import load_run
from ice import run_dir as rd
from ice import teach_state as ts
from ice.errors import IceError


@pytest.fixture
def data(small_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_run, out, ignore=shutil.ignore_patterns("annotations.sqlite*", "teach"))
    return load_run(out)


def labels(data) -> np.ndarray:
    return pd.read_parquet(data.run_dir / rd.ITEMS, columns=["label"])["label"].to_numpy()


def train(data, group: str) -> dict:
    from embeddings.teach import teach_round

    return teach_round(data.run_dir, group, settings=TeachSettings(steps=10), device="cpu")


def test_pages_leave_marked_images_out_and_follow_the_scores(data):
    y = labels(data)
    with pytest.raises(IceError, match="mark some images"):
        teach.best_page(data, "threes")
    data.annotations.mark("threes", marked_in=np.flatnonzero(y == "3")[:5], marked_out=np.flatnonzero(y == "7")[:3])
    first = teach.best_page(data, "threes", size=20)  # before any round: by similarity
    marked = np.concatenate(data.annotations.marks("threes"))
    assert len(first) == 20 and not np.isin(first, marked).any()
    with pytest.raises(IceError, match="no round"):
        teach.uncertain_page(data, "threes")
    train(data, "threes")
    s = teach.scores(data, "threes")
    best = teach.best_page(data, "threes", size=20)
    assert not np.isin(best, marked).any() and np.all(np.diff(s[best]) <= 0)
    free = np.setdiff1d(np.arange(data.n), marked)
    assert s[best[-1]] >= np.sort(s[free])[-20]  # the 20 best of the unmarked
    unsure = teach.uncertain_page(data, "threes", size=10)
    assert np.abs(s[unsure] - 0.5).max() <= np.sort(np.abs(s[free] - 0.5))[9] + 1e-7
    ids, scores = teach.overlay(data, "threes")
    assert (scores > 0.5).all() and np.array_equal(scores, s[ids]) and np.all(np.diff(scores) <= 0)


def test_undo_round_reverts_its_marks_and_its_scores(data):
    y = labels(data)
    threes = np.flatnonzero(y == "3")
    data.annotations.mark("threes", marked_in=threes[:5], action="confirm")
    train(data, "threes")
    first = teach.scores(data, "threes").copy()
    data.annotations.mark("threes", marked_in=threes[5:10], marked_out=np.flatnonzero(y == "8")[:4], action="confirm")
    train(data, "threes")
    assert teach.status(data, "threes")["rounds"] == 2
    assert teach.undo_round(data, "threes") == {"round": 2, "changes": 1}
    marked_in, marked_out = data.annotations.marks("threes")
    assert marked_in.tolist() == sorted(threes[:5].tolist()) and len(marked_out) == 0
    np.testing.assert_array_equal(teach.scores(data, "threes"), first)
    state = teach.status(data, "threes")
    assert state["rounds"] == 1 and state["last"]["marked_in"] == 5 and state["training"] is None


def test_starting_needs_marks_in_and_a_writable_explorer(data, small_run):
    with pytest.raises(IceError, match="no image marked in"):
        teach.start(data, "nobody")
    with pytest.raises(IceError, match="no group chosen"):
        teach.start(data, "  ")
    viewer = load_run(small_run, read_only=True)
    with pytest.raises(IceError, match="read-only"):
        teach.start(viewer, "threes")
    assert teach.status(viewer, "threes") == {
        "rounds": 0,
        "last": None,
        "training": None,
        "error": None,
        "marked_in": 0,
        "marked_out": 0,
    }
    assert not (small_run / ts.TEACH).exists()
