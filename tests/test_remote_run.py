"""A run directory on S3 (moto's server on 127.0.0.1): `ice embed --out s3://...` builds the run
in a staging folder and publishes it, manifest last; `ice export` and `ice explore` fetch it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

import ice
from ice import remote_run
from ice import run_dir as rd
from ice.cli import main
from ice.errors import IceError
from tests.conftest import make_images
from tests.test_pipeline import TINY_ARGS

pytest.importorskip("moto", reason="moto is a test dependency (pip install -e '.[test]')")


@pytest.fixture
def bucket(s3, monkeypatch, tmp_path):
    """A bucket `runs` on the server, and this machine's cache under tmp_path."""
    import pyarrow.fs as pafs

    monkeypatch.setenv("ICE_CACHE", str(tmp_path / "cache"))
    fs, _ = pafs.FileSystem.from_uri("s3://runs?allow_bucket_creation=true")
    fs.create_dir("runs")
    return fs


def objects(fs, prefix: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(prefix) + 1 :]] = f.readall()
    return out


def files(folder: Path) -> dict[str, bytes]:
    """The run's files a publish uploads: all but the training checkpoint, which only --resume reads."""
    every = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return {name: data for name, data in every.items() if not name.startswith("checkpoints/")}


def test_embed_publishes_the_run_and_export_fetches_it_once_per_version(bucket, tmp_path, capsys):
    make_images(tmp_path / "in", n=36, size=24, classes=3)
    stage = tmp_path / "stage"
    args = ["embed", str(tmp_path / "in"), "--out", "s3://runs/photos", "--staging", str(stage), *TINY_ARGS]
    assert main([*args, "--seed", "0"]) == 0
    assert "run directory: s3://runs/photos (" in capsys.readouterr().out
    assert objects(bucket, "runs/photos") == files(stage)  # every file of the run, byte for byte
    assert (stage / "checkpoints").is_dir() and not any(k.startswith("checkpoints/") for k in objects(bucket, "runs"))
    # a publish cut short (no manifest on the store yet): the same command with --resume finishes it
    bucket.delete_file(f"runs/photos/{rd.MANIFEST}")
    assert main([*args, "--seed", "0", "--resume"]) == 0
    assert objects(bucket, "runs/photos") == files(stage)
    assert main(["export", "s3://runs/photos", "-o", str(tmp_path / "a.csv")]) == 0
    assert main(["export", str(stage), "-o", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    cached = remote_run.cache_folder("s3://runs/photos")
    assert cached == tmp_path / "cache" / "runs" / "runs" / "photos" and files(cached) == files(stage)
    kept = (cached / rd.MANIFEST).stat().st_mtime_ns
    assert remote_run.fetch("s3://runs/photos") == cached
    assert (cached / rd.MANIFEST).stat().st_mtime_ns == kept, "fetched again while the run had not changed"

    # published again, smaller: the objects it no longer has go, and a reader gets the new run
    for path in sorted((tmp_path / "in").rglob("*.png"))[:12]:
        path.unlink()
    capsys.readouterr()
    assert main([*args, "--seed", "0", "--force"]) == 0
    assert objects(bucket, "runs/photos") == files(stage)
    assert remote_run.fetch("s3://runs/photos") == cached and files(cached) == files(stage)
    assert len(rd.read_items(cached)) == 24
    run = ice.load_run("s3://runs/photos")  # the Python API fetches it the same way
    assert run.run_dir == cached and len(run) == 24
    # the cache folder is also the default staging folder: one a job is writing is not replaced
    (cached / rd.MANIFEST).write_text("{}")
    lock = rd.lock_run_dir(cached)
    try:
        with pytest.raises(IceError, match="is building this run in"):
            remote_run.fetch("s3://runs/photos")
    finally:
        os.close(lock)
    assert remote_run.fetch("s3://runs/photos") == cached and files(cached) == files(stage)


def test_a_prefix_without_a_manifest_holds_no_run(bucket, tmp_path, small_run):
    """The manifest goes last and is removed first: a publish cut short leaves a prefix that
    readers refuse, and the next publish completes it."""
    bucket.create_dir("runs/half")
    with bucket.open_output_stream("runs/half/items.parquet") as f:
        f.write(b"not yet")
    with pytest.raises(Exception, match="no complete run there"):
        remote_run.fetch("s3://runs/half")
    assert remote_run.publish(small_run, "s3://runs/half") == len(files(small_run))
    assert objects(bucket, "runs/half") == files(small_run)
    with pytest.raises(Exception, match="not a complete run"):
        remote_run.publish(tmp_path, "s3://runs/empty")


def test_run_on_s3_errors_are_one_line(bucket, tmp_path, capsys):
    cases = [
        (["export", "s3://runs/none", "-o", str(tmp_path / "x.csv")], "s3://runs/none: no complete run there"),
        (["add", "s3://runs/none", str(tmp_path)], "needs a run directory on this machine"),
        (["find", "s3://runs/none", "--like", str(tmp_path / "l.txt")], "needs a run directory on this machine"),
        (["embed", str(tmp_path), "--out", str(tmp_path / "r"), "--staging", str(tmp_path)], "--staging: only with"),
        (["export", "s3://", "-o", str(tmp_path / "x.csv")], "give a bucket and a prefix"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.csv").exists()


def test_explore_serves_a_fetched_copy_read_only(bucket, small_run):
    from benchmarks.load import Client, callbacks_of, explorer, server_output

    remote_run.publish(small_run, "s3://runs/served")
    with explorer("s3://runs/served") as (base, proc):
        page = requests.get(base + "/", timeout=10)
        renamed = Client(base, callbacks_of(base)).rename(1, "not saved")
        _, stderr = server_output(proc)
    assert page.status_code == 200 and "ICE" in page.text
    assert "read-only" in renamed.text and "Saved as" not in renamed.text
    assert f"s3://runs/served: fetched into {remote_run.cache_folder('s3://runs/served')}; served read-only" in stderr
