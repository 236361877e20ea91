"""The speed benchmark, the GPU check script and the image generator, at tiny sizes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks.common import PeakRSS, append_section, blas_kernels, clustered_embeddings, cpu_info, machine
from benchmarks.gen_images import generate
from benchmarks.speed_umap import knn_kept
from tests.conftest import need_shared_data

REPO = Path(__file__).resolve().parents[1]


def test_append_section_adds_a_titled_block_at_the_end(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n")
    append_section("First, 2026-11-27", "- a: 1\n", path=path)
    append_section("Second", "| x |", path=path)
    assert path.read_text() == "# Benchmarks\n\n### First, 2026-11-27\n\n- a: 1\n\n### Second\n\n| x |\n"


def test_machine_names_the_cpu_its_instruction_sets_and_blas_kernels():
    model, isa = cpu_info()
    text = machine()
    assert model in text and all(name in text for name in isa)
    if os.path.exists("/proc/cpuinfo"):
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        assert ("AVX2" in isa) == ("avx2" in flags) and ("AVX-512" in isa) == ("avx512f" in flags)
    numpys = [k for k in blas_kernels() if k.startswith("numpy ")]  # numpy is loaded: its BLAS is
    assert len(numpys) == 1 and numpys[0] in text
    if "OpenBLAS" in numpys[0]:  # then the kernels it chose for this CPU ('SkylakeX'), after its version
        assert not numpys[0].split()[-1][0].isdigit()


def test_generated_images_are_small_decodable_and_reproducible(tmp_path):
    a = generate(30, tmp_path / "a", size=16, workers=1, quiet=True)
    b = generate(30, tmp_path / "b", size=16, workers=2, quiet=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 30
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    with Image.open(a / files[0]) as img:
        assert img.size == (16, 16) and img.mode == "RGB"


def test_generated_images_from_first_are_the_rest_of_the_same_set(tmp_path):
    whole = generate(1500, tmp_path / "whole", size=16, workers=1, quiet=True)
    rest = generate(500, tmp_path / "rest", size=16, workers=2, quiet=True, first=1000)
    files = sorted(p.relative_to(rest) for p in rest.rglob("*.jpg"))
    assert len(files) == 500 and {f.parent.name for f in files} == {"0001"}
    assert all((whole / f).read_bytes() == (rest / f).read_bytes() for f in files)
    for bad in (10, -1000):
        with pytest.raises(ValueError, match=f"^--first {bad}: must be 0 or a positive multiple of 1,000$"):
            generate(10, tmp_path / "x", first=bad)


def test_generated_kinds_differ_by_what_vary_names_and_by_class_keeps_the_same_images(tmp_path):
    flat = generate(60, tmp_path / "flat", size=16, workers=1, quiet=True)
    by_class = generate(60, tmp_path / "by-class", size=16, workers=1, quiet=True, by_class=True)
    for path in flat.rglob("*.jpg"):  # <shard>/c<kind>_<i>.jpg holds what c<kind>/<shard>-<i>.jpg holds
        kind, i = path.stem.split("_")
        assert (by_class / kind / f"{path.parent.name}-{i}.jpg").read_bytes() == path.read_bytes()
    assert len(list(by_class.rglob("*.jpg"))) == 60

    def colour_share(vary: str) -> float:
        """How much of the spread of the images' mean colours their classes explain (R squared)."""
        folder = generate(400, tmp_path / vary, size=16, workers=1, quiet=True, vary=vary, by_class=True)
        paths = sorted(folder.rglob("*.jpg"))
        means = np.stack([np.asarray(Image.open(p), dtype=np.float64).mean((0, 1)) for p in paths])
        kinds = np.array([p.parent.name for p in paths])
        within = sum(((means[kinds == k] - means[kinds == k].mean(0)) ** 2).sum() for k in set(kinds))
        return 1 - within / ((means - means.mean(0)) ** 2).sum()

    assert colour_share("colour") > 0.8
    assert colour_share("shape") < 0.1
    try:
        generate(1, tmp_path / "x", vary="texture")
    except ValueError as e:
        assert str(e) == "--vary texture: must be both, colour or shape"
    else:
        raise AssertionError("an unknown --vary was accepted")


