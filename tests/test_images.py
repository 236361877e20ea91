import csv
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from embeddings import images
from embeddings.images import decode_all, decode_image, find_images
from ice.errors import IceError, ImageError


def test_find_images_is_recursive_sorted_and_filters_extensions(tmp_path):
    for rel in ["b/2.PNG", "a/1.jpg", "c.webp", "notes.txt", "a/deep/er/3.tiff"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert find_images(tmp_path) == ["a/1.jpg", "a/deep/er/3.tiff", "b/2.PNG", "c.webp"]


def test_find_images_missing_folder(tmp_path):
    with pytest.raises(IceError, match="not found"):
        find_images(tmp_path / "nope")


def test_find_images_survives_a_symlink_loop_and_skips_links_outside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(root / "sub" / "in.png")
    Image.new("RGB", (4, 4)).save(outside / "secret.png")
    (root / "sub" / "loop").symlink_to(root)
    (root / "out.png").symlink_to(outside / "secret.png")
    assert find_images(root) == ["sub/in.png"]
    assert "out.png" in find_images(root, follow_symlinks=True)


def test_find_images_walks_a_folder_that_a_skipped_link_points_to(tmp_path):
    (tmp_path / "z").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "z" / "img.png")
    (tmp_path / "a_link").symlink_to(tmp_path / "z")  # listed first; not followed, so it must not hide z
    assert find_images(tmp_path) == ["z/img.png"]
    assert find_images(tmp_path, follow_symlinks=True) == ["a_link/img.png"]  # the first way in name order


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def deep_folder(root, levels=22) -> str:
    """Folders nested past PATH_MAX (4,096 bytes), with one image at the bottom: a folder the
    scan cannot list even as root (as one without read permission, for other users). Made
    through directory descriptors; returns the deepest folder's path relative to root."""
    fd = os.open(root, os.O_RDONLY)
    parts = []
    for i in range(levels):
        parts.append(f"{i:02d}" + "d" * 198)
        os.mkdir(parts[-1], dir_fd=fd)
        deeper = os.open(parts[-1], os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 0, 0)).save(buf, "PNG")
    out = os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, buf.getvalue())
    os.close(out)
    os.close(fd)
    return "/".join(parts)


def test_find_images_reports_a_folder_it_cannot_list(tmp_path):
    """Such folders were passed over in silence, and their images were never in the run."""
    Image.new("RGB", (20, 20)).save(tmp_path / "top.png")
    deep = deep_folder(tmp_path)
    unlisted = []
    assert find_images(tmp_path, unlisted=unlisted) == ["top.png"]
    ((folder, reason),) = unlisted
    assert deep.startswith(folder.rstrip("/")) and folder.endswith("/") and reason == "File name too long"


def test_find_images_leaves_out_a_fifo_and_keeps_a_broken_link_for_decoding_to_report(tmp_path):
    """Opening a FIFO named like an image blocks until someone writes to it: the job hung."""
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "pipe_link.jpg").symlink_to(tmp_path / "pipe.jpg")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")  # inside the folder, broken
    assert find_images(tmp_path) == ["gone.png", "real.png"]
    assert find_images(tmp_path, follow_symlinks=True) == ["gone.png", "real.png"]
    with pytest.raises(ImageError, match="^broken symbolic link$"):
        decode_image(tmp_path / "gone.png", 16, 10**8)


def test_a_link_to_itself_is_listed_for_decoding_to_report(tmp_path):
    """It vanished from the run and from skipped.csv alike: is_dir() raised ELOOP."""
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    (tmp_path / "self.png").symlink_to(tmp_path / "self.png")
    assert find_images(tmp_path) == ["real.png", "self.png"]
    with pytest.raises(ImageError, match="symbolic links"):
        decode_image(tmp_path / "self.png", 16, 10**8)


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "LA", "RGBA", "P", "I;16", "1"])
def test_decode_any_colour_mode(tmp_path, mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((30, 20), 40000, dtype=np.uint16))
    else:
        img = Image.new(mode, (20, 30))
    path = _save(img, tmp_path / ("x.tiff" if mode == "CMYK" else "x.png"))
    pixels, w, h = decode_image(path, 16, 10**8)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert (w, h) == (20, 30)


def test_decode_16_bit_keeps_brightness(tmp_path):
    img = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    pixels, _, _ = decode_image(_save(img, tmp_path / "x.png"), 16, 10**8)
    assert 120 <= pixels.mean() <= 135  # half of 16-bit range is mid grey, not white


