"""Find image files, decode them to small uint8 squares, and cache the pixels on disk."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import struct
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from ice import storage
from ice.errors import IceError, ImageError, not_a_folder
from ice.run_dir import atomic_path, new_memmap

from .progress import progress

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how a picture is turned on display

# We enforce our own pixel limit before decoding; Pillow's warning would only be noise.
Image.MAX_IMAGE_PIXELS = None


def read_image_list(root: str | os.PathLike, listing: str | os.PathLike) -> tuple[list[str], list[tuple[str, str]]]:
    """The images an --input-list names, instead of listing the folder (slow for millions of
    files on a shared filesystem): sorted, each once, `/`-separated and relative to `root`, as
    find_images gives them; and the (path, reason) of each line that names no image file
    inside `root`. `listing`: a text file of one path per line, or a Parquet file with a `path`
    column (text or bytes). Files that are listed but missing are found so at decoding."""
    listing = Path(listing)
    if not listing.is_file():
        raise IceError(f"--input-list {listing}: no such file")
    try:
        if listing.suffix.lower() == ".parquet":
            import pandas as pd

            column = pd.read_parquet(listing, columns=["path"])["path"]
            named = [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in column.dropna()]
        else:
            with open(listing, encoding="utf-8", errors="surrogateescape", newline="") as f:
                named = [line.rstrip("\r\n") for line in f]
    except (OSError, ValueError, KeyError) as e:
        raise IceError(f"--input-list {listing}: unreadable ({e})") from None
    paths, refused = set(), []
    for name in named:
        if not name.strip():
            continue
        parts = [part for part in name.replace(os.sep, "/").split("/") if part not in ("", ".")]
        rel = "/".join(parts)
        if os.path.isabs(name) or ".." in parts or not parts:
            refused.append((name, "listed path is not inside the input folder"))
        elif not rel.lower().endswith(EXTENSIONS):
            refused.append((rel, f"not an image file name (expected {', '.join(EXTENSIONS)})"))
        else:
            paths.add(rel)
    return sorted(paths), refused


def find_images(
    root: str | os.PathLike, follow_symlinks: bool = False, unlisted: list[tuple[str, str]] | None = None
) -> list[str]:
    """Sorted `/`-separated paths, relative to `root`, of files with an image extension.

    Symlinks to folders are walked only with `follow_symlinks`; symlinked files that
    resolve outside `root` are left out unless `follow_symlinks`. Loops are never walked twice.
    Anything but a file (a FIFO, a socket, a device) is left out, even with an image's name.
    Folders that cannot be listed (no permission, a path past PATH_MAX) are passed over, as
    os.walk does, and added to `unlisted` as (relative path with a trailing "/", reason). One
    os.scandir per folder and no system call per file but for symlinks, which lists a million
    files many times faster than os.walk with pathlib (BENCHMARKS.md history).
    """
    root = Path(root)
    if not root.is_dir():
        raise not_a_folder(root, "input folder")
    real_root = root.resolve()
    seen_dirs = {real_root}
    found = []
    folders = [("", os.fspath(root))]  # (relative path with a trailing "/", path to list)
    while folders:
        prefix, folder = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            if unlisted is not None:
                unlisted.append((prefix or "./", e.strerror or str(e)))
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir, is_link = entry.is_dir(), entry.is_symlink()
            except OSError:  # a link that points to itself: decoding reports it
                if entry.name.lower().endswith(EXTENSIONS):
                    found.append(prefix + entry.name)
                continue
            if is_dir:
                if is_link and not follow_symlinks:
                    continue
                subfolders.append(entry)
            elif entry.name.lower().endswith(EXTENSIONS):
                if is_link and not follow_symlinks and not Path(entry.path).resolve().is_relative_to(real_root):
                    continue
                # a FIFO, socket or device with an image's name: opening it can block forever (a FIFO
                # hung the job); a broken link stays, for decoding to report
                if not entry.is_file() and (not is_link or os.path.exists(entry.path)):
                    continue
                found.append(prefix + entry.name)
        # in name order, so that the way by which a folder reached twice is walked does not
        # depend on the order the file system lists it in; popped in that order (depth first)
        kept = []
        for entry in sorted(subfolders, key=lambda e: e.name):
            real = Path(entry.path).resolve()
            if real not in seen_dirs:  # else a symlink loop, or a folder reached twice
                seen_dirs.add(real)
                kept.append((f"{prefix}{entry.name}/", entry.path))
        folders += reversed(kept)
    found.sort()
    return found


def display_path(path: str) -> str:
    """A path as text: bytes that are not UTF-8 (kept by the OS as surrogates) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def typical_size(root: Path | str, paths: list[str], sample: int = 200, seed: int = 0) -> int:
    """The working size for these images: their median short side (from the headers of a
    sample) rounded up to a multiple of 16, from 16 to 64. Small images are not upsampled
    past what they hold, which keeps training cheap; larger ones get 64."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    sides = []
    for i in pick:
        try:
            if storage.is_remote(root):
                source = io.BytesIO(storage.read_bytes(str(root), paths[i]))
            else:
                source = root / paths[i]
            with Image.open(source) as img:
                sides.append(min(img.size))
        except Exception:  # unreadable files are the decode stage's business
            continue
    if not sides:
        return 64
    return int(min(64, max(16, -(-np.median(sides) // 16) * 16)))


COLOUR_SPREAD = 6.0  # mean spread between a pixel's channels (of 255) above which a set is in colour:
# greyscale scans saved as RGB JPEGs keep a level or two of chroma noise


def has_colour(pixels: np.ndarray, sample: int = 1000, seed: int = 0) -> bool:
    """Whether decoded images (n, s, s, 3) uint8 are in colour, judged from a sample of them."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(pixels), size=min(sample, len(pixels)), replace=False))
    x = np.asarray(pixels[pick])
    return float((x.max(axis=3).astype(np.int16) - x.min(axis=3)).mean()) > COLOUR_SPREAD


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white.

    Greyscale deeper than 8 bits: 16-bit images scale from 0..65535; 32-bit integer and float
    images from 0..1 (floats only), 0..255 or 0..65535, the first that holds them, and
    from their own lowest to highest value where none does."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        seen = a[np.isfinite(a)]
        lo, hi = (float(seen.min()), float(seen.max())) if seen.size else (0.0, 0.0)
        tops = [65535.0] if img.mode.startswith("I;16") else [1.0] * (img.mode == "F") + [255.0, 65535.0]
        top = next((t for t in tops if lo >= 0 and hi <= t), None)
        if top is None and hi > lo:
            top = hi
        else:  # a range that holds the values, or one flat value past all of them (white)
            top, lo = top or hi, 0.0
        a = np.nan_to_num(a, nan=lo, posinf=top, neginf=lo)
        a = np.clip((a - lo) / max(top - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def decode_image(path: str | os.PathLike, size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """Decode one file to `(size, size, 3)` uint8, the centre square resized.

    Returns the pixels and the original width and height after EXIF orientation.
    Raises ImageError with a short reason for anything that cannot be read.
    """
    try:
        small = _decode_small_jpeg(path, size, max_pixels)
        if small is not None:
            return small
        return _decode_with_pillow(path, size, max_pixels)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(missing_reason(path)) from None
    except Exception as e:  # _reason re-raises what is not a decoding failure
        raise ImageError(_reason(e, empty=os.path.exists(path) and os.path.getsize(path) == 0)) from None


def missing_reason(path: str | os.PathLike) -> str:
    """Why a file listed by the scan could not be opened."""
    return "broken symbolic link" if os.path.islink(path) else "file not found (gone since it was listed)"


def decode_bytes(data: bytes, size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """decode_image for a file's contents, read whole (from an object store, say): the same
    pixels, width and height, and the same ImageError reasons."""
    try:
        small = _small_jpeg(data, size, max_pixels, lambda: b"")
        if small is not None:
            return small
        return _decode_with_pillow(io.BytesIO(data), size, max_pixels)
    except ImageError:
        raise
    except Exception as e:  # _reason re-raises what is not a decoding failure
        raise ImageError(_reason(e, empty=len(data) == 0)) from None


def _reason(e: Exception, empty: bool) -> str:
    """The one-line reason a decoding failure gives; re-raises any other exception."""
    if isinstance(e, Image.DecompressionBombError):
        return f"decompression bomb: {e}"
    if not isinstance(e, (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.UnidentifiedImageError)):
        raise e
    if empty:
        return "empty file"
    if isinstance(e, Image.UnidentifiedImageError):  # Pillow's message names the file or the buffer object
        return "not an image Pillow can read (cannot identify image file)"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _decode_with_pillow(source, size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """decode_image's general path, through Pillow, from a path or a file object."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(source) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{w}x{h} pixels is over the limit of {max_pixels} (--max-pixels)")
            # JPEG: let libjpeg decode at 1/2..1/8 scale when the image is much larger.
            img.draft("RGB", (max(size, 1) * 2, max(size, 1) * 2))
            img.load()  # a TIFF comes turned already, and drops its orientation tag as it loads
            if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # turned a quarter on display
                w, h = h, w
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            side = min(img.size)
            left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
            img = img.resize(
                (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0
            )
            return np.asarray(img, dtype=np.uint8), w, h


JPEG_HEAD = 65_536  # bytes read to find a JPEG's frame header (EXIF comes first and is < 64 KiB)
RGB = 3  # torchvision.io.ImageReadMode.RGB, the operator's mode argument


@functools.cache
def _jpeg_operator():
    """torchvision's libjpeg decoder, image.decode_jpeg(data, mode, apply_exif_orientation),
    without its Python wrapper (which warns, deprecated, and logs on every call), loaded from
    torchvision's image library alone: importing torchvision (its models, datasets and
    transforms) holds about 90 MB more in each process that decodes, and the Ray engine decodes
    in several. None where the library is not found: then through torchvision.io. Loaded at
    the first JPEG, so that a process that only finds files holds no torch."""
    import importlib.machinery
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    loaders = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    finder = importlib.machinery.FileFinder(list(spec.submodule_search_locations)[0], loaders)
    for name in ("image_stable", "image"):  # the library's name in torchvision 0.29, and before
        found = finder.find_spec(name)
        if found is None or not found.origin:
            continue
        try:
            torch.ops.load_library(found.origin)
            return torch.ops.image.decode_jpeg
        except (OSError, RuntimeError, AttributeError):
            continue
    return None


def _decode_small_jpeg(path: str | os.PathLike, size: int, max_pixels: int) -> tuple[np.ndarray, int, int] | None:
    """decode_image's fast path, for JPEGs whose short side is under 4 x size; else None.

    libjpeg through torchvision, with no Python header parsing, the same pixels as Pillow for
    square images (Pillow's resize of a non-square image's centre box also reads pixels just
    outside the box, so the edge rows can differ by a few levels). Larger JPEGs go through
    Pillow, whose draft mode decodes them at 1/2 to 1/8 scale. Only baseline and progressive
    8-bit grey or colour JPEGs qualify; anything torchvision cannot decode returns None too,
    so that Pillow gives the reason. (torchvision's PNG decoder is not used: a corrupt PNG
    crashed the process.)

    A CIFAR-10 file takes libjpeg a few tens of microseconds, so the calls around it count as
    much: the file is read with os.read (3 system calls, where open() and read() made 10), the
    operator is called without torchvision's wrapper, and the centre square is cut in numpy.
    The pixels returned may be a view of the decoded image.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return _small_jpeg(os.read(fd, JPEG_HEAD), size, max_pixels, lambda: os.read(fd, JPEG_HEAD))
    finally:
        os.close(fd)


def _small_jpeg(data: bytes, size: int, max_pixels: int, more) -> tuple[np.ndarray, int, int] | None:
    """_decode_small_jpeg on a file's first bytes `data`; `more()` returns the next JPEG_HEAD
    bytes (b"" at the end), read only for a JPEG that qualifies."""
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    w, h, components = frame
    if components not in (1, 3) or not 0 < min(w, h) < 4 * size or w * h > max_pixels:
        return None  # Pillow decodes it, or says why not
    while len(data) % JPEG_HEAD == 0 and (chunk := more()):
        data += chunk
    import torch

    decode_jpeg = _jpeg_operator()
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        if decode_jpeg is not None:
            x = decode_jpeg(encoded, RGB, True)
        else:
            from torchvision.io import ImageReadMode, decode_jpeg

            x = decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:
        return None
    height, width = x.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    if side == size:
        return x.numpy()[:, top : top + side, left : left + side].transpose(1, 2, 0), int(width), int(height)
    # uint8 antialiased bilinear: Pillow's BILINEAR, as the slow path uses
    x = torch.nn.functional.interpolate(
        x[None, :, top : top + side, left : left + side].contiguous(memory_format=torch.channels_last),
        size=(size, size),
        mode="bilinear",
        antialias=True,
    )[0]
    return x.permute(1, 2, 0).numpy(), int(width), int(height)


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of an 8-bit baseline or progressive JPEG, read from its
    start-of-frame marker; None for anything else or a header that runs past `data`."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 10 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
        elif marker in (0xC0, 0xC1, 0xC2):  # SOF0-2: precision, height, width, components
            precision, h, w, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
            return (w, h, components) if precision == 8 else None
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # lossless, arithmetic...
            return None
        else:
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def not_in_page_cache(path: str | os.PathLike) -> bool:
    """Whether reading the file's first byte would wait for the disk (False where that cannot be
    told: no RWF_NOWAIT outside Linux, or a file that cannot be opened, whose error the decode gives).
    Where it would, the kernel starts reading that page anyway."""
    if not hasattr(os, "RWF_NOWAIT"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        return False
    except BlockingIOError:
        return True
    except OSError:  # a file system without non-blocking reads (EOPNOTSUPP): treat it as on disk
        return True
    finally:
        os.close(fd)


def read_ahead(paths: list[str | os.PathLike]) -> None:
    """Ask the kernel to start reading every file in `paths` now (POSIX_FADV_WILLNEED), so that
    the disk serves them together rather than one per wait; cheap where they are cached."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


class DecodeDataset:
    """Decodes files in DataLoader workers straight into the shared pixel memmap.

    A map-style dataset (DataLoader needs only __len__ and __getitem__). Item: (index, width,
    height, error). Only these small tuples cross the process boundary: pickling every image's
    pixels back to the main process cost more than the decoding that the second worker saved.

    A batch whose first file is not in the page cache asks for all its files at once
    (read_ahead), so that the disk serves the batch in one sweep rather than a seek per file.
    The check costs one byte's read per batch.
    """

    def __init__(
        self, root: Path, paths: list[str], size: int, max_pixels: int, scratch: Path, read_ahead: bool = True
    ):
        self.root, self.paths, self.size, self.max_pixels = root, paths, size, max_pixels
        self.prefix = os.path.join(root, "")  # a file's path is prefix + its relative path, cheaper than pathlib's /
        self.scratch, self.buf, self.rows = scratch, None, None  # opened lazily, once per worker process
        self.read_ahead = read_ahead and hasattr(os, "posix_fadvise")  # Linux

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, indices: list[int]) -> list[tuple[int, int, int, str]]:
        if self.read_ahead and indices and not_in_page_cache(self.prefix + self.paths[indices[0]]):
            read_ahead([self.prefix + self.paths[i] for i in indices])
        return [self[i] for i in indices]

    def __getitem__(self, i: int):
        if self.buf is None:
            self.buf = np.load(self.scratch, mmap_mode="r+")
            self.rows = self.buf.view(np.ndarray)  # the same pages, without memmap's Python hooks on each write
        try:
            self.rows[i], w, h = decode_image(self.prefix + self.paths[i], self.size, self.max_pixels)
            return i, w, h, ""
        except ImageError as e:
            return i, 0, 0, str(e)


def _collate(batch):
    return batch


JOURNAL_SECONDS = 30.0  # decoding time between two saves of the decode journal: a save syncs the
# pixels to disk, which cost 8-15% of a warm 100k decode when it ran every 20,000 images


class Decoded(NamedTuple):
    keep: list[int]  # indices into `paths` of the readable files, in order
    sizes: np.ndarray  # (len(keep), 2) int32 original (width, height)
    resumed: int  # files a killed earlier call had already decoded (0 when starting afresh)


def decode_all(
    root: Path,
    paths: list[str],
    *,
    size: int,
    max_pixels: int,
    workers: int,
    pixels_path: Path,
    skipped_path: Path,
    resume: bool = False,
    read_ahead: bool = True,
    also_skipped: list[tuple[str, str]] = (),
) -> Decoded:
    """Decode every file into `pixels_path`, a (n_ok, size, size, 3) uint8 .npy.

    Unreadable files go to `skipped_path` (path,reason). The pixels go first to
    `<pixels>.partial`; every JOURNAL_SECONDS that file is synced to disk and
    `<pixels>.journal.npz` records which files are done. With `resume`, a call on the same
    paths and size after a killed one decodes only the files its journal does not hold.
    `read_ahead=False` reads one file at a time (DecodeDataset), for a side-by-side.
    """
    n = len(paths)
    scratch = pixels_path.with_name(pixels_path.name + ".partial")
    journal = pixels_path.with_name(pixels_path.name + ".journal.npz")
    key = _journal_key(paths, size)
    state = _read_journal(journal, scratch, key, n, size) if resume else None
    if state is None:
        journal.unlink(missing_ok=True)
        new_memmap(scratch, np.uint8, (max(n, 1), size, size, 3)).flush()
        state = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros((n, 2), dtype=np.int32), []
    done, ok, sizes, skipped = state
    resumed = int(done.sum())
    import torch

    _jpeg_operator()  # loaded before the workers fork, so that they share its pages
    dataset = DecodeDataset(root, paths, size, max_pixels, scratch, read_ahead)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=64,
        num_workers=workers,
        sampler=np.flatnonzero(~done).tolist(),
        collate_fn=_collate,
        persistent_workers=False,
    )
    last_save = time.monotonic()
    with progress(n, "decode", initial=resumed) as bar:
        for batch in loader:
            for i, w, h, err in batch:
                if err:
                    skipped.append((display_path(paths[i]), err))
                else:
                    ok[i], sizes[i] = True, (w, h)
                done[i] = True
            bar.update(len(batch))
            if time.monotonic() - last_save >= JOURNAL_SECONDS:
                _save_journal(journal, scratch, dataset, key, done, ok, sizes, skipped)
                last_save = time.monotonic()
    if dataset.buf is not None:
        dataset.buf.flush()  # written in this process (workers=0)
        dataset.buf = dataset.rows = None
    keep = np.flatnonzero(ok)
    write_skipped(skipped_path, skipped + list(also_skipped))
    _keep_rows(scratch, pixels_path, keep, n)
    journal.unlink(missing_ok=True)
    return Decoded(keep.tolist(), sizes[keep], resumed)


def _keep_rows(scratch: Path, pixels_path: Path, keep: np.ndarray, n: int) -> None:
    """Move the scratch pixels to `pixels_path`, with only the rows in `keep` (atomically)."""
    if len(keep) == n and n > 0:
        os.replace(scratch, pixels_path)
        return
    buf = np.load(scratch, mmap_mode="r")
    with atomic_path(pixels_path, suffix=".npy") as tmp:
        out = new_memmap(tmp, np.uint8, (len(keep), *buf.shape[1:]))
        for start in range(0, len(keep), 8192):
            out[start : start + 8192] = buf[keep[start : start + 8192]]
        out.flush()
        del out
    del buf
    os.unlink(scratch)


def _journal_key(paths: list[str], size: int) -> str:
    """What a journal must match to be resumed from: the working size and the exact file list."""
    digest = hashlib.sha256(f"{size}\n".encode())
    for p in paths:
        digest.update(os.fsencode(p) + b"\0")
    return digest.hexdigest()


def _save_journal(
    journal: Path,
    scratch: Path,
    dataset: DecodeDataset | None,
    key: str,
    done: np.ndarray,
    ok: np.ndarray,
    sizes: np.ndarray,
    skipped: list[tuple[str, str]],
) -> None:
    """Sync the pixels decoded so far to disk, then record (atomically) which files they are.
    `dataset`: None where other processes wrote the pixels (the Ray engine's tasks)."""
    if dataset is not None and dataset.buf is not None:
        dataset.buf.flush()  # workers=0: written through this process's own map
    fd = os.open(scratch, os.O_RDWR)
    try:
        os.fsync(fd)  # the workers' writes sit in the page cache of the same file
    finally:
        os.close(fd)
    with atomic_path(journal, suffix=".npz") as tmp:
        np.savez(
            tmp,
            key=np.array(key),
            done=done,
            ok=ok,
            sizes=sizes,
            skipped_path=np.array([p for p, _ in skipped], dtype=str),
            skipped_reason=np.array([r for _, r in skipped], dtype=str),
        )


def _read_journal(journal: Path, scratch: Path, key: str, n: int, size: int):
    """(done, ok, sizes, skipped) from a journal that matches `key` and a scratch file of the
    right shape; None when there is none to resume from."""
    try:
        with np.load(journal) as z:
            if str(z["key"]) != key or z["done"].shape != (n,):
                return None
            state = (
                z["done"].copy(),
                z["ok"].copy(),
                z["sizes"].copy(),
                list(zip(z["skipped_path"].tolist(), z["skipped_reason"].tolist())),
            )
        if np.load(scratch, mmap_mode="r").shape != (max(n, 1), size, size, 3):
            return None
    except (OSError, ValueError, KeyError):
        return None
    return state


def write_skipped(path: Path, rows: list[tuple[str, str]]) -> None:
    """skipped.csv: a `path,reason` row for each file or folder that was not read, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "reason"])
            writer.writerows(sorted(rows))
