"""Cluster quality on real labelled images (the shared MNIST PNGs)."""

import pytest

from benchmarks import quality
from tests.conftest import need_shared_data


def test_per_class_precision_and_recall():
    import numpy as np

    labels = np.array(["a"] * 4 + ["b"] * 4)
    clusters = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    table = quality.per_class(labels, clusters).set_index("class")
    assert table.loc["a", "precision"] == 1.0 and table.loc["a", "recall"] == 0.75
    assert table.loc["b", "precision"] == 0.8 and table.loc["b", "recall"] == 1.0


def test_kept_run_loads_and_embeds_like_the_run(small_run, tmp_path):
    """quality --keep: float16 embeddings and weights (small enough to copy back from a GPU machine),
    which train.load_model reads into a float32 model that embeds as the run's did."""
    import numpy as np
    import torch

    from embeddings.config import Config
    from embeddings.embed import embed
    from embeddings.train import load_model
    from ice import run_dir as rd

    quality.keep_for_later(small_run, tmp_path / "kept")
    kept = tmp_path / "kept"
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        [rd.EMBEDDINGS, rd.ITEMS, "assign.npz", rd.MANIFEST, rd.MODEL]
    )
    emb = np.load(small_run / rd.EMBEDDINGS)
    assert np.load(kept / rd.EMBEDDINGS).dtype == np.float16
    np.testing.assert_allclose(np.load(kept / rd.EMBEDDINGS), emb, atol=2e-3)
    weights = torch.load(kept / rd.MODEL, weights_only=False)["model"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    model = load_model(kept, torch.device("cpu"))
    assert next(model.parameters()).dtype == torch.float32
    cfg = Config.from_dict(rd.load_manifest(small_run)["config"])
    again = embed(model, small_run / rd.PIXELS, tmp_path / "again.npy", cfg, torch.device("cpu"))
    assert (again * emb).sum(1).min() > 0.99  # cosine: the same directions, to float16's precision


@pytest.mark.slow
def test_mnist_test_split_fast_reaches_accuracy():
    """The 10k MNIST test split with --fast: accuracy >= 0.90 (a few minutes on 2 cores)."""
    need_shared_data("mnist-png.tar.gz")
    result = quality.main(["--dataset", "mnist", "--split", "test", "--fast", "--no-record"])
    assert result["accuracy"] >= 0.90, result
