"""Hostile image folders and jobs killed mid-way: nothing crashes the job, nothing is lost."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embeddings.config import Config
from embeddings.images import decode_all, find_images
from embeddings.pipeline import run_embed
from ice import run_dir as rd
from tests.conftest import TINY, make_images, mounted
from tests.test_images import bomb_png


def hostile_corpus(root):
    """Every kind of file the issue names; returns the relative paths that cannot be read."""
    root.mkdir(parents=True)
    make_images(root / "plain", n=6)
    (root / "zero.jpg").write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    (root / "cut.jpg").write_bytes(good.getvalue()[:200])
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(png, "PNG")
    (root / "cut.png").write_bytes(png.getvalue()[:60])
    (root / "jpeg-named.png").write_bytes(good.getvalue())  # wrong extension, readable content
    (root / "words.gif").write_text("GIF? no: text")  # wrong extension, unreadable
    bomb_png(root / "bomb.png")
    Image.new("RGB", (12000, 12000), (0, 128, 255)).save(root / "huge.jpg", quality=50)
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 50000, dtype=np.uint16)).save(root / "sixteen.png")
    Image.new("LA", (20, 20), (100, 255)).save(root / "la.png")
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(root / "palette.png", transparency=0)
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(root / "rotated.jpg", exif=exif, quality=95)
    Image.new("RGB", (20, 20)).save(os.path.join(os.fsencode(root), b"caf\xe9 latin1.png"))
    Image.new("RGB", (20, 20)).save(root / "name with 'quotes' and \"spaces\".png")
    (root / "loop").symlink_to(root)
    outside = root.parent / "outside"
    outside.mkdir()
    Image.new("RGB", (20, 20)).save(outside / "secret.png")
    (root / "escape.png").symlink_to(outside / "secret.png")
    return {"zero.jpg", "cut.jpg", "cut.png", "words.gif", "bomb.png"}


def test_hostile_corpus_every_file_is_a_row_or_a_skip(tmp_path):
    unreadable = hostile_corpus(tmp_path / "in")
    out = tmp_path / "run"
    manifest = run_embed(tmp_path / "in", out, Config(**TINY))
    items = pd.read_parquet(out / rd.ITEMS).set_index("path")
    skipped = {r["path"]: r["reason"] for r in csv.DictReader(open(out / rd.SKIPPED))}
    assert set(skipped) == unreadable
    assert "over the limit" in skipped["bomb.png"]
    readable = {
        "jpeg-named.png",
        "huge.jpg",
        "anim.gif",
        "cmyk.jpg",
        "sixteen.png",
        "la.png",
        "palette.png",
        "rotated.jpg",
        "caf\\xe9 latin1.png",
        "name with 'quotes' and \"spaces\".png",
    }
    readable |= {f"plain/class{i % 3}/img_{i:03d}.png" for i in range(6)}
    assert set(items.index) == readable, "escape.png (outside the root) is not followed; the loop is walked once"
    assert manifest["counts"] == {
        "found": len(readable) + len(unreadable),
        "images": len(readable),
        "skipped": len(unreadable),
        "unlisted_folders": 0,
    }
    assert (items.loc["huge.jpg", "width"], items.loc["huge.jpg", "height"]) == (12000, 12000)
    pixels = np.load(out / rd.PIXELS)
    ids = items["image_id"]
    assert pixels[ids["anim.gif"]].reshape(-1, 3).mean(0).tolist() == pytest.approx([255, 0, 0], abs=2)
    assert pixels[ids["huge.jpg"]].reshape(-1, 3).mean(0).tolist() == pytest.approx([0, 128, 255], abs=4)
    rot = pixels[ids["rotated.jpg"]]
    assert rot[:4].mean() > 200 and rot[-4:].mean() < 50  # EXIF orientation applied


def test_follow_symlinks_reads_the_file_outside(tmp_path):
    hostile_corpus(tmp_path / "in")
    run_embed(tmp_path / "in", tmp_path / "run", Config(**TINY, follow_symlinks=True))
    assert "escape.png" in set(pd.read_parquet(tmp_path / "run" / rd.ITEMS)["path"])


def test_file_deleted_between_scan_and_decode_is_skipped(tmp_path):
    make_images(tmp_path / "in", n=3, classes=1)
    paths = ["class0/img_000.png", "class0/img_001.png", "class0/img_002.png"]
    (tmp_path / "in" / paths[1]).unlink()
    keep, _, _ = decode_all(
        tmp_path / "in",
        paths,
        size=16,
        max_pixels=10**8,
        workers=0,
        pixels_path=tmp_path / "p.npy",
        skipped_path=tmp_path / "s.csv",
    )
    assert keep == [0, 2]
    assert list(csv.DictReader(open(tmp_path / "s.csv")))[0]["reason"] == "file not found (gone since it was listed)"


ARGS = [
    "--image-size",
    "16",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--workers",
    "0",
    "--kmeans-restarts",
    "1",
    "--neighbors",
    "8",
    "--clusters",
    "3",
]


def _ice(*args):
    return [sys.executable, "-m", "ice.cli", *args]


def _kill_when(args, ready, limit=240):
    """Start `ice embed`, SIGKILL it as soon as ready() holds; True if it was still running."""
    proc = subprocess.Popen(_ice(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + limit
    while proc.poll() is None and time.time() < deadline and not ready():
        time.sleep(0.005)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def _stages(out):
    try:
        return json.loads((out / rd.PROGRESS).read_text())["stages"]
    except (OSError, ValueError):
        return {}


def _snapshot(out):
    items = pd.read_parquet(out / rd.ITEMS)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return items[["image_id", "path", "width", "height"]], files


def test_killed_during_decode_training_and_writing_then_resumed_matches_an_uninterrupted_run(tmp_path):
    make_images(tmp_path / "in", n=1500, size=48)
    reference = tmp_path / "reference"
    subprocess.run(_ice("embed", str(tmp_path / "in"), "--out", str(reference), *ARGS), check=True, capture_output=True)
    out = tmp_path / "run"
    args = ["embed", str(tmp_path / "in"), "--out", str(out), *ARGS]
    moments = {
        "decoding": lambda: (out / (rd.PIXELS + ".partial")).exists(),
        "training": lambda: (out / rd.CHECKPOINT).exists(),
        "writing": lambda: "project" in _stages(out),
    }
    killed = []
    for name, ready in moments.items():
        if _kill_when(args + (["--resume"] if killed else []), ready):
            killed.append(name)
            assert not (out / rd.MANIFEST).exists() or name == "writing"
    assert {"decoding", "training"} <= set(killed), killed
    done = subprocess.run(_ice(*args, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert rd.load_manifest(out)["complete"]
    ref_items, ref_files = _snapshot(reference)
    items, files = _snapshot(out)
    pd.testing.assert_frame_equal(items, ref_items)
    assert files == ref_files


KILL_BEFORE_RENAME = """
import os, signal, sys
replace = os.replace
def replace_or_die(src, dst):  # items.parquet written in full to its temporary file: killed there
    if str(dst).endswith("items.parquet"):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
