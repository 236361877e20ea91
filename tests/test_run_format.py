"""Run format version 2 (docs/run-format.md): arrays and items in shard parts. Rows reads the
parts as one array; the explorer, `ice export`, `ice find` and `ice add` read a version 2 run
as they read version 1, and an addition to it becomes a part of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ice import run_dir as rd
from ice.cli import main
from ice.errors import IceError

from .test_add import KILL_AT, _ice, split_digits  # noqa: F401  (a fixture)


def parts_of(whole: np.ndarray, counts: list[int], folder) -> rd.Rows:
    folder.mkdir()
    start = 0
    for k, count in enumerate(counts):
        np.save(rd.part_path(folder, k, ".npy"), whole[start : start + count])
        start += count
    return rd.Rows.load(folder)


def test_rows_index_as_the_array_they_split(tmp_path):
    whole = np.random.default_rng(0).integers(0, 255, (50, 3, 2), dtype=np.uint8)
    rows = parts_of(whole, [20, 0, 7, 23], tmp_path / "p")
    assert len(rows) == 50 and rows.shape == whole.shape and rows.dtype == whole.dtype
    assert rows.nbytes == whole.nbytes and rows.ndim == 3
    for key in (0, 19, 20, 27, 49, -1, -50, np.int64(33)):
        np.testing.assert_array_equal(rows[key], whole[key])
    for key in (slice(None), slice(5, 30), slice(20, 27), slice(30, 10), slice(None, None, 3), slice(-5, None)):
        np.testing.assert_array_equal(rows[key], whole[key])
    ids = np.array([[49, 0], [20, 20], [-1, 26]])
    np.testing.assert_array_equal(rows[ids], whole[ids])
    np.testing.assert_array_equal(rows[[3, 40, 21]], whole[[3, 40, 21]])
    mask = whole[:, 0, 0] > 128
    np.testing.assert_array_equal(rows[mask], whole[mask])
    np.testing.assert_array_equal(rows[5:30, 1], whole[5:30, 1])
    np.testing.assert_array_equal(rows[7, 2], whole[7, 2])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    np.testing.assert_array_equal(np.asarray(rows.head(24)), whole[:24])
    assert len(rows.head(0)) == 0
    for bad in (50, -51, [0, 50]):
        with pytest.raises(IndexError):
            rows[bad]


def test_rows_taken_in_any_order_from_a_map_or_parts(tmp_path):
    """take_rows gives the rows asked for in their order (repeats too), as the dtype asked for,
    from a memory-mapped file and from a folder of parts alike."""
    whole = np.random.default_rng(2).integers(0, 255, (50, 3), dtype=np.uint8)
    parts_of(whole, [20, 0, 7, 23], tmp_path / "p")
    np.save(tmp_path / "one.npy", whole)
    rows = np.array([44, 3, 3, 0, 27, 49])
    for path in (tmp_path / "p", tmp_path / "one.npy"):
        got = rd.take_rows(rd.load_rows(path), rows)
        assert got.dtype == np.float32 and got.shape == (6, 3)
        np.testing.assert_array_equal(got, whole[rows].astype(np.float32))
    assert rd.take_rows(whole, []).shape == (0, 3)


def test_rows_read_in_order_without_a_map(tmp_path):
    """read_in_order gives every row of a .npy file or a folder of parts, in order, in blocks of
    at most the size asked for, none of them a memory map; a truncated file is an IceError."""
    whole = np.random.default_rng(1).integers(0, 255, (50, 3, 2), dtype=np.uint8)
    parts_of(whole, [20, 0, 7, 23], tmp_path / "p")
    np.save(tmp_path / "one.npy", whole)
    for path in (tmp_path / "p", tmp_path / "one.npy"):
        blocks = list(rd.read_in_order(path, 8))
        assert all(0 < len(b) <= 8 and not isinstance(b, np.memmap) and b.flags.writeable for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), whole)
    data = (tmp_path / "one.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-7])
    with pytest.raises(IceError, match="cut.npy: shorter than its header says"):
        list(rd.read_in_order(tmp_path / "cut.npy", 16))
    np.save(tmp_path / "f.npy", np.asfortranarray(whole[:, :, 0]))
    with pytest.raises(IceError, match="f.npy: rows in Fortran order"):
        list(rd.read_in_order(tmp_path / "f.npy", 16))


def test_rows_keep_a_bounded_number_of_parts_mapped(tmp_path, monkeypatch):
    """A run of many parts: reading all of them, in any order, keeps at most MAPPED_PARTS
    memory maps (and their file descriptors) open, and reads the same rows."""
    monkeypatch.setattr(rd, "MAPPED_PARTS", 4)
    whole = np.arange(300 * 2, dtype=np.int32).reshape(300, 2)
    rows = parts_of(whole, [3] * 100, tmp_path / "p")
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = fds()
    ids = np.random.default_rng(0).permutation(300)
    np.testing.assert_array_equal(rows[ids], whole[ids])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    np.testing.assert_array_equal(rows.head(100)[[99, 0, 50]], whole[[99, 0, 50]])
    assert len(rows._cache[1]) == 4
    assert fds() - before <= 4


def test_a_missing_or_mismatched_part_is_one_line(tmp_path):
    whole = np.zeros((10, 4), np.float32)
    parts_of(whole, [5, 5], tmp_path / "p")
    with pytest.raises(IceError, match="part-00002.npy: missing"):
        rd.Rows.load(tmp_path / "p", 3)
    np.save(rd.part_path(tmp_path / "p", 2, ".npy"), np.zeros((3, 5), np.float32))
    with pytest.raises(IceError, match="in one array"):
        rd.Rows.load(tmp_path / "p")


def to_version_2(run_dir, counts: list[int]) -> None:
    """Rewrite a version 1 run in version 2's layout, with shards of `counts` images."""
    manifest = rd.read_json(run_dir / rd.MANIFEST)
    assert sum(counts) == manifest["counts"]["images"] and "additions" not in manifest
    for name in (rd.PIXELS, rd.EMBEDDINGS):
        parts_of(np.load(run_dir / name), counts, run_dir / rd.parts_folder(name))
        (run_dir / name).unlink()
    items = pd.read_parquet(run_dir / rd.ITEMS)
    (run_dir / "items").mkdir()
    starts = np.cumsum([0] + counts)
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
        items.iloc[a:b].to_parquet(rd.part_path(run_dir / "items", k, ".parquet"), index=False)
    (run_dir / rd.ITEMS).unlink()
    manifest["schema_version"] = rd.SHARDED
    manifest["shards"] = [[int(a), int(b - a)] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    rd.write_json(run_dir / rd.MANIFEST, manifest)


@pytest.fixture
def v1_and_v2(split_digits, tmp_path):  # noqa: F811
    """The same run in version 1 and version 2 (shards of 100, 0, 120 and 100 images)."""
    run_dir, part, rest = split_digits
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    shutil.copytree(run_dir, v1)
    shutil.copytree(run_dir, v2)
    to_version_2(v2, [100, 0, 120, 100])
    return v1, v2, rest


def test_the_explorer_export_and_find_read_version_2_as_version_1(v1_and_v2, tmp_path):
    from explorer.app import create_app
    from explorer.data import load_run

    v1, v2, _ = v1_and_v2
    a, b = load_run(v1, read_only=True), load_run(v2, read_only=True)
    assert isinstance(b.pixels, rd.Rows) and b.n == a.n == 320
    np.testing.assert_array_equal(np.asarray(b.pixels), a.pixels)
    np.testing.assert_array_equal(b.embeddings[[5, 150, 319]], a.embeddings[[5, 150, 319]])
    client = create_app(v2).server.test_client()
    for image_id in (0, 99, 100, 319):
        one, two = (
            create_app(v1).server.test_client().get(f"/thumb/{image_id}.png"),
            client.get(f"/thumb/{image_id}.png"),
        )
        assert two.status_code == 200 and two.data == one.data
    assert client.get("/thumb/320.png").status_code == 404
    for run in (v1, v2):
        assert main(["export", str(run), "-o", str(tmp_path / f"{run.name}.csv")]) == 0
    assert (tmp_path / "v1.csv").read_text() == (tmp_path / "v2.csv").read_text()
    paths = rd.read_items(v1, columns=["path"])["path"]
    (tmp_path / "like.txt").write_text("\n".join(paths[:3]) + "\n")
    for run in (v1, v2):
        args = ["find", str(run), "--like", str(tmp_path / "like.txt"), "--top", "20"]
        assert main([*args, "-o", str(tmp_path / f"{run.name}-found.csv")]) == 0
    assert (tmp_path / "v1-found.csv").read_text() == (tmp_path / "v2-found.csv").read_text()


def test_an_add_to_a_version_2_run_is_a_part_of_its_own(v1_and_v2):
    v1, v2, rest = v1_and_v2
    for run in (v1, v2):
        assert main(["add", str(run), str(rest), "--workers", "0"]) == 0
    pd.testing.assert_frame_equal(rd.read_items(v1), rd.read_items(v2))
    for name in (rd.PIXELS, rd.EMBEDDINGS):
        np.testing.assert_array_equal(np.load(v1 / name), np.asarray(rd.open_rows(v2, name)))
    manifest = rd.load_manifest(v2)
    assert manifest["shards"] == [[0, 100], [100, 0], [100, 120], [220, 100], [320, 80]]
    assert not (v2 / rd.ITEMS_ADDED).exists() and not (v2 / rd.PIXELS).exists()
    assert len(pd.read_parquet(rd.part_path(v2 / "items", 4, ".parquet"))) == 80
    strip = lambda m: [{k: v for k, v in a.items() if k not in ("time", "seconds")} for a in m["additions"]]  # noqa: E731
    assert strip(manifest) == strip(rd.load_manifest(v1))
    assert main(["add", str(v2), str(rest)]) == 0  # nothing new
    assert len(rd.load_manifest(v2)["shards"]) == 5


PART_KILLS = {
    # the part linked to the job's file, then killed before the rename
    "link": "link = os.link\ndef die(a, b):\n    link(a, b)\n    os.kill(os.getpid(), signal.SIGKILL)\nos.link = die\n",
    # a filesystem without hard links: killed halfway through the copy
    "copy": (
        "import shutil\n"
        "def no_link(a, b):\n    raise OSError(1, 'Operation not permitted')\nos.link = no_link\n"
        "def die(a, b):\n    open(b, 'wb').write(open(a, 'rb').read()[:1000])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\nshutil.copyfile = die\n"
    ),
}


@pytest.mark.parametrize("where", ["manifest", "link", "copy"])
def test_an_add_to_version_2_killed_then_run_again_ends_as_one_never_killed(v1_and_v2, tmp_path, where):
    """Killed after the parts were made and before the manifest listed them, or halfway
    through making the pixels' part (by a hard link, or by a copy where there is none):
    readers see the run as it was, and the add run again ends as one never killed."""
    _, fresh, rest = v1_and_v2
    killed = tmp_path / "killed"
    shutil.copytree(fresh, killed)
    before = rd.read_items(killed)
    assert main(["add", str(fresh), str(rest), "--workers", "0"]) == 0
    die = KILL_AT["manifest"] if where == "manifest" else PART_KILLS[where]
    script = "import os, signal, sys\nfrom ice import run_dir as rd\n" + die
    script += "from ice.cli import main\nmain(sys.argv[1:])\n"
    args = ["add", str(killed), str(rest), "--workers", "0"]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-800:]
    pd.testing.assert_frame_equal(rd.read_items(killed), before)  # the manifest lists the old parts only
    assert len(rd.open_rows(killed, rd.PIXELS)) == len(before)
    again = subprocess.run(_ice(*args), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(rd.read_items(fresh), rd.read_items(killed))
    for name in (rd.PIXELS, rd.EMBEDDINGS):
        np.testing.assert_array_equal(np.asarray(rd.open_rows(fresh, name)), np.asarray(rd.open_rows(killed, name)))
    assert rd.load_manifest(fresh)["shards"] == rd.load_manifest(killed)["shards"]
    assert not list(killed.rglob(".*tmp*"))


def test_a_part_that_disagrees_with_the_shard_table_is_one_line(v1_and_v2):
    from explorer.data import load_run

    _, v2, _ = v1_and_v2
    part = rd.part_path(v2 / "embeddings", 2, ".npy")
    np.save(part, np.load(part)[:119])
    with pytest.raises(IceError, match=r"embeddings/part-00002.npy: holds 119 rows where the manifest lists 120"):
        load_run(v2, read_only=True)