def test_neighbours_kept_is_one_for_the_same_space_and_low_for_noise():
    x = clustered_embeddings(500, 8, clusters=5, seed=0)
    rows = np.arange(0, 500, 10)
    assert knn_kept(x, x, rows) == 1.0
    noise = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    assert knn_kept(x, noise, rows) < 0.2


def test_neighbours_in_2d_and_in_64d_are_the_exact_ones():
    from benchmarks.speed_umap import neighbours

    rng = np.random.default_rng(3)
    rows = np.arange(0, 400, 7)
    for d in (2, 64):  # a k-d tree, then a faiss flat index
        x = rng.normal(size=(400, d)).astype(np.float32)
        d2 = ((x[rows, None, :].astype(np.float64) - x[None]) ** 2).sum(2)
        d2[np.arange(len(rows)), rows] = np.inf  # the row itself is left out
        assert np.array_equal(np.sort(neighbours(x, rows, 5), 1), np.sort(np.argsort(d2, 1)[:, :5], 1)), d


def test_speed_dry_run_and_gpu_check_dry_run_print_figures(tmp_path):
    """Both commands at tiny sizes, side by side: about 100 CPU seconds in all (numba compiling UMAP
    is a third of it; the GPU check's dry run runs its steps 4 and 5 on the digits)."""
    need_shared_data("cifar10-jpg.tar.gz")  # the decode benchmark reads CIFAR-10's JPEGs
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "gpu"), "PYTHONUNBUFFERED": "1"}
    record = tmp_path / "speed.md"
    speed = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.speed", "--dry-run", "--record", str(record)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    gpu = subprocess.Popen(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:  # 159 s beside a full suite with numba's cache cold, as on CI: room for a machine twice as slow
        gpu_out, speed_out = gpu.communicate(timeout=600)[0], speed.communicate(timeout=600)[0]
    finally:  # a timeout must not leave them (and the GPU check's children) running into later tests
        for proc in (speed, gpu):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert speed.returncode == 0, speed_out[-3000:]
    assert gpu.returncode == 0, gpu_out[-3000:]
    for figure in ["img/s", "pt/s", "query/s", "p95", "peak RSS GiB", "vs full fit", "vs scikit-learn", "10-NN kept"]:
        assert figure in speed_out, figure
    assert record.read_text().count("\n### Speed:") == 6
    assert "train step 64x64, fp32" in gpu_out and "encoder 64x64, fp32" in gpu_out
    for recipe in ("autoencoder", "contrastive-small"):  # what auto picks on a CPU, for grey and for colour images
        assert f"train step 32x32, fp32, batch 16, {recipe} |" in speed_out, recipe
    assert "train step 64x64, fp32" in (tmp_path / "gpu" / "BENCHMARKS-gpu.md").read_text()  # step 3, recorded
    # steps 4 and 5 on the digits: the quality run is kept, then clustered again with and without
    # the climb, each self-labelled
    assert (tmp_path / "gpu" / "cifar-run" / "manifest.json").exists() and "accuracy" in gpu_out
    assert gpu_out.count("then self-labelled (") == 2 and "skipped" not in gpu_out
    results = (tmp_path / "gpu" / "BENCHMARKS-gpu.md").read_text()  # the probe's lines kept, with the command
    assert "--picks graph --graph-rounds 0,20 --self-label --seeds 0" in results
    assert results.count("then self-labelled (") == 2 and results.count("graph_rounds 20:") == 1


