"""Cluster names and saved groups, in the run's `annotations.sqlite`.

Every change is one small transaction on the rows it touches, so two browser tabs (or
two server threads) never overwrite each other's edits: a rename writes one row, saving
a group adds its members. WAL mode lets readers go on while one tab writes.

A group's marks: each image of the run is *in* the group (`group_members`), *out* of it
(`group_rejected`: a person looked and said no), or not yet reviewed (in neither). Every
change of a group's marks is logged with the marks it replaced (`group_changes`,
`change_marks`), so that a group has a history and its last change can be undone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from .errors import IceError

# The key of the clustering the batch job made (items.parquet); the explorer's re-clusterings
# are "k{K}" and its drill-downs "d...".
RUN_CLUSTERING = "run"

SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_names (
    clustering TEXT NOT NULL,      -- RUN_CLUSTERING or a re-clustering's key
    cluster INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (clustering, cluster)
);
CREATE TABLE IF NOT EXISTS group_members (  -- the images marked in
    group_name TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    PRIMARY KEY (group_name, image_id)
);
CREATE TABLE IF NOT EXISTS group_rejected (  -- the images marked out
    group_name TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    PRIMARY KEY (group_name, image_id)
);
CREATE TABLE IF NOT EXISTS group_changes (
    change INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    time TEXT NOT NULL,            -- UTC, ISO 8601
    action TEXT NOT NULL,          -- save, confirm, remove, clear, rename, merge, undo
    note TEXT NOT NULL DEFAULT '',
    marked_in INTEGER NOT NULL DEFAULT 0,   -- images that became in
    marked_out INTEGER NOT NULL DEFAULT 0,  -- images that became out
    cleared INTEGER NOT NULL DEFAULT 0,     -- images that became unreviewed
    undone_by INTEGER              -- the change that undid this one
);
CREATE TABLE IF NOT EXISTS change_marks (  -- each image a change touched: its mark before and after
    change INTEGER NOT NULL,
    image_id INTEGER NOT NULL,
    before INTEGER,                -- 1 in, 0 out, NULL not reviewed
    after INTEGER,
    PRIMARY KEY (change, image_id)
);
CREATE INDEX IF NOT EXISTS group_changes_by_group ON group_changes (group_name, change);
"""
TABLES = ("cluster_names", "group_members", "group_rejected", "group_changes", "change_marks")
IN, OUT = 1, 0  # an image's mark in a group; None: not reviewed
MAX_NAME = 200  # characters in a cluster or group name
BUSY_MS = 5000  # how long a writer waits for another writer's lock


def clean_name(name: str | None, what: str) -> str:
    """A name stripped of outer whitespace; IceError if it is too long or has a ';'."""
    name = (name or "").strip()
    if len(name) > MAX_NAME:
        raise IceError(f"{what} name {name[:20]!r}...: longer than {MAX_NAME} characters")
    if ";" in name:
        # ';' separates group names in the exported CSV.
        raise IceError(f"{what} name {name!r}: must not contain ';'")
    return name


def _set_up(conn: sqlite3.Connection) -> None:
    """WAL mode and the tables, on a file that has none. SQLite answers a switch to WAL that
    meets another connection's lock with "database is locked" at once, without waiting
    busy_timeout (callbacks arriving together at a new file did), so the switch is retried
    for as long as a writer would wait. Once switched, the file stays in WAL mode."""
    deadline = time.monotonic() + BUSY_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    conn.executescript(SCHEMA)


