"""Self-labelling against the images it sees, on a finished labelled run.

    python -m benchmarks.selflabel_sweep RUN_DIR EPOCHS [EPOCHS ...]

RUN_DIR comes from `python -m benchmarks.quality --out RUN_DIR` (its items carry labels and
its assign.npz keeps the mixture's clusters as `first_cluster`). For each EPOCHS the stage's
`self_label` runs again from the same encoder and clusters, and the accuracy, NMI and ARI
of its predictions are printed with the seconds taken, on the device the run's config picks
(`ice embed`'s own choice). Nothing is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import embeddings  # noqa: F401  sets OMP_WAIT_POLICY before torch loads, as `ice` does


def main(argv=None) -> None:
    from embeddings import run_dir as rd
    from embeddings.cluster import cluster_metrics
    from embeddings.config import Config
    from embeddings.selflabel import self_label
    from embeddings.stages import ASSIGN, device_for
    from embeddings.train import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("epochs", type=int, nargs="+")
    args = p.parse_args(argv)
    if min(args.epochs) < 1:
        p.error("epochs: each must be at least 1 (the first line already shows the clusters before)")
    cfg = Config.from_dict(rd.load_manifest(args.run)["config"])
    labels = pd.read_parquet(args.run / rd.ITEMS)["label"].to_numpy()
    with np.load(args.run / ASSIGN) as z:
        first = z["first_cluster"]
    print(f"before self-labelling: {cluster_metrics(labels, first)}", flush=True)
    device = device_for(cfg)
    model = load_model(args.run, device)  # self_label fine-tunes a copy: the same start each time
    for epochs in args.epochs:
        t = time.perf_counter()
        predicted = self_label(model, args.run / rd.PIXELS, first, cfg.replace(self_label_epochs=epochs), device)
        print(f"{epochs} epochs: {cluster_metrics(labels, predicted)} in {time.perf_counter() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