@pytest.mark.parametrize(
    "values",
    [
        np.linspace(0, 1, 64, dtype=np.float32),  # a float image in 0..1: was divided by 255, black
        np.linspace(0, 255, 64, dtype=np.float32),
        np.linspace(0, 2**20, 64).astype(np.int32),  # 32-bit beyond 16 bits: was white
        np.linspace(-3, 5, 64, dtype=np.float32),  # negative: its own range
    ],
)
def test_deep_greyscale_tiffs_span_the_grey_range(tmp_path, values):
    img = Image.fromarray(np.tile(values, (64, 1)))
    pixels, _, _ = decode_image(_save(img, tmp_path / "deep.tif"), 16, 10**8)
    row = pixels[0, :, 0].astype(int)
    assert row[0] <= 10 and row[-1] >= 245 and 110 <= pixels.mean() <= 145, row


def test_one_flat_value_past_16_bits_is_white_not_black(tmp_path):
    img = Image.fromarray(np.full((8, 8), 70_000, dtype=np.int32))  # no range to scale: was 0/0
    pixels, _, _ = decode_image(_save(img, tmp_path / "flat.tif"), 16, 10**8)
    assert (pixels == 255).all()


def test_decode_palette_transparency_goes_on_white(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0] * 256)
    path = _save(img, tmp_path / "t.png", transparency=0)
    pixels, _, _ = decode_image(path, 16, 10**8)
    assert pixels.min() == 255


def test_decode_applies_exif_rotation(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = 255  # left half white, 40 wide x 20 high
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(img, tmp_path / "r.jpg", exif=exif, quality=95)
    pixels, w, h = decode_image(path, 16, 10**8)
    assert (w, h) == (20, 40)  # displayed portrait
    top, bottom = pixels[:6].mean(), pixels[-6:].mean()
    assert top > 200 and bottom < 50  # the white left half is now on top


@pytest.mark.parametrize("suffix", [".tif", ".png", ".webp"])
def test_a_turned_image_reports_its_displayed_size_in_every_format(tmp_path, suffix):
    """Pillow opens a TIFF turned already; the size was then turned a second time."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.new("RGB", (40, 20), "grey"), tmp_path / f"r{suffix}", exif=exif)
    assert decode_image(path, 16, 10**8)[1:] == (20, 40)


def test_a_nearly_square_jpeg_shrunk_by_draft_mode_keeps_its_width_and_height(tmp_path):
    """The size was taken as turned where the draft (125x125 for 1000x999) lost the aspect."""
    path = _save(Image.new("RGB", (1000, 999), "grey"), tmp_path / "wide.jpg", quality=90)
    assert decode_image(path, 16, 10**8)[1:] == (1000, 999)
    path = _save(Image.new("RGB", (999, 1000), "grey"), tmp_path / "tall.jpg", quality=90)
    assert decode_image(path, 16, 10**8)[1:] == (999, 1000)


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty"),
        (b"this is text, not an image", "cannot identify"),
    ],
)
def test_decode_unreadable(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode_image(path, 16, 10**8)


def test_decode_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError):
        decode_image(path, 16, 10**8)


def _jpeg(path, side=48, mode="RGB", **save):
    rng = np.random.default_rng(1)
    a = np.kron(rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    Image.fromarray(a).convert(mode).save(path, "JPEG", quality=95, **save)
    return path


@pytest.mark.parametrize("mode,progressive,size", [("RGB", False, 32), ("L", False, 16), ("RGB", True, 64)])
def test_small_jpeg_fast_path_gives_pillows_pixels(tmp_path, monkeypatch, mode, progressive, size):
    path = _jpeg(tmp_path / "s.jpg", mode=mode, progressive=progressive)
    assert images._decode_small_jpeg(path, size, 10**8) is not None  # 48 < 4 x size: the fast path
    fast = decode_image(path, size, 10**8)
    monkeypatch.setattr(images, "_decode_small_jpeg", lambda *a: None)
    slow = decode_image(path, size, 10**8)
    assert fast[1:] == slow[1:] == (48, 48)
    assert np.array_equal(fast[0], slow[0])


def test_fast_path_leaves_large_truncated_and_over_limit_jpegs_to_pillow(tmp_path):
    assert images._decode_small_jpeg(_jpeg(tmp_path / "big.jpg", side=128), 32, 10**8) is None  # draft mode pays
    assert images._decode_small_jpeg(_jpeg(tmp_path / "s.jpg"), 32, 100) is None
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(tmp_path / "s.jpg", 32, 100)
    data = (tmp_path / "s.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert images._decode_small_jpeg(tmp_path / "cut.jpg", 32, 10**8) is None
    with pytest.raises(ImageError, match="(?i)truncated"):
        decode_image(tmp_path / "cut.jpg", 32, 10**8)


def test_fast_path_reads_a_jpeg_past_its_first_read(tmp_path, monkeypatch):
    path = tmp_path / "noisy.jpg"
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (200, 600, 3), dtype=np.uint8)).save(path, "JPEG", quality=100)
    assert path.stat().st_size > 2 * images.JPEG_HEAD
    fast = images._decode_small_jpeg(path, 64, 10**8)  # 200 < 4 x 64: the fast path, all of the file read
    assert fast is not None and fast[1:] == (600, 200)
    monkeypatch.setattr(images, "_decode_small_jpeg", lambda *a: None)
    slow = decode_image(path, 64, 10**8)
    assert np.abs(fast[0].astype(int) - slow[0])[1:-1, 1:-1].max() <= 2  # Pillow reads past the box's edges


def test_jpeg_frame_header():
    buf = io.BytesIO()
    Image.new("RGB", (40, 24)).save(buf, "JPEG", exif=Image.Exif().tobytes())
    assert images._jpeg_frame(buf.getvalue()) == (40, 24, 3)
    assert images._jpeg_frame(buf.getvalue()[:30]) is None  # the frame header is past the end
    assert images._jpeg_frame(b"\x89PNG\r\n\x1a\n" + bytes(32)) is None


def bomb_png(path, side=100_000):
    """A valid PNG header declaring side x side pixels, with almost no data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_decode_refuses_decompression_bomb_before_decoding(tmp_path):
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(bomb_png(tmp_path / "bomb.png"), 16, 10**8)


def test_decode_all_skips_and_compacts(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "a.png")
    (root / "b.png").write_bytes(b"")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "c.png")
    keep, sizes, _ = decode_all(
        root,
        ["a.png", "b.png", "c.png"],
        size=16,
        max_pixels=10**8,
        workers=0,
        pixels_path=tmp_path / "pixels.npy",
        skipped_path=tmp_path / "skipped.csv",
    )
    assert keep == [0, 2] and sizes.tolist() == [[8, 8], [8, 8]]
    pixels = np.load(tmp_path / "pixels.npy")
    assert pixels.shape == (2, 16, 16, 3)
    assert pixels[0, 0, 0].tolist() == [255, 0, 0] and pixels[1, 0, 0].tolist() == [0, 0, 255]
    rows = list(csv.DictReader(open(tmp_path / "skipped.csv")))
    assert [r["path"] for r in rows] == ["b.png"] and rows[0]["reason"] == "empty file"


