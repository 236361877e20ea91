"""The cluster step's choices side by side on one labelled run's embeddings.

    python -m benchmarks.cluster_pick RUN_DIR [--seeds 0,5,10] [--overcluster 1,2]

RUN_DIR is a labelled run: `python -m benchmarks.quality --out RUN_DIR` or `--keep RUN_DIR`
(embeddings, items and manifest are all it reads). The neighbour graph and the manifold are
built once, as the job builds them (its `neighbors`, `manifold_dim` and `seed`; the layout
seeded, on one core, so that a rerun gives the same manifold), then for every overcluster and
seed `fit_clusters` runs with each way of judging the mixture's restarts (`mixture_pick`:
likelihood, graph). Each line prints the accuracies, one per seed, their mean, and the seconds
the clustering took. Seeds five apart share no mixture start under "graph" (start i of seed s
uses s + i). Nothing is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import embeddings  # noqa: F401  sets OMP_WAIT_POLICY before torch loads, as `ice` does


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv=None) -> dict[tuple[int, str], list[float]]:
    """Print the comparison; return {(overcluster, mixture_pick): accuracy per seed}."""
    from embeddings import run_dir as rd
    from embeddings.cluster import cluster_metrics, fit_clusters
    from embeddings.config import Config
    from embeddings.project import knn_graph, umap_reduce

    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster_pick", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--seeds", type=ints, default=[0, 5, 10, 15, 20, 25], help="mixture seeds (default: 0,5,...,25)")
    p.add_argument("--overcluster", type=ints, default=[1], help="overcluster values (default: 1)")
    args = p.parse_args(argv)
    cfg = Config.from_dict(rd.load_manifest(args.run)["config"])
    emb = np.load(args.run / rd.EMBEDDINGS).astype(np.float32)
    labels = pd.read_parquet(args.run / rd.ITEMS, columns=["label"])["label"].to_numpy()
    k = len(np.unique(labels))
    t = time.perf_counter()
    knn = knn_graph(emb, min(cfg.neighbors, len(emb) - 1), cfg.seed)
    space = umap_reduce(emb, cfg.manifold_dim, cfg.neighbors, 0.0, cfg.umap_sample, cfg.seed, "manifold", knn)
    print(f"{args.run.name}: {len(emb):,} images, K={k}; neighbour graph and manifold {time.perf_counter() - t:.1f} s",
          flush=True)
    results = {}
    for overcluster in args.overcluster:
        for pick in ("likelihood", "graph"):
            accuracy, seconds = results.setdefault((overcluster, pick), []), 0.0
            for seed in args.seeds:
                t = time.perf_counter()
                fitted = fit_clusters(space, k, "gmm", cfg.kmeans_restarts, cfg.kmeans_iters, seed, overcluster,
                                      knn[0], pick)
                seconds += time.perf_counter() - t
                accuracy.append(cluster_metrics(labels, fitted.labels_)["accuracy"])
            print(f"overcluster {overcluster}, mixture_pick {pick:10s}: " + " ".join(f"{a:.3f}" for a in accuracy)
                  + f"; mean {np.mean(accuracy):.3f}; {seconds:.1f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
