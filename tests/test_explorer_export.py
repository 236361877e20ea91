"""The CSV export: the run's rows, names and groups, safe to open in a spreadsheet."""

import csv
import json
import os
import pathlib
import stat

import numpy as np
import pandas as pd
import pytest

from explorer.export import COLUMNS, escape_cell, export_csv
from ice.annotations import Annotations
from ice.errors import IceError


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("=SUM(A1:A2)", "'=SUM(A1:A2)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@cmd", "'@cmd"),
        ("\t=x", "'\t=x"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_escape_cell(cell, expected):
    assert escape_cell(cell) == expected


def test_rows_match_the_run(small_run, tmp_path):
    out = tmp_path / "clusters.csv"
    assert export_csv(small_run, out) == 300
    rows = read_csv(out)
    items = pd.read_parquet(small_run / "items.parquet")
    assert list(rows[0]) == COLUMNS
    assert [int(r["image_id"]) for r in rows] == items["image_id"].tolist()
    assert [r["path"] for r in rows] == items["path"].tolist()
    assert [int(r["cluster"]) for r in rows] == items["cluster"].tolist()
    assert np.allclose([float(r["x"]) for r in rows], items["x"], atol=1e-5)
    assert np.allclose([float(r["distance_to_centroid"]) for r in rows], items["distance"], atol=1e-6)
    assert not (small_run / "annotations.sqlite").exists()  # export writes nothing into the run


def test_names_and_groups_are_exported_and_escaped(explorer_run, tmp_path):
    notes = Annotations(explorer_run / "annotations.sqlite")
    cluster0 = int(pd.read_parquet(explorer_run / "items.parquet")["cluster"][0])
    notes.set_cluster_name("run", cluster0, '=HYPERLINK("http://x")')
    notes.save_group("+planes", [0, 1])
    notes.save_group("birds", [1])
    out = tmp_path / "out.csv"
    export_csv(explorer_run, out)
    rows = read_csv(out)
    assert rows[0]["cluster_name"] == '\'=HYPERLINK("http://x")'
    assert rows[0]["groups"] == "'+planes"
    assert rows[1]["groups"] == "'+planes;birds"
    assert rows[2]["groups"] == ""
    assert all(not r[c].startswith(("=", "+", "@")) for r in rows for c in ("path", "cluster_name", "groups"))


def test_a_carriage_return_inside_a_name_stays_in_its_row(explorer_run, tmp_path):
    """Mac file names such as "Icon\r" and names with a \r: RFC 4180 line ends make the
    writer quote them, where "\n" line ends left them bare and split the row."""
    cluster0 = int(pd.read_parquet(explorer_run / "items.parquet")["cluster"][0])
    Annotations(explorer_run / "annotations.sqlite").set_cluster_name("run", cluster0, "Icon\rplanes")
    out = tmp_path / "out.csv"
    n = export_csv(explorer_run, out)
    rows = read_csv(out)
    assert len(rows) == n == 300 and rows[0]["cluster_name"] == "Icon\rplanes"
    assert len(pd.read_csv(out)) == 300


def test_filters(explorer_run, tmp_path):
    Annotations(explorer_run / "annotations.sqlite").save_group("g", [2, 5, 9])
    items = pd.read_parquet(explorer_run / "items.parquet")
    out = tmp_path / "g.csv"
    assert export_csv(explorer_run, out, group="g") == 3
    assert [int(r["image_id"]) for r in read_csv(out)] == [2, 5, 9]
    k = int(items["cluster"][5])
    n = export_csv(explorer_run, out, group="g", cluster=k)
    assert n == int((items["cluster"][[2, 5, 9]] == k).sum())
    assert export_csv(explorer_run, out, cluster=k) == int((items["cluster"] == k).sum())


def test_unknown_group_and_cluster(explorer_run, tmp_path):
    out = tmp_path / "x.csv"
    with pytest.raises(IceError, match="'nope'"):
        export_csv(explorer_run, out, group="nope")
    with pytest.raises(IceError, match="cluster 99"):
        export_csv(explorer_run, out, cluster=99)
    assert not out.exists()


def test_incomplete_run(explorer_run, tmp_path):
    path = explorer_run / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "complete": False}))
    with pytest.raises(IceError, match="not a complete run"):
        export_csv(explorer_run, tmp_path / "x.csv")