os.replace = replace_or_die
from ice.cli import main
main(sys.argv[1:])
"""


def test_temporary_files_of_a_job_killed_while_writing_are_removed_on_resume(tmp_path):
    """A job killed inside an atomic write left '.items.parquet.XXXXXXXX.tmp' for good (for
    the pixels, a file as big as the run); the test above fails on it if its kill falls
    there (a review forced it: 2 of 2). The next --resume (or --force) removes them; an export's .csv is not its own."""
    make_images(tmp_path / "in", n=300, size=24)
    out = tmp_path / "run"
    args = ["embed", str(tmp_path / "in"), "--out", str(out), *ARGS]
    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_RENAME, *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-500:]
    (left,) = out.glob(".items.parquet.*.tmp")
    export = out / ".mine.csv.abcd_123.tmp"  # `ice export -o RUN/mine.csv` at work
    export.write_text("image_id\n")
    (out / "checkpoints" / ".last.pt.x1y2z3w4.tmp").write_bytes(b"\0" * 10)
    done = subprocess.run(_ice(*args, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "MB of temporary files that a stopped run left" in done.stdout + done.stderr
    assert not left.exists() and not list((out / "checkpoints").glob(".*")) and export.exists()
    assert rd.load_manifest(out)["complete"]


KILL_AFTER_JOURNAL = """
import os, signal, sys
from pathlib import Path
from embeddings import images
images.JOURNAL_SECONDS = 0  # a save after every batch of 64
save = images._save_journal
def save_then_die(journal, scratch, dataset, key, done, *rest):  # at 256 done: killed right there
    save(journal, scratch, dataset, key, done, *rest)
    if done.sum() >= 256:
        os.kill(os.getpid(), signal.SIGKILL)
images._save_journal = save_then_die
"""
DECODE_ALL = """
root, out, paths = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
images.decode_all(root, paths, size=16, max_pixels=10**8, workers=1,
                  pixels_path=out / "p.npy", skipped_path=out / "s.csv")
"""


def test_decode_killed_after_its_journal_resumes_where_it_stopped(tmp_path):
    root = tmp_path / "in"
    make_images(root, n=500, size=24)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = find_images(root)
    fresh = decode_all(
        root,
        paths,
        size=16,
        max_pixels=10**8,
        workers=0,
        pixels_path=tmp_path / "p.npy",
        skipped_path=tmp_path / "s.csv",
    )
    out = tmp_path / "killed"
    out.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_JOURNAL + DECODE_ALL, str(root), str(out), *paths], capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-500:]
    assert (out / "p.npy.journal.npz").exists() and not (out / "p.npy").exists()
    resumed = decode_all(
        root,
        paths,
        size=16,
        max_pixels=10**8,
        workers=0,
        pixels_path=out / "p.npy",
        skipped_path=out / "s.csv",
        resume=True,
    )
    assert resumed.resumed == 256
    assert resumed.keep == fresh.keep and len(resumed.keep) == 500
    np.testing.assert_array_equal(resumed.sizes, fresh.sizes)
    np.testing.assert_array_equal(np.load(out / "p.npy"), np.load(tmp_path / "p.npy"))
    assert (out / "s.csv").read_text() == (tmp_path / "s.csv").read_text()
    assert "broken.png" in (out / "s.csv").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["p.npy", "s.csv"]

    subprocess.run(
        [sys.executable, "-c", KILL_AFTER_JOURNAL + DECODE_ALL, str(root), str(out), *paths], capture_output=True
    )
    other = decode_all(
        root,
        paths[:-1],
        size=16,
        max_pixels=10**8,
        workers=0,
        pixels_path=out / "p.npy",
        skipped_path=out / "s.csv",
        resume=True,
    )
    assert other.resumed == 0, "a journal of another file list is not resumed from"
    np.testing.assert_array_equal(np.load(out / "p.npy"), np.load(tmp_path / "p.npy")[:-1])


