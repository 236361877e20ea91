"""End to end: `ice embed` on generated folders, resume, bad arguments, and the demo."""

import csv
import io
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
from embeddings.pipeline import Run, run_embed
from ice import run_dir as rd
from ice.cli import main
from tests.conftest import TINY, make_images

TINY_ARGS = [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def hostile_folder(root):
    """Readable images in odd modes beside files that cannot be read."""
    make_images(root / "ok", n=12)
    Image.new("CMYK", (30, 20), (0, 255, 0, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 30000, dtype=np.uint16)).save(root / "sixteen.png")
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(root / "palette.png", transparency=0)
    (root / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (root / "text.png").write_text("not an image at all")
    (root / "readme.txt").write_text("ignored: not an image extension")
    return {"empty.jpg", "truncated.jpg", "text.png"}


STAGES_RUN = ("scan", "decode", "train", "embed", "cluster", "selflabel", "project", "tiles")


def test_embed_end_to_end_on_hostile_folder(tmp_path, capsys):
    bad = hostile_folder(tmp_path / "in")
    out = tmp_path / "run"
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS]) == 0
    summary = capsys.readouterr().out
    assert "15 images, 3 skipped" in summary and "train" in summary and "project" in summary
    assert f"skipped files, each with its reason: {out / rd.SKIPPED}" in summary
    assert summary.splitlines()[-1] == f"to look at it: ice explore {out}"
    manifest = rd.load_manifest(out)
    assert manifest["counts"] == {"found": 18, "images": 15, "skipped": 3, "unlisted_folders": 0}
    assert set(manifest["stage_seconds"]) == {
        "scan",
        "decode",
        "train",
        "embed",
        "cluster",
        "selflabel",
        "project",
        "tiles",
    }
    skipped = list(csv.DictReader(open(out / rd.SKIPPED)))
    assert {r["path"] for r in skipped} == bad and all(r["reason"] for r in skipped)
    items = pd.read_parquet(out / rd.ITEMS)
    readable = {"cmyk.jpg", "sixteen.png", "palette.png"} | {f"ok/class{i % 3}/img_{i:03d}.png" for i in range(12)}
    assert set(items["path"]) == readable
    assert items["image_id"].tolist() == list(range(15))
    assert items["path"].tolist() == sorted(items["path"])
    assert list(items.columns) == ["image_id", "path", "width", "height", "cluster", "x", "y", "distance"]
    k = manifest["clusters"]
    assert items["cluster"].between(0, k - 1).all() and np.isfinite(items[["x", "y", "distance"]]).all().all()
    emb = np.load(out / rd.EMBEDDINGS)
    assert emb.shape == (15, 64) and emb.dtype == np.float32
    assert np.linalg.norm(emb, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert np.load(out / rd.PIXELS).shape == (15, 16, 16, 3)
    assert np.load(out / rd.CENTROIDS).shape[0] == k
    assert (out / rd.INDEX).exists() and (out / rd.MODEL).exists()
    assert not (out / rd.KNN).exists(), "the shared neighbour graph outlived the run"
    assert not list(out.glob(".*.tmp*")), "temporary files left behind"


@pytest.mark.parametrize("recipe", ["auto", "autoencoder"])
def test_a_working_size_between_powers_of_two_trains(tmp_path, recipe):
    """40-pixel images get the working size 48 (their side rounded up to a multiple of 16),
    which the encoder halves to 6x6 and the decoder rebuilds; both recipes run end to end."""
    make_images(tmp_path / "in", n=24, size=40)
    cfg = Config(**{**TINY, "image_size": None, "epochs": 1, "recipe": recipe, "self_label_epochs": 0})
    manifest = run_embed(tmp_path / "in", tmp_path / "run", cfg)
    assert rd.read_json(tmp_path / "run" / rd.PROGRESS)["stages"]["scan"]["image_size"] == 48
    assert np.load(tmp_path / "run" / rd.PIXELS).shape == (24, 48, 48, 3)
    assert torch_load(tmp_path / "run" / rd.MODEL)["model_args"]["image_size"] == 48
    assert np.load(tmp_path / "run" / rd.EMBEDDINGS).shape == (24, 64) and manifest["clusters"] >= 2


@pytest.mark.parametrize("pick, rounds", [("graph", None), ("graph", 0), ("likelihood", 5)])
def test_labels_from_folders_give_metrics(tmp_path, pick, rounds):
    make_images(tmp_path / "in", n=30)
    manifest = run_embed(
        tmp_path / "in",
        tmp_path / "run",
        Config(**TINY, labels_from_folders=True, clusters=3, mixture_pick=pick, graph_rounds=rounds),
    )
    assert manifest["clusters"] == 3
    assert manifest["config"]["mixture_pick"] == pick
    assert manifest["config"]["graph_rounds"] == (20 if rounds is None else rounds)  # None: the recipe's
    items = pd.read_parquet(tmp_path / "run" / rd.ITEMS)
    assert set(items["label"]) == {"class0", "class1", "class2"}
    assert set(manifest["metrics"]) == {"accuracy", "nmi", "ari"}
    assert 0 <= manifest["metrics"]["nmi"] <= 1


def test_recipe_is_chosen_after_decoding_and_recorded(tmp_path):
    make_images(tmp_path / "in", n=30)  # colour squares
    grey = tmp_path / "grey"
    for path in (tmp_path / "in").rglob("*.png"):
        dest = grey / path.relative_to(tmp_path / "in")
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").save(dest)
    # auto on a CPU: SimCLR on the small encoder for colour, the autoencoder for grey
    manifest = run_embed(tmp_path / "in", tmp_path / "a", Config(**TINY, clusters=3))
    progress = rd.read_json(tmp_path / "a" / rd.PROGRESS)
    assert progress["stages"]["decode"]["colour"] is True
    assert progress["stages"]["decode"]["recipe"] == "contrastive-small"
    cfg = manifest["config"]
    assert (cfg["recipe"], cfg["encoder"], cfg["contrastive"], cfg["reconstruction"]) == (
        "contrastive-small",
        "convnet",
        1.0,
        0.0,
    )
    assert (cfg["mixture_pick"], cfg["graph_rounds"], cfg["self_label_epochs"]) == ("likelihood", 20, 0)  # the recipe's
    assert torch_load(tmp_path / "a" / rd.MODEL)["model_args"]["decoder"] is False  # nothing to decode
    assert cfg["parallel_layout"] is False, "a CPU run is seeded end to end: UMAP too"
    manifest = run_embed(grey, tmp_path / "g", Config(**TINY, clusters=3, self_label_epochs=0))
    progress = rd.read_json(tmp_path / "g" / rd.PROGRESS)
    assert progress["stages"]["decode"]["colour"] is False and manifest["config"]["recipe"] == "autoencoder"
    assert (manifest["config"]["mixture_pick"], manifest["config"]["graph_rounds"]) == ("likelihood", 0)
    # the contrastive recipe, asked for, runs on a CPU too; given settings win over the recipe's
    manifest = run_embed(tmp_path / "in", tmp_path / "c", Config(**TINY, clusters=3, recipe="contrastive", width=8))
    cfg = manifest["config"]
    assert (cfg["recipe"], cfg["encoder"], cfg["width"], cfg["dim"], cfg["batch_size"]) == (
        "contrastive",
        "resnet",
        8,
        128,
        64,
    )
    assert (cfg["mixture_pick"], cfg["graph_rounds"], cfg["self_label_epochs"]) == ("graph", 20, 5)
    assert np.load(tmp_path / "c" / rd.EMBEDDINGS).shape == (30, 128)
    assert torch_load(tmp_path / "c" / rd.MODEL)["model_args"]["encoder"] == "resnet"


def torch_load(path):
    import torch

    return torch.load(path, weights_only=False)


def test_rerun_needs_resume_or_force(tmp_path, capsys):
    make_images(tmp_path / "in", n=12)
    args = ["embed", str(tmp_path / "in"), "--out", str(tmp_path / "run"), *TINY_ARGS]
    assert main(args) == 0
    assert main(args) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # complete: nothing to do
    capsys.readouterr()
    assert main(args + ["--resume", "--seed", "3"]) == 1
    assert (
        capsys.readouterr().err == f"ice: error: cannot resume {tmp_path / 'run'}: its options differ (seed); "
        "resume with the same options, or start it over with --force\n"
    )
    assert main(args + ["--resume", "--workers", "1"]) == 0  # how fast, not what comes out
    assert main(args + ["--resume", "--force"]) == 1  # which one was meant?
    assert "argument --force: not allowed with argument --resume" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_force_sets_the_explorers_work_aside_and_carries_groups_over_by_path(tmp_path, capsys):
    """Names and re-clusterings belong to the clusters they were made on: after --force they
    would label other clusters (and K=5 again would reuse the old k5). They move, with the
    groups, to before-force-*/; the groups come back into the new run by file path."""
    from explorer.clusterings import recluster
    from explorer.data import load_run
    from ice.annotations import Annotations

    make_images(tmp_path / "in", n=30)
    args = ["embed", str(tmp_path / "in"), "--out", str(tmp_path / "run"), *TINY_ARGS, "--clusters", "3"]
    assert main(args) == 0
    old = load_run(tmp_path / "run")
    recluster(old, 5)
    old.annotations.set_cluster_name("run", 0, "red squares")
    paths = [str(p) for p in old.path]
    old.annotations.save_group("picked", [0, 1, 2, 29])
    old.annotations.save_group("gone", [3])
    (tmp_path / "in" / paths[3]).unlink()  # a file removed before the new run: ids shift
    (tmp_path / "in" / paths[2]).unlink()
    capsys.readouterr()
    assert main(args + ["--force", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    (aside,) = (tmp_path / "run").glob("before-force-*")
    assert str(aside) in out and "groups carried over by path: 1 of 2 (3 images; 2 no longer in the run)" in out
    assert sorted(p.name for p in aside.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "annotations.sqlite",
        "clusterings",
        "items.parquet",
    ]
    assert not (tmp_path / "run" / "clusterings").exists()
    new = load_run(tmp_path / "run")
    named = new.annotations.cluster_names("run")  # the generated classes: the same clusters again
    assert list(named.values()) == ["red squares"] and "cluster names carried over: 1 of 1" in out
    old_members = {paths[i] for i in np.flatnonzero(old.clustering("run").cluster == 0)} - {paths[2], paths[3]}
    new_members = {str(p) for p in new.path[new.clustering("run").cluster == next(iter(named))]}
    assert len(old_members & new_members) > len(old_members | new_members) / 2
    assert new.annotations.groups() == {"picked": 3}
    carried = sorted(str(new.path[i]) for i in new.annotations.group_members("picked"))
    assert carried == sorted([paths[0], paths[1], paths[29]])
    before = Annotations(aside / "annotations.sqlite", read_only=True)
    assert before.cluster_names("run") == {0: "red squares"} and before.groups() == {"gone": 1, "picked": 4}
    manifest = rd.read_json(tmp_path / "run" / rd.MANIFEST)
    assert manifest["carried_groups"] == {"from": aside.name, "groups": 1, "of": 2, "images": 3, "dropped": 2}
    assert manifest["carried_names"] == {"from": aside.name, "names": 1, "of": 1}


def test_a_force_stopped_before_carrying_back_leaves_the_groups_to_the_next_force(tmp_path, capsys):
    """Killed after setting the state aside, then started over with --force (its options
    changed, so --resume would refuse): progress.json, which named the folder, was removed
    before it was read, and the groups stayed behind without a word."""
    from embeddings.pipeline import open_run
    from explorer.data import load_run

    make_images(tmp_path / "in", n=30)
    args = ["embed", str(tmp_path / "in"), "--out", str(tmp_path / "run"), *TINY_ARGS, "--clusters", "3"]
    assert main(args) == 0
    load_run(tmp_path / "run").annotations.save_group("picked", [0, 1])
    run = open_run(tmp_path / "in", tmp_path / "run", Config(**TINY), resume=False, force=True, log=lambda *a: None)
    run.close()  # killed here: nothing carried back yet
    (aside,) = (tmp_path / "run").glob("before-force-*")
    capsys.readouterr()
    assert main(args + ["--force", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "was stopped before it carried" in out and "groups carried over by path: 1 of 1" in out
    assert load_run(tmp_path / "run").annotations.groups() == {"picked": 2}
    assert [p.name for p in (tmp_path / "run").glob("before-force-*")] == [aside.name]
    assert rd.read_json(tmp_path / "run" / rd.MANIFEST)["carried_groups"]["from"] == aside.name


def test_a_cluster_name_follows_its_images_into_the_new_run(tmp_path):
    """A name set aside by --force goes to the new cluster that shares more than half of the
    named cluster's images (Jaccard, over the images in both runs); a cluster split in two
    loses its name, and a name already in the new run is not replaced."""
    from embeddings.pipeline import carry_names
    from ice.annotations import Annotations

    aside = tmp_path / "before-force-x"
    aside.mkdir()
    old_paths = [f"p{i:02d}.png" for i in range(30)]
    pd.DataFrame({"path": old_paths, "cluster": np.repeat([0, 1, 2], 10)}).to_parquet(aside / rd.ITEMS)
    before = Annotations(aside / rd.ANNOTATIONS)
    for cluster, name in enumerate(["zeros", "ones", "twos"]):
        before.set_cluster_name("run", cluster, name)
    before.set_cluster_name("k5", 0, "another clustering's")
    # p05 is gone, p30 and p31 are new; old 0 -> new 2 (9 of 10 shared), old 1 split 5/5
    # (5 of 13 shared), old 2 mostly -> new 0 (8 shared, 13 in new 0: 8 / 15 > 0.5).
    new_cluster = {
        **{f"p{i:02d}.png": 2 for i in range(10)},
        "p30.png": 2,
        **{f"p{i:02d}.png": 0 for i in [*range(10, 15), *range(20, 28)]},
        **{f"p{i:02d}.png": 1 for i in [*range(15, 20), 28, 29, 31]},
    }
    del new_cluster["p05.png"]
    paths = pd.Series(sorted(new_cluster))
    clusters = np.array([new_cluster[p] for p in paths])

    assert carry_names(tmp_path, aside, paths, clusters) == {"from": aside.name, "names": 2, "of": 3}
    after = Annotations(tmp_path / rd.ANNOTATIONS, read_only=True)
    assert after.cluster_names("run") == {2: "zeros", 0: "twos"} and after.cluster_names("k5") == {}
    assert carry_names(tmp_path, aside, paths, clusters)["names"] == 2  # again: the same
    Annotations(tmp_path / rd.ANNOTATIONS).set_cluster_name("run", 0, "renamed since")
    assert carry_names(tmp_path, aside, paths, clusters)["names"] == 1
    assert after.cluster_names("run") == {2: "zeros", 0: "renamed since"}
    nothing = tmp_path / "before-force-y"
    nothing.mkdir()
    assert carry_names(tmp_path, nothing, paths, clusters) == {"from": nothing.name, "names": 0, "of": 0}


def test_a_run_directory_that_another_process_writes_is_left_alone(tmp_path, capsys):
    """Two `ice embed` on one --out would overwrite each other's files; --force would delete
    the first one's files under it. The second now stops with one line and touches nothing."""
    from ice.run_dir import lock_run_dir

    make_images(tmp_path / "in", n=12)
    out = tmp_path / "run"
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--clusters", "3"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    held = lock_run_dir(out)  # as a running `ice embed` holds it (the kernel's flock, per open file)
    try:
        for flag in ("--force", "--resume"):
            capsys.readouterr()
            assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--clusters", "3", flag]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "another `ice embed` or `ice add` is writing this run now" in err, err
            assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    finally:
        os.close(held)
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--clusters", "3", "--resume"]) == 0
    fd = lock_run_dir(out)
    assert fd is not None, "a finished run lets go of its directory"
    os.close(fd)


def test_resume_refuses_changed_input_and_options(tmp_path, capsys):
    make_images(tmp_path / "in", n=12)
    out = tmp_path / "run"
    run_embed(tmp_path / "in", out, Config(**TINY))
    (out / rd.MANIFEST).unlink()  # as if killed before the end
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--dim", "8", "--resume"]) == 1
    assert "dim" in capsys.readouterr().err
    # a run started by an older ICE, before a setting existed, resumes with that setting's default
    progress = rd.read_json(out / rd.PROGRESS)
    del progress["config"]["parallel_layout"]
    progress["config"]["scan_epochs"] = 0  # and with a setting since retired
    progress["stages"].pop("project")
    rd.write_json(out / rd.PROGRESS, progress)
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--resume"]) == 0
    assert (out / rd.MANIFEST).exists()
    capsys.readouterr()
    (out / rd.MANIFEST).unlink()
    (tmp_path / "in" / "class0" / "img_000.png").unlink()
    make_images(tmp_path / "in" / "new", n=1)
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 added" in err and "1 removed" in err and "--force" in err


def _ice(*args):
    return [sys.executable, "-m", "ice.cli", *args]


def test_resume_after_kill_during_training(tmp_path):
    make_images(tmp_path / "in", n=600, size=32)
    out = tmp_path / "run"
    args = [
        "embed",
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--image-size",
        "32",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--kmeans-restarts",
        "1",
        "--neighbors",
        "8",
    ]
    proc = subprocess.Popen(_ice(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / rd.CHECKPOINT
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    import torch

    killed_at = torch.load(ckpt, weights_only=False)["epoch"]
    assert killed_at < 4, "the job finished before it could be killed"
    assert not (out / rd.MANIFEST).exists()
    with pytest.raises(Exception):
        rd.load_manifest(out)
    done = subprocess.run(_ice(*args, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = rd.load_manifest(out)
    assert torch.load(out / rd.MODEL, weights_only=False)["epoch"] == 4
    assert manifest["counts"]["images"] == 600
    items = pd.read_parquet(out / rd.ITEMS)
    assert items["image_id"].tolist() == list(range(600))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--clusters", "0"], "--clusters 0"),
        (["--clusters", "x"], "invalid int value"),
        (["--image-size", "20"], "--image-size 20"),
        (["--epochs", "0"], "--epochs 0"),
        (["--seed", "-1"], "--seed -1"),
        (["--seed", "2147483648"], "--seed 2147483648"),
        (["--dim", "1"], "--dim 1"),
        (["--batch-size", "1"], "--batch-size 1"),
        (["--lr", "-1"], "--lr -1"),
        (["--crop", "2"], "--crop 2"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--cluster-space", "pixels"], "--cluster-space 'pixels'"),
        (["--refine", "dec"], "--refine 'dec'"),
        (["--workers", "-1"], "--workers -1"),
        (["--max-pixels", "0"], "--max-pixels 0"),
        (["--neighbors", "1"], "--neighbors 1"),
        (["--umap-sample", "5"], "--umap-sample 5"),
        (["--fit-sample", "50"], "--fit-sample 50"),
        (["--fit-sample", "200", "--clusters", "101"], "at most half of --fit-sample (200)"),
        (["--manifold-dim", "1"], "--manifold-dim 1"),
        (["--kmeans-iters", "0"], "--kmeans-iters 0"),
        (["--kmeans-restarts", "0"], "--kmeans-restarts 0"),
        (["--temperature", "0"], "--temperature 0"),
        (["--noise", "-1"], "--noise -1"),
        (["--jitter", "-1"], "--jitter -1"),
        (["--width", "2"], "--width 2"),
        (["--weight-decay", "-1"], "--weight-decay -1"),
        (["--contrastive", "-1"], "--contrastive -1"),
        (["--recipe", "simclr"], "--recipe 'simclr'"),
        (["--encoder", "vit"], "--encoder 'vit'"),
        (["--depth", "0"], "--depth 0"),
        (["--reconstruction", "-1"], "--reconstruction -1"),
        (["--recipe", "autoencoder", "--reconstruction", "0"], "nothing would be learned"),
        (["--aspect", "0.5"], "--aspect 0.5"),
        (["--hue", "0.9"], "--hue 0.9"),
        (["--gray", "2"], "--gray 2"),
        (["--graph-rounds", "-1"], "--graph-rounds -1"),
        (["--mixture-pick", "best"], "--mixture-pick 'best'"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_option_is_one_line_and_nonzero(tmp_path, capsys, args, message):
    make_images(tmp_path / "in", n=3)
    assert main(["embed", str(tmp_path / "in"), "--out", str(tmp_path / "run"), *args]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ice: error:") and message in err, err
    assert not (tmp_path / "run").exists()


def test_missing_folder_and_folder_without_images(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 1
    assert "not found" in capsys.readouterr().err
    make_images(tmp_path / "pics", n=1)
    one = str(tmp_path / "pics" / "class0" / "img_000.png")  # a file where the folder goes
    assert main(["embed", one, "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == f"ice: error: input folder {one}: is a file, not a folder\n"
    # an --out that cannot be made: the system's reason, one line, not a traceback
    assert main(["embed", str(tmp_path / "pics"), "--out", one + "/run"]) == 1
    assert capsys.readouterr().err == f"ice: error: Not a directory: {one}/run\n"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert main(["embed", str(tmp_path / "empty"), "--out", str(tmp_path / "run2")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no images found" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"")
    assert main(["embed", str(tmp_path / "junk"), "--out", str(tmp_path / "run3")]) == 1
    assert "could be read" in capsys.readouterr().err


def test_a_folder_the_scan_cannot_list_is_reported_not_dropped_in_silence(tmp_path, capsys):
    from tests.test_images import deep_folder

    make_images(tmp_path / "in", n=12)
    deep_folder(tmp_path / "in")
    out = tmp_path / "run"
    assert main(["embed", str(tmp_path / "in"), "--out", str(out), *TINY_ARGS, "--clusters", "3"]) == 0
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.err.splitlines() if line.startswith("ice: warning:")]
    assert "1 folder could not be listed" in warning and "File name too long" in warning
    assert str(out / "skipped.csv") in captured.out
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["path"].startswith("00dd") and rows[0]["path"].endswith("/")
    assert rows[0]["reason"] == "folder not listed: File name too long"
    manifest = rd.read_json(out / rd.MANIFEST)
    assert manifest["counts"]["images"] == 12 and manifest["counts"]["unlisted_folders"] == 1


def test_more_clusters_than_images_is_refused_before_training(tmp_path, capsys):
    make_images(tmp_path / "four", n=4)
    out = tmp_path / "run"
    assert main(["embed", str(tmp_path / "four"), "--out", str(out), *TINY_ARGS, "--clusters", "10"]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert (
        last == "ice: error: --clusters 10: more clusters than the 4 images that could be read; "
        "give 4 or fewer (with --force, to start this run again)"
    ), last
    assert not (out / rd.MODEL).exists() and not (out / rd.CHECKPOINT).exists()
    assert main(["embed", str(tmp_path / "four"), "--out", str(out), *TINY_ARGS, "--clusters", "3", "--force"]) == 0


def test_one_image_is_a_clear_error_and_two_make_a_run(tmp_path, capsys):
    make_images(tmp_path / "one", n=1)
    (tmp_path / "one" / "broken.png").write_text("not an image")
    assert main(["embed", str(tmp_path / "one"), "--out", str(tmp_path / "run1"), *TINY_ARGS]) == 1
    last = capsys.readouterr().err.splitlines()[-1]  # after the decode stage's progress bar
    assert last.startswith("ice: error: only one of the 2 image files") and "at least two" in last, last
    make_images(tmp_path / "two", n=2)  # choose_k's silhouette is undefined for 2 rows: it fell over
    assert main(["embed", str(tmp_path / "two"), "--out", str(tmp_path / "run2"), *TINY_ARGS]) == 0
    items = pd.read_parquet(tmp_path / "run2" / rd.ITEMS)
    assert len(items) == 2 and items["cluster"].between(0, 1).all()


def test_demo_reaches_nmi_on_digits(demo_run):
    """The embedded default, the demo's own settings, a fixed seed, on the CPU."""
    run, printed = demo_run
    manifest = rd.load_manifest(run)
    assert manifest["counts"]["images"] == 1797
    assert manifest["metrics"]["nmi"] >= 0.85, manifest["metrics"]
    assert f"to look at it: ice explore {run}" in printed


def test_odd_file_names_are_kept(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i, name in enumerate([b"bad\xff\xfename.png", b"with space \"quote' .png", b"ok.png"]):
        Image.new("RGB", (20, 20), (i * 80, 0, 0)).save(os.path.join(os.fsencode(root), name))
    run_embed(root, tmp_path / "run", Config(**TINY))
    items = pd.read_parquet(tmp_path / "run" / rd.ITEMS)
    assert items["path"].tolist() == ["bad\\xff\\xfename.png", "ok.png", "with space \"quote' .png"]


def test_neighbour_graph_is_built_once_and_rebuilt_when_it_does_not_fit(small_run, tmp_path):
    from embeddings.stages import neighbour_graph

    cfg = Config.from_dict(rd.load_manifest(small_run)["config"])
    run = Run(small_run, tmp_path, cfg)
    emb = np.load(small_run / rd.EMBEDDINGS)
    ind, dist = neighbour_graph(run, emb)
    k = min(cfg.neighbors, len(emb) - 1)
    assert ind.shape == dist.shape == (len(emb), k) and (ind[:, 0] == np.arange(len(emb))).all()
    marked = ind.copy()
    marked[5, 1] = -1  # a saved graph of the right shape is read back, not rebuilt
    np.savez(tmp_path / rd.KNN, ind=marked, dist=dist)
    assert neighbour_graph(run, emb)[0][5, 1] == -1
    np.savez(tmp_path / rd.KNN, ind=marked[:, :3], dist=dist[:, :3])  # another k: rebuilt
    again, _ = neighbour_graph(run, emb)
    assert again.shape == (len(emb), k) and (again == ind).all()


def test_layout_graph_is_the_laid_out_rows_graph_kept_for_the_second_umap(small_run, tmp_path):
    from embeddings.project import layout_rows, seed_graph
    from embeddings.stages import layout_graph

    cfg = Config.from_dict(rd.load_manifest(small_run)["config"])
    emb = np.load(small_run / rd.EMBEDDINGS)
    assert layout_graph(Run(small_run, tmp_path, cfg), emb) is None  # all 300 images are laid out at once
    run = Run(small_run, tmp_path, cfg.replace(umap_sample=100))
    ind, dist = layout_graph(run, emb)
    expected = seed_graph(emb, cfg.neighbors, 100, cfg.seed)
    assert ind.shape == (100, cfg.neighbors) and (ind == expected[0]).all()
    saved = dict(np.load(tmp_path / rd.SEED_KNN))
    assert (saved["rows"] == layout_rows(len(emb), 100, cfg.seed)).all()
    saved["ind"][7, 1] = -1  # read back, not rebuilt
    np.savez(tmp_path / rd.SEED_KNN, **saved)
    assert layout_graph(run, emb)[0][7, 1] == -1
    other = Run(small_run, tmp_path, cfg.replace(umap_sample=100, seed=1))  # other rows: rebuilt
    assert (layout_graph(other, emb)[0] == seed_graph(emb, cfg.neighbors, 100, 1)[0]).all()


def test_a_run_above_umap_sample_lays_out_a_sample_first_for_both_umaps(tmp_path):
    make_images(tmp_path / "in", n=240, size=16)
    out = tmp_path / "run"
    # both UMAPs in parallel, as on a GPU: the sample's layout and the refining epochs
    manifest = run_embed(
        tmp_path / "in", out, Config(**{**TINY, "umap_sample": 120, "clusters": 3, "parallel_layout": True})
    )
    assert manifest["counts"]["images"] == 240 and manifest["config"]["parallel_layout"] is True
    assert np.isfinite(np.load(out / rd.MANIFOLD)).all() and np.load(out / rd.MANIFOLD).shape == (240, 10)
    items = pd.read_parquet(out / rd.ITEMS)
    assert np.isfinite(items[["x", "y"]]).all().all() and items[["x", "y"]].drop_duplicates().shape[0] > 200
    assert not (out / rd.KNN).exists() and not (out / rd.SEED_KNN).exists(), "the kept graphs outlived the run"


def test_a_cpu_run_repeats_exactly_with_its_seed(tmp_path):
    """What docs/reproducibility.md promises for CPU runs: the same seed gives the same embeddings,
    clusters (self-labelling included) and map; another seed another map."""
    make_images(tmp_path / "in", n=120)
    items = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = Config(**TINY, clusters=3, seed=seed, self_label_epochs=5)  # colour: the recipe's is 0
        run_embed(tmp_path / "in", tmp_path / name, cfg, log=lambda *a: None)
        items[name] = pd.read_parquet(tmp_path / name / rd.ITEMS)
    assert rd.read_json(tmp_path / "a" / rd.PROGRESS)["stages"]["selflabel"].get("k") == 3  # it ran
    assert np.array_equal(np.load(tmp_path / "a" / rd.EMBEDDINGS), np.load(tmp_path / "b" / rd.EMBEDDINGS))
    assert items["a"].equals(items["b"])
    assert not np.allclose(items["a"][["x", "y"]], items["c"][["x", "y"]])
