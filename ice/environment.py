"""Process settings that must be in place before torch, faiss or numba first load; set when
`ice` is imported, which the job and the explorer both do before they load any of them.
"""

import os

# OpenMP threads (torch, faiss) spin while they wait for work by default. On a machine with
# other busy processes the spinning starves everyone: on 2 cores under load, faiss k-means
# and training ran several times faster with passive waiting. Set before torch or
# faiss is first imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cache_home() -> str:
    """The user's cache folder: $XDG_CACHE_HOME, else ~/.cache."""
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def _numba_cache_fallback() -> None:
    """numba caches compiled code beside its module or in the user's cache folder, and
    umap-learn asks for that cache as it is imported: where neither can be written (an install
    shared read-only, a home folder that is not writable) `import umap` failed with "cannot
    cache function ...: no locator available". Then the cache goes to a folder of this user's
    in the temporary folder. Decided without importing numba, which reads the setting once;
    a NUMBA_CACHE_DIR of the user's own wins."""
    import importlib.util
    import tempfile

    if "NUMBA_CACHE_DIR" in os.environ:
        return
    spec = importlib.util.find_spec("umap")
    if (
        spec is not None
        and spec.submodule_search_locations
        and os.access(list(spec.submodule_search_locations)[0], os.W_OK)
    ):
        return
    folder = cache_home()
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)  # numba makes the missing folders: the nearest one counts
    if not os.access(folder, os.W_OK):
        try:
            os.environ["NUMBA_CACHE_DIR"] = _private_folder(tempfile.gettempdir(), "ice-numba-")
        except OSError:  # no temporary folder either: importing this package must not fail for it
            pass


def _private_folder(parent: str, prefix: str) -> str:
    """parent/prefix<uid>, made 0700 and checked to be this user's own real folder, else a new
    one from mkdtemp: numba unpickles what it finds in its cache, so a folder another user
    made first in a shared /tmp would run their code."""
    import stat
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None:
        path = os.path.join(parent, f"{prefix}{uid}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return tempfile.mkdtemp(prefix=prefix)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700:
            return path
    return tempfile.mkdtemp(prefix=prefix)


_numba_cache_fallback()
