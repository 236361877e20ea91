"""The public Python API (`import ice`) on a real run: its tables, neighbours, clusterings,
groups, errors, the explorer it serves, and the examples of docs/python-api.md."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import ice
from explorer.clusterings import recluster
from explorer.data import load_run as load_for_explorer
from explorer.drill import split
from ice import run_dir as rd

from .conftest import TINY, make_images, rebuild_manifest

ROOT = Path(__file__).resolve().parent.parent
SPREADSHEET_NAME = "=1+1.png"  # a file name a spreadsheet would run as a formula


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("api") / "photos"
    make_images(folder)
    Image.new("RGB", (40, 40), (200, 200, 200)).save(folder / SPREADSHEET_NAME)
    return folder


@pytest.fixture(scope="module")
def run_dir(images, tmp_path_factory) -> Path:
    """A run made by ice.embed, then changed as the explorer changes it: a saved group, a
    cluster name, a re-clustering with K=3 and a drill-down into images 0..11."""
    out = tmp_path_factory.mktemp("api") / "run"
    ice.embed(images, out, labels_from_folders=True, **TINY)
    data = load_for_explorer(out)
    data.annotations.save_group("cats", [0, 1, 2, 3])
    data.annotations.set_cluster_name("run", 0, "=tabby")
    recluster(data, 3)
    split(data, "run", np.arange(12), 2)
    return out


def test_import_ice_loads_no_torch(run_dir):
    code = textwrap.dedent(f"""
        import json, sys
        import ice
        run = ice.load_run({str(run_dir)!r})
        run.items, run.embeddings[0], run.neighbours(0, k=3), run.clustering("k3"), run.group("cats")
        print(json.dumps([m for m in ("torch", "faiss", "dash") if m in sys.modules]))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["faiss"]  # the index was searched, and nothing heavier loaded


def test_embed_writes_the_run_it_returns(run_dir, images):
    run = ice.load_run(run_dir)
    assert len(run) == 25
    assert run.manifest["config"]["epochs"] == TINY["epochs"]
    assert sorted(run.items["path"]) == sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))


def test_items_are_the_run_as_on_disk_unescaped(run_dir):
    items = ice.load_run(run_dir).items
    on_disk = pd.read_parquet(run_dir / rd.ITEMS)
    assert list(items.columns) == [
        "image_id",
        "path",
        "cluster",
        "cluster_name",
        "groups",
        "x",
        "y",
        "distance",
        "label",
    ]
    for column in ("image_id", "path", "cluster", "x", "y", "distance", "label"):
        assert items[column].tolist() == on_disk[column].tolist(), column
    assert SPREADSHEET_NAME in set(items["path"])
    assert set(items.loc[items["cluster"] == 0, "cluster_name"]) == {"=tabby"}
    assert set(items.loc[items["cluster"] != 0, "cluster_name"]) == {""}
    assert items["groups"].tolist() == [["cats"]] * 4 + [[]] * 21


def test_embeddings_are_a_read_only_memory_map(run_dir):
    run = ice.load_run(run_dir)
    assert isinstance(run.embeddings, np.memmap)
    assert run.embeddings.shape == (25, run.manifest["config"]["dim"])
    with pytest.raises(ValueError):
        run.embeddings[0, 0] = 1.0


def test_neighbours_are_the_nearest_by_cosine(run_dir):
    run = ice.load_run(run_dir)
    found = run.neighbours(5, k=4)
    cosine = np.asarray(run.embeddings) @ run.embeddings[5]
    cosine[5] = -np.inf
    assert 5 not in found["image_id"].tolist()
    np.testing.assert_allclose(found["similarity"], np.sort(cosine)[::-1][:4], rtol=1e-5)
    np.testing.assert_allclose(cosine[found["image_id"]], found["similarity"], rtol=1e-5)
    assert found["path"].tolist() == run.items["path"][found["image_id"]].tolist()


def test_clusterings_are_those_the_explorer_saved(run_dir):
    run = ice.load_run(run_dir)
    (drill,) = [p.stem.removeprefix("drill-") for p in (run_dir / rd.CLUSTERINGS).glob("drill-*.npz")]
    assert run.clusterings == ["run", "k3", drill]
    with np.load(run_dir / rd.CLUSTERINGS / "k3.npz") as z:
        k3 = run.clustering("k3")
        assert k3["image_id"].tolist() == list(range(25))
        assert k3["cluster"].tolist() == z["cluster"].tolist()
    with np.load(run_dir / rd.CLUSTERINGS / f"drill-{drill}.npz") as z:
        sub = run.clustering(drill)
        assert sub["image_id"].tolist() == list(range(12))  # only the images it split
        np.testing.assert_array_equal(sub["x"], z["x"])  # on the drill-down's own map


