"""The on-disk contract between the batch job and the explorer (docs/run-format.md): the
file names, atomic writes, the manifest and the lock of a run being written.

Torch-free: the job and the explorer both import this module.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import errno
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import IceError, not_a_folder

SCHEMA_VERSION = 2  # the newest this ICE reads: 1, one file per array; 2, arrays in parts (SHARDED)
SHARDED = 2
TEMPORARY_END = ".tmp"  # atomic_path's temporary files end so, before a suffix

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
ITEMS = "items.parquet"
ITEMS_ADDED = "items-added"  # NNNN.parquet: the rows of the images addition NNNN brought (read_items)
EMBEDDINGS = "embeddings.npy"
MANIFOLD = "manifold.npy"
CENTROIDS = "centroids.npy"
INDEX = "index.faiss"
INDEX_ADDED = "index-added.faiss"  # the images `ice add` brought, on index.faiss's lists (search_index.py)
PIXELS = "pixels.npy"
MODEL = "model.pt"
CHECKPOINT = "checkpoints/last.pt"
APPLY_KNN = "knn_apply.npz"  # above --fit-sample, each other image's nearest sampled images; removed at the end
KNN = "knn.npz"  # the embeddings' neighbour graph, shared by two stages; removed when the run completes
NEIGHBOURS = "neighbours.npy"  # knn.npz's neighbours, kept where the job climbed along them (graph_rounds)
SEED_KNN = "knn_seed.npz"  # above umap_sample images, the graph of the images laid out first; the same
SKIPPED = "skipped.csv"
ANNOTATIONS = "annotations.sqlite"
CLUSTERINGS = "clusterings"
ADDED = "added.parquet"  # every file `ice add` took up: the images it added and the files it skipped
ADDING = "adding"  # the addition in progress (embeddings.add); gone once it is committed
TEACH = "teach"  # the teach loop's rounds, per group (teach_state.py)
PART = "part-{:05d}"  # + .npy or .parquet: a shard's part of pixels/, embeddings/ or items/ (version 2)


def _umask() -> int:
    """The process's umask: read where Linux shows it (since 4.7), which changes nothing; else
    set and put back, which for that instant gives other threads' new files the default."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; on success rename it over `path`.

    On an exception the temporary file is removed and `path` is untouched.
    `suffix` keeps an extension that a writer insists on (np.save adds `.npy`). The file
    gets the permissions that open() would give it (0o666 less the umask), not mkstemp's
    0o600: a run directory or an exported CSV is read by other users and servers too.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_END + suffix, dir=path.parent)
    except OSError as e:  # name the file the caller asked for, not a temporary one or a parent
        code = errno.ENOTDIR if isinstance(e, FileExistsError) else e.errno  # a file where a folder goes
        raise OSError(code, os.strerror(code), str(path)) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno:  # a failed write: name the file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def new_memmap(path: str | os.PathLike, dtype, shape: tuple) -> np.memmap:
    """A new .npy file of `shape`, memory-mapped for writing, its disk blocks reserved.

    A write into a memory-mapped page that the disk has no room for kills the process with
    SIGBUS (a decode worker "exited unexpectedly"). Reserving the blocks first turns a full
    disk into an OSError, before any work is done. On a file system that cannot reserve
    blocks the file stays sparse, as np.lib.format.open_memmap leaves it.
    """
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        size = os.path.getsize(path)
        try:
            with open(path, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return out
            del out
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise OSError(e.errno, f"{e.strerror} (the file needs {size / 1e6:,.1f} MB)", str(path)) from None
    return out


def lock_run_dir(run_dir: Path, busy: str | None = None) -> int | None:
    """An open descriptor of run_dir holding an exclusive flock on it, which the kernel drops
        when this process ends however it ends; IceError if another process holds it. None where
        the file system or the platform has no flock: the run goes on unguarded. Forked children
        (DataLoader workers) share the lock while they live; they end with their loader. `busy` is
    the error's text when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise IceError(
                busy
                or f"--out {run_dir}: another `ice embed` or `ice add` is writing this run now; wait for it "
                "to finish (then --resume) or choose another --out"
            ) from None
        return None
    return fd


# What the explorer adds to a run: cluster names and groups, re-clusterings, and the teach loop's rounds.
EXPLORER_STATE = (ANNOTATIONS, ANNOTATIONS + "-wal", ANNOTATIONS + "-shm", CLUSTERINGS, TEACH)
SET_ASIDE = "before-force-"  # + the UTC time: where --force moves the explorer's state


def set_aside_explorer_state(run_dir: Path) -> Path | None:
    """Move the explorer's state (EXPLORER_STATE) and the items it refers to into a new
    run_dir/before-force-<UTC time>/; None if there is none. Names and re-clusterings
    belong to the clusters they were made on, which a run started over replaces."""
    present = [name for name in EXPLORER_STATE if (run_dir / name).exists()]
    if not present:
        return None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = run_dir / f"{SET_ASIDE}{stamp}"
    n = 1
    while folder.exists():  # two --force in one second
        n += 1
        folder = run_dir / f"{SET_ASIDE}{stamp}-{n}"
    folder.mkdir()
    items = (ITEMS, ITEMS_ADDED, parts_folder(ITEMS))
    for name in present + [name for name in items if (run_dir / name).exists()]:
        os.replace(run_dir / name, folder / name)
    return folder


# atomic_path's temporary files: "." + the name + "." + mkstemp's random characters + ".tmp" + a suffix
TEMPORARY = re.compile(rf"\.(?P<name>.+)\.[a-z0-9_]+{re.escape(TEMPORARY_END)}(\.[a-z]+)?")


def parts_folder(name: str) -> str:
    """The folder of a version 2 run that holds the parts of the version 1 file `name`:
    pixels.npy's are in pixels/, items.parquet's in items/."""
    return name.rsplit(".", 1)[0]


def part_path(folder: Path, shard: int, suffix: str) -> Path:
    return folder / (PART.format(shard) + suffix)


def shards(run_dir: Path) -> list[list[int]] | None:
    """The shard table of a complete version 2 run ([first image_id, count] of each part, in
    order); None for a version 1 run, or a run being written, whose parts are all on disk."""
    try:
        manifest = read_json(Path(run_dir) / MANIFEST)
    except (OSError, ValueError):
        return None
    return manifest.get("shards") if manifest.get("complete") else None


def shard_count(run_dir: Path) -> int | None:
    table = shards(run_dir)
    return None if table is None else len(table)


def _parts(folder: Path, suffix: str, count: int | None) -> list[Path]:
    """part-00000 .. part-(count - 1) in `folder`; all of them where count is None, which must
    then be numbered from 0 with none missing. IceError names the first one missing."""
    if count is None:
        found = sorted(p.name for p in folder.glob(f"part-*{suffix}") if not p.name.startswith("."))
        count = len(found)
    paths = [part_path(folder, k, suffix) for k in range(count)]
    for p in paths:
        if not p.is_file():
            raise IceError(f"{p}: missing (the run's parts are part-00000 to part-{count - 1:05d}{suffix})")
    return paths


MAPPED_PARTS = 64  # parts of one array kept memory-mapped at once: each map holds a file descriptor


def _npy_header(path: Path) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from a .npy file's header, read without mapping the file or keeping it open."""
    try:
        with open(path, "rb") as f:
            return _read_header(f, path)
    except OSError as e:
        raise IceError(f"{path}: unreadable ({e})") from None


def _read_header(f, path: Path) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from the header of the .npy file open as `f`, which is left at its rows."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except ValueError as e:
        raise IceError(f"{path}: unreadable ({e})") from None
    if fortran and len(shape) > 1:
        raise IceError(f"{path}: rows in Fortran order, which a run's arrays never are")
    return shape, dtype


class Rows:
    """The rows of a version 2 run's .npy parts, read as one array of (n, ...): indexing with an
    int, a slice or an array of ids gathers from the parts that hold them (an ndarray, as a
    memory map's indexing gives); np.asarray reads them all. A part is memory-mapped when first
    read, and at most MAPPED_PARTS stay mapped (the least recently read are let go), so that a
    run of a million parts needs no more file descriptors or maps than one of a few."""

    def __init__(self, paths: list[Path], lengths, dtype, row_shape: tuple, _cache=None):
        if not len(paths):
            raise IceError("a sharded array with no parts")
        self.paths = list(paths)
        self.starts = np.cumsum([0, *lengths], dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.shape = (int(self.starts[-1]), *row_shape)
        self.ndim = len(self.shape)
        self._cache = _cache if _cache is not None else (threading.Lock(), collections.OrderedDict())

    @classmethod
    def load(cls, folder: Path, count: int | None = None) -> Rows:
        """The parts in `folder` (part-00000 .. part-(count - 1)), from their headers."""
        paths = _parts(Path(folder), ".npy", count)
        headers = [_npy_header(path) for path in paths]
        if not headers:
            raise IceError("a sharded array with no parts")
        (shape, dtype), lengths = headers[0], []
        for path, (s, d) in zip(paths, headers):
            if d != dtype or tuple(s[1:]) != tuple(shape[1:]) or not len(s):
                raise IceError(f"{path}: parts of {shape[1:]} {dtype} and {s[1:]} {d} in one array")
            lengths.append(s[0])
        return cls(paths, lengths, dtype, tuple(shape[1:]))

    def part(self, k: int) -> np.ndarray:
        """Part k's rows, memory-mapped."""
        lock, mapped = self._cache
        path = self.paths[k]
        with lock:
            rows = mapped.get(path)
            if rows is not None:
                mapped.move_to_end(path)
        if rows is None:
            try:
                rows = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise IceError(f"{path}: unreadable ({e})") from None
            with lock:
                mapped[path] = rows
                while len(mapped) > MAPPED_PARTS:
                    mapped.popitem(last=False)
        return rows[: self.starts[k + 1] - self.starts[k]]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def head(self, n: int) -> Rows:
        """The first n rows, as Rows (no copy)."""
        lengths = np.clip(n - self.starts[:-1], 0, np.diff(self.starts))
        return Rows(self.paths, lengths, self.dtype, self.shape[1:], self._cache)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])] if not np.isscalar(key[0]) else self[key[0]][key[1:]]
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"index {key} is out of bounds for {n} rows")
            k = int(np.searchsorted(self.starts, i, side="right")) - 1
            return np.asarray(self.part(k)[i - self.starts[k]])
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
            first = int(np.searchsorted(self.starts, start, side="right")) - 1
            for k in range(max(first, 0), len(self.paths)):
                lo, hi = max(start, self.starts[k]), min(stop, self.starts[k + 1])
                if self.starts[k] >= stop:
                    break
                if lo < hi:
                    out[lo - start : hi - start] = self.part(k)[lo - self.starts[k] : hi - self.starts[k]]
            return out
        ids = np.asarray(key)
        if ids.dtype == bool:
            if ids.shape != (n,):
                raise IndexError(f"a boolean index of {ids.shape} for {n} rows")
            ids = np.flatnonzero(ids)
        ids = ids.astype(np.int64, copy=False)
        if ids.size and (ids.min() < -n or ids.max() >= n):
            raise IndexError(f"an index out of bounds for {n} rows")
        ids = np.where(ids < 0, ids + n, ids)
        out = np.empty((*ids.shape, *self.shape[1:]), self.dtype)
        flat, res = ids.reshape(-1), out.reshape(-1, *self.shape[1:])
        which = np.searchsorted(self.starts, flat, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            res[sel] = self.part(int(k))[flat[sel] - self.starts[k]]
        return out


def take_rows(array, rows, dtype=np.float32) -> np.ndarray:
    """array[rows] as a new (len(rows), ...) array of `dtype`, in the order of `rows` (any order,
    repeats allowed), read in sorted row order: a memory map reads sorted rows faster."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + tuple(array.shape[1:]), dtype)
    out[order] = np.asarray(array[rows[order]], dtype=dtype)
    return out


def load_rows(path: Path) -> np.ndarray | Rows:
    """The array at `path`: a .npy file, memory-mapped, or a folder of .npy parts (all of
    them: the folder of a run being written) as Rows."""
    path = Path(path)
    return Rows.load(path) if path.is_dir() else np.load(path, mmap_mode="r")


def read_in_order(path: Path, block: int) -> Iterator[np.ndarray]:
    """Every row of the array at `path` (a .npy file, or a folder of .npy parts, as load_rows
    reads), in order, in arrays of at most `block` rows read from the files: a pass over every
    row holds one block, where a memory map keeps each page it has read mapped to the end."""
    path = Path(path)
    for file in _parts(path, ".npy", None) if path.is_dir() else [path]:
        try:
            f = open(file, "rb")
        except OSError as e:
            raise IceError(f"{file}: unreadable ({e})") from None
        with f:
            shape, dtype = _read_header(f, file)
            for start in range(0, shape[0] if shape else 0, block):
                rows = np.empty((min(block, shape[0] - start), *shape[1:]), dtype)
                if f.readinto(memoryview(rows).cast("B")) != rows.nbytes:
                    raise IceError(f"{file}: shorter than its header says ({shape[0]} rows)")
                yield rows


def open_rows(run_dir: Path, name: str, n: int | None = None) -> np.ndarray | Rows:
    """A complete run's array `name` (PIXELS, EMBEDDINGS), read-only: the .npy file of a
    version 1 run, memory-mapped, or the parts its manifest lists of a version 2 run, as Rows.
    `n`: its first n rows only. OSError or ValueError where it cannot be read."""
    run_dir = Path(run_dir)
    table = shards(run_dir)
    if table is not None:
        rows = Rows.load(run_dir / parts_folder(name), len(table))
        counts = np.diff(rows.starts)
        for k, (first, count) in enumerate(table):
            if counts[k] != count or rows.starts[k] != first:
                path = part_path(run_dir / parts_folder(name), k, ".npy")
                raise IceError(f"{path}: holds {counts[k]} rows where the manifest lists {count} from {first}")
        return rows if n is None else rows.head(n)
    rows = np.load(run_dir / name, mmap_mode="r")
    return rows if n is None else rows[:n]


def has_items(run_dir: Path) -> bool:
    return (run_dir / ITEMS).exists() or (run_dir / parts_folder(ITEMS)).is_dir()


def items_schema(run_dir: Path) -> list[str]:
    """The column names of the items the job wrote (items.parquet, or its first part)."""
    import pyarrow.parquet as pq

    path = run_dir / ITEMS
    if not path.exists():
        path = part_path(run_dir / parts_folder(ITEMS), 0, ".parquet")
    return pq.read_schema(path).names


def read_items(run_dir: Path, columns: list[str] | None = None):
    """The run's items, one row per image_id in order: items.parquet, which the job wrote,
    then the rows of each `ice add` (items-added/NNNN.parquet, by number), so that an addition
    writes its own rows and never the run's again; in a version 2 run, the parts its manifest
    lists (items/part-NNNNN.parquet: the job's shards, then the additions'). Where there are
    additions, the job's rows read `added` 0. `columns`: those only (all where None)."""
    import pandas as pd
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    folder = run_dir / parts_folder(ITEMS)
    if not (run_dir / ITEMS).exists() and folder.is_dir():  # shard_count is None in a run set aside
        paths = _parts(folder, ".parquet", shard_count(run_dir))
    else:
        added = (p for p in (run_dir / ITEMS_ADDED).glob("*.parquet") if p.stem.isdigit())
        paths = [run_dir / ITEMS, *sorted(added, key=lambda p: int(p.stem))]
    if len(paths) == 1:
        return pd.read_parquet(paths[0], columns=columns)
    names = [pq.read_schema(p).names for p in paths]
    wanted = list(columns or names[0])
    if columns is None and "added" not in wanted and any("added" in n for n in names):
        wanted.append("added")
    frames = []
    for path, have in zip(paths, names, strict=True):
        frame = pd.read_parquet(path, columns=[c for c in wanted if c in have])
        if "added" in wanted and "added" not in frame:
            frame["added"] = np.int32(0)
        frames.append(frame[wanted])
    return pd.concat(frames, ignore_index=True)


def remove_leftovers(run_dir: Path) -> int:
    """Remove the temporary files that a job killed while writing left in run_dir and its
    checkpoints and items-added folders, and return their total size in bytes. Nothing reads
    them, and the pixels' one is as big as the run (or a part). Call it holding the run's lock, so that no
    job is writing them. A .csv that `ice export` may be writing into the folder is left alone."""
    size = 0
    parts = [run_dir / parts_folder(name) for name in (PIXELS, EMBEDDINGS, ITEMS)]
    for folder in (run_dir, (run_dir / CHECKPOINT).parent, run_dir / ITEMS_ADDED, *parts):
        for path in folder.glob(".*.tmp*"):
            m = TEMPORARY.fullmatch(path.name)
            if (
                m
                and path.is_file()
                and not path.is_symlink()
                and (m["name"] == SKIPPED or not m["name"].endswith(".csv"))
            ):
                with contextlib.suppress(FileNotFoundError):
                    size += path.stat().st_size
                    path.unlink()
    return size


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, arr)