class Annotations:
    """The annotations of one run. Opens a connection per call, so it is thread-safe.

    With read_only=True nothing is ever written, and a missing file reads as empty.
    """

    def __init__(self, path: str | Path, read_only: bool = False, before_write=None, before_read=None):
        self.path, self.read_only = Path(path), read_only
        self.before_write = before_write  # called before every change; raises IceError to refuse it
        self.before_read = before_read  # called before every read; raises IceError to refuse it
        if not read_only:
            with self._connect():  # sets the file up where it has no tables
                pass
        else:
            self._query("SELECT name FROM sqlite_master")  # a file that is not a database fails here

    @contextlib.contextmanager
    def _connect(self):
        """One connection and one transaction (commit on success, roll back on error).
        SQLite's errors (not a database, locked past BUSY_MS, a full disk) become an
        IceError naming the file, for the page or the CLI to show. A writer sets the file up
        where it has no tables: made new, or removed while the explorer ran. It asks every
        time: a connection that arrives while another sets the file up sees it there, empty."""
        try:
            if self.read_only:
                uri = f"{self.path.resolve().as_uri()}?mode=ro{self._immutable()}"
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_MS / 1000)
            else:
                conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000)
        except sqlite3.Error as e:
            raise IceError(f"{self.path}: {e}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            if not self.read_only and conn.execute(
                f"SELECT COUNT(*) FROM sqlite_master WHERE name IN {TABLES}"
            ).fetchone()[0] < len(TABLES):
                _set_up(conn)
            with conn:
                yield conn
        except sqlite3.Error as e:
            raise IceError(f"{self.path}: {e}") from None
        finally:
            conn.close()

    def _immutable(self) -> str:
        """ "&immutable=1" where a read-only reader must say the file will not change: in a
        folder it cannot write (a read-only share, another user's run) SQLite cannot make
        the -shm file that reading a WAL database needs. Not while a writer is at work: its
        -wal and -shm files are there for the reader to use. A -wal left without its -shm (a
        copy, a writer that was killed) is not read then, and the database opens as it was
        last checkpointed; it did not open at all."""
        folder = self.path.parent
        wal, shm = (self.path.with_name(self.path.name + end) for end in ("-wal", "-shm"))
        working = wal.exists() and shm.exists()
        return "" if os.access(folder, os.W_OK) or working else "&immutable=1"

    def _query(self, sql: str, params=()) -> list[tuple]:
        if self.before_read is not None:
            self.before_read()
        if self.read_only and not self.path.exists():
            return []
        with self._connect() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as e:
                if self.read_only and str(e).startswith("no such table"):
                    return []  # a database no writer has finished setting up holds nothing
                raise

    def _writable(self) -> None:
        if self.read_only:
            raise IceError("the explorer is read-only (--read-only); nothing was saved")
        if self.before_write is not None:
            self.before_write()

    # --- cluster names ---

    def cluster_names(self, clustering: str) -> dict[int, str]:
        rows = self._query("SELECT cluster, name FROM cluster_names WHERE clustering = ?", (clustering,))
        return {int(c): name for c, name in rows}

    def set_cluster_name(self, clustering: str, cluster: int, name: str | None) -> str:
        """Name one cluster (an empty name removes it); return the name stored."""
        self._writable()
        name = clean_name(name, "cluster")
        with self._connect() as conn:
            if name:
                conn.execute(
                    "INSERT INTO cluster_names (clustering, cluster, name) VALUES (?, ?, ?)"
                    " ON CONFLICT (clustering, cluster) DO UPDATE SET name = excluded.name",
                    (clustering, int(cluster), name),
                )
            else:
                conn.execute(
                    "DELETE FROM cluster_names WHERE clustering = ? AND cluster = ?", (clustering, int(cluster))
                )
        return name

    # --- groups ---

    def groups(self) -> dict[str, int]:
        """Group name -> number of images in it, by name; a group whose marks are all out
        is listed with 0. (Two queries: a file written before marks out has no such table.)"""
        sizes = dict.fromkeys((r[0] for r in self._query("SELECT DISTINCT group_name FROM group_rejected")), 0)
        sizes.update(self._query("SELECT group_name, COUNT(*) FROM group_members GROUP BY group_name"))
        return {name: int(sizes[name]) for name in sorted(sizes)}

    def group_members(self, name: str) -> np.ndarray:
        """(m,) int64 image ids in one group, ascending; IceError if there is no such group."""
        members, rejected = self.marks(name)
        if not len(members) and not len(rejected):
            raise IceError(f"group {name!r}: no such group")
        return members

    def marks(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(in, out): the image ids marked in and out of a group, each (m,) int64 ascending;
        both empty where there is no such group."""
        return tuple(
            np.array(
                [
                    r[0]
                    for r in self._query(
                        f"SELECT image_id FROM {table} WHERE group_name = ? ORDER BY image_id", (name,)
                    )
                ],
                dtype=np.int64,
            )
            for table in ("group_members", "group_rejected")
        )

    def save_group(self, name: str, image_ids) -> int:
        """Mark images in a group (made if new); return the group's size afterwards."""
        if not len(np.asarray(image_ids).ravel()):
            raise IceError(f"group {clean_name(name, 'group')!r}: no images to save")
        return self.mark(name, marked_in=image_ids, action="save")["size"]

    def mark(self, name: str, marked_in=(), marked_out=(), cleared=(), action: str = "mark", note: str = "") -> dict:
        """Set the marks of images in a group, in one transaction logged as one change: those
        in `marked_in` in, in `marked_out` out, in `cleared` back to not reviewed (an image in
        two of them takes the later one's mark). Returns {"change": its id, or None where no
        mark changed, "size": images in, "rejected": images out}."""
        self._writable()
        name = clean_name(name, "group")
        if not name:
            raise IceError("no group name: type one to give the group a name")
        wanted: dict[int, int | None] = {}
        for ids, value in ((marked_in, IN), (marked_out, OUT), (cleared, None)):
            for image_id in np.asarray(ids, dtype=np.int64).ravel().tolist():
                wanted[image_id] = value
        with self._connect() as conn:
            change = _apply(conn, name, wanted, action, note)
            return {"change": change, **_sizes(conn, name)}

    def remove_from_group(self, name: str, image_ids) -> dict:
        """Take images out of a group: they are marked out, a person's no that the teach loop
        and "More like these" learn from (mark(cleared=...) forgets a mark instead)."""
        return self.mark(name, marked_out=image_ids, action="remove")

    def history(self, name: str) -> list[dict]:
        """A group's changes, newest first: change, time, action, note, marked_in, marked_out,
        cleared, undone_by."""
        rows = self._query(
            "SELECT change, time, action, note, marked_in, marked_out, cleared, undone_by "
            "FROM group_changes WHERE group_name = ? ORDER BY change DESC",
            (name,),
        )
        keys = ("change", "time", "action", "note", "marked_in", "marked_out", "cleared", "undone_by")
        return [dict(zip(keys, row)) for row in rows]

    def last_change(self, name: str) -> int:
        """The number of a group's latest change (0 before any): a teach round records the one
        it learned up to."""
        rows = self._query("SELECT MAX(change) FROM group_changes WHERE group_name = ?", (name,))
        return int(rows[0][0] or 0) if rows else 0

    def changed_since(self, name: str, change: int) -> np.ndarray:
        """The images whose mark in a group changes after change `change` set (sorted ids):
        what a teach round had not yet seen."""
        rows = self._query(
            "SELECT DISTINCT m.image_id FROM change_marks m JOIN group_changes c ON m.change = c.change "
            "WHERE c.group_name = ? AND m.change > ?",
            (name, int(change)),
        )
        return np.array(sorted(int(r[0]) for r in rows), dtype=np.int64)

    def undo(self, name: str, change: int | None = None) -> dict:
        """Undo a group's change (default: its last one not undone, undos left out): every
        image it touched whose mark is still the one it set goes back to its mark before it.
        Logged as an "undo" change; returns mark()'s dict with "undone": the change undone."""
        self._writable()
        with self._connect() as conn:
            if change is None:
                row = conn.execute(
                    "SELECT change FROM group_changes WHERE group_name = ? AND action != 'undo' "
                    "AND undone_by IS NULL ORDER BY change DESC LIMIT 1",
                    (name,),
                ).fetchone()
                if row is None:
                    raise IceError(f"group {name!r}: nothing to undo")
                change = row[0]
            row = conn.execute(
                "SELECT action, undone_by FROM group_changes WHERE group_name = ? AND change = ?", (name, int(change))
            ).fetchone()
            if row is None:
                raise IceError(f"group {name!r}: no change {change}")
            if row[1] is not None:
                raise IceError(f"group {name!r}: change {change} was undone already")
            current = _current(conn, name)
            # an image a later change marked again keeps that later mark
            wanted = {
                image_id: before
                for image_id, before, after in conn.execute(
                    "SELECT image_id, before, after FROM change_marks WHERE change = ?", (int(change),)
                )
                if current.get(image_id) == after
            }
            undo = _apply(conn, name, wanted, "undo", f"change {change} ({row[0]})", force_log=True)
            conn.execute("UPDATE group_changes SET undone_by = ? WHERE change = ?", (undo, int(change)))
            return {"change": undo, "undone": int(change), **_sizes(conn, name)}

    def rename_group(self, name: str, new_name: str) -> None:
        """Give a group another name, its marks and history with it; IceError if the new name
        is taken."""
        self._writable()
        new_name = clean_name(new_name, "group")
        if not new_name:
            raise IceError("no group name: type one to give the group a name")
        with self._connect() as conn:
            if new_name != name and _exists(conn, new_name):
                raise IceError(f"group {new_name!r}: a group of that name exists; merge them instead")
            if not _exists(conn, name):
                raise IceError(f"group {name!r}: no such group")
            for table in ("group_members", "group_rejected", "group_changes"):
                conn.execute(f"UPDATE {table} SET group_name = ? WHERE group_name = ?", (new_name, name))
            _log(conn, new_name, "rename", f"from {name!r}", {})

    def merge_groups(self, name: str, into: str) -> dict:
        """Move group `name`'s marks into group `into` and delete `name`. An image in either
        is in; one out of `name` stays out only where `into` had not marked it. Logged on
        `into` as one change, which undo reverts (the merged group's own history goes)."""
        self._writable()
        if name == into:
            raise IceError(f"group {name!r}: cannot merge a group into itself")
        with self._connect() as conn:
            for group in (name, into):
                if not _exists(conn, group):
                    raise IceError(f"group {group!r}: no such group")
            target = _current(conn, into)
            wanted = {i: m for i, m in _current(conn, name).items() if m == IN or i not in target}
            change = _apply(conn, into, wanted, "merge", f"from {name!r}", force_log=True)
            _delete(conn, name)
            return {"change": change, **_sizes(conn, into)}

    def delete_group(self, name: str) -> None:
        self._writable()
        with self._connect() as conn:
            _delete(conn, name)

    def grouped_ids(self) -> np.ndarray:
        """(m,) int64 ascending: the images marked in any group."""
        return np.array(
            [r[0] for r in self._query("SELECT DISTINCT image_id FROM group_members ORDER BY image_id")], dtype=np.int64
        )

    def groups_of_images(self) -> dict[int, list[str]]:
        """image_id -> names of the groups it is in (sorted), for images in any group."""
        out: dict[int, list[str]] = {}
        for name, image_id in self._query("SELECT group_name, image_id FROM group_members ORDER BY group_name"):
            out.setdefault(int(image_id), []).append(name)
        return out


def _current(conn: sqlite3.Connection, name: str) -> dict[int, int]:
    """image_id -> IN or OUT for every image marked in a group."""
    rows = conn.execute(
        "SELECT image_id, 1 FROM group_members WHERE group_name = ? UNION ALL "
        "SELECT image_id, 0 FROM group_rejected WHERE group_name = ?",
        (name, name),
    )
    return {int(i): int(m) for i, m in rows}


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    return any(
        conn.execute(f"SELECT 1 FROM {table} WHERE group_name = ? LIMIT 1", (name,)).fetchone()
        for table in ("group_members", "group_rejected")
    )


def _apply(
    conn: sqlite3.Connection, name: str, wanted: dict, action: str, note: str, force_log: bool = False
) -> int | None:
    """Give each image of `wanted` its mark (IN, OUT or None) in group `name` and log the
    change with the marks it replaced; the change's id, or None where nothing changed."""
    current = _current(conn, name)
    moved = {i: (current.get(i), m) for i, m in wanted.items() if current.get(i) != m}
    if not moved and not force_log:
        return None
    for table, mark in (("group_members", IN), ("group_rejected", OUT)):
        conn.executemany(
            f"DELETE FROM {table} WHERE group_name = ? AND image_id = ?",
            [(name, i) for i, (before, _) in moved.items() if before == mark],
        )
        conn.executemany(
            f"INSERT INTO {table} (group_name, image_id) VALUES (?, ?)",
            [(name, i) for i, (_, after) in moved.items() if after == mark],
        )
    return _log(conn, name, action, note, moved)


def _log(conn: sqlite3.Connection, name: str, action: str, note: str, moved: dict) -> int:
    afters = [after for _, after in moved.values()]
    change = conn.execute(
        "INSERT INTO group_changes (group_name, time, action, note, marked_in, marked_out, cleared) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            name,
            dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            action,
            note,
            afters.count(IN),
            afters.count(OUT),
            afters.count(None),
        ),
    ).lastrowid
    conn.executemany(
        "INSERT INTO change_marks (change, image_id, before, after) VALUES (?, ?, ?, ?)",
        [(change, i, before, after) for i, (before, after) in moved.items()],
    )
    return change


def _sizes(conn: sqlite3.Connection, name: str) -> dict:
    count = "SELECT COUNT(*) FROM {} WHERE group_name = ?"
    return {
        "size": conn.execute(count.format("group_members"), (name,)).fetchone()[0],
        "rejected": conn.execute(count.format("group_rejected"), (name,)).fetchone()[0],
    }


def _delete(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        "DELETE FROM change_marks WHERE change IN (SELECT change FROM group_changes WHERE group_name = ?)", (name,)
    )
    for table in ("group_members", "group_rejected", "group_changes"):
        conn.execute(f"DELETE FROM {table} WHERE group_name = ?", (name,))
