"""The cluster step's choices side by side on one labelled run's embeddings.

    python -m benchmarks.cluster_pick RUN_DIR [--seeds 0,5,10] [--graph-rounds 0,20]
                                      [--picks likelihood,graph] [--self-label [--device auto|cpu|cuda]]

RUN_DIR is a labelled run: `python -m benchmarks.quality --out RUN_DIR` or `--keep RUN_DIR`
(embeddings, items and manifest are all it reads). The neighbour graph and the manifold are
built once, as the job builds them (its `neighbors`, `manifold_dim` and `seed`; the layout
seeded, on one core, so that a rerun gives the same manifold), then for every seed
`fit_clusters` runs with each way of judging the mixture's restarts (`mixture_pick`:
likelihood, graph), and each fit's rows then climb the graph's modularity for each of
`--graph-rounds` (`climb_modularity`; 0: not at all). Each line prints the accuracies, one per
seed, their mean, and the seconds the clustering took (with the climb, its own seconds). Seeds
five apart share no mixture start under "graph" (start i of seed s uses s + i). With
--self-label, every clustering is then self-labelled as the job does it (selflabel.self_label
from the run's model and pixels, so RUN_DIR must be a whole run: `quality --out`, as the GPU
check keeps it), and a second line gives the accuracies after that. Nothing is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import embeddings  # noqa: F401  sets OMP_WAIT_POLICY before torch loads, as `ice` does

from benchmarks.common import self_labelled


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv=None) -> dict[tuple, list[float]]:
    """Print the comparison; return {(mixture_pick, graph_rounds): accuracy per seed} and, with
    --self-label, {(mixture_pick, graph_rounds, "self-labelled"): ...}."""
    from ice import run_dir as rd
    from embeddings.cluster import climb_modularity, cluster_metrics, fit_clusters
    from embeddings.config import Config
    from embeddings.project import knn_graph, umap_reduce

    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster_pick", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--seeds", type=ints, default=[0, 5, 10, 15, 20, 25], help="mixture seeds (default: 0,5,...,25)")
    p.add_argument("--graph-rounds", type=ints, default=[0, 20], help="graph_rounds values (default: 0,20)")
    p.add_argument(
        "--picks",
        type=lambda text: text.split(","),
        default=["likelihood", "graph"],
        help="mixture_pick values (default: likelihood,graph)",
    )
    p.add_argument(
        "--self-label",
        action="store_true",
        help="self-label every clustering too, for the run's self_label_epochs or 5 where its recipe "
        "skips it (needs a whole run)",
    )
    p.add_argument("--device", default="auto", help="for --self-label: auto, cpu or cuda (default: auto)")
    args = p.parse_args(argv)
    cfg = Config.from_dict(rd.load_manifest(args.run)["config"])
    cfg = self_labelled(cfg)
    emb = np.load(args.run / rd.EMBEDDINGS).astype(np.float32)
    labels = rd.read_items(args.run, columns=["label"])["label"].to_numpy()
    k = len(np.unique(labels))
    t = time.perf_counter()
    knn = knn_graph(emb, min(cfg.neighbors, len(emb) - 1), cfg.seed)
    space = umap_reduce(
        emb,
        cfg.manifold_dim,
        neighbors=cfg.neighbors,
        min_dist=0.0,
        sample=cfg.umap_sample,
        seed=cfg.seed,
        desc="manifold",
        knn=knn,
    )
    print(
        f"{args.run.name}: {len(emb):,} images, K={k}; neighbour graph and manifold {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    if args.self_label:
        from embeddings.selflabel import self_label
        from embeddings.train import load_model, pick_device

        device = pick_device(args.device)
        model = load_model(args.run, device)  # self_label fine-tunes a copy: the same start each time
    results = {}
    for pick in args.picks:
        fits, seconds = [], 0.0
        for seed in args.seeds:
            t = time.perf_counter()
            fits.append(
                fit_clusters(
                    space, k, "gmm", cfg.kmeans_restarts, cfg.kmeans_iters, seed, neighbours=knn[0], pick=pick
                ).labels_
            )
            seconds += time.perf_counter() - t
        for rounds in args.graph_rounds:
            climbed, climb_seconds = [], 0.0
            for fitted in fits:
                t = time.perf_counter()
                climbed.append(climb_modularity(fitted, knn[0], rounds) if rounds else fitted)
                climb_seconds += time.perf_counter() - t
            accuracy = results[(pick, rounds)] = [cluster_metrics(labels, c)["accuracy"] for c in climbed]
            print(
                f"mixture_pick {pick:10s}, graph_rounds {rounds:2d}: "
                + " ".join(f"{a:.3f}" for a in accuracy)
                + f"; mean {np.mean(accuracy):.3f}; {seconds:.1f} s"
                + (f" + {climb_seconds:.1f} s" if rounds else ""),
                flush=True,
            )
            if args.self_label:
                t = time.perf_counter()
                accuracy = results[(pick, rounds, "self-labelled")] = [
                    cluster_metrics(labels, self_label(model, args.run / rd.PIXELS, c, cfg, device))["accuracy"]
                    for c in climbed
                ]
                print(
                    f"  then self-labelled ({cfg.self_label_epochs} epochs, {device.type}): "
                    + " ".join(f"{a:.3f}" for a in accuracy)
                    + f"; mean {np.mean(accuracy):.3f}; {time.perf_counter() - t:.1f} s",
                    flush=True,
                )
    return results


if __name__ == "__main__":
    main()
