"""Self-labelling: the fine-tuned encoder corrects planted wrong clusters; the stage's files."""

import numpy as np
import pandas as pd
import pytest
import torch

from embeddings.config import Config
from embeddings.model import AutoEncoder, ModelArgs
from embeddings.pipeline import Run
from embeddings.selflabel import MAX_IMAGES, MIN_STEPS, plan_batches, self_label
from embeddings.stages import ASSIGN, selflabel
from ice import run_dir as rd


def _bars(tmp_path, n=320, size=16, seed=0):
    """Images with one bright bar: horizontal (class 0) or vertical (class 1), anywhere."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2
    pixels = rng.integers(0, 50, (n, size, size, 3), dtype=np.uint8)
    for i, c in enumerate(truth):
        at = rng.integers(2, size - 3)
        if c == 0:
            pixels[i, at : at + 2, 2:-2] = 230
        else:
            pixels[i, 2:-2, at : at + 2] = 230
    path = tmp_path / "pixels.npy"
    np.save(path, pixels)
    return path, truth


def planted(tmp_path):
    """_bars with a tenth of the images given the wrong cluster: (pixels path, truth, clusters, wrong ids)."""
    pixels, truth = _bars(tmp_path)
    clusters = truth.copy()
    wrong = np.random.default_rng(1).choice(len(truth), size=len(truth) // 10, replace=False)
    clusters[wrong] = 1 - clusters[wrong]
    return pixels, truth, clusters, wrong


def test_plan_batches_whole_passes_at_least_min_steps_and_at_most_max_images():
    small = plan_batches(1797, 256, 5, seed=0)  # 7 batches a pass: 22 passes reach MIN_STEPS
    assert len(small) == 22 * 7 >= MIN_STEPS
    assert all(len(b) == 256 and (np.diff(b) > 0).all() for b in small)
    first_pass = np.concatenate(small[:7])
    assert len(np.unique(first_pass)) == 7 * 256  # a pass holds no image twice
    assert len(plan_batches(20_000, 100, 5, seed=0)) == 5 * 200
    big = plan_batches(100_000, 256, 5, seed=0)  # 5 passes would be 500k images
    assert len(big) == MAX_IMAGES // 256 > 390
    assert len(np.unique(np.concatenate(big[:390]))) == 390 * 256  # the first pass holds no image twice
    assert not np.array_equal(big[0], big[390])  # and the next pass is a fresh shuffle
    again = plan_batches(100_000, 256, 5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(big, again))


def test_self_label_moves_planted_wrong_clusters_and_keeps_the_model(tmp_path):
    pixels, truth, clusters, wrong = planted(tmp_path)
    torch.manual_seed(0)
    model = AutoEncoder(ModelArgs(16, 8, 8))  # untrained: the head and encoder learn the bars
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = Config(image_size=16, dim=8, width=8, batch_size=64, workers=0, self_label_epochs=5)
    out = self_label(model, pixels, clusters, cfg, torch.device("cpu"))
    assert out.shape == truth.shape
    assert (out == truth).mean() >= 0.97, "the wrong tenth should move back"
    assert (out[wrong] == truth[wrong]).mean() >= 0.8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_self_label_refuses_zero_epochs_instead_of_training_its_floor(tmp_path):
    pixels, _, clusters, _ = planted(tmp_path)
    cfg = Config(image_size=16, dim=8, width=8, batch_size=64, workers=0, self_label_epochs=0)
    with pytest.raises(ValueError, match="self_label_epochs=0"):
        self_label(AutoEncoder(ModelArgs(16, 8, 8)), pixels, clusters, cfg, torch.device("cpu"))


def test_selflabel_stage_files_agree_and_a_rerun_starts_from_the_mixture(small_run):
    items = pd.read_parquet(small_run / rd.ITEMS)
    manifest = rd.load_manifest(small_run)
    assign = np.load(small_run / ASSIGN)
    assert "first_cluster" in assign and (items["cluster"].to_numpy() == assign["cluster"]).all()
    k = manifest["clusters"]
    assert sorted(np.unique(assign["cluster"])) == list(range(k))
    manifold = np.load(small_run / rd.MANIFOLD)
    centroids = np.load(small_run / rd.CENTROIDS)
    for c in range(k):
        np.testing.assert_allclose(centroids[c], manifold[assign["cluster"] == c].mean(0), rtol=1e-4, atol=1e-4)
    expected = ((manifold - centroids[assign["cluster"]]) ** 2).sum(1)
    np.testing.assert_allclose(assign["distance"], expected, rtol=1e-4, atol=1e-5)

    # run the stage again over its own output: it must read first_cluster, not its own
    # clusters, and (seeded, on the CPU) give the same clusters again
    cfg = Config.from_dict(manifest["config"])
    copy = small_run.parent / "rerun"
    copy.mkdir()
    for name in (ASSIGN, rd.MANIFOLD, rd.PIXELS, rd.MODEL, rd.CENTROIDS):
        (copy / name).write_bytes((small_run / name).read_bytes())
    selflabel(Run(small_run, copy, cfg), lambda: torch.device("cpu"), resume=True)
    again = np.load(copy / ASSIGN)
    assert (again["first_cluster"] == assign["first_cluster"]).all()
    assert (again["cluster"] == assign["cluster"]).all()


def test_selflabel_stage_off_leaves_the_mixture(small_run, tmp_path):
    cfg = Config.from_dict(rd.load_manifest(small_run)["config"]).replace(self_label_epochs=0)
    np.savez(tmp_path / ASSIGN, cluster=np.array([0, 1, 1], dtype=np.int32), distance=np.zeros(3, np.float32))
    assert selflabel(Run(small_run, tmp_path, cfg), lambda: torch.device("cpu"), resume=False) == {}
    assert set(np.load(tmp_path / ASSIGN)) == {"cluster", "distance"}