def test_written_atomically(small_run, tmp_path):
    out = tmp_path / "clusters.csv"
    out.write_text("old")
    with pytest.raises(IceError):
        export_csv(small_run, out, group="nope")
    assert out.read_text() == "old"
    export_csv(small_run, out)
    assert [p.name for p in tmp_path.iterdir()] == ["clusters.csv"]
    with pytest.raises(IceError, match="is a folder"):
        export_csv(small_run, tmp_path)


def test_cli_exports_a_reclustering_to_standard_output(explorer_run, capsys):
    """`ice export RUN -o - --clustering k4`: the CSV alone on stdout (for a pipe), the count
    on stderr; a clustering that was never made is a one-line error."""
    from explorer.clusterings import recluster
    from explorer.data import load_run
    from ice.cli import main

    made = recluster(load_run(explorer_run), 4)
    capsys.readouterr()
    assert main(["export", str(explorer_run), "-o", "-", "--clustering", "k4"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(out.splitlines()))
    assert list(rows[0]) == COLUMNS and len(rows) == len(made.cluster)
    assert [int(r["cluster"]) for r in rows] == made.cluster.tolist()
    assert err.strip() == f"wrote {len(rows):,} rows to standard output"
    load_run(explorer_run).annotations.save_group("one", [0])
    assert main(["export", str(explorer_run), "-o", "-", "--group", "one"]) == 0
    assert capsys.readouterr().err.strip() == "wrote 1 row to standard output"
    assert not pathlib.Path("-").exists(), "a file named '-' in the working folder"
    assert main(["export", str(explorer_run), "-o", "-", "--clustering", "k7"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "'k7'" in err, err


def test_cli_export_to_a_place_that_cannot_be_written_is_one_line(small_run, tmp_path, capsys):
    from ice.cli import main

    (tmp_path / "file").write_text("x")
    assert main(["export", str(small_run), "-o", str(tmp_path / "file" / "out.csv")]) == 1
    err = capsys.readouterr().err
    assert err == f"ice: error: Not a directory: {tmp_path / 'file' / 'out.csv'}\n", err


def test_export_writes_through_links_and_into_pipes(small_run, tmp_path):
    """Renaming a new file over the output replaced a symlink with a file, and, as root,
    /dev/null with a file; a pipe (`-o >(gzip > x.gz)`) was not written at all."""
    import threading

    real = tmp_path / "shared" / "real.csv"
    real.parent.mkdir()
    real.write_text("old")
    (tmp_path / "link.csv").symlink_to(real)
    n = export_csv(small_run, tmp_path / "link.csv")
    assert (tmp_path / "link.csv").is_symlink() and len(read_csv(real)) == n == 300
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    export_csv(small_run, fifo)
    reader.join(30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and len(list(csv.DictReader(got[0].splitlines()))) == 300


def test_export_to_dev_stdout_sent_into_a_file_appends_to_it(small_run, tmp_path):
    """`ice export RUN -o /dev/stdout >> app.csv`: /dev/stdout then names a file, and a new
    file was renamed over app.csv, losing what it held and the "wrote" line."""
    import subprocess
    import sys

    out = tmp_path / "app.csv"
    out.write_text("previous\n")
    with open(out, "a") as f:
        done = subprocess.run(
            [sys.executable, "-m", "ice.cli", "export", str(small_run), "-o", "/dev/stdout"],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0 and done.stderr.strip() == "wrote 300 rows to standard output", done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "previous" and len(lines) == 1 + 301


def test_export_never_replaces_the_runs_own_files_nor_makes_folders(explorer_run, tmp_path):
    manifest = (explorer_run / "manifest.json").read_bytes()
    (explorer_run / "clusterings").mkdir(exist_ok=True)
    for name in ("manifest.json", "items.parquet", "skipped.csv", "clusterings/k4.npz"):
        with pytest.raises(IceError, match="in the run's folder only a name ending in .csv"):
            export_csv(explorer_run, explorer_run / name)
    assert (explorer_run / "manifest.json").read_bytes() == manifest
    assert export_csv(explorer_run, explorer_run / "clusters.csv") == 300  # a new .csv name is fine
    with pytest.raises(IceError, match="does not exist"):
        export_csv(explorer_run, tmp_path / "typo" / "out.csv")
    assert not (tmp_path / "typo").exists()


def test_cli_export_into_a_closed_pipe_exits_quietly(small_run):
    """`ice export RUN -o - | head -1`: once the reader has gone, no traceback."""
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-m", "ice.cli", "export", str(small_run), "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()  # the reader goes before the CSV is written (the child is still importing)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1 and "Traceback" not in err and "Error" not in err, err
