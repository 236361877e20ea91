"""Map tiles: a quadtree over the run's map that gives any view a uniform sample of its points.

Every image has a fixed random key in [0, 1), a hash of its image_id (`keys`). Each node of
the quadtree holds the images of its square with the lowest keys, at most `cap` of them: a
leaf holds all of its images, a parent a random sample of its area that ends below its
threshold key `t`. A view then gets the images inside it with a key below the lowest
threshold of the few nodes it meets (`Tiles.view`): a uniform sample, and every image once
the nodes are leaves. The same key picks the sample a large map draws from afar (`sample_key`),
so a view adds to it and never draws an image twice.

Written by the job's `tiles` stage and `ice tiles RUN`: `tiles.json` (the node table) and
`tiles-ids.npy` (each node's image ids, lowest key first), docs/run-format.md. numpy only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import run_dir as rd

TILES = "tiles.json"
TILE_IDS = "tiles-ids.npy"
FORMAT = 1
CAP = 50_000  # images a node holds at most
MAX_LEVEL = 20  # a node this deep holds all its images, however many (images at one spot)
MAX_NODES = 16  # nodes a view may meet: the deepest level that keeps to it serves the view
LEAF_T = 2.0  # a leaf's threshold: above every key


def keys(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """(len(ids),) float64 in [0, 1): each image's fixed random key (splitmix64 of its id)."""
    z = np.asarray(ids, dtype=np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & (2**64 - 1))
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def sample_key(n: int, size: int) -> float:
    """The key below which `size` of the images 0..n-1 lie: the sample a map of n draws."""
    if size >= n:
        return LEAF_T
    return float(np.partition(keys(np.arange(n)), size)[size])


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A short hash of a map's positions (a strided sample of them), to tell whether tiles
    were built on this map."""
    n = len(x)
    pick = np.linspace(0, n - 1, min(n, 4096)).astype(np.int64) if n else np.zeros(0, np.int64)
    h = hashlib.blake2b(digest_size=12)
    h.update(str(n).encode())
    h.update(np.ascontiguousarray(x[pick], np.float32).tobytes())
    h.update(np.ascontiguousarray(y[pick], np.float32).tobytes())
    return h.hexdigest()


def bounds(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(x0, y0, side): the square the root node covers, a little wider than the points."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return 0.0, 0.0, 1.0
    x0, x1 = float(x[ok].min()), float(x[ok].max())
    y0, y1 = float(y[ok].min()), float(y[ok].max())
    side = max(x1 - x0, y1 - y0, 1e-6) * (1 + 1e-6)
    return x0, y0, side


def build(x: np.ndarray, y: np.ndarray, cap: int = CAP) -> tuple[dict, np.ndarray]:
    """The quadtree of a map (x, y: (n,) with NaN for images not on it): (table, ids), where
    ids holds each node's image ids, lowest key first, node after node."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    n = len(x)
    x0, y0, side = bounds(x, y)
    placed = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    active = placed[np.argsort(keys(placed), kind="stable")]  # lowest key first
    cols = {name: [] for name in ("level", "ix", "iy", "start", "count", "total", "t")}
    chunks, at = [], 0
    for level in range(MAX_LEVEL + 1):
        if not len(active):
            break
        cells = 1 << level
        ix = np.clip(((x[active] - x0) / side * cells).astype(np.int64), 0, cells - 1)
        iy = np.clip(((y[active] - y0) / side * cells).astype(np.int64), 0, cells - 1)
        code = iy * cells + ix
        by = np.argsort(code, kind="stable")  # keeps the key order within a cell
        active, code = active[by], code[by]
        first = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        total = np.diff(np.r_[first, len(code)])
        leaf = total <= cap if level < MAX_LEVEL else np.ones(len(total), np.bool_)
        kept = np.where(leaf, total, cap)
        rank = np.arange(len(active)) - np.repeat(first, total)
        chunks.append(active[rank < np.repeat(kept, total)])
        t = np.full(len(total), LEAF_T)
        t[~leaf] = keys(active[first[~leaf] + cap])  # the first image a parent leaves out
        cols["level"] += [level] * len(total)
        cols["ix"] += (code[first] % cells).tolist()
        cols["iy"] += (code[first] // cells).tolist()
        cols["start"] += (at + np.r_[0, np.cumsum(kept)[:-1]]).tolist()
        cols["count"] += kept.tolist()
        cols["total"] += total.tolist()
        cols["t"] += t.tolist()
        at += int(kept.sum())
        active = active[~np.repeat(leaf, total)]
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    ids = ids.astype(np.int32 if n < 2**31 else np.int64)
    table = {
        "format": FORMAT,
        "n": n,
        "cap": cap,
        "bounds": [x0, y0, side],
        "fingerprint": fingerprint(x, y),
        "nodes": cols,
    }
    return table, ids


def write(run_dir: Path, x: np.ndarray, y: np.ndarray, cap: int = CAP) -> dict:
    """Build the map's tiles and write them into the run: the ids first, the table last, so a
    table on disk always has its ids. Returns what the manifest records of them."""
    table, ids = build(x, y, cap)
    table["ids_len"] = len(ids)
    rd.save_npy(Path(run_dir) / TILE_IDS, ids)
    rd.write_json(Path(run_dir) / TILES, table)
    return {"nodes": len(table["nodes"]["level"]), "levels": max(table["nodes"]["level"], default=-1) + 1}


class Tiles:
    """A run's tiles, read for a map (x, y) they were built on (`load`)."""

    def __init__(self, table: dict, ids: np.ndarray, x: np.ndarray, y: np.ndarray):
        self.n, self.cap = int(table["n"]), int(table["cap"])
        self.x0, self.y0, self.side = (float(v) for v in table["bounds"])
        self.ids, self.x, self.y = ids, x, y
        cols = table["nodes"]
        self.level = np.asarray(cols["level"], np.int64)
        self.start = np.asarray(cols["start"], np.int64)
        self.count = np.asarray(cols["count"], np.int64)
        self.t = np.asarray(cols["t"], np.float64)
        self.depth = int(self.level.max()) + 1 if len(self.level) else 0
        self.at = {  # (level, ix, iy) -> node
            (lv, ix, iy): i for i, (lv, ix, iy) in enumerate(zip(cols["level"], cols["ix"], cols["iy"], strict=True))
        }

    @classmethod
    def load(cls, run_dir: Path, x: np.ndarray, y: np.ndarray) -> "Tiles | None":
        """The run's tiles, or None where it has none, or they are of another map (built before
        `ice embed --force`, or broken): the caller falls back to the map without them. Images
        added since they were built (ids >= n) are searched one by one in `view`."""
        try:
            table = rd.read_json(Path(run_dir) / TILES)
            ids = np.load(Path(run_dir) / TILE_IDS, mmap_mode="r")
            n = int(table["n"])
            if table.get("format") != FORMAT or len(ids) != table.get("ids_len") or n > len(x):
                return None
            if table["fingerprint"] != fingerprint(x[:n], y[:n]):
                return None
            return cls(table, ids, x, y)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _rank(self, start: int, count: int, key: float) -> int:
        """How many of a node's ids have a key below `key` (they are stored lowest key first)."""
        lo, hi = 0, count
        while lo < hi:
            mid = (lo + hi) // 2
            if keys(self.ids[start + mid : start + mid + 1])[0] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def nodes_of(self, view: dict) -> list[int]:
        """The nodes a view ({"x": [x0, x1], "y": [y0, y1]}) meets at the deepest level where
        they number at most MAX_NODES; a cell with no node of its own stands for its leaf
        ancestor, or for nothing (an empty square)."""
        (vx0, vx1), (vy0, vy1) = sorted(view["x"]), sorted(view["y"])
        best = []
        for level in range(self.depth):
            cells = 1 << level

            def cell(v, o):
                return int(np.clip(np.floor((v - o) / self.side * cells), 0, cells - 1))

            ix0, ix1, iy0, iy1 = cell(vx0, self.x0), cell(vx1, self.x0), cell(vy0, self.y0), cell(vy1, self.y0)
            if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > MAX_NODES:
                break
            found = set()
            for ix in range(ix0, ix1 + 1):
                for iy in range(iy0, iy1 + 1):
                    for up in range(level + 1):  # the cell's own node, else its nearest ancestor
                        node = self.at.get((level - up, ix >> up, iy >> up))
                        if node is not None:
                            if up == 0 or self.t[node] >= LEAF_T:
                                found.add(node)
                            break
            best = sorted(found)
        return best

    def view(self, view: dict, budget: int, above: float = 0.0, keep=None) -> tuple[np.ndarray, bool]:
        """The images in a view with keys in [above, t), t the lowest threshold of its nodes,
        the `budget` lowest keys of them at most; and whether they are all the view's images
        with a key of at least `above`. `keep`: (n,) bool, images that may be drawn (None: all)."""
        (vx0, vx1), (vy0, vy1) = sorted(view["x"]), sorted(view["y"])
        nodes = self.nodes_of(view)
        t = min((self.t[i] for i in nodes), default=LEAF_T)
        parts = []
        for i in nodes:  # a node's ids run up its keys: only those in [above, t) are read
            start, count = int(self.start[i]), int(self.count[i])
            lo, hi = self._rank(start, count, above), self._rank(start, count, t)
            parts.append(np.asarray(self.ids[start + lo : start + hi], np.int64))
        if len(self.x) > self.n:  # added after the tiles were built
            added = np.arange(self.n, len(self.x))
            k = keys(added)
            parts.append(added[(k >= above) & (k < t)])
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        xs, ys = self.x[ids], self.y[ids]
        inside = (xs >= vx0) & (xs <= vx1) & (ys >= vy0) & (ys <= vy1)
        if keep is not None:
            inside &= keep[ids]
        ids = ids[inside]
        k = keys(ids)
        complete = t >= LEAF_T
        if len(ids) > budget:
            pick = np.argpartition(k, budget)[:budget]
            ids, complete = ids[pick], False
        return np.sort(ids), bool(complete)
