"""A run directory on an object store: `ice embed ... --out s3://bucket/prefix`, and `ice explore`
or `ice export` of such a run.

The job builds the run in a staging folder on this machine (`--staging`, by default this
cache's folder for the address), as it builds any run, then publishes it: the old run's
manifest.json is removed from the prefix first, every file is uploaded, objects the new run
does not have are removed, and manifest.json goes last. A prefix with a manifest.json holds a
complete run, one without none. A reader fetches the run into the same cache, again only when
the manifest on the store differs from the cached one, and opens the copy. The explorer
serves such a copy read-only: names and groups are saved in a run directory, and a copy's
would stay on this machine.

Credentials, region and endpoint come from the usual AWS settings, as for input on a store
(ice.storage).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import storage
from .environment import cache_home
from .errors import IceError
from .run_dir import CHECKPOINT, MANIFEST, TEMPORARY, lock_run_dir

CHUNK = 8 << 20  # bytes per read while copying


def cache_folder(uri: str) -> Path:
    """This machine's folder for the run at `uri`: $ICE_CACHE (default the user's cache folder's
    ice/) /runs/bucket/prefix."""
    base = os.environ.get("ICE_CACHE") or os.path.join(cache_home(), "ice")
    key = uri.split("://", 1)[1].strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise IceError(f"{uri}: give a bucket and a prefix, such as s3://bucket/runs/photos")
    return Path(base) / "runs" / key


def _files(folder: Path) -> list[str]:
    """The run's files, relative, `/`-separated, sorted; left out: atomic_path's unfinished
    writes, and the training checkpoint (only a resumed job reads it; readers take model.pt)."""
    left_out = Path(CHECKPOINT).parent.as_posix() + "/"
    out = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and not TEMPORARY.fullmatch(path.name) and not name.startswith(left_out):
            out.append(name)
    return out


def _listing(fs, base: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as e:
        raise IceError(f"{base}: cannot list ({str(e).splitlines()[0]})") from None
    return [info.path[len(base) + 1 :] for info in infos if info.type == pafs.FileType.File]


def _copy(read, write) -> None:
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return
        write(chunk)


def publish(folder: Path, uri: str) -> int:
    """Upload the complete run in `folder` to `uri`, manifest.json last (see the module's
    text); returns the number of files. IceError, in one line, where the store refuses."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        raise IceError(f"{folder}: not a complete run (no {MANIFEST}); nothing published")
    fs, base = storage.open_root(uri)
    files = _files(folder)
    try:
        before = set(_listing(fs, base))
        if MANIFEST in before:
            fs.delete_file(f"{base}/{MANIFEST}")  # from here on, the prefix holds no complete run
        for name in files:
            if name == MANIFEST:
                continue
            with open(folder / name, "rb") as src, fs.open_output_stream(f"{base}/{name}") as dst:
                _copy(src.read, dst.write)
        for name in sorted(before - set(files)):
            fs.delete_file(f"{base}/{name}")
        with open(folder / MANIFEST, "rb") as src, fs.open_output_stream(f"{base}/{MANIFEST}") as dst:
            _copy(src.read, dst.write)
    except OSError as e:
        raise IceError(f"{uri}: cannot write ({str(e).splitlines()[0]})") from None
    return len(files)


def local_copy(place) -> Path:
    """The run directory to open for `place`: itself, or for an s3:// address the fetched copy."""
    return fetch(str(place)) if storage.is_remote(place) else Path(place)


def fetch(uri: str) -> Path:
    """The run at `uri`, fetched into cache_folder(uri) (only where the manifest on the store
    differs from the cached one); returns that folder. IceError, in one line, where there is
    no complete run at `uri` or it cannot be read."""
    fs, base = storage.open_root(uri)
    local = cache_folder(uri)
    try:
        with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
            manifest = f.readall()
    except FileNotFoundError:
        raise IceError(f"{uri}: no complete run there (no {MANIFEST})") from None
    except OSError as e:
        raise IceError(f"{uri}: cannot read ({str(e).splitlines()[0]})") from None
    cached = local / MANIFEST
    if cached.exists() and cached.read_bytes() == manifest:
        return local
    busy = f"{uri}: an `ice embed` is building this run in {local} now (its staging folder); wait for it to finish"
    lock = lock_run_dir(local, busy) if local.is_dir() else None  # a job's staging folder is not replaced
    try:
        return _replace(fs, base, local, manifest, uri)
    finally:
        if lock is not None:
            os.close(lock)


def _replace(fs, base: str, local: Path, manifest: bytes, uri: str) -> Path:
    """Download the run under `base` into local.partial, then put it in local's place."""
    partial = local.with_name(local.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for name in _listing(fs, base):
            if name == MANIFEST:
                continue
            target = partial / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{base}/{name}") as src, open(target, "wb") as dst:
                _copy(src.read, dst.write)
    except FileNotFoundError:  # published again while this read it
        raise IceError(f"{uri}: the run changed while it was read; try again") from None
    except OSError as e:
        raise IceError(f"{uri}: cannot read ({str(e).splitlines()[0]})") from None
    partial.mkdir(parents=True, exist_ok=True)
    (partial / MANIFEST).write_bytes(manifest)
    old = local.with_name(local.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if local.exists():
        local.rename(old)
    partial.rename(local)
    shutil.rmtree(old, ignore_errors=True)
    return local
