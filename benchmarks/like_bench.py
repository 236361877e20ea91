""" "More like these" on a large run: scoring every image against scoring a candidate set.

    python -m benchmarks.like_bench [--n 2000000] [--clicks 5] [--top 200] [--no-record]

The run is synthetic and kept in the data cache: clustered 64-d embeddings
(benchmarks.common.clustered_embeddings), a 10-d "manifold" that is a fixed nonlinear function
of them, and the IVF index `ice embed` builds at that size (embeddings.cluster.build_index).
Each click marks 10 images in, drawn from the 1,000 nearest a random image, and 10 random
images out, then ranks the run with explorer.search.rank_like twice, side by side: with every
image scored (EXACT_LIMIT above n) and with the candidate set (EXACT_LIMIT below n). It prints
the time of each, their ratio, and how much of the exact top the candidate set's top holds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA_CACHE, append_section, build_once, clustered_embeddings, machine, today


class Run:
    """What rank_like reads of a run: its embeddings, manifold and index, memory-mapped."""

    def __init__(self, folder: Path):
        import faiss

        self.embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
        self.manifold = np.load(folder / "manifold.npy", mmap_mode="r")
        self.index = faiss.read_index(str(folder / "index.faiss"))
        faiss.ParameterSpace().set_index_parameter(self.index, "nprobe", 64)
        self.n = len(self.embeddings)

    def check_ids(self, ids) -> np.ndarray:
        return np.asarray(ids, dtype=np.int64)


def build(folder: Path, n: int) -> None:
    import faiss

    from embeddings.cluster import build_index

    folder.mkdir(parents=True)
    emb = clustered_embeddings(n, dim=64, clusters=200)
    np.save(folder / "embeddings.npy", emb)
    project = np.random.default_rng(1).normal(size=(64, 10)).astype(np.float32)
    np.save(folder / "manifold.npy", np.tanh(2 * emb @ project).astype(np.float32))
    faiss.write_index(build_index(emb), str(folder / "index.faiss"))


def main(argv: list[str] | None = None) -> dict:
    from explorer import search

    p = argparse.ArgumentParser(prog="python -m benchmarks.like_bench", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--top", type=int, default=200)
    p.add_argument("--no-record", dest="record", action="store_false")
    args = p.parse_args(argv)
    folder = build_once(DATA_CACHE / f"like-bench-{args.n}", lambda out: build(out / "run", args.n)) / "run"
    run = Run(folder)
    rng = np.random.default_rng(0)
    times = {"every image": [], "candidates": []}
    overlap = []
    emb = run.embeddings
    for click in range(args.clicks + 1):  # the first click warms the page cache and is not counted
        anchor = np.asarray(emb[rng.integers(run.n)], dtype=np.float32)
        _, near = run.index.search(anchor[None, :], 1000)
        positives = rng.choice(near[0][near[0] >= 0], 10, replace=False)
        negatives = rng.choice(run.n, 10, replace=False)
        tops = {}
        for name, limit in (("every image", run.n), ("candidates", 0)):
            search.EXACT_LIMIT = limit
            t0 = time.perf_counter()
            tops[name], _ = search.rank_like(run, positives, top=args.top, negatives=negatives)
            if click:
                times[name].append(time.perf_counter() - t0)
        if click:
            overlap.append(len(np.intersect1d(tops["every image"], tops["candidates"])) / args.top)
    exact, cand = np.median(times["every image"]), np.median(times["candidates"])
    lines = [
        f"- command: `python -m benchmarks.like_bench {' '.join(sys.argv[1:])}`",
        f"- machine: {machine()}",
        f"- run: {folder} ({run.n:,} synthetic images, 64-d embeddings, 10-d manifold, IVF index)",
        f"- a click of More like these (median of {args.clicks}, after one untimed): every image scored "
        f"{exact:.2f} s, candidate set {cand:.2f} s, **{cand / exact:.2f}x**",
        f"- the candidate set's top {args.top} holds {np.mean(overlap):.3f} of the exact top "
        f"(clicks {', '.join(f'{o:.3f}' for o in overlap)})",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        size = f"{args.n / 1e6:g}M"
        append_section(
            f"More like these at {size} images, {today()}",
            text,
            figures=[
                {
                    "group": "explorer",
                    "order": 9,
                    "figure": f"More like these at {size} images: candidate set against every image scored "
                    f"(time, top {args.top} kept)",
                    "value": f"{cand / exact:.2f}x ({cand:.2f} s against {exact:.2f} s), {np.mean(overlap):.3f}",
                    "target": "",
                    "met": None,
                }
            ],
        )
    return {"exact": exact, "candidates": cand, "overlap": float(np.mean(overlap))}


if __name__ == "__main__":
    main()
