"""Cluster names and saved groups, in the run's `annotations.sqlite`.

Every change is one small transaction on the rows it touches, so two browser tabs (or
two server threads) never overwrite each other's edits: a rename writes one row, saving
a group adds its members. WAL mode lets readers go on while one tab writes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from embeddings.errors import IceError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_names (
    clustering TEXT NOT NULL,      -- "run" or "k{K}" (see explorer.data)
    cluster INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (clustering, cluster)
);
CREATE TABLE IF NOT EXISTS group_members (
    group_name TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    PRIMARY KEY (group_name, image_id)
);
"""
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
                    "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('cluster_names', 'group_members')"
            ).fetchone()[0] < 2:
                _set_up(conn)
            with conn:
                yield conn
        except sqlite3.Error as e:
            raise IceError(f"{self.path}: {e}") from None
        finally:
            conn.close()

    def _immutable(self) -> str:
        """"&immutable=1" where a read-only reader must say the file will not change: in a
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
        rows = self._query("SELECT cluster, name FROM cluster_names WHERE clustering = ?",
                           (clustering,))
        return {int(c): name for c, name in rows}

    def set_cluster_name(self, clustering: str, cluster: int, name: str | None) -> str:
        """Name one cluster (an empty name removes it); return the name stored."""
        self._writable()
        name = clean_name(name, "cluster")
        with self._connect() as conn:
            if name:
                conn.execute("INSERT INTO cluster_names (clustering, cluster, name) VALUES (?, ?, ?)"
                             " ON CONFLICT (clustering, cluster) DO UPDATE SET name = excluded.name",
                             (clustering, int(cluster), name))
            else:
                conn.execute("DELETE FROM cluster_names WHERE clustering = ? AND cluster = ?",
                             (clustering, int(cluster)))
        return name

    # --- groups ---

    def groups(self) -> dict[str, int]:
        """Group name -> number of images, by name."""
        rows = self._query("SELECT group_name, COUNT(*) FROM group_members "
                           "GROUP BY group_name ORDER BY group_name")
        return {name: int(count) for name, count in rows}

    def group_members(self, name: str) -> np.ndarray:
        """(m,) int64 image ids of one group, ascending; IceError if there is no such group."""
        rows = self._query("SELECT image_id FROM group_members WHERE group_name = ? "
                           "ORDER BY image_id", (name,))
        if not rows:
            raise IceError(f"group {name!r}: no such group")
        return np.array([r[0] for r in rows], dtype=np.int64)

    def save_group(self, name: str, image_ids) -> int:
        """Add images to a group (made if new); return the group's size afterwards."""
        self._writable()
        name = clean_name(name, "group")
        if not name:
            raise IceError("no group name: type one to give the group a name")
        ids = [(name, int(i)) for i in np.unique(np.asarray(image_ids, dtype=np.int64))]
        if not ids:
            raise IceError(f"group {name!r}: no images to save")
        with self._connect() as conn:
            conn.executemany("INSERT OR IGNORE INTO group_members (group_name, image_id) "
                             "VALUES (?, ?)", ids)
            return conn.execute("SELECT COUNT(*) FROM group_members WHERE group_name = ?",
                                (name,)).fetchone()[0]

    def delete_group(self, name: str) -> None:
        self._writable()
        with self._connect() as conn:
            conn.execute("DELETE FROM group_members WHERE group_name = ?", (name,))

    def groups_of_images(self) -> dict[int, list[str]]:
        """image_id -> names of the groups it is in (sorted), for images in any group."""
        out: dict[int, list[str]] = {}
        for name, image_id in self._query("SELECT group_name, image_id FROM group_members "
                                          "ORDER BY group_name"):
            out.setdefault(int(image_id), []).append(name)
        return out
