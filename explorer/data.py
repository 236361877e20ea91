"""Everything the explorer reads from a run directory (docs/run-format.md), loaded once.

Heavy arrays stay on disk: `embeddings.npy` and `pixels.npy` are memory-mapped and the
FAISS index is read on the first search. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ice.annotations import RUN_CLUSTERING, Annotations
from ice.errors import IceError
from ice.likeness import read_manifold
from ice.search_index import read_index
from ice.tiles import Tiles
from ice.run_dir import (
    ANNOTATIONS,
    CLUSTERINGS,
    EMBEDDINGS,
    INDEX,
    ITEMS,
    MANIFEST,
    MANIFOLD,  # noqa: F401 (explorer.clusterings reads it from here)
    PIXELS,
    load_manifest,
    open_rows,
    read_json,
)
from ice.run_dir import read_items as run_dir_read_items  # the name read_items is this module's checked one

from .jobs import Jobs

REPRESENTATIVE_SAMPLE = 2048  # members a cluster card's thumbnails are chosen from
DRILLS_KEPT = 8  # drill-downs kept in memory, each 16 bytes an image of the run


@dataclass
class Clustering:
    """One assignment of every image to a cluster.

    cluster (n,) int32 in 0..k-1; distance (n,) float32, squared L2 to the cluster's centroid.
    """

    key: str
    k: int
    cluster: np.ndarray
    distance: np.ndarray
    _representatives: dict = field(default_factory=dict, repr=False)  # cluster -> its card's ids

    @cached_property
    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((self.distance, self.cluster))
        starts = np.searchsorted(self.cluster[order], np.arange(self.k + 1))
        return order, starts

    def members(self, cluster: int) -> np.ndarray:
        """image ids of one cluster, nearest its centroid first."""
        if not 0 <= cluster < self.k:
            raise IceError(f"cluster {cluster}: this clustering has clusters 0..{self.k - 1}")
        order, starts = self._order
        return order[starts[cluster] : starts[cluster + 1]]

    def representatives(self, cluster: int, embeddings, count: int = 6, seed: int = 0) -> np.ndarray:
        """The image ids a cluster's card shows: one for each of `count` parts of the cluster
        (k-means of the embeddings of up to REPRESENTATIVE_SAMPLE members), the member nearest
        each part's centre, the largest part first. A mixed cluster shows what it mixes, where
        the images nearest its centre show only the commonest kind."""
        if cluster not in self._representatives:
            members = self.members(cluster)
            if len(members) <= count:
                self._representatives[cluster] = members
            else:
                from embeddings.cluster import KMeans

                rng = np.random.default_rng([seed, cluster])
                sample = members
                if len(members) > REPRESENTATIVE_SAMPLE:
                    sample = rng.choice(members, REPRESENTATIVE_SAMPLE, replace=False)
                sample = np.sort(sample)  # a memory map reads sorted rows faster
                x = np.asarray(embeddings[sample], dtype=np.float32)
                km = KMeans(count, n_iter=10, n_init=1, seed=seed).fit(x)
                parts = np.argsort(-np.bincount(km.labels_, minlength=count), kind="stable")
                picked = []
                for part in parts:
                    rows = np.flatnonzero(km.labels_ == part)
                    if len(rows):
                        picked.append(sample[rows[np.argmin(km.distances_[rows])]])
                self._representatives[cluster] = np.asarray(picked, dtype=np.int64)
        return self._representatives[cluster]

    @cached_property
    def sizes(self) -> np.ndarray:
        """(k,) int64: images per cluster (a drill-down's images outside it have cluster -1)."""
        return np.bincount(self.cluster[self.cluster >= 0], minlength=self.k)


@dataclass
class RunData:
    """A complete run, read for the explorer. Row i of every array is image_id i."""

    run_dir: Path
    manifest: dict
    path: np.ndarray  # (n,) object: path relative to input_root, '/'-separated
    x: np.ndarray  # (n,) float32 map coordinates
    y: np.ndarray
    embeddings: np.ndarray  # (n, d) float32, L2-normalised, memory-mapped
    pixels: np.ndarray  # (n, s, s, 3) uint8, memory-mapped
    annotations: Annotations
    read_only: bool = False
    _clusterings: dict = field(default_factory=dict, repr=False)
    _maps: dict = field(default_factory=dict, repr=False)  # drill-down key -> its own (x, y), (n,) each
    jobs: Jobs = field(default_factory=Jobs, repr=False)  # re-clusterings and drill-downs running
    _index: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _manifest_seen: tuple | None = field(default=None, repr=False)  # (inode, mtime, size) last checked
    _tiles: object = field(default=False, repr=False)  # the map's Tiles, None without; False: not read yet

    @property
    def n(self) -> int:
        return len(self.path)

    @cached_property
    def version(self) -> str:
        """A tag of this build of the run (its folder and the manifest's `created`). Image URLs
        carry it, so a browser never reuses an image it cached from another run served on the
        same port, or from this folder before `ice embed --force`."""
        return hashlib.sha1(f"{self.run_dir}\0{self.manifest.get('created', '')}".encode()).hexdigest()[:12]

    @property
    def tiles(self):
        """The run's map tiles (ice/tiles.py), or None: a run made before them, or whose tiles
        are of another map; its large map then draws its sample over the density image only."""
        with self._lock:
            if self._tiles is False:
                self._tiles = Tiles.load(self.run_dir, self.x, self.y)
            return self._tiles

    @property
    def input_root(self) -> Path:
        return Path(self.manifest["input_root"])

    @cached_property
    def manifold(self) -> np.ndarray | None:
        """(n, m) float32, memory-mapped: the manifold coordinates the run's clusters were found
        in; None where the run has none."""
        return read_manifold(self.run_dir, self.n)

    @property
    def index(self):
        """The FAISS index over the embeddings (the job's, with the additions' merged in),
        read on first use."""
        with self._lock:
            if self._index is None:
                self._index = read_index(self.run_dir)  # IceError naming the file it cannot read
            return self._index

    def clustering(self, key: str) -> Clustering:
        """The clustering called `key` ("run", "k{K}", or a drill-down's "d..."); IceError if
        there is none."""
        from .clusterings import load_clustering
        from .drill import KEY as DRILL_KEY
        from .drill import read_drill

        with self._lock:
            if key not in self._clusterings:
                if DRILL_KEY.fullmatch(key):
                    clustering, xy = read_drill(self, key)
                    self._add(clustering, xy)
                else:
                    self._clusterings[key] = load_clustering(self.run_dir, key)
            return self._clusterings[key]

    def add_clustering(self, clustering: Clustering, xy: tuple | None = None) -> None:
        """Keep a clustering; a drill-down's comes with its own map, `xy`."""
        with self._lock:
            self._add(clustering, xy)

    def _add(self, clustering: Clustering, xy: tuple | None) -> None:
        self._clusterings[clustering.key] = clustering
        if xy is not None:
            self._maps[clustering.key] = xy
            while len(self._maps) > DRILLS_KEPT:  # the oldest drill-down goes (read again from disk)
                old = next(iter(self._maps))
                del self._maps[old], self._clusterings[old]

    def map_xy(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), (n,) float32 each: where the map of `key` draws each image (NaN: not on it)."""
        self.clustering(key)
        return self._maps.get(key, (self.x, self.y))

    def check_unchanged(self) -> None:
        """IceError if the run on disk is no longer the one loaded: `ice embed --force` rebuilt
        it, or is rebuilding it, since. The explorer's image ids and clusters are the old
        run's, so a name or group saved now would land on other images. Every save calls
        this (Annotations.before_write, recluster), and so does every read of names and
        groups (before_read: the file is the new run's now) and each page load (a badge).
        Hovering reads names, so a manifest already checked is only stat'ed: the job writes a
        new one atomically, a new file."""
        path = self.run_dir / MANIFEST
        try:
            st = os.stat(path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            seen = None
        if seen is not None and seen == self._manifest_seen:
            return
        try:
            now = read_json(path).get("created")
        except (OSError, ValueError, AttributeError):
            now = None
        if now != self.manifest.get("created"):
            raise IceError(
                f"{self.run_dir} was rebuilt since this explorer started (ice embed --force); restart "
                "`ice explore` to see the new run (its names and groups are not read or saved here)"
            )
        self._manifest_seen = seen

    def pick_up_additions(self) -> None:
        """Read the run again if `ice add` appended images to it since it was loaded. An
        addition only appends, so every image id, cluster and name seen so far stays right;
        each page load calls this, and the page then shows the new images."""
        self.check_unchanged()
        try:
            manifest = load_manifest(self.run_dir)
        except IceError:
            return
        if len(manifest.get("additions", [])) == len(self.manifest.get("additions", [])):
            return
        grown = load_run(self.run_dir, read_only=self.read_only)
        with self._lock:
            self.manifest, self.path, self.x, self.y = grown.manifest, grown.path, grown.x, grown.y
            self.embeddings, self.pixels, self._index = grown.embeddings, grown.pixels, None
            self._clusterings, self._maps, self._tiles = grown._clusterings, {}, False
            self.__dict__.pop("manifold", None)  # read again, with the added images' rows

    def names_to_draw(self, clustering: str) -> dict[int, str]:
        """The names of a clustering's clusters, for the map and panels: none where they
        cannot be read, so the page still draws. That is a run rebuilt since the explorer
        started, whose names belong to other images (the page's badge says so), or a failing
        database; the export and every save still refuse with the reason."""
        try:
            return self.annotations.cluster_names(clustering)
        except IceError:
            return {}

    def check_ids(self, ids) -> np.ndarray:
        """ids as an int64 array, or IceError naming the first that is not an image_id."""
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if len(arr) and arr.max() >= self.n:  # another server process may have shown an addition first
            self.pick_up_additions()
        bad = arr[(arr < 0) | (arr >= self.n)]
        if len(bad):
            raise IceError(f"image_id {int(bad[0])}: the run has image ids 0..{self.n - 1}")
        return arr


def read_items(run_dir: Path) -> pd.DataFrame:
    """items.parquet with the additions' rows, checked to hold one row per image_id 0..n-1 in order."""
    try:
        items = run_dir_read_items(run_dir, columns=["image_id", "path", "cluster", "x", "y", "distance"])
    except (OSError, ValueError, KeyError) as e:
        raise IceError(f"{run_dir / ITEMS}: unreadable ({e})") from None
    if not np.array_equal(items["image_id"].to_numpy(), np.arange(len(items))):
        raise IceError(f"{run_dir / ITEMS}: image_id is not 0..{len(items) - 1} in order")
    return items


def write_blocker(run_dir: str | Path) -> str | None:
    """Why the explorer could not store names, groups or re-clusterings in a run directory
    ("cannot write to PATH (read-only file system)"), or None if it can."""
    run_dir = Path(run_dir)
    for path in (run_dir, run_dir / ANNOTATIONS, run_dir / CLUSTERINGS):
        if path.exists() and not os.access(path, os.W_OK):
            read_only_fs = os.statvfs(path).f_flag & os.ST_RDONLY
            return f"cannot write to {path} ({'read-only file system' if read_only_fs else 'no permission'})"
    return None


def load_run(run_dir: str | Path, read_only: bool = False) -> RunData:
    """Read a complete run directory for the explorer; IceError if it is not one."""
    run_dir = Path(run_dir).resolve()
    manifest = load_manifest(run_dir)
    items = read_items(run_dir)
    try:
        embeddings = open_rows(run_dir, EMBEDDINGS)
        pixels = open_rows(run_dir, PIXELS)
    except (OSError, ValueError) as e:
        raise IceError(f"{run_dir}: unreadable array ({e})") from None
    n = len(items)
    if not (run_dir / INDEX).is_file():  # read on the first search, so checked here
        raise IceError(f"{run_dir / INDEX}: missing; rebuild the run with `ice embed --force`")
    if len(embeddings) < n or len(pixels) < n:
        raise IceError(
            f"{run_dir}: {ITEMS} has {n} rows but {EMBEDDINGS} has {len(embeddings)} and {PIXELS} {len(pixels)}"
        )
    # more: an `ice add` is committing its images
    embeddings, pixels = (a[:n] if isinstance(a, np.ndarray) else a.head(n) for a in (embeddings, pixels))
    data = RunData(
        run_dir=run_dir,
        manifest=manifest,
        path=items["path"].to_numpy(dtype=object),
        x=items["x"].to_numpy(np.float32),
        y=items["y"].to_numpy(np.float32),
        embeddings=embeddings,
        pixels=pixels,
        annotations=Annotations(run_dir / ANNOTATIONS, read_only=read_only),
        read_only=read_only,
    )
    data.annotations.before_write = data.annotations.before_read = data.check_unchanged
    k = int(manifest.get("clusters") or items["cluster"].max() + 1)
    data.add_clustering(
        Clustering(RUN_CLUSTERING, k, items["cluster"].to_numpy(np.int32), items["distance"].to_numpy(np.float32))
    )
    return data
