"""`ice embed --engine ray`: the decode stage on Ray Data, on a local Ray or a cluster.

Each Ray task reads a block of files whole and decodes them with images.decode_bytes, the twin
of the local engine's decode_image, so both engines give the same pixels, sizes and skip
reasons. Each image goes to its row (its position in the sorted list of files) of the scratch
pixels file, which the task writes itself, as the local engine's worker processes do; blocks
finish in any order, and the run does not depend on which finished first. Ray retries a task
whose worker was lost. The stages after decoding run in this process, as with the local engine.

Only this module imports ray, and only when the engine is chosen (tests/test_ray.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ice.errors import IceError, ImageError
from ice.run_dir import new_memmap

from .images import Decoded, _keep_rows, _reason, decode_bytes, display_path, missing_reason, write_skipped
from .progress import progress

BLOCK = 1024  # files per Ray task


def start_ray(address: str | None = None):
    """The ray module, connected: to `address` (a running cluster), else to the Ray this process
    already runs, else to a new local Ray on this machine's cores."""
    try:
        import ray
    except ImportError:
        raise IceError("--engine ray needs Ray: pip install -e '.[ray]' (or pip install 'ice-explorer[ray]')") from None
    if not ray.is_initialized():  # "local": a new Ray here, even where a file of an earlier one is left
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def read_and_decode(full: str, size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """decode_image's answer for a local file, through its bytes: the same pixels, sizes and
    reasons (a file gone or unreadable gives decode_image's reason too)."""
    try:
        with open(full, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageError(missing_reason(full)) from None
    except Exception as e:  # _reason re-raises what is not a reading failure
        raise ImageError(_reason(e, empty=False)) from None
    return decode_bytes(data, size, max_pixels)


def decode_block(batch: dict, prefix: str, size: int, max_pixels: int, scratch: str) -> dict:
    """Ray Data's map_batches function, run as a Ray task: decode a block of {row, path} into
    their rows of the scratch file (on the shared file system the run directory is on, as the
    local engine's worker processes do), and answer their original sizes and skip reasons ("" where
    decoded). Only those small arrays go back through Ray's object store."""
    rows = np.load(scratch, mmap_mode="r+")  # per task: a later run's scratch file is a new file
    wh = np.zeros((len(batch["row"]), 2), np.int32)
    errors = []
    for j, (row, path) in enumerate(zip(batch["row"], batch["path"], strict=True)):
        try:
            rows[row], wh[j, 0], wh[j, 1] = read_and_decode(prefix + str(path), size, max_pixels)
            errors.append("")
        except ImageError as e:
            errors.append(str(e))
    rows.flush()
    del rows
    return {"row": batch["row"], "wh": wh, "error": np.array(errors, dtype=object)}


def decode_all_ray(
    root: Path,
    paths: list[str],
    *,
    size: int,
    max_pixels: int,
    pixels_path: Path,
    skipped_path: Path,
    address: str | None = None,
    also_skipped: list[tuple[str, str]] = (),
) -> Decoded:
    """images.decode_all on Ray Data: the same pixels_path, skipped_path and answer. A killed
    call is started again from the first file."""
    import pyarrow as pa

    ray = start_ray(address)
    n = len(paths)
    scratch = pixels_path.with_name(pixels_path.name + ".partial")
    new_memmap(scratch, np.uint8, (max(n, 1), size, size, 3)).flush()
    ok = np.zeros(n, dtype=bool)
    sizes = np.zeros((n, 2), dtype=np.int32)
    skipped: list[tuple[int, str]] = []
    table = pa.table({"row": np.arange(n, dtype=np.int64), "path": pa.array(paths, pa.string())})
    ds = ray.data.from_arrow([table.slice(start, BLOCK) for start in range(0, n, BLOCK)])  # a block per task
    ds = ds.map_batches(
        decode_block,
        fn_kwargs={"prefix": os.path.join(root, ""), "size": size, "max_pixels": max_pixels, "scratch": str(scratch)},
        batch_size=BLOCK,
        batch_format="numpy",
    )
    with progress(n, "decode") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            got = batch["row"]
            good = np.array([not e for e in batch["error"]], dtype=bool)
            ok[got[good]], sizes[got[good]] = True, batch["wh"][good]
            skipped += [(int(i), str(e)) for i, e in zip(got[~good], batch["error"][~good], strict=True)]
            bar.update(len(got))
    keep = np.flatnonzero(ok)
    # in row order, as the local engine lists them
    write_skipped(skipped_path, [(display_path(paths[i]), e) for i, e in sorted(skipped)] + list(also_skipped))
    _keep_rows(scratch, pixels_path, keep, n)
    return Decoded(keep.tolist(), sizes[keep], 0)
