"""A run directory from Python: `load_run` reads one, `embed` builds one.

`Run` wraps the explorer's reader (explorer.data), so a notebook sees what the app shows: the
same clusterings, names, groups and neighbours. The explorer, which imports this package's
errors and run format, loads inside the functions that use it; nothing here imports torch:
FAISS loads on the first `neighbours` call, Dash on `explore`, and the batch job on `embed`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .annotations import RUN_CLUSTERING
from .errors import IceError
from .run_dir import CLUSTERINGS, items_schema, read_items

if TYPE_CHECKING:
    from explorer.data import RunData


class Run:
    """A complete run directory, read-only: its images as a table, their embeddings, nearest
    neighbours, clusterings and saved groups. Made by `load_run`. Cluster names and groups are
    read from annotations.sqlite at each call, so what the explorer saves meanwhile shows."""

    def __init__(self, data: RunData, labels: np.ndarray | None):
        self._data = data  # opened read-only
        self._labels = labels  # (n,) object, items.parquet's `label`, or None
        data.annotations.before_read = self._check_unchanged

    def __repr__(self) -> str:
        return f"ice.Run({str(self.run_dir)!r}, images={len(self)})"

    def __len__(self) -> int:
        return self._data.n

    @property
    def run_dir(self) -> Path:
        return self._data.run_dir

    @property
    def manifest(self) -> dict:
        """A copy of manifest.json: the job's settings, versions, counts and metrics."""
        return copy.deepcopy(self._data.manifest)

    @property
    def embeddings(self) -> np.ndarray:
        """(n, d) float32, L2-normalised, memory-mapped read-only; row i is image_id i. A version 2
        run's is a run_dir.Rows over its parts, indexed as the array is."""
        return self._data.embeddings

    @property
    def items(self) -> pd.DataFrame:
        """One row per image in image_id order: image_id, path (relative to the input folder),
        cluster and cluster_name ("" if unnamed) of the job's clustering, groups (the saved
        groups the image is in), x and y on the map, distance (squared, to its cluster's
        centre), and label where the job read labels from folders."""
        frame = self._clustering_frame(RUN_CLUSTERING)
        groups = self._data.annotations.groups_of_images()
        frame.insert(1, "path", self._data.path.copy())
        frame.insert(4, "groups", [groups.get(i, []) for i in range(len(self))])
        if self._labels is not None:
            frame["label"] = self._labels
        return frame

    @property
    def clusterings(self) -> list[str]:
        """The keys of the run's clusterings: "run" (the job's, as in `items`), then "k{K}"
        for each re-clustering saved by the explorer, then "d..." for its drill-downs."""
        from explorer.clusterings import list_clusterings
        from explorer.drill import KEY as DRILL_KEY

        folder = self.run_dir / CLUSTERINGS
        drills = sorted(
            p.stem.removeprefix("drill-")
            for p in folder.glob("drill-*.npz")
            if DRILL_KEY.fullmatch(p.stem.removeprefix("drill-"))
        )
        return list_clusterings(self.run_dir) + drills

    def clustering(self, key: str) -> pd.DataFrame:
        """The images one clustering holds (a drill-down holds those it split), one row each:
        image_id, cluster, cluster_name, x and y (a drill-down has a map of its own), distance."""
        keys = self.clusterings
        if key not in keys:
            raise IceError(f"clustering {key!r}: {self.run_dir} has {', '.join(map(repr, keys))}")
        return self._clustering_frame(key)

    def _clustering_frame(self, key: str) -> pd.DataFrame:
        c = self._data.clustering(key)
        x, y = self._data.map_xy(key)
        rows = np.flatnonzero(c.cluster >= 0)  # a drill-down marks the images it left out -1
        names = self._data.annotations.cluster_names(key)
        cluster = c.cluster[rows]
        return pd.DataFrame(
            {
                "image_id": rows.astype(np.int64),
                "cluster": cluster,
                "cluster_name": [names.get(k, "") for k in cluster.tolist()],
                "x": x[rows],
                "y": y[rows],
                "distance": c.distance[rows],
            }
        )

    @property
    def groups(self) -> dict[str, int]:
        """The saved groups: name -> number of images marked in it."""
        return self._data.annotations.groups()

    def group(self, name: str) -> pd.DataFrame:
        """The rows of `items` for the images marked in a saved group; IceError if there is none."""
        ids = self._data.annotations.group_members(name)
        return self.items.iloc[ids].reset_index(drop=True)

    def neighbours(self, image_id: int, *, k: int = 10) -> pd.DataFrame:
        """The k images most like one image, found in the run's FAISS index as the explorer
        finds them, the image itself left out: image_id, path, similarity (the cosine of the
        embeddings), most similar first."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise IceError(f"k {k!r}: must be a whole number, at least 1")
        from explorer.search import neighbours as search_neighbours

        self._check_unchanged()  # the index is read on first use: it must be this run's
        ids, similarity = search_neighbours(self._data, image_id, int(k))
        return pd.DataFrame({"image_id": ids, "path": self._data.path[ids], "similarity": similarity})

    def explore(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8050,
        read_only: bool = False,
        jupyter_mode: str = "inline",
        jupyter_height: int = 650,
    ):
        """Serve the explorer over this run. In a Jupyter notebook the app shows in the cell
        (Dash's `jupyter_mode`: "inline", "external" or "tab") and serves in the background;
        this returns the Dash app. Elsewhere it serves as `ice explore` does, until Ctrl-C.
        The app saves names and groups to the run unless `read_only`."""
        from dash import jupyter_dash

        from explorer.app import create_app
        from explorer.data import write_blocker
        from explorer.serve import check_port, serve

        if not jupyter_dash.active:
            serve(self.run_dir, host=host, port=port, read_only=read_only)
            return None
        check_port(port)  # not check_address: Dash replaces the server it runs on a port itself
        blocker = None if read_only else write_blocker(self.run_dir)
        if blocker:
            warnings.warn(f"{blocker}: serving read-only, so names and groups cannot be saved", stacklevel=2)
        app = create_app(self.run_dir, read_only=read_only or bool(blocker))
        app.run(host=host, port=port, jupyter_mode=jupyter_mode, jupyter_height=jupyter_height)
        return app

    def _check_unchanged(self) -> None:
        try:
            self._data.check_unchanged()
        except IceError:
            raise IceError(
                f"{self.run_dir} was rebuilt since it was loaded (ice embed --force); load it again with ice.load_run"
            ) from None


def load_run(run_dir: str | os.PathLike) -> Run:
    """Open a complete run directory, made by `ice embed`, `ice demo` or `embed`, read-only, or
    a run published to an s3:// prefix (fetched into this machine's cache first, as `ice
    export` fetches it); IceError, in one line, if `run_dir` is not one."""
    from explorer.data import load_run as read_run

    from .remote_run import local_copy

    data = read_run(local_copy(run_dir), read_only=True)
    return Run(data, read_labels(data.run_dir))


def read_labels(run_dir: Path) -> np.ndarray | None:
    """(n,) object: items.parquet's `label` column, or None where the job read no labels."""
    if "label" not in items_schema(run_dir):
        return None
    return read_items(run_dir, columns=["label"])["label"].to_numpy(dtype=object)


def embed(
    folder: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False, force: bool = False, **settings
) -> Run:
    """Run the batch job, as `ice embed FOLDER --out OUT` does, and load the run it wrote.

    `settings` are the job's settings (`ice embed`'s options with underscores, the fields of
    embeddings.config.Config): `image_size=32, epochs=5`. `resume` continues a killed job;
    `force` starts over in a folder that holds a run. A bad setting raises IceError naming it.
    """
    from embeddings.config import Config, option_type
    from embeddings.pipeline import run_embed

    known = [f.name for f in dataclasses.fields(Config)]
    for name, value in settings.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise IceError(
                f"unknown setting {name!r}"
                + (f"; did you mean {close[0]!r}?" if close else "; the settings are `ice embed --help`'s options")
            )
        kind = option_type(name)
        if value is not None and not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
            raise IceError(f"{name}={value!r}: must be {'a' if kind is not int else 'an'} {kind.__name__}")
    run_embed(Path(folder), Path(out), Config(**settings).validate(), resume=resume, force=force)
    return load_run(out)


def add(run_dir: str | os.PathLike, *paths: str | os.PathLike, workers: int | None = None, device: str = "auto") -> Run:
    """Place new images into a run, as `ice add RUN_DIR PATH...` does, and load the grown run.
    Nothing already in the run changes; files it holds already are left out."""
    from embeddings.add import add_images

    if not paths:
        raise IceError("ice.add: give the folders or image files to add")
    add_images(Path(run_dir), list(paths), workers=workers, device=device)
    return load_run(run_dir)
