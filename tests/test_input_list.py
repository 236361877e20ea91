"""`ice embed --input-list`: the images a file names, instead of every image in the folder."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pandas as pd
import pytest

from embeddings.config import Config
from embeddings.demo import write_digits
from embeddings.images import read_image_list
from embeddings.pipeline import run_embed
from ice import run_dir as rd
from ice.cli import main
from ice.errors import IceError

from .conftest import TINY


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits"), limit=200)


def test_a_listed_subset_makes_the_run_of_a_folder_of_only_those_images(digits, tmp_path):
    listed = sorted(p.relative_to(digits).as_posix() for p in digits.rglob("*.png"))[::2]
    only = tmp_path / "only"
    for rel in listed:
        (only / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(digits / rel, only / rel)
    # in another order, twice over, with "./" and a blank line: the same images
    (tmp_path / "list.txt").write_text("\n".join(["./" + listed[1], *reversed(listed), "", listed[0]]) + "\n")
    cfg = Config(**TINY)
    run_embed(only, tmp_path / "folder", cfg)
    run_embed(digits, tmp_path / "listed", cfg.replace(input_list=str(tmp_path / "list.txt")))
    a, b = rd.read_items(tmp_path / "folder"), rd.read_items(tmp_path / "listed")
    assert a["path"].tolist() == b["path"].tolist() == listed
    np.testing.assert_array_equal(np.load(tmp_path / "folder" / rd.PIXELS), np.load(tmp_path / "listed" / rd.PIXELS))
    np.testing.assert_allclose(
        np.load(tmp_path / "folder" / rd.EMBEDDINGS), np.load(tmp_path / "listed" / rd.EMBEDDINGS), atol=1e-5
    )


def test_lines_naming_no_image_inside_the_folder_are_skipped_with_their_reason(digits, tmp_path, capsys):
    good = sorted(p.relative_to(digits).as_posix() for p in digits.rglob("*.png"))[:40]
    rows = [*good, "3/missing.png", "../outside.png", "/etc/hostname.png", "notes.txt"]
    pd.DataFrame({"path": [r.encode() for r in rows]}).to_parquet(tmp_path / "list.parquet")
    out = tmp_path / "run"
    settings = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert (
        main(["embed", str(digits), "--out", str(out), "--input-list", str(tmp_path / "list.parquet"), *settings]) == 0
    )
    assert rd.read_items(out)["path"].tolist() == good
    with open(out / rd.SKIPPED, newline="") as f:
        reasons = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert set(reasons) == {"3/missing.png", "../outside.png", "/etc/hostname.png", "notes.txt"}
    assert "not inside the input folder" in reasons["../outside.png"] == reasons["/etc/hostname.png"]
    assert "not an image file name" in reasons["notes.txt"]
    assert reasons["3/missing.png"] == "file not found (gone since it was listed)"
    manifest = rd.load_manifest(out)
    assert manifest["config"]["input_list"] == str(tmp_path / "list.parquet")  # absolute: --resume finds it


def test_a_list_that_names_no_image_or_is_missing_is_one_clear_error(digits, tmp_path, capsys):
    (tmp_path / "list.txt").write_text("a.txt\n../b.png\n")
    with pytest.raises(IceError, match="names no image file inside"):
        run_embed(digits, tmp_path / "run", Config(**TINY, input_list=str(tmp_path / "list.txt")))
    assert main(["embed", str(digits), "--out", str(tmp_path / "r2"), "--input-list", str(tmp_path / "nope.txt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.txt: no such file" in err[0]
    paths, refused = read_image_list(digits, tmp_path / "list.txt")
    assert paths == [] and [path for path, _ in refused] == ["a.txt", "../b.png"]
