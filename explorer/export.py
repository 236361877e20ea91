"""The CSV export: one row per image with its cluster, cluster name, groups and map position.

The same table backs `ice export` and the app's download button.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ice.errors import IceError
from ice.run_dir import SKIPPED, atomic_path

from .data import RUN_CLUSTERING, RunData, load_run

COLUMNS = ["image_id", "path", "cluster", "cluster_name", "groups", "x", "y", "distance_to_centroid"]
STDOUT = "-"  # as the output path: write to standard output
STDOUT_NAMES = (STDOUT, "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
# A spreadsheet treats a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_filename(clustering: str) -> str:
    return "clusters.csv" if clustering == RUN_CLUSTERING else f"clusters-{clustering}.csv"


def escape_cell(value: str) -> str:
    """Prefix a text cell that a spreadsheet would run as a formula with a single quote."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def export_frame(
    data: RunData, clustering: str = RUN_CLUSTERING, group: str | None = None, cluster: int | None = None
) -> pd.DataFrame:
    """The export table, filtered to one group and/or one cluster, text cells escaped.

    Only text columns are escaped: numbers such as a negative `x` are written as numbers,
    which a spreadsheet never runs.
    """
    c = data.clustering(clustering)
    ids = np.arange(data.n)
    if group is not None:
        ids = data.annotations.group_members(group)
    if cluster is not None:
        members = c.members(int(cluster))  # IceError for a cluster outside 0..k-1
        ids = np.intersect1d(ids, members)
    names = data.annotations.cluster_names(clustering)
    groups = data.annotations.groups_of_images()
    cluster_ids = c.cluster[ids]
    frame = pd.DataFrame(
        {
            "image_id": ids.astype(np.int64),
            "path": [escape_cell(p) for p in data.path[ids]],
            "cluster": cluster_ids,
            "cluster_name": [escape_cell(names.get(int(k), "")) for k in cluster_ids],
            "groups": [escape_cell(";".join(groups.get(int(i), []))) for i in ids],
            "x": data.x[ids],
            "y": data.y[ids],
            "distance_to_centroid": c.distance[ids],
        }
    )
    return frame[COLUMNS]


def to_csv_text(frame: pd.DataFrame) -> str:
    """The table as CSV with RFC 4180's \r\n line ends. With "\n" alone, a field holding a
    bare "\r" (a file name from a Mac: "Icon\r") would go unquoted and split its row."""
    return frame.to_csv(index=False, lineterminator="\r\n")


def export_csv(
    run_dir: str | Path,
    out_path: str | Path,
    group: str | None = None,
    cluster: int | None = None,
    clustering: str = RUN_CLUSTERING,
) -> int:
    """Write the export CSV of a complete run (write_csv); return the number of rows."""
    data = load_run(run_dir, read_only=True)
    frame = export_frame(data, clustering=clustering, group=group, cluster=cluster)
    write_csv(frame, out_path, data.run_dir)
    return len(frame)


def write_csv(frame: pd.DataFrame, out_path: str | Path, run_dir: Path) -> None:
    """Write `frame` as CSV (to_csv_text) to `out_path`.

    A file is written atomically, where a symlink points (the link stays). Standard output
    ("-"), a device or a pipe (/dev/stdout, `-o >(gzip > x.gz)`) is written as it is: renaming
    a file over /dev/null would replace the device. Refused: a folder that does not exist, and
    a name in the run's folder (`run_dir`) that could be one of the run's own files.
    """
    if str(out_path) in STDOUT_NAMES:  # also where standard output goes to a file (`>> log`)
        sys.stdout.write(to_csv_text(frame))
        sys.stdout.flush()
        return
    out_path = Path(out_path)
    try:
        mode = os.stat(out_path).st_mode  # through links
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IceError(f"-o {out_path}: is a folder; give a file name such as clusters.csv")
    # a device, a pipe, or a name of the system's (/dev/fd/3, /proc/self/fd/3) that may stand for
    # a file opened by the shell: written as it is, appended, never renamed over
    if mode is not None and (not stat.S_ISREG(mode) or str(out_path).startswith(("/dev/", "/proc/"))):
        with open(out_path, "a", encoding="utf-8", newline="") as f:
            f.write(to_csv_text(frame))
        return
    target = out_path.resolve()
    if not target.parent.is_dir():
        raise IceError(f"-o {out_path}: the folder {target.parent} does not exist")
    if target.is_relative_to(run_dir) and (target.suffix != ".csv" or target.name == SKIPPED):
        raise IceError(
            f"-o {out_path}: in the run's folder only a name ending in .csv (not {SKIPPED}) is "
            "written, so that none of the run's own files is replaced"
        )
    with atomic_path(target) as tmp:
        tmp.write_text(to_csv_text(frame), encoding="utf-8")
