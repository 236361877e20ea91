"""`ice add`: new images placed into a complete run (embeddings/add.py), on real runs."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embeddings.add import add_images
from embeddings.fit import place, vote
from embeddings.cluster import cluster_metrics
from embeddings.config import Config, TeachSettings
from embeddings.demo import write_digits
from embeddings.pipeline import run_embed
from ice import run_dir as rd
from ice.annotations import RUN_CLUSTERING, Annotations
from ice.cli import main
from ice.search_index import read_index

from .conftest import TINY


@pytest.fixture(scope="module")
def split_digits(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A run on four fifths of 400 digits (its input root holds only them), the other fifth
    in a folder outside that root; (run, the run's input folder, the folder to add)."""
    digits = write_digits(tmp_path_factory.mktemp("digits400"), limit=400)
    base = tmp_path_factory.mktemp("split")
    part, rest = base / "part", base / "rest"
    for i, path in enumerate(sorted(digits.rglob("*.png"))):
        target = (rest if i % 5 == 0 else part) / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    run_dir = base / "run"
    run_embed(part, run_dir, Config(**{**TINY, "epochs": 4, "labels_from_folders": True}))
    return run_dir, part, rest


@pytest.fixture
def run_copy(split_digits, tmp_path) -> tuple[Path, Path, Path]:
    run_dir, part, rest = split_digits
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy, part, rest


def _ice(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from ice.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def test_an_add_places_new_images_and_the_same_add_again_adds_nothing(run_copy, capsys):
    run_dir, part, rest = run_copy
    before = rd.read_items(run_dir)
    emb_before = np.load(run_dir / rd.EMBEDDINGS)
    n = len(before)
    assert main(["add", str(run_dir), str(rest), "--workers", "0"]) == 0
    items = rd.read_items(run_dir)
    m = len(items) - n
    assert m == len(list(rest.rglob("*.png"))) == 80
    assert items["image_id"].tolist() == list(range(n + m))
    pd.testing.assert_frame_equal(items.iloc[:n].drop(columns="added"), before)  # nothing there moved
    # the job's items.parquet is not written again: the addition's rows are a file of their own
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / rd.ITEMS), before)
    assert sorted(p.name for p in (run_dir / rd.ITEMS_ADDED).iterdir()) == ["0001.parquet"]
    assert (items["label"].iloc[n:] == [p.rsplit("/", 2)[-2] for p in items["path"].iloc[n:]]).all()
    assert (items["added"].iloc[:n] == 0).all() and (items["added"].iloc[n:] == 1).all()
    assert items["path"].iloc[n:].str.startswith(str(rest) + "/").all()  # outside the root: absolute
    for name, width in ((rd.PIXELS, None), (rd.EMBEDDINGS, None), (rd.MANIFOLD, 10)):
        arr = np.load(run_dir / name)
        assert len(arr) == n + m and (width is None or arr.shape[1] == width)
    np.testing.assert_array_equal(np.load(run_dir / rd.EMBEDDINGS)[:n], emb_before)
    import faiss

    assert faiss.read_index(str(run_dir / rd.INDEX)).ntotal == n  # the job's index is left as it was
    index = read_index(run_dir)
    assert index.ntotal == n + m
    _, found = index.search(np.load(run_dir / rd.EMBEDDINGS)[n:], 1)
    assert (found[:, 0] == np.arange(n, n + m)).mean() > 0.95  # an added image finds itself (or its twin)
    manifest = rd.load_manifest(run_dir)
    assert manifest["counts"]["images"] == n + m
    assert [(a["addition"], a["images"], a["skipped"]) for a in manifest["additions"]] == [(1, 80, 0)]
    added = items.iloc[n:]
    assert added[["x", "y", "distance"]].notna().all().all()
    # the new images take their neighbours' clusters: as right as the run's own on these digits
    own = cluster_metrics(before["label"].to_numpy(), before["cluster"].to_numpy())["accuracy"]
    new = cluster_metrics(added["label"].to_numpy(), added["cluster"].to_numpy())["accuracy"]
    assert new > own - 0.1 and new > 0.5, (own, new)
    lo, hi = items[["x", "y"]].iloc[:n].min().to_numpy(), items[["x", "y"]].iloc[:n].max().to_numpy()
    assert ((added[["x", "y"]].to_numpy() >= lo - 1) & (added[["x", "y"]].to_numpy() <= hi + 1)).all()

    capsys.readouterr()
    assert main(["add", str(run_dir), str(rest), str(part)]) == 0  # part: the run's own files
    assert "nothing new to add" in capsys.readouterr().out
    assert len(rd.read_items(run_dir)) == n + m
    assert len(rd.load_manifest(run_dir)["additions"]) == 1
    assert not (run_dir / rd.ADDING).exists()