def test_has_colour_tells_grey_sets_from_colour_ones():
    from embeddings.images import has_colour

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8), 3, axis=3)
    noisy = np.clip(grey.astype(np.int16) + rng.integers(-2, 3, grey.shape), 0, 255).astype(np.uint8)
    colour = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    assert not has_colour(grey) and not has_colour(noisy)  # JPEG-like chroma noise stays grey
    assert has_colour(colour)


def test_decode_all_reads_ahead_only_the_batches_that_start_on_disk(tmp_path, monkeypatch):
    import os

    from benchmarks.speed import drop_from_page_cache

    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"{i:03d}.png" for i in range(130)]  # batches of 64: 0-63, 64-127, 128-129
    for name in names:
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name)
    os.sync()  # dirty pages cannot be dropped
    asked = []
    real = images.read_ahead
    monkeypatch.setattr(images, "read_ahead", lambda paths: (asked.append(len(paths)), real(paths)))

    def decode(out):
        decode_all(
            root,
            names,
            size=8,
            max_pixels=10**8,
            workers=0,
            pixels_path=tmp_path / out,
            skipped_path=tmp_path / "skipped.csv",
        )
        return np.load(tmp_path / out)

    for name in names:
        (root / name).read_bytes()
    cached = decode("cached.npy")
    assert asked == [] and not images.not_in_page_cache(root / names[64])
    drop_from_page_cache(root, names[64:])
    if not images.not_in_page_cache(root / names[65]):  # not a batch's first file: the check reads a page
        pytest.skip(f"{tmp_path} keeps its files in memory (tmpfs?): nothing to read from disk")
    checks = []  # (file, on disk?) for each batch's first file, as decode_all saw it
    check = images.not_in_page_cache

    def recorded(path):
        checks.append((os.path.basename(path), check(path)))
        return checks[-1][1]

    monkeypatch.setattr(images, "not_in_page_cache", recorded)
    assert np.array_equal(decode("cold.npy"), cached)
    assert [name for name, _ in checks] == [names[0], names[64], names[128]]
    on_disk = [name for name, cold in checks if cold]
    # the first batch was cached and the second dropped (as 065 showed); the third is too, almost
    # always: once in CI (kernel 6.18) the page of 128, read last, outlived POSIX_FADV_DONTNEED
    assert names[0] not in on_disk and names[64] in on_disk
    assert asked == [{names[64]: 64, names[128]: 2}[name] for name in on_disk]
    read = list(asked)
    drop_from_page_cache(root, names)
    decode_all(
        root,
        names,
        size=8,
        max_pixels=10**8,
        workers=0,
        pixels_path=tmp_path / "plain.npy",
        skipped_path=tmp_path / "skipped.csv",
        read_ahead=False,
    )
    assert asked == read and np.array_equal(np.load(tmp_path / "plain.npy"), cached)