def test_quick_summary_gives_each_target_met_or_missed_on_this_cpu():
    from benchmarks import speed
    from benchmarks.common import Section

    decode, umap = Section("decode", "c"), Section("umap", "c")
    decode.title = "Speed: decode 30,000 images to 32x32, from the page cache, 2026-12-04"
    umap.title = "Speed: UMAP to 2-D at 120,000 points, 2026-12-04"
    assert (
        decode.target("decode >= 1.8x the Pillow loop", True, "2.41x")
        == "target decode >= 1.8x the Pillow loop: **met**"
    )
    umap.target("UMAP at 120,000 points kept >= 0.9 at >= 1.5x", False, "kept 0.85 at 2.10x")
    title, body = speed.quick_summary(speed.parse_args(["--quick"]), [decode, umap], 1.5)
    assert title.startswith("Quick check: each target on this CPU")
    assert "- decode >= 1.8x the Pillow loop: **met** (2.41x)" in body
    assert "- UMAP at 120,000 points kept >= 0.9 at >= 1.5x: **missed** (kept 0.85 at 2.10x)" in body
    assert "`python -m benchmarks.speed --stage all --quick`" in body and cpu_info()[0] in body
    assert "decode 30,000 images to 32x32, from the page cache; UMAP to 2-D at 120,000 points" in body
    with pytest.raises(SystemExit):
        speed.parse_args(["--quick", "--dry-run"])


def test_speed_decode_cold_drops_the_files_before_each_side_and_times_read_ahead(tmp_path):
    from benchmarks.gen_images import generate

    generate(200, tmp_path / "images", quiet=True)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--stage",
            "decode",
            "--cold",
            "--dry-run",
            "--data",
            str(tmp_path / "images"),
            "--no-record",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "decode 200 images to 32x32, each side reading them from disk" in out.stdout
    assert "`python -m benchmarks.speed --stage decode --dry-run --data " in out.stdout and " --cold`" in out.stdout
    assert "workers, no read-ahead |" in out.stdout
    assert "read-ahead (a batch that starts on disk asks for all its files at once) vs none" in out.stdout
    assert "images whose pixels match the Pillow loop's within 2 levels: 100.0%" in out.stdout


def test_peak_memory_tells_pages_of_a_mapped_file_from_memory_the_kernel_cannot_drop(tmp_path):
    path = tmp_path / "pixels.bin"
    with open(path, "wb") as f:
        for _ in range(16):
            f.write(b"\x01" * 2**24)  # 256 MiB in all
    with PeakRSS() as mem:
        time.sleep(0.2)
        mapped = np.memmap(path, mode="r")
        assert int(mapped.sum(dtype=np.uint64)) == 2**28  # every page read through the mapping
        time.sleep(0.3)
        heap = np.ones(2**24)  # 128 MiB of anonymous memory
        time.sleep(0.3)
    del mapped, heap
    first_total, first_anon = mem.samples[0][1:]
    file_part = max(total - anon for _, total, anon in mem.samples) - (first_total - first_anon)
    anon_part = max(anon for _, _, anon in mem.samples) - first_anon
    assert file_part > 200 * 2**10, file_part  # KiB
    assert 100 * 2**10 < anon_part < 200 * 2**10, anon_part
    assert mem.anon_gib <= mem.gib


def test_peak_memory_without_the_sampler_still_sees_a_peak_freed_inside_the_block():
    """sample=False (benchmarks that start no processes) reads the kernel's high-water mark:
    a 256 MiB array made and freed inside the block counts, though no sample could see it."""
    with PeakRSS() as before:
        pass
    with PeakRSS(sample=False) as mem:
        heap = np.ones(2**25)  # 256 MiB, every page written
        del heap
    assert mem.samples == [] and mem.anon_gib == 0
    assert mem.gib - before.gib > 0.2, (mem.gib, before.gib)