def test_an_add_inside_the_input_root_stores_relative_paths_and_takes_single_files(run_copy):
    run_dir, part, rest = run_copy
    n = len(rd.read_items(run_dir))
    shutil.copytree(rest / "3", part / "new3")
    one = part / "one.png"
    shutil.copy(next((rest / "7").glob("*.png")), one)
    record = add_images(run_dir, [part / "new3", one], workers=0)
    items = rd.read_items(run_dir)
    assert record["images"] == len(items) - n == len(list((rest / "3").glob("*.png"))) + 1
    assert set(items["path"].iloc[n:]) == {f"new3/{p.name}" for p in (rest / "3").glob("*.png")} | {"one.png"}
    assert add_images(run_dir, [part], workers=0)["addition"] is None


def test_hostile_files_are_skipped_into_skipped_csv_and_not_tried_again(run_copy, capsys):
    run_dir, part, rest = run_copy
    (rest / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (rest / "0" / "empty.jpg").write_bytes(b"")
    notes = rest / "notes.txt"
    notes.write_text("not an image")
    assert main(["add", str(run_dir), str(rest), str(notes), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped files, each with its reason" in out
    skipped = pd.read_csv(run_dir / rd.SKIPPED)
    for name in ("broken.png", "empty.jpg", "notes.txt"):
        (row,) = skipped[skipped["path"].str.endswith(name)].itertuples()
        assert row.path.startswith(str(rest)) and row.reason
    assert rd.load_manifest(run_dir)["additions"][0]["skipped"] == 3
    assert main(["add", str(run_dir), str(rest)]) == 0
    assert "nothing new to add" in capsys.readouterr().out
    assert len(pd.read_csv(run_dir / rd.SKIPPED)) == len(skipped)


@pytest.mark.parametrize("used", ["embeddings", "pixels"])
def test_names_groups_reclusterings_and_teach_scores_survive_an_add(run_copy, used):
    """`used`: the regression the teach round blended in; a first round uses the embeddings',
    and for "pixels" its record is given the other one it kept, as a later round may use."""
    from embeddings.teach import teach_round
    from explorer.clusterings import recluster
    from explorer.data import load_run
    from ice import teach_state as ts

    run_dir, part, rest = run_copy
    data = load_run(run_dir)
    n = data.n
    notes = Annotations(run_dir / rd.ANNOTATIONS)
    notes.set_cluster_name(RUN_CLUSTERING, 0, "zero-ish")
    notes.save_group("some", [1, 5, 9])
    notes.mark("threes", marked_in=np.flatnonzero(data.path.astype(str) < "4")[:20], marked_out=[0, 2])
    recluster(data, 4)
    teach_round(run_dir, "threes", settings=TeachSettings(steps=5), device="cpu")
    if used == "pixels":
        state = ts.read_state(run_dir, "threes")
        record = state["rounds"][-1]
        record["likeness"] = record["regressions"]["others"]["pixels"]
        ts.write_state(run_dir, state)
    scores_before = ts.read_scores(run_dir, "threes", n=n)

    add_images(run_dir, [rest], workers=0)
    notes = Annotations(run_dir / rd.ANNOTATIONS)
    assert notes.cluster_names(RUN_CLUSTERING) == {0: "zero-ish"}
    assert notes.group_members("some").tolist() == [1, 5, 9]
    grown = load_run(run_dir)
    assert grown.n == n + 80
    k4 = grown.clustering("k4")
    assert len(k4.cluster) == n + 80 and k4.cluster.min() >= 0 and k4.cluster.max() < k4.k
    np.testing.assert_array_equal(k4.cluster[:n], data.clustering("k4").cluster)
    scores = ts.read_scores(run_dir, "threes", n=n + 80)
    np.testing.assert_array_equal(scores[:n], scores_before)
    assert ((scores[n:] >= 0) & (scores[n:] <= 1)).all()
    # the added images' scores blend the round's network and its regression, as the round's own
    import torch

    from embeddings import patches
    from embeddings.teach import new_scorer, score, views_config
    from ice import likeness

    record = ts.read_state(run_dir, "threes")["rounds"][-1]
    net = new_scorer(run_dir, torch.device("cpu"), 0)
    folder = ts.group_dir(run_dir, "threes")
    net.load_state_dict(torch.load(ts.round_path(folder, record["round"], ".pt"), weights_only=True))
    network = score(net, np.asarray(grown.pixels[n:]), views_config(run_dir), torch.device("cpu"))
    manifold = np.load(run_dir / rd.MANIFOLD)[n:] if (run_dir / rd.MANIFOLD).exists() else None
    # the round read the pixel features: the addition applies the run's patch model to the
    # new images, as the next round's features extend to them
    features = None
    if used == "pixels":
        assert record["likeness"]["patches"] == 4 * patches.CENTROIDS
        features = patches.apply(patches.read_model(run_dir), np.asarray(grown.pixels[n:]))
        extended = patches.ensure(run_dir, n + 80)
        np.testing.assert_allclose(extended[n:], features, atol=2e-3, rtol=1e-3)
    else:
        assert record["likeness"]["patches"] is None
    odds = likeness.apply(record["likeness"], np.asarray(grown.embeddings[n:]), manifold, patches=features)
    blend = record["settings"]["blend"]
    assert blend > 0 and not np.allclose(network, odds, atol=1e-3)
    np.testing.assert_allclose(scores[n:], (1 - blend) * network + blend * odds, atol=1e-5)
    if (run_dir / rd.NEIGHBOURS).exists():
        graph = np.load(run_dir / rd.NEIGHBOURS)
        assert len(graph) == n + 80 and (graph[n:, 0] == np.arange(n, n + 80)).all()


def test_an_open_explorer_shows_added_images_on_reload_and_the_export_has_them(run_copy, tmp_path):
    from explorer.app import create_app
    from explorer.export import export_csv
    from explorer.search import rank_like

    run_dir, part, rest = run_copy
    app = create_app(run_dir)
    data = app.ice_data
    n = data.n
    client = app.server.test_client()
    assert client.get(f"/thumb/{n}.png").status_code == 404
    assert len(data.manifold) == n  # read before the addition, as a More like these click reads it
    other = create_app(run_dir)  # as a second server process: it gets no page load
    add_images(run_dir, [rest], workers=0)
    other_client = other.server.test_client()
    assert other_client.get(f"/thumb/{n + 5}.png?v={other.ice_data.version}").status_code == 200
    assert other.ice_data.check_ids([n + 79]).tolist() == [n + 79] and other.ice_data.n == n + 80
    assert data.n == n  # the page shown still has its images
    app.layout()  # a page load
    assert data.n == n + 80 and len(data.x) == n + 80 and data.index.ntotal == n + 80
    assert data.clustering(RUN_CLUSTERING).sizes.sum() == n + 80
    assert len(data.manifold) == n + 80
    ids, _ = rank_like(data, [n + 79, n + 78], top=5)  # More like these, of added images
    assert len(ids) == 5 and ids.max() < n + 80
    assert client.get(f"/thumb/{n + 79}.png?v={data.version}").status_code == 200
    assert client.get(f"/image/{n + 79}?v={data.version}").status_code == 200  # the file, outside the root
    assert data.check_unchanged() is None  # an addition is not a rebuild
    out = tmp_path / "all.csv"
    assert export_csv(run_dir, out) == n + 80
    exported = pd.read_csv(out)
    assert exported["path"].str.startswith(str(rest)).sum() == 80


KILL_AT = {
    # after the decode journal's first save, mid-decode
    "decode": """
from embeddings import images
images.JOURNAL_SECONDS = 0
save = images._save_journal
def die(journal, scratch, dataset, key, done, *rest):
    save(journal, scratch, dataset, key, done, *rest)
    if done.sum() >= 64:
        os.kill(os.getpid(), signal.SIGKILL)
images._save_journal = die
""",
    # halfway through appending the pixels: rows written, the header not yet
    "append": """
def die(path, rows, n_before):
    with open(path, "ab") as f:
        f.write(rows.tobytes()[: rows.nbytes // 2])
    os.kill(os.getpid(), signal.SIGKILL)
rd.append_npy = die
""",
    # after the arrays, the index and the addition's items written, the manifest not
    "manifest": """
write = rd.write_json
def die(path, obj):
    if str(path).endswith("manifest.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, obj)
rd.write_json = die
""",
}


@pytest.mark.parametrize("where", sorted(KILL_AT))
def test_an_add_killed_then_run_again_ends_as_one_never_killed(split_digits, tmp_path, where):
    run_dir, part, rest = split_digits
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    shutil.copytree(run_dir, fresh)
    shutil.copytree(run_dir, killed)
    (rest / "9" / "broken.png").write_bytes(b"GIF89a nope")
    try:
        assert main(["add", str(fresh), str(rest), "--workers", "0"]) == 0
        script = (
            "import os, signal, sys\nfrom ice import run_dir as rd\n"
            + KILL_AT[where]
            + "from ice.cli import main\nmain(sys.argv[1:])\n"
        )
        args = ["add", str(killed), str(rest), "--workers", "0"]
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
        assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-800:]
        assert (killed / rd.ADDING / "state.json").exists()
        again = subprocess.run(_ice(*args), capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert "finishing addition 1" in again.stdout
    finally:
        (rest / "9" / "broken.png").unlink()
    a, b = rd.read_items(fresh), rd.read_items(killed)
    pd.testing.assert_frame_equal(a, b)
    for name in (rd.PIXELS, rd.EMBEDDINGS, rd.MANIFOLD):
        np.testing.assert_array_equal(np.load(fresh / name), np.load(killed / name))
    assert (fresh / rd.SKIPPED).read_text() == (killed / rd.SKIPPED).read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(fresh / rd.ADDED), pd.read_parquet(killed / rd.ADDED))
    strip = lambda m: [{k: v for k, v in a.items() if k not in ("time", "seconds")} for a in m["additions"]]  # noqa: E731
    assert strip(rd.load_manifest(fresh)) == strip(rd.load_manifest(killed))
    assert not (killed / rd.ADDING).exists() and not list(killed.glob(".*tmp*"))


def test_errors_are_one_line(run_copy, tmp_path, capsys):
    run_dir, part, rest = run_copy
    assert main(["add", str(tmp_path / "nope"), str(rest)]) == 1
    assert "run directory not found" in capsys.readouterr().err
    assert main(["add", str(run_dir), str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or folder" in err
    held = rd.lock_run_dir(run_dir)  # as a running `ice embed` or `ice add` holds it
    try:
        assert main(["add", str(run_dir), str(rest)]) == 1
        assert "another `ice embed` or `ice add` is writing this run now" in capsys.readouterr().err
    finally:
        import os

        os.close(held)


def test_vote_and_place_follow_the_nearest_rows():
    labels = np.array([0, 0, 1, 1, 2])
    near = np.array([[0, 2, 3], [2, 3, 0], [4, -1, -1]])
    d2 = np.array([[0.1, 0.2, 0.2], [1.0, 1.0, 0.01], [0.5, 0, 0]])
    assert vote(labels, near, d2).tolist() == [1, 0, 2]  # two far ones lose to one very near
    pos = np.array([[0, 0], [0, 0], [1, 0], [1.1, 0], [50, 50], [1.05, 0], [0.95, 0]], np.float32)
    near = np.array([[2, 4, 3, 5, 6]])  # the second nearest lies far away on the map
    out = place(pos, near, np.ones((1, 5)), np.random.default_rng(0))
    assert abs(out[0, 0] - 1.05) < 0.01 and abs(out[0, 1]) < 0.01, out  # (50, 50) is past the gate


def test_embed_with_the_encoder_of_another_run_trains_nothing(split_digits, tmp_path, capsys):
    import torch

    from embeddings.embed import embed
    from embeddings.train import load_model

    run_dir, part, rest = split_digits
    out = tmp_path / "rest-run"
    assert main(["embed", str(rest), "--out", str(out), "--encoder-from", str(run_dir), "--workers", "0"]) == 0
    manifest = rd.load_manifest(out)
    source = rd.load_manifest(run_dir)["config"]
    assert manifest["config"]["encoder_from"] == str(run_dir.resolve())
    for name in ("image_size", "recipe", "dim", "crop"):
        assert manifest["config"][name] == source[name]
    assert (out / rd.MODEL).read_bytes() == (run_dir / rd.MODEL).read_bytes()
    assert rd.read_json(out / rd.PROGRESS)["stages"]["train"]["encoder_from"] == str(run_dir.resolve())
    # the embeddings are the other run's encoder's
    cfg = Config.from_dict(manifest["config"]).resolved()
    again = embed(
        load_model(run_dir, torch.device("cpu")), out / rd.PIXELS, tmp_path / "e.npy", cfg, torch.device("cpu")
    )
    np.testing.assert_allclose(np.load(out / rd.EMBEDDINGS), again, atol=1e-6)

    capsys.readouterr()
    args = ["embed", str(rest), "--out", str(tmp_path / "x"), "--encoder-from"]
    assert main([*args, str(tmp_path)]) == 1
    assert "is not a run directory" in capsys.readouterr().err
    assert main([*args, str(run_dir), "--image-size", "32"]) == 1
    assert f"the encoder of {run_dir} works at 16" in capsys.readouterr().err


def test_a_run_started_over_forgets_its_additions(run_copy):
    run_dir, part, rest = run_copy
    assert add_images(run_dir, [rest], workers=0)["images"] == 80
    (run_dir / rd.ADDING).mkdir()  # and an addition that was stopped
    run_embed(part, run_dir, Config(**{**TINY, "epochs": 4, "labels_from_folders": True}), force=True)
    assert not (run_dir / rd.ADDED).exists() and not (run_dir / rd.ADDING).exists()
    assert not (run_dir / rd.ITEMS_ADDED).exists()
    assert "added" not in rd.read_items(run_dir)
    assert add_images(run_dir, [rest], workers=0)["images"] == 80


def test_a_group_of_added_images_comes_back_after_a_run_started_over(split_digits, tmp_path):
    """--force sets the explorer's state aside with the items it refers to, the additions'
    rows among them, so that a group of added images is carried into the new run."""
    _, part, rest = split_digits
    root, run_dir = tmp_path / "root", tmp_path / "run"
    for digit in ("0", "1"):
        shutil.copytree(part / digit, root / digit)
    settings = Config(**{**TINY, "epochs": 2, "labels_from_folders": True})
    run_embed(root, run_dir, settings)
    shutil.copytree(rest / "2", root / "2")
    record = add_images(run_dir, [root / "2"], workers=0)
    added = list(range(record["first_id"], record["first_id"] + record["images"]))
    Annotations(run_dir / rd.ANNOTATIONS).save_group("twos", added)
    run_embed(root, run_dir, settings, force=True)
    items = rd.read_items(run_dir)
    assert not (run_dir / rd.ITEMS_ADDED).exists() and len(items) == len(list(root.rglob("*.png")))
    members = Annotations(run_dir / rd.ANNOTATIONS).group_members("twos")
    assert sorted(items["path"].iloc[members]) == sorted(f"2/{p.name}" for p in (rest / "2").glob("*.png"))


def test_ice_add_from_python_returns_the_grown_run(run_copy):
    import ice

    run_dir, part, rest = run_copy
    n = len(ice.load_run(run_dir))
    run = ice.add(run_dir, rest / "1", rest / "2")
    assert len(run) == n + len(list((rest / "1").glob("*.png"))) + len(list((rest / "2").glob("*.png")))
    assert run.items["path"].iloc[-1].startswith(str(rest / "2"))
    with pytest.raises(ice.IceError, match="give the folders or image files"):
        ice.add(run_dir)


def test_a_file_taken_up_twice_is_looked_up_by_its_latest_record(tmp_path):
    """files.parquet (the job's), then added.parquet in the order of the additions: the last
    size and mtime of a path is the one a new add compares with."""
    from types import SimpleNamespace

    from embeddings.add import _taken

    pd.DataFrame({"path": [b"a.png", b"b.png"], "size": [1, 2], "mtime_ns": [10, 20]}).to_parquet(
        tmp_path / "files.parquet"
    )
    pd.DataFrame(
        {
            "path": [b"b.png", b"c.png", b"b.png"],
            "size": [3, 4, 5],
            "mtime_ns": [30, 40, 2**62],
            "addition": [1, 1, 2],
            "image_id": [-1, 5, 6],
        }
    ).to_parquet(tmp_path / rd.ADDED)
    taken = _taken(SimpleNamespace(run_dir=tmp_path), pd.Series([b"a.png", b"b.png", b"c.png", b"new.png"]))
    assert taken["size"].tolist() == [1, 5, 4, pd.NA]
    assert taken["mtime_ns"].tolist() == [10, 2**62, 40, pd.NA]  # nanoseconds kept exact
