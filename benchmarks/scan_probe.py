"""SCAN's clustering step tried on a finished labelled run, beside the clusters the run made.

    python -m benchmarks.scan_probe RUN_DIR [--epochs 20] [--lr L ...] [--device auto|cpu|cuda]
                                    [--record FILE | --no-record]

RUN_DIR is a run of `python -m benchmarks.quality ... --out RUN_DIR`: it holds the pixels,
the model, the embeddings and each image's folder label. For each peak learning rate given
(default: scan_clustering's share of training's), SCAN fine-tunes the encoder for --epochs
passes on the embeddings' neighbour graph (scan_clustering.py), with K the run's number of
clusters; self-labelling then continues from SCAN's encoder and clusters, as the selflabel
stage does with `--scan-epochs`. It prints accuracy, NMI and ARI of the mixture, of the
run's final clusters, of SCAN's and of SCAN followed by self-labelling, with their seconds,
and appends them to BENCHMARKS.md (or --record FILE). The labels are read only to score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import append_section, machine, self_labelled, today

NEIGHBOURS = 20  # SCAN's neighbours per image on CIFAR


def main(argv: list[str] | None = None) -> list[dict]:
    from embeddings import run_dir as rd
    from embeddings.cluster import cluster_metrics
    from embeddings.config import Config
    from embeddings.project import knn_graph
    from embeddings.scan_clustering import scan_clusters
    from embeddings.selflabel import self_label
    from embeddings.stages import ASSIGN
    from embeddings.train import load_model, pick_device

    p = argparse.ArgumentParser(prog="python -m benchmarks.scan_probe", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, nargs="+", default=[None], help="peak learning rates to try, one run each")
    p.add_argument("--device", default="auto")
    p.add_argument("--record", type=Path, help="append the section to this file instead of BENCHMARKS.md")
    p.add_argument("--no-record", dest="no_record", action="store_true")
    args = p.parse_args(argv)

    device = pick_device(args.device)
    manifest = rd.load_manifest(args.run)
    cfg = self_labelled(Config.from_dict(manifest["config"]))
    items = pd.read_parquet(args.run / rd.ITEMS).sort_values("image_id")
    if "label" not in items:
        raise SystemExit(f"{args.run}: no labels; make the run with benchmarks.quality --out")
    labels = items["label"].to_numpy()
    emb = np.load(args.run / rd.EMBEDDINGS).astype(np.float32)
    t0 = time.perf_counter()
    neighbours = knn_graph(emb, min(NEIGHBOURS + 1, len(emb) - 1), cfg.seed)[0][:, 1:]
    graph_s = time.perf_counter() - t0
    y = np.unique(labels, return_inverse=True)[1]
    agree = float((y[np.maximum(neighbours, 0)] == y[:, None])[neighbours >= 0].mean())
    with np.load(args.run / ASSIGN) as assign:
        mixture = assign.get("first_cluster", assign["cluster"])
        final = assign["cluster"]
    k = int(mixture.max()) + 1
    rows = [dict(what="the run's mixture", **cluster_metrics(labels, mixture)),
            dict(what="the run's final clusters", **cluster_metrics(labels, final))]
    model = load_model(args.run, device)
    pixels = args.run / rd.PIXELS
    for lr in args.lr:
        t = time.perf_counter()
        scanned, consistency, encoder = scan_clusters(model, pixels, neighbours, k, args.epochs, cfg, device, lr=lr)
        scan_s = time.perf_counter() - t
        name = f"SCAN, {args.epochs} epochs, peak lr {lr or 'default'}"
        rows.append(dict(what=name, seconds=scan_s, consistency=consistency, **cluster_metrics(labels, scanned)))
        tuned = load_model(args.run, device)
        tuned.encoder = encoder
        t = time.perf_counter()
        relabelled = self_label(tuned, pixels, np.unique(scanned, return_inverse=True)[1], cfg, device)
        rows.append(dict(what=f"{name}, then self-labelling", seconds=time.perf_counter() - t,
                         **cluster_metrics(labels, relabelled)))
        print(rows[-2], rows[-1], flush=True)

    table = ["| clusters | accuracy | NMI | ARI | seconds |", "| --- | ---: | ---: | ---: | ---: |"]
    table += [f"| {r['what']} | {r['accuracy']:.4f} | {r['nmi']:.4f} | {r['ari']:.4f} | "
              f"{r['seconds']:.1f} |" if "seconds" in r else
              f"| {r['what']} | {r['accuracy']:.4f} | {r['nmi']:.4f} | {r['ari']:.4f} | |" for r in rows]
    body = "\n".join([
        f"- command: `python -m benchmarks.scan_probe {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- machine: {machine()}; device: {device}",
        f"- date: {today()}",
        f"- run: {manifest['counts']['images']} images, recipe {cfg.recipe}, encoder {cfg.encoder}, "
        f"{cfg.epochs} training epochs, K {k}; {NEIGHBOURS} neighbours per image (faiss, {graph_s:.1f} s), "
        f"{agree:.3f} of them share the image's label",
        "", *table])
    print(body)
    if not args.no_record:
        append_section(f"SCAN probe: {args.run.name} ({manifest['counts']['images']} images), {today()}", body,
                       **({"path": args.record} if args.record else {}))
    return rows


if __name__ == "__main__":
    main()
