"""The teach loop's server side: pages of a group's best-scoring and most uncertain unmarked
images, its rounds (started, undone, their progress) and its scores on the map.

A round trains in its own process (embeddings.teach, started by teach_state.start_round), so
that the server stays free for the map and for other people. Its model and scores are in the
run (teach/, docs/run-format.md); the marks it learns from are the group's in
annotations.sqlite, saved the moment they are made.
"""

from __future__ import annotations

import numpy as np

from ice import teach_state as ts
from ice.errors import IceError

from .data import RunData
from .search import like_scores

PAGE = 48  # images on a page of "Find more" or "Uncertain"
OVERLAY_MAX = 50_000  # the best-scoring images drawn on the map's overlay


def _group(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise IceError("no group chosen: pick or type a group to teach")
    return name


def status(data: RunData, group: str) -> dict:
    """Where a group's teaching stands: {"rounds", "last" (the last round's record or None),
    "training" (the progress of the round training now, or None), "error" (why the last round
    failed, or None), "marked_in", "marked_out"}."""
    group = _group(group)
    state = ts.read_state(data.run_dir, group)
    progress = ts.read_progress(data.run_dir, group)
    marked_in, marked_out = data.annotations.marks(group)
    return {
        "rounds": len(state["rounds"]),
        "last": state["rounds"][-1] if state["rounds"] else None,
        "training": progress if progress and "error" not in progress else None,
        "error": (progress or {}).get("error"),
        "marked_in": len(marked_in),
        "marked_out": len(marked_out),
    }


def scores(data: RunData, group: str) -> np.ndarray | None:
    """(n,) float32: the group's last round's scores, or None before its first round."""
    return ts.read_scores(data.run_dir, _group(group), n=data.n)


def _unmarked(data: RunData, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    marked_in, marked_out = data.annotations.marks(group)
    free = np.ones(data.n, bool)
    free[marked_in] = free[marked_out] = False
    return np.flatnonzero(free), marked_in, marked_out


def _similarity(data: RunData, ids: np.ndarray, marked_in: np.ndarray, marked_out: np.ndarray) -> np.ndarray:
    """Before the first round: as "More like these" ranks them (search.like_scores)."""
    if not len(marked_in):
        raise IceError("mark some images in the group first: select them and confirm a page")
    return like_scores(data, marked_in, marked_out, ids)


def best_page(data: RunData, group: str, size: int = PAGE) -> np.ndarray:
    """The `size` unmarked images that the group's last round scores highest, best first
    (before the first round: those "More like these" ranks first)."""
    group = _group(group)
    free, marked_in, marked_out = _unmarked(data, group)
    s = scores(data, group)
    key = s[free] if s is not None else _similarity(data, free, marked_in, marked_out)
    return _top(free, key, size)


def uncertain_page(data: RunData, group: str, size: int = PAGE) -> np.ndarray:
    """The `size` unmarked images whose score is nearest even odds: what teaches most."""
    group = _group(group)
    s = scores(data, group)
    if s is None:
        raise IceError("no round has trained yet: confirm a page first")
    free, _, _ = _unmarked(data, group)
    return _top(free, -np.abs(s[free] - 0.5), size)


def _top(ids: np.ndarray, key: np.ndarray, size: int) -> np.ndarray:
    if len(ids) > size:
        part = np.argpartition(-key, size)[:size]
        ids, key = ids[part], key[part]
    return ids[np.argsort(-key, kind="stable")]


def start(data: RunData, group: str) -> str:
    """Train the group's next round in the background: "started", or "queued" where one trains
    (it runs one more). Refused where the explorer may not write."""
    group = _group(group)
    if data.read_only:
        raise IceError("the explorer is read-only (--read-only); it cannot train")
    data.check_unchanged()
    if not len(data.annotations.marks(group)[0]):
        raise IceError(f"group {group!r}: no image marked in yet; confirm a page with some in it first")
    return ts.start_round(data.run_dir, group)


def undo_round(data: RunData, group: str) -> dict:
    """Undo the group's last round: the marks made since the round before it was trained, and
    the round's model and scores. Returns {"round": the round undone, "changes": marks
    changes undone}."""
    group = _group(group)
    if data.read_only:
        raise IceError("the explorer is read-only (--read-only); nothing was undone")
    if ts.is_training(data.run_dir, group):
        raise IceError("a round is training: undo once it ends")
    state = ts.read_state(data.run_dir, group)
    if not state["rounds"]:
        raise IceError(f"group {group!r}: no round to undo")
    since = state["rounds"][-2]["change"] if len(state["rounds"]) > 1 else 0
    undone = 0
    for change in data.annotations.history(group):  # newest first
        if change["change"] <= since:
            break
        if change["action"] != "undo" and change["undone_by"] is None:
            data.annotations.undo(group, change["change"])
            undone += 1
    record = ts.drop_last_round(data.run_dir, group)
    return {"round": record["round"], "changes": undone}


def overlay(data: RunData, group: str, limit: int = OVERLAY_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the images to draw on the map's score overlay: those scoring above
    even odds, at most `limit` of them, best first."""
    s = scores(data, _group(group))
    if s is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = np.flatnonzero(s > 0.5)
    ids = _top(ids, s[ids], min(limit, len(ids)))
    return ids, s[ids]
