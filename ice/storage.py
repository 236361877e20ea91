"""Input images on an object store: an input root written `s3://bucket/prefix`.

Files are listed and read through pyarrow's file systems (pyarrow.fs.FileSystem.from_uri),
which take their credentials, region and endpoint from the usual AWS settings (the
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL variables,
~/.aws, an instance role). Paths inside the root are `/`-separated and relative to it, as
find_images gives them for a folder, so the run does not depend on where its images lie.
"""

from __future__ import annotations

import os
from functools import lru_cache

from ice.errors import IceError, ImageError

SCHEMES = ("s3://",)


def is_remote(root: str | os.PathLike) -> bool:
    """Whether `root` names a place on an object store rather than a folder."""
    return str(root).startswith(SCHEMES)


@lru_cache(maxsize=8)
def open_root(root: str):
    """(pyarrow file system, base path without a trailing /) for `root`, opened once per root;
    IceError, in one line, where it cannot be."""
    import pyarrow.fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(root)
    except (OSError, ValueError) as e:
        raise IceError(f"{root}: cannot open ({e})") from None
    return fs, base.rstrip("/")


def list_images(root: str, extensions: tuple[str, ...]) -> tuple[list[str], list[int], list[int]]:
    """(sorted relative paths, sizes, mtime_ns) of the objects under `root` whose names end in
    one of `extensions` (lower case). IceError, in one line, where it cannot be listed."""
    import pyarrow.fs as pafs

    fs, base = open_root(root)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        raise IceError(f"{root}: nothing there (no object under this prefix)") from None
    except OSError as e:
        raise IceError(f"{root}: cannot list ({str(e).splitlines()[0]})") from None
    found = sorted(
        (info.path[len(base) + 1 :], info.size, info.mtime_ns or -1)
        for info in infos
        if info.type == pafs.FileType.File and info.path.lower().endswith(extensions)
    )
    return [p for p, _, _ in found], [s for _, s, _ in found], [m for _, _, m in found]


def fingerprint(root: str, paths: list[str]) -> tuple[list[int], list[int]]:
    """(sizes, mtime_ns) of these objects under `root`, -1 for those that are not there."""
    import pyarrow.fs as pafs

    fs, base = open_root(root)
    try:
        infos = fs.get_file_info([f"{base}/{p}" for p in paths])
    except OSError as e:
        raise IceError(f"{root}: cannot read ({str(e).splitlines()[0]})") from None
    there = [info.type == pafs.FileType.File for info in infos]
    sizes = [info.size if ok else -1 for info, ok in zip(infos, there, strict=True)]
    return sizes, [(info.mtime_ns or -1) if ok else -1 for info, ok in zip(infos, there, strict=True)]


def read_bytes(root: str, path: str) -> bytes:
    """The bytes of the object `path` under `root`; ImageError with the reason decode_image
    gives where it is missing or cannot be read."""
    fs, base = open_root(root)
    try:
        with fs.open_input_stream(f"{base}/{path}") as f:
            return f.readall()
    except FileNotFoundError:  # as images.missing_reason words it for a file
        raise ImageError("file not found (gone since it was listed)") from None
    except OSError as e:
        raise ImageError(f"cannot read: {str(e).splitlines()[0]}") from None