FUZZ_CHILD = r"""
import sys
from embeddings.images import decode_image
from ice.errors import ImageError
for path in sys.stdin.read().split():
    print(path, flush=True)  # the last one printed is the one a crash happened on
    try:
        decode_image(path, 32, 40_000_000)
    except ImageError:
        pass
print("all done", flush=True)
"""


def test_mutated_files_of_every_format_decode_or_are_skipped(tmp_path):
    """2,200 damaged files (bytes flipped, cut short, slices repeated), each a row or a reason:
    never a crash of the decoding process (torchvision's PNG decoder did crash on one, which
    is why it is not used), never another exception. A child process, so that a crash fails
    this test and names the file. (A 33,000-file run of the same found nothing either.)"""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    sources = []
    for name, size, options in [
        ("small.jpg", (32, 32), {}),
        ("big.jpg", (400, 300), {}),
        ("prog.jpg", (400, 300), {"progressive": True}),
        ("grey.jpg", (48, 48), {}),
        ("a.png", (60, 50), {}),
        ("a.gif", (60, 50), {}),
        ("a.webp", (60, 50), {}),
        ("a.bmp", (60, 50), {}),
        ("a.tif", (60, 50), {}),
        ("a16.png", (40, 40), {}),
        ("rgba.png", (40, 40), {}),
    ]:
        img = Image.fromarray(pixels).resize(size)
        img = img.convert("L") if name.startswith("grey") else img
        img = img.convert("I;16") if name == "a16.png" else img.convert("RGBA") if name == "rgba.png" else img
        buf = io.BytesIO()
        img.save(buf, format=Image.registered_extensions()[os.path.splitext(name)[1]], **options)
        sources.append((name, buf.getvalue()))
    paths = []
    for i in range(2200):
        name, data = sources[i % len(sources)]
        data = bytearray(data)
        kind = i // len(sources) % 4
        if kind == 0:
            for _ in range(rng.integers(1, 20)):
                data[rng.integers(len(data))] = rng.integers(256)
        elif kind == 1:
            data = data[: rng.integers(2, len(data))]
        elif kind == 2:
            for _ in range(rng.integers(1, 6)):
                data[rng.integers(min(len(data), 600))] = rng.integers(256)
        else:
            a, b = sorted(rng.integers(len(data), size=2))
            data = data[:b] + data[a:b] + data[b:]
        path = tmp_path / f"{i:04d}-{name}"
        path.write_bytes(bytes(data))
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", FUZZ_CHILD],
        input="\n".join(paths),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.getcwd(),
    )
    last = done.stdout.strip().splitlines()[-1:] or ["(none)"]
    assert done.returncode == 0 and last == ["all done"], (
        f"exit {done.returncode} on {last[0]}: {done.stderr.strip().splitlines()[-1:]}"
    )


def test_decode_bytes_gives_what_decode_image_gives(tmp_path):
    """The twin for object stores: the same pixels, sizes and skip reasons from a file's bytes."""
    from embeddings.images import decode_bytes
    from tests.test_pipeline import hostile_folder

    hostile_folder(tmp_path)
    exif = Image.new("RGB", (40, 24), (200, 30, 30)).getexif()
    exif[images.EXIF_ORIENTATION] = 6  # turned a quarter: width and height swap
    Image.new("RGB", (40, 24), (200, 30, 30)).save(tmp_path / "turned.jpg", exif=exif)
    _jpeg(tmp_path / "small.jpg")  # the fast path
    _jpeg(tmp_path / "large.jpg", side=256)  # Pillow's draft mode
    big = np.random.default_rng(2).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "exif-large.jpg", quality=90, exif=exif)  # EXIF past the fast path
    Image.fromarray(np.full((30, 20), 40000, dtype=np.uint16)).save(tmp_path / "deep.tif")
    Image.new("RGBA", (20, 20), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "huge.png")  # over max_pixels below
    paths = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".txt")
    compared = reasons = 0
    for path in paths:
        for size, max_pixels in ((16, 3000), (32, 10**8)):
            try:
                want = decode_image(path, size, max_pixels)
            except ImageError as e:
                with pytest.raises(ImageError) as got:
                    decode_bytes(path.read_bytes(), size, max_pixels)
                assert str(got.value) == str(e), path.name
                reasons += 1
                continue
            got = decode_bytes(path.read_bytes(), size, max_pixels)
            assert got[1:] == want[1:] and np.array_equal(got[0], want[0]), path.name
            compared += 1
    assert compared >= 30 and reasons >= 7  # the three broken files twice, and huge.png once
