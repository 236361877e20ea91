"""Loading a run for the explorer: what it reads, and the runs it refuses."""

import json

import numpy as np
import pandas as pd
import pytest

from explorer.data import RUN_CLUSTERING, load_run
from ice.errors import IceError
from tests.conftest import rebuild_manifest


def test_load_run_reads_every_image(small_run):
    items = pd.read_parquet(small_run / "items.parquet")
    data = load_run(small_run, read_only=True)
    assert data.n == len(items) == 300
    assert data.x.dtype == np.float32 and np.array_equal(data.x, items["x"].to_numpy())
    assert list(data.path) == list(items["path"])
    assert data.embeddings.shape[0] == data.pixels.shape[0] == data.n
    c = data.clustering(RUN_CLUSTERING)
    assert np.array_equal(c.cluster, items["cluster"].to_numpy())
    assert c.k == json.loads((small_run / "manifest.json").read_text())["clusters"]


def test_read_only_load_writes_nothing(small_run):
    before = sorted(p.name for p in small_run.iterdir())
    load_run(small_run, read_only=True)
    assert sorted(p.name for p in small_run.iterdir()) == before


def test_members_are_the_cluster_nearest_first(small_run):
    c = load_run(small_run, read_only=True).clustering(RUN_CLUSTERING)
    seen = []
    for k in range(c.k):
        ids = c.members(k)
        assert (c.cluster[ids] == k).all()
        assert (np.diff(c.distance[ids]) >= 0).all()
        assert len(ids) == c.sizes[k]
        seen.extend(ids)
    assert sorted(seen) == list(range(len(c.cluster)))
    with pytest.raises(IceError, match=f"cluster {c.k}"):
        c.members(c.k)


def test_check_ids_names_the_bad_id(small_run):
    data = load_run(small_run, read_only=True)
    assert data.check_ids([0, 5]).tolist() == [0, 5]
    with pytest.raises(IceError, match="image_id 300"):
        data.check_ids([1, 300])
    with pytest.raises(IceError, match="image_id -1"):
        data.check_ids([-1])


def test_missing_folder(tmp_path):
    with pytest.raises(IceError, match="not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "a.csv").write_text("x")  # a file given where the run directory goes
    with pytest.raises(IceError, match="a.csv: is a file, not a folder"):
        load_run(tmp_path / "a.csv")


def test_folder_without_manifest(explorer_run, tmp_path):
    (explorer_run / "manifest.json").unlink()  # a job killed before its end: progress.json is there
    with pytest.raises(
        IceError,
        match=r"not a complete run \(no manifest.json\); finish it with "
        r"`ice embed IMAGES --out .*run --resume`",
    ):
        load_run(explorer_run)
    (tmp_path / "photos").mkdir()  # the image folder, given by mistake
    with pytest.raises(
        IceError,
        match=r"photos is not a run directory \(no manifest.json\); make one with "
        r"`ice embed IMAGES --out .*photos`",
    ):
        load_run(tmp_path / "photos")


def test_manifest_not_complete(explorer_run):
    path = explorer_run / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "complete": False}))
    with pytest.raises(IceError, match="not a complete run"):
        load_run(explorer_run)


def test_newer_schema_is_refused(explorer_run):
    path = explorer_run / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))
    with pytest.raises(IceError, match="schema version 99"):
        load_run(explorer_run)


def test_arrays_that_disagree_with_items(explorer_run):
    np.save(explorer_run / "embeddings.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(IceError, match="embeddings.npy has 3"):
        load_run(explorer_run)


def test_arrays_longer_than_items_are_an_addition_being_committed(explorer_run):
    """`ice add` appends the arrays before it writes their items: a server started in
    between shows the run as it was."""
    from ice import run_dir as rd

    before = load_run(explorer_run)
    n = before.n
    rd.append_npy(explorer_run / "embeddings.npy", np.ones((2, before.embeddings.shape[1]), np.float32), n)
    rd.append_npy(explorer_run / "pixels.npy", np.zeros((2, *before.pixels.shape[1:]), np.uint8), n)
    data = load_run(explorer_run)
    assert data.n == n and len(data.embeddings) == n and len(data.pixels) == n
    assert np.array_equal(data.embeddings, before.embeddings)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_damaged_index_is_one_error_naming_it(explorer_run, damage):
    """The index is read on the first search: a missing one is refused as the run opens; a
    damaged one is an IceError at that search, which the page shows. Before, either opened
    and every click on an image failed in the page with no word said."""
    path = explorer_run / "index.faiss"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IceError, match="index.faiss: " + ("missing" if damage == "missing" else "cannot read")):
        load_run(explorer_run).index


def test_an_explorer_over_a_rebuilt_run_saves_nothing(explorer_run):
    """`ice embed --force` rebuilt the run while an explorer served it: the explorer's image
    ids and clusters are the old run's, so a name or group saved now would land on other
    images. It refuses, saying why, until it is restarted."""
    from explorer.clusterings import recluster

    data = load_run(explorer_run)
    data.annotations.save_group("before", [1, 2])
    rebuild_manifest(explorer_run)
    for write in (
        lambda: data.annotations.set_cluster_name("run", 0, "x"),
        lambda: data.annotations.save_group("after", [3]),
        lambda: data.annotations.delete_group("before"),
        lambda: recluster(data, 4),
    ):
        with pytest.raises(IceError, match="rebuilt .* restart `ice explore`"):
            write()
    again = load_run(explorer_run)
    assert again.annotations.groups() == {"before": 2} and again.annotations.cluster_names("run") == {}
    again.annotations.set_cluster_name("run", 0, "x")  # a restarted explorer saves again
    (explorer_run / "manifest.json").unlink()  # being rebuilt: --force removes the manifest first
    with pytest.raises(IceError, match="rebuilt"):
        again.annotations.set_cluster_name("run", 0, "y")