def test_scale_dry_run_reports_each_stage_and_its_memory_not_backed_by_files(tmp_path):
    """`ice embed` on 64 generated images at 16x16, one epoch: about 35 s, most of it UMAP's numba."""
    record = tmp_path / "scale.md"
    env = {**os.environ, "ICE_DATA_CACHE": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--stage", "scale", "--dry-run", "--record", str(record)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    text = record.read_text()
    assert "### Scale: `ice embed --fast` on 64 generated images" in text
    for stage in ("scan", "decode", "train", "embed", "cluster", "selflabel", "project", "tiles"):
        assert re.search(rf"^\| {stage} \| [0-9.]+ \|", text, re.M), stage
    total = float(re.search(r"peak memory: ([0-9.]+) GiB", text).group(1))
    anon = float(re.search(r"not backed by files .*: peak ([0-9.]+) GiB; by stage scan [0-9.]+,", text).group(1))
    assert 0 < anon <= total


def test_parse_sets_types_each_setting_and_refuses_unknown_ones():
    from benchmarks.common import parse_sets

    assert parse_sets(["width=32", "flip=false", "crop=0.3", "recipe=contrastive", "image_size=32"]) == {
        "width": 32,
        "flip": False,
        "crop": 0.3,
        "recipe": "contrastive",
        "image_size": 32,
    }
    with pytest.raises(SystemExit, match="'widht' is not a setting"):
        parse_sets(["widht=32"])
    for bad, said in [
        ("epochs=abc", "epochs takes a whole number"),
        ("crop=", "crop takes a number"),
        ("flip=flase", "flip takes true or false"),
    ]:  # were a traceback; a silent False
        with pytest.raises(SystemExit, match=f"--set {bad}: {said}"):
            parse_sets([bad])


def test_ssl_probe_scores_the_embedding_after_each_epoch():
    from benchmarks.ssl_probe import main

    rows = main(["--dataset", "digits", "--set", "epochs=2", "--no-record"])
    assert [r["epoch"] for r in rows] == [1, 2]
    # digits: the autoencoder's neighbours agree far above chance (0.1) after an epoch
    assert all(r["knn"] > 0.6 and 0.1 < r["kmeans"] <= 1 for r in rows)


def test_cluster_pick_compares_both_ways_of_judging_the_mixture_on_a_labelled_run(small_run, capsys):
    from benchmarks.cluster_pick import main
    from embeddings.cluster import cluster_metrics, fit_clusters
    from embeddings.config import Config
    from embeddings.project import knn_graph, umap_reduce
    from ice import run_dir as rd

    results = main([str(small_run), "--seeds", "0,5"])
    assert sorted(results) == [(p, r) for p in ("graph", "likelihood") for r in (0, 20)]
    out = capsys.readouterr().out
    assert "small: 300 images, K=10" in out and out.count("mixture_pick graph") == 2
    # the figure is the job's own clustering of that manifold, rebuilt here
    emb = np.load(small_run / "embeddings.npy").astype(np.float32)
    labels = pd.read_parquet(small_run / "items.parquet")["label"].to_numpy()
    cfg = Config.from_dict(rd.load_manifest(small_run)["config"])  # the small run's: 8 neighbours, 1 restart
    knn = knn_graph(emb, cfg.neighbors, 0)
    space = umap_reduce(
        emb, 10, neighbors=cfg.neighbors, min_dist=0.0, sample=200_000, seed=0, desc="manifold", knn=knn
    )
    again = fit_clusters(space, 10, "gmm", cfg.kmeans_restarts, cfg.kmeans_iters, 5, neighbours=knn[0], pick="graph")
    assert results[("graph", 0)][1] == pytest.approx(cluster_metrics(labels, again.labels_)["accuracy"])
    again = fit_clusters(
        space, 10, "gmm", cfg.kmeans_restarts, cfg.kmeans_iters, 5, neighbours=knn[0], pick="graph", graph_rounds=20
    )
    assert results[("graph", 20)][1] == pytest.approx(cluster_metrics(labels, again.labels_)["accuracy"])


def test_quality_scores_the_mixture_before_self_labelling(tmp_path):
    import pandas as pd

    from benchmarks.quality import before_self_labelling

    items = pd.DataFrame({"image_id": [3, 2, 1, 0], "label": ["b", "b", "a", "a"]})
    np.savez(tmp_path / "assign.npz", cluster=np.array([0, 0, 1, 1]), first_cluster=np.array([0, 0, 1, 1]))
    assert before_self_labelling(tmp_path, items)["accuracy"] == 1.0
    np.savez(tmp_path / "assign.npz", cluster=np.array([0, 0, 1, 1]), first_cluster=np.array([0, 1, 0, 1]))
    assert before_self_labelling(tmp_path, items)["accuracy"] == 0.5
    np.savez(tmp_path / "assign.npz", cluster=np.array([0, 1]))
    assert before_self_labelling(tmp_path, items) is None


def test_quality_generates_its_colour_and_shape_sets_once_as_class_folders(tmp_path, monkeypatch):
    from benchmarks import quality

    monkeypatch.setattr(quality, "CACHE", tmp_path)
    folder = quality.dataset_folder("shapes", "all", 40)
    assert folder == tmp_path / "shapes-40" and (folder / ".done").exists()
    classes = {p.parent.name for p in folder.rglob("*.jpg")}
    assert len(list(folder.rglob("*.jpg"))) == 40 and classes <= {f"c{k}" for k in range(10)} and len(classes) > 3
    stamp = (folder / ".done").stat().st_mtime_ns
    assert quality.dataset_folder("shapes", "all", 40) == folder and (folder / ".done").stat().st_mtime_ns == stamp
    assert quality.dataset_folder("colours", "all", 40) == tmp_path / "colours-40"
    with pytest.raises(SystemExit, match="--split test: --dataset shapes is generated and has no splits"):
        quality.dataset_folder("shapes", "test", 40)


def test_build_once_rebuilds_only_what_a_build_cut_short_left(tmp_path):
    import tarfile

    from benchmarks.common import build_once, extract_once

    calls = []

    def build(folder, fail=False):
        calls.append(folder)
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / f"part{len(calls)}").write_text("x")
        if fail:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(tmp_path / "set", lambda f: build(f, fail=True))
    assert not (tmp_path / "set" / ".done").exists()
    assert build_once(tmp_path / "set", build) == tmp_path / "set"
    assert sorted(p.name for p in (tmp_path / "set" / "sub").iterdir()) == ["part2"]  # the cut build's file is gone
    build_once(tmp_path / "set", build)
    assert len(calls) == 2

    (tmp_path / "src" / "pics").mkdir(parents=True)
    (tmp_path / "src" / "pics" / "a.txt").write_text("a")
    with tarfile.open(tmp_path / "pics-x.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "pics", arcname="pics")
    folder = extract_once(tmp_path / "pics-x.tar.gz", tmp_path / "cache" / "pics")
    assert (folder / "a.txt").read_text() == "a" and (folder / ".done").exists()
    with pytest.raises(SystemExit, match="missing.tar.gz not found"):
        extract_once(tmp_path / "missing.tar.gz", tmp_path / "cache" / "missing")


def test_cluster_pick_self_labels_each_clustering_as_the_job_does(small_run, capsys):
    """--self-label (the GPU check's step 5): each clustering, climbed or not, then goes through
    the job's self-labelling from the run's own model, pixels and settings."""
    import torch

    from benchmarks.cluster_pick import main
    from embeddings.cluster import climb_modularity, cluster_metrics, fit_clusters
    from embeddings.config import Config
    from embeddings.project import knn_graph, umap_reduce
    from embeddings.selflabel import self_label
    from embeddings.train import load_model
    from ice import run_dir as rd

    results = main(
        [
            str(small_run),
            "--seeds",
            "0",
            "--picks",
            "graph",
            "--graph-rounds",
            "0,20",
            "--self-label",
            "--device",
            "cpu",
        ]
    )
    assert sorted(results, key=str) == sorted(
        [("graph", r) for r in (0, 20)] + [("graph", r, "self-labelled") for r in (0, 20)], key=str
    )
    assert capsys.readouterr().out.count("then self-labelled (") == 2
    emb = np.load(small_run / "embeddings.npy").astype(np.float32)
    labels = pd.read_parquet(small_run / "items.parquet")["label"].to_numpy()
    cfg = Config.from_dict(rd.load_manifest(small_run)["config"])
    knn = knn_graph(emb, cfg.neighbors, 0)
    space = umap_reduce(
        emb, 10, neighbors=cfg.neighbors, min_dist=0.0, sample=200_000, seed=0, desc="manifold", knn=knn
    )
    climbed = climb_modularity(
        fit_clusters(
            space, 10, "gmm", cfg.kmeans_restarts, cfg.kmeans_iters, 0, neighbours=knn[0], pick="graph"
        ).labels_,
        knn[0],
        20,
    )
    again = self_label(
        load_model(small_run, torch.device("cpu")), small_run / rd.PIXELS, climbed, cfg, torch.device("cpu")
    )
    assert results[("graph", 20, "self-labelled")][0] == pytest.approx(cluster_metrics(labels, again)["accuracy"])
    assert results[("graph", 20, "self-labelled")] != results[("graph", 20)]  # self-labelling moved some


def test_cluster_pick_self_labels_for_5_epochs_where_the_recipe_skips_it(small_run, tmp_path, capsys):
    """A run whose recipe skips self-labelling (contrastive-small: self_label_epochs 0) is
    self-labelled as the others are, for 5 epochs, rather than for the floor of 150 batches."""
    import shutil

    from benchmarks.cluster_pick import main
    from ice import run_dir as rd

    run = Path(shutil.copytree(small_run, tmp_path / "run"))
    manifest = rd.read_json(run / rd.MANIFEST)
    assert manifest["config"]["self_label_epochs"] == 5
    args = ["--seeds", "0", "--picks", "likelihood", "--graph-rounds", "0", "--self-label", "--device", "cpu"]
    as_run = main([str(run), *args])
    manifest["config"]["self_label_epochs"] = 0
    rd.write_json(run / rd.MANIFEST, manifest)
    capsys.readouterr()
    assert main([str(run), *args]) == as_run
    assert "then self-labelled (5 epochs, cpu)" in capsys.readouterr().out


def test_gpu_check_quality_only_runs_the_gpu_tests_beside_the_probe(tmp_path):
    """--quality-only (for a GPU machine with little time): no throughput step, the
    quality run first, then step 5's probe with the GPU-marked tests beside it in their own log
    (when they ran after it, it left them too little of the budget on the device)."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "gpu"), "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--quality-only"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    ).stdout
    steps = [line.split(" [")[0] for line in out.splitlines() if line.startswith("== ")]
    assert "== 3. training and embedding throughput" not in steps and "train step" not in out
    order = [
        next(i for i, s in enumerate(steps) if s.startswith(p))
        for p in (
            "== 4. CIFAR-10 quality",
            "== 5. the cluster step's climb",
            "== 2 (moved). GPU-marked tests, beside step 5",
            "== cluster_pick",
            "== done in",
        )
    ]
    assert order == sorted(order), steps
    tests_log = (tmp_path / "gpu" / "pytest_gpu.log").read_text()
    assert "pytest -m gpu (collect only)" in tests_log and "tests/test_gpu.py::test_pipeline_on_cuda" in tests_log
    assert "tests collected" in out  # the log's tail, printed once the tests are done
    assert "FAILED" not in out and (tmp_path / "gpu" / "cifar-run" / "manifest.json").exists()


def test_gpu_check_then_runs_the_quality_benchmark_again_with_the_settings(tmp_path):
    """--then "KEY=VALUE ...": step 5 is a second quality run with those settings (here on the
    digits), not the probe, and the GPU tests run before it rather than beside it (it is timed).
    --set "KEY=VALUE ..." gives step 4's run its settings."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "gpu"), "PYTHONUNBUFFERED": "1"}
    command = [
        "bash",
        "benchmarks/gpu_check.sh",
        "--dry-run",
        "--quality-only",
        "--set",
        "width=12 batch_size=64",
        "--then",
        "epochs=2 width=8",
    ]
    out = subprocess.run(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    ).stdout
    steps = [line.split(" [")[0] for line in out.splitlines() if line.startswith("== ")]
    assert "cluster_pick" not in out and "climb" not in "".join(steps)
    order = [
        next(i for i, s in enumerate(steps) if s.startswith(p))
        for p in (
            "== 4. CIFAR-10 quality",
            "== 2 (moved). GPU-marked tests, before step 5",
            "== pytest -m gpu (collect only)",
            "== 5. CIFAR-10 quality again, with --set epochs=2 --set width=8",
            "== done in",
        )
    ]
    assert order == sorted(order), steps
    settings = [line for line in out.splitlines() if line.startswith("- settings:")]
    assert len(settings) == 2 and "epochs 1, width 12" in settings[0] and "batch_size 64," in settings[0]
    assert "epochs 2, width 8" in settings[1] and "batch_size 256," in settings[1]
    assert "FAILED" not in out and sum(step.startswith("== pytest -m gpu") for step in steps) == 1  # once


def test_gpu_wheels_pins_every_wheel_at_the_version_installed_here():
    """benchmarks/gpu_wheels.sh --print: what to download for a GPU machine without a network,
    pinned to this environment's versions (a package it names but that is missing fails)."""
    from importlib.metadata import version

    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(
        ["bash", "benchmarks/gpu_wheels.sh", "--print"],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.split()
    pins = dict(line.split("==") for line in out)
    for name in ("faiss-cpu", "umap-learn", "pynndescent", "dash"):
        assert pins[name] == version(name)
    assert "torch" not in pins and "numpy" not in pins, "the GPU machine has these"


def test_results_keep_every_run_and_the_newest_figure_of_each_machine_kind(tmp_path):
    from benchmarks import results

    folder, md = tmp_path / "results", tmp_path / "BENCHMARKS.md"

    def run(value, machine, date, met=True):
        figure = {"group": "speed", "figure": "k-means vs scikit-learn", "value": value, "target": ">= 10x", "met": met}
        return results.record(
            "speed",
            f"k-means {date}",
            "- body",
            figures=[figure],
            date=date,
            machine=machine,
            command="python -m benchmarks.speed --stage kmeans",
            folder=folder,
            markdown_path=md,
        )

    run("9.1x", "2 cores, 24 GiB RAM, AMD EPYC (AVX2), load average 1.0", "2026-12-01", met=False)
    run("11.3x", "2 cores, 24 GiB RAM, Intel(R) Xeon(R) Processor, load average 1.0", "2026-12-02")
    latest = run("13.8x", "2 cores, 24 GiB RAM, AMD EPYC (AVX2), load average 1.0", "2026-12-03")
    assert len((folder / "speed.jsonl").read_text().splitlines()) == 3  # the history keeps every run
    rows = [line for line in md.read_text().splitlines() if line.startswith("| k-means")]
    assert len(rows) == 2 and "9.1x" not in md.read_text()  # one row per machine kind: the newest
    assert "| AMD EPYC | 13.8x | >= 10x | met | 2026-12-03 |" in rows[0] and "| Intel Xeon | 11.3x |" in rows[1]
    assert latest["commit"] is None or latest["commit"] in md.read_text()
    assert "`speed.jsonl` (3)" in md.read_text()
    assert results.machine_kind("16 cores, 126 GiB RAM, Intel(R) Xeon(R) Processor, GPU NVIDIA H200") == "NVIDIA H200"


def test_benchmarks_md_is_written_from_the_results():
    from benchmarks import results

    assert results.BENCHMARKS_MD.read_text() == results.markdown(results.load()), (
        "BENCHMARKS.md differs from benchmarks/results/: run python -m benchmarks.results"
    )


def test_add_bench_adds_a_fifth_of_the_digits_and_scores_it(tmp_path, monkeypatch, capsys):
    """benchmarks.add_bench end to end on the digits, kept out of BENCHMARKS.md."""
    from benchmarks import add_bench, quality

    monkeypatch.setattr(quality, "CACHE", tmp_path)
    monkeypatch.setattr(add_bench, "DATA_CACHE", tmp_path)
    result = add_bench.main(["--dataset", "digits", "--set", "epochs=3", "image_size=16", "workers=0", "--no-record"])
    out = capsys.readouterr().out
    assert "- added: 360 images of add, 0 skipped" in out and "accuracy of the added images" in out
    assert 0.3 < result["added"] <= 1 and 0.3 < result["own"] <= 1 and 0 <= result["matched"] <= 1
    assert result["seconds"] > 0


def test_atlas_bench_zooms_in_until_the_view_is_drawn_as_pictures(capsys):
    from benchmarks import atlas_bench

    atlas_bench.main(["--n", "20000", "--size", "8", "--width", "400", "--height", "300", "--no-record"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in out if line.startswith("| ") and line[2].isdigit()]
    counts = [int(r[0].replace(",", "")) for r in rows]
    drawn = [r[1].strip() == "yes" for r in rows]
    assert counts[0] == 20000 and not drawn[0]
    assert counts == sorted(counts, reverse=True) and drawn[-4:] == [True] * 4
    assert all(int(r[4].replace(",", "")) > 0 for r, d in zip(rows, drawn) if d)


def test_peak_memory_of_the_children_only_leaves_this_process_out():
    """own=False: a command's 256 MiB counts, this process's 512 MiB does not."""
    here = np.ones(2**26)  # 512 MiB, every page written
    child = "import time, numpy as np; a = np.ones(2**25); time.sleep(0.5)"
    with PeakRSS(own=False) as children:
        subprocess.run([sys.executable, "-c", child], check=True)
    with PeakRSS() as all_of_it:
        subprocess.run([sys.executable, "-c", child], check=True)
    assert 0.2 < children.gib < 0.45, children.gib
    assert all_of_it.gib > 0.7 and here.sum() > 0


def test_ray_bench_names_each_process_of_an_idle_ray_by_its_title_program_or_script():
    from benchmarks.ray_bench import _process_name

    assert _process_name(b"ray::IDLE                 ") == "ray::IDLE"  # a title set over the command line
    assert _process_name(b"/venv/ray/core/src/ray/raylet/raylet\0--raylet_socket_name=/tmp/s\0") == "raylet"
    assert (
        _process_name(b"/venv/bin/python\0-u\0/venv/ray/autoscaler/_private/monitor.py\0--logs-dir=/x\0")
        == "monitor.py"
    )
    assert _process_name(b"/venv/bin/python3.11\0-c\0import ray\0") == "python3.11"


def test_review_bench_counts_a_class_met_only_when_every_target_is_and_squeezes_its_trace():
    from benchmarks.review_bench import ClassResult, Report, figures, squeeze

    ok = ClassResult("demo", "0", "new", 178, interactions=7, reviewed=178, seconds=2.5, precision=1.0, recall=1.0)
    slow = ClassResult("demo", "1", "new", 180, interactions=7, reviewed=178, seconds=2.8, precision=1.0, recall=1.0)
    busy = ClassResult("demo", "2", "new", 180, interactions=8, reviewed=178, seconds=2.0, precision=1.0, recall=1.0)
    missed = ClassResult("demo", "3", "new", 180, interactions=5, reviewed=178, seconds=2.0, precision=1.0, recall=0.9)
    old = ClassResult("demo", "0", "old", 178, interactions=90, reviewed=178, seconds=60, precision=1.0, recall=1.0)
    report = Report(results=[ok, slow, busy, missed, old], tick_ms=[5.0] * 19 + [80.0], confirm_ms=[100.0, 300.0])
    classes, tick, confirm = figures(report, "digits")
    assert (classes["value"], classes["target"], classes["met"]) == ("1 of 4", "4 of 4", False)
    assert classes["figure"].endswith("(digits)")
    assert tick["met"] and tick["value"] == f"{np.percentile([5.0] * 19 + [80.0], 95):.1f} ms"
    assert confirm["met"] and confirm["value"] == "0.29 s"
    assert (
        squeeze(["type a", "tick", "tick", "Enter", "tick", "Enter", "Enter"])
        == "type a, tick x2, Enter, tick, Enter x2"
    )