def load_manifest(run_dir: str | os.PathLike) -> dict:
    """The manifest of a complete run, or IceError saying why the folder is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise not_a_folder(run_dir, "run directory")
    path = run_dir / MANIFEST
    if not path.exists() and not (run_dir / PROGRESS).exists():
        raise IceError(
            f"{run_dir} is not a run directory (no {MANIFEST}); make one with `ice embed IMAGES --out {run_dir}`"
        )
    if not path.exists():
        raise IceError(
            f"{run_dir} is not a complete run (no {MANIFEST}); "
            f"finish it with `ice embed IMAGES --out {run_dir} --resume`"
        )
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise IceError(f"{path}: unreadable manifest ({e})") from None
    if not manifest.get("complete"):
        raise IceError(f"{run_dir} is not a complete run; finish it with `ice embed --resume`")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise IceError(
            f"{run_dir} has schema version {manifest['schema_version']}; this ICE reads up to {SCHEMA_VERSION}"
        )
    return manifest


def append_npy(path: str | os.PathLike, rows: np.ndarray, n_before: int) -> None:
    """Append `rows` to the .npy file at `path`, which holds n_before rows, in place: the rows
    are written after them and synced, then the header is rewritten with the new length. A
    file that already holds n_before + len(rows) rows is left as it is, and bytes that a
    killed call wrote past n_before rows are written again, so a call repeated after a kill
    gives the same file. Readers that mapped the file before keep seeing the first n_before
    rows. Where the new header would not fit in the old one's place (numpy leaves room for
    21 digits), the file is rewritten whole, atomically."""
    path = Path(path)
    with open(path, "r+b") as f:
        major, minor = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        start = f.tell()
        n_after = n_before + len(rows)
        if fortran or shape[1:] != rows.shape[1:] or dtype != rows.dtype or shape[0] not in (n_before, n_after):
            raise IceError(
                f"{path}: holds {shape} {dtype}, cannot append {rows.shape} {rows.dtype} after row {n_before}"
            )
        if shape[0] == n_after:
            return
        header = io.BytesIO()
        write = np.lib.format.write_array_header_1_0 if major == 1 else np.lib.format.write_array_header_2_0
        write(
            header,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n_after, *shape[1:])},
        )
        if len(header.getvalue()) == start:
            row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            f.truncate(start + n_before * row_bytes)
            f.seek(0, os.SEEK_END)
            f.write(memoryview(np.ascontiguousarray(rows)).cast("B"))  # no copy of the rows
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            f.write(header.getvalue())
            f.flush()
            os.fsync(f.fileno())
            return
    old = np.load(path, mmap_mode="r")[:n_before]
    with atomic_path(path, suffix=".npy") as tmp:
        out = new_memmap(tmp, rows.dtype, (n_after, *rows.shape[1:]))
        for i in range(0, n_before, 65_536):
            out[i : i + 65_536] = old[i : i + 65_536]
        out[n_before:] = rows
        out.flush()
        del out