def test_ice_embed_killed_while_decoding_resumes_from_the_journal(tmp_path):
    make_images(tmp_path / "in", n=400, size=24)
    out = tmp_path / "run"
    args = ["embed", str(tmp_path / "in"), "--out", str(out), *ARGS]
    script = KILL_AFTER_JOURNAL + "from ice.cli import main\nmain(sys.argv[1:])\n"  # a real `ice embed`
    killed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-500:]
    assert set(_stages(out)) == {"scan"}
    done = subprocess.run(_ice(*args, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _stages(out)["decode"]["resumed_at"] == 256
    reference = tmp_path / "reference"
    subprocess.run(_ice("embed", str(tmp_path / "in"), "--out", str(reference), *ARGS), check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(out / rd.PIXELS), np.load(reference / rd.PIXELS))
    pd.testing.assert_frame_equal(_snapshot(out)[0], _snapshot(reference)[0])


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_take_the_umask_not_mkstemps_0600(tmp_path, umask):
    """Every file the job and the export write goes through atomic_path; mkstemp alone made
    them all 0600, so nobody but their owner (not a colleague, not a web server) could read a run."""
    before = os.umask(umask)
    try:
        rd.write_json(tmp_path / "a.json", {"x": 1})
        rd.save_npy(tmp_path / "b.npy", np.zeros(3))
    finally:
        os.umask(before)
    for name in ("a.json", "b.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert rd._umask() == before


@pytest.fixture
def small_disk(tmp_path):
    """A folder on its own tmpfs of 64 KiB, a real disk that fills; grow(kib) enlarges it
    and keeps its files."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted(disk, "-t", "tmpfs", "-o", "size=64k", "tmpfs") as remount:
        yield disk, lambda kib: remount(f"size={kib}k")


def test_a_new_memmap_on_a_full_disk_is_an_oserror_at_once_not_a_sigbus_later(small_disk):
    """A memory-mapped file is sparse; writing its pages on a full disk kills the process
    with SIGBUS (a decode worker "exited unexpectedly"). Its blocks are reserved up front."""
    disk, _grow = small_disk
    with pytest.raises(OSError, match="needs 0.2 MB") as e:
        rd.new_memmap(disk / "pixels.npy", np.uint8, (256, 16, 16, 3))
    assert e.value.filename == str(disk / "pixels.npy") and not (disk / "pixels.npy").exists()
    small = rd.new_memmap(disk / "small.npy", np.uint8, (8, 16, 16, 3))
    small[:] = 7
    small.flush()
    assert os.stat(disk / "small.npy").st_blocks * 512 >= small.nbytes  # reserved, not sparse
    del small  # unmapped, so the tmpfs can be unmounted


def test_a_full_disk_stops_the_job_with_one_line_and_resume_finishes_it(tmp_path, small_disk):
    """The disk fills at whichever stage; each time `ice embed` says so in one line (no
    traceback, no SIGBUS), and after room is made `--resume` goes on. The result equals a
    run that never ran out of space."""
    disk, grow = small_disk
    make_images(tmp_path / "in", n=200, size=24)
    args = ["embed", str(tmp_path / "in"), "--out", str(disk / "run"), *ARGS]
    failures, kib = [], 64
    while True:
        done = subprocess.run(_ice(*args, *(["--resume"] if failures else [])), capture_output=True, text=True)
        if done.returncode == 0:
            break
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("ice: error: No space left on device") and str(disk / "run") in last, last
        failures.append(last.rsplit("/", 1)[-1])
        kib *= 2
        grow(kib)
    assert len(failures) >= 3, failures  # pixels, then the model's checkpoint at least
    reference = tmp_path / "reference"
    subprocess.run(_ice("embed", str(tmp_path / "in"), "--out", str(reference), *ARGS), check=True, capture_output=True)
    pd.testing.assert_frame_equal(_snapshot(disk / "run")[0], _snapshot(reference)[0])
    assert _snapshot(disk / "run")[1] == _snapshot(reference)[1]


def test_a_faiss_index_on_a_full_disk_is_an_oserror_naming_it(small_disk):
    """faiss reports a failed write as RuntimeError("... (No space left on device)")."""
    from embeddings.cluster import build_index
    from ice.search_index import write_index

    disk, _grow = small_disk
    index = build_index(np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32))
    with pytest.raises(OSError, match="No space left on device") as e:
        write_index(index, disk / rd.INDEX)
    assert e.value.filename == str(disk / rd.INDEX) and os.listdir(disk) == []


def test_umap_imports_for_a_user_who_can_write_neither_the_install_nor_a_home(tmp_path):
    """umap-learn asks numba for a cache as it is imported; for another user of a shared
    install, with a home folder that is not writable, `import umap` failed ("cannot cache
    function 'rdist': no locator available") and the job ended in a traceback."""
    import shutil
    import sysconfig
    from pathlib import Path

    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if os.geteuid() != 0 or not shutil.which("setpriv") or not system.exists():
        pytest.skip(f"needs root, setpriv and {system} to run as another user")
    repo, site = Path(__file__).resolve().parent.parent, sysconfig.get_paths()["purelib"]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(system), "-c"]
    env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin", "PYTHONPATH": f"{repo}{os.pathsep}{site}"}
    readable = subprocess.run(
        [*nobody, f"import os; os.listdir({str(repo)!r}); os.listdir({site!r})"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    if readable.returncode != 0:
        pytest.skip("the checkout or its virtual environment is not readable by another user")
    out = subprocess.run(
        [*nobody, "import embeddings, umap; print('ok')"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-800:]


def test_numbas_fallback_cache_is_never_a_folder_someone_else_could_have_made(tmp_path):
    """numba unpickles what it finds in its cache: a folder another user made first in a
    shared /tmp, or opened to all, must not be used."""
    import shutil
    import stat

    from ice.environment import _private_folder

    own = _private_folder(str(tmp_path), "c-")
    assert own == str(tmp_path / f"c-{os.getuid()}") and stat.S_IMODE(os.stat(own).st_mode) == 0o700
    assert _private_folder(str(tmp_path), "c-") == own  # this user's own: used again
    os.chmod(own, 0o777)
    (tmp_path / f"d-{os.getuid()}").symlink_to(tmp_path)
    for prefix in ("c-", "d-"):  # opened to all; a link
        other = _private_folder(str(tmp_path), prefix)
        assert other != str(tmp_path / f"{prefix}{os.getuid()}") and stat.S_IMODE(os.stat(other).st_mode) == 0o700
        shutil.rmtree(other)
