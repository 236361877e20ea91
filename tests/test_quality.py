"""Cluster quality on real labelled images (the shared MNIST PNGs)."""

import os

import pytest

from benchmarks import quality


def test_per_class_precision_and_recall():
    import numpy as np

    labels = np.array(["a"] * 4 + ["b"] * 4)
    clusters = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    table = quality.per_class(labels, clusters).set_index("class")
    assert table.loc["a", "precision"] == 1.0 and table.loc["a", "recall"] == 0.75
    assert table.loc["b", "precision"] == 0.8 and table.loc["b", "recall"] == 1.0


@pytest.mark.slow
def test_mnist_test_split_fast_reaches_accuracy():
    """The 10k MNIST test split with --fast: accuracy >= 0.90 (a few minutes on 2 cores)."""
    if not (quality.SHARED_DATA / "mnist-png.tar.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{quality.SHARED_DATA} is missing; CI always has ../shared/data")
        pytest.skip(f"needs the shared data sets in {quality.SHARED_DATA}")
    result = quality.main(["--dataset", "mnist", "--split", "test", "--fast", "--no-record"])
    assert result["accuracy"] >= 0.90, result