def test_groups_and_group_rows(run_dir):
    run = ice.load_run(run_dir)
    assert run.groups == {"cats": 4}
    cats = run.group("cats")
    assert cats["image_id"].tolist() == [0, 1, 2, 3]
    assert cats["path"].tolist() == run.items["path"][:4].tolist()


@pytest.mark.parametrize("what", ["images folder", "missing folder"])
def test_a_path_that_is_not_a_run_is_a_one_line_error(images, tmp_path, what):
    path = images if what == "images folder" else tmp_path / "nothing"
    with pytest.raises(ice.IceError, match="not a run directory|not found") as error:
        ice.load_run(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda run: run.group("dogs"), "group 'dogs': no such group"),
        (lambda run: run.clustering("k7"), "clustering 'k7': .* has 'run', 'k3'"),
        (lambda run: run.neighbours(25), "image_id 25: the run has image ids 0..24"),
        (lambda run: run.neighbours(0, k=0), "k 0: must be a whole number, at least 1"),
    ],
)
def test_a_bad_argument_is_an_error_naming_it(run_dir, call, message):
    with pytest.raises(ice.IceError, match=message):
        call(ice.load_run(run_dir))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"epoch": 5}, "unknown setting 'epoch'; did you mean 'epochs'"),
        ({"epochs": "5"}, "epochs='5': must be an int"),
        ({"epochs": 0}, "epochs 0: must be at least 1"),
    ],
)
def test_embed_refuses_a_bad_setting_before_it_starts(images, tmp_path, settings, message):
    with pytest.raises(ice.IceError, match=message):
        ice.embed(images, tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()


def test_a_run_rebuilt_since_it_was_loaded_is_refused(run_dir, tmp_path):
    copy = shutil.copytree(run_dir, tmp_path / "run")
    run = ice.load_run(copy)
    rebuild_manifest(copy)
    with pytest.raises(ice.IceError, match="rebuilt since it was loaded"):
        run.items


def test_reading_a_run_writes_nothing_to_it(run_dir, tmp_path):
    copy = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("annotations.sqlite*"))
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    run = ice.load_run(copy)
    run.items, run.groups, run.neighbours(0), run.clustering("k3")
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_explore_serves_the_explorer(run_dir, tmp_path):
    port = free_port()
    code = f"import ice; ice.load_run({str(run_dir)!r}).explore(port={port}, read_only=True)"
    with open(tmp_path / "log", "w") as log:
        server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, page = time.monotonic() + 60, None
        while page is None and server.poll() is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        assert page is not None, (tmp_path / "log").read_text()
        assert f"<title>ICE · {run_dir.name}</title>" in page
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "read-only" in (tmp_path / "log").read_text()


def test_explore_refuses_a_bad_port(run_dir):
    with pytest.raises(ice.IceError, match="port 0"):
        ice.load_run(run_dir).explore(port=0)


def test_the_examples_in_the_docs_run(run_dir, images, tmp_path, monkeypatch):
    """Every ```python block of docs/python-api.md runs, in order, in one namespace, as cells
    of a notebook. The paths the examples use stand for the test's own: "runs/demo" for the
    annotated run, "photos" for its images, "runs/photos" for a new run. run.explore() would
    serve until stopped, so it only records its options (test_explore_serves_the_explorer
    serves it)."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    make_images(tmp_path / "new", n=6, seed=7)
    paths = {
        '"runs/demo"': run_dir,
        '"runs/photos"': tmp_path / "photos-run",
        '"photos"': images,
        '"new-photos"': tmp_path / "new",
    }
    explored = []
    signature = inspect.signature(ice.Run.explore)
    monkeypatch.setattr(ice.Run, "explore", lambda *args, **kw: explored.append(signature.bind(*args, **kw)))
    namespace: dict = {}
    for block in blocks:
        for placeholder, path in paths.items():
            block = block.replace(placeholder, repr(str(path)))
        exec(compile(block, "docs/python-api.md", "exec"), namespace)
    assert (tmp_path / "photos-run" / rd.MANIFEST).exists()
    assert rd.load_manifest(tmp_path / "photos-run")["additions"][-1]["images"] == 6
    assert explored and namespace["cats"]["image_id"].tolist() == [0, 1, 2, 3]
