"""Training the search index of a large run: faiss's own k-means over all the lists against
two-level k-means (embeddings.cluster.train_ivf), side by side on the same sample.

    python -m benchmarks.index_bench [--embeddings RUN_DIR | FILE.npy] [--n 1000000]
                                     [--lists 16384] [--kinds flat,pq] [--ways faiss,two-level]
                                     [--no-record]

The vectors are a run's embeddings (memory-mapped, the first --n rows), or without
--embeddings the synthetic clustered ones of benchmarks.common (kept in the data cache).
Each kind of index `ice embed` builds above EXACT_INDEX_MAX is trained both ways with --lists
lists, on the seeded sample of 64 rows per list that build_index draws: "flat", an IVF index
of the rows (IndexIVFFlat), and "pq", the OPQ + IVF-PQ index of pq_index_key (at --lists
lists). It prints, for each: the training time, the time to add the n rows, and the search's
recall at 10 against an exact search (1,000 queries drawn from the rows, 64 lists probed),
and for the index of codes also as the explorer searches it (ice.search_index.search).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ice.search_index import REFINE
from benchmarks.common import DATA_CACHE, append_section, build_once, clustered_embeddings, machine, today

QUERIES = 1_000


def vectors(source: str | None, n: int) -> tuple[np.ndarray, str]:
    if source is None:

        def build(out: Path) -> None:
            out.mkdir()
            np.save(out / "embeddings.npy", clustered_embeddings(n))

        folder = build_once(DATA_CACHE / f"index-bench-{n}", build)
        return np.load(folder / "embeddings.npy", mmap_mode="r"), f"{n:,} synthetic clustered 64-d vectors"
    path = Path(source)
    path = path / "embeddings.npy" if path.is_dir() else path
    emb = np.load(path, mmap_mode="r")
    return emb[:n], f"the first {min(n, len(emb)):,} rows of {path}"


def recall_at_10(truth: np.ndarray, found: np.ndarray) -> float:
    """The share of each query's true 10 nearest that `found` holds, averaged."""
    return float(np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(truth, found, strict=True)]))


def make(kind: str, d: int, lists: int, n: int):
    import faiss

    from embeddings.cluster import pq_index_key

    if kind == "flat":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    return faiss.index_factory(d, pq_index_key(n, d, lists), faiss.METRIC_INNER_PRODUCT)


def one(kind: str, how: str, emb: np.ndarray, sample: np.ndarray, queries: np.ndarray, truth: np.ndarray, lists: int):
    import faiss

    from embeddings import cluster
    from ice import search_index

    index = make(kind, emb.shape[1], lists, len(emb))
    t0 = time.perf_counter()
    if how == "faiss":
        index.train(sample)
    else:
        cluster.train_ivf(index, sample, two_level_from=1)
    train = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(emb), 262_144):
        index.add(np.ascontiguousarray(emb[start : start + 262_144], dtype="float32"))
    add = time.perf_counter() - t0
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", cluster.INDEX_PROBES)
    if kind == "pq" and lists >= 1000:
        faiss.ParameterSpace().set_index_parameter(index, "quantizer_efSearch", 2 * cluster.INDEX_PROBES)
    _, found = index.search(queries, 10)
    result = {"train": train, "add": add, "recall": recall_at_10(truth, found)}
    if search_index.quantized(index):  # as the explorer searches it: the codes' best re-scored by the rows
        result["rescored"] = recall_at_10(truth, search_index.search(index, emb, queries, 10)[1])
    print(f"{kind} {how}: {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    import faiss

    p = argparse.ArgumentParser(prog="python -m benchmarks.index_bench", description=__doc__.splitlines()[0])
    p.add_argument("--embeddings", help="a run directory or an embeddings .npy (default: synthetic)")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--lists", type=int, default=16_384)
    p.add_argument("--kinds", default="flat,pq")
    p.add_argument("--ways", default="faiss,two-level", help="faiss's k-means, two-level, or both")
    p.add_argument("--no-record", dest="record", action="store_false")
    args = p.parse_args(argv)
    emb, what = vectors(args.embeddings, args.n)
    n, d = emb.shape
    rng = np.random.default_rng(0)
    sample = np.ascontiguousarray(emb[np.sort(rng.choice(n, size=min(n, 64 * args.lists), replace=False))], "float32")
    queries = np.ascontiguousarray(emb[np.sort(rng.choice(n, QUERIES, replace=False))], "float32")
    exact = faiss.IndexFlatIP(d)
    for start in range(0, n, 262_144):
        exact.add(np.ascontiguousarray(emb[start : start + 262_144], dtype="float32"))
    truth = exact.search(queries, 10)[1]
    del exact
    out = {}
    lines = [
        f"- command: `python -m benchmarks.index_bench {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- machine: {machine()}",
        f"- vectors: {what}; {args.lists:,} lists, trained on {len(sample):,} rows (64 a list); "
        f"recall at 10 of {QUERIES:,} queries against an exact search, 64 lists probed",
    ]
    figures = []
    for kind in args.kinds.split(","):
        label = "IVF, the rows kept" if kind == "flat" else "OPQ + IVF-PQ"
        both = {how: one(kind, how, emb, sample, queries, truth, args.lists) for how in args.ways.split(",")}
        out[kind] = both
        t = both["two-level"]
        if "rescored" in t:
            lines.append(
                f"- {label}, two-level: recall at 10 {t['rescored']:.4f} with the codes' best "
                f"{REFINE * 10} re-scored by the rows (ice.search_index.search), {t['recall']:.4f} without"
            )
            figures.append(
                {
                    "group": "scale",
                    "order": 21,
                    "figure": f"search index of {n / 1e6:g}M vectors, {label}, {args.lists:,} lists: recall at 10, "
                    f"its best {REFINE * 10} re-scored by the rows against the codes' scores",
                    "value": f"{t['rescored']:.4f} against {t['recall']:.4f}",
                    "target": "",
                    "met": None,
                }
            )
        if "faiss" not in both:
            continue
        f = both["faiss"]
        lines.append(
            f"- {label}: training {t['train']:.1f} s two-level against {f['train']:.1f} s faiss's k-means "
            f"(**{f['train'] / t['train']:.1f}x faster**); adding {t['add']:.1f} s against {f['add']:.1f} s; "
            f"recall at 10 {t['recall']:.4f} against {f['recall']:.4f}"
        )
        figures.append(
            {
                "group": "scale",
                "order": 20,
                "figure": f"search index of {n / 1e6:g}M vectors, {label}, {args.lists:,} lists: training "
                "two-level against one k-means over all lists (time; recall at 10)",
                "value": f"{t['train']:.1f} s against {f['train']:.1f} s; {t['recall']:.4f} against {f['recall']:.4f}",
                "target": "",
                "met": None,
            }
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        append_section(f"Training the search index, {today()}", text, figures=figures)
    return out


if __name__ == "__main__":
    main()
