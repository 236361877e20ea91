"""The placement's neighbour search (embeddings.fit.ivf_index) against the exact one, on a run.

    python -m benchmarks.place_search --run RUN_DIR [--run RUN_DIR ...] [--queries N] [--probes P ...]
                                      [--no-record]

For each run, N of its images (at most a sixth) are the queries and a seeded sample of up to
100,000 of the others is the base (as `ice add` and `--fit-sample` place from). Each variant of the IVF index
(sqrt(base) lists, 16 probes) is built and searched side by side: float32 rows trained on
faiss' 256 images per list, float32 on 64, and float16 on 64 (what ivf_index builds). Prints
the build and search seconds, the share of the exact 15 neighbours found, and how often the
cluster vote (embeddings.fit.vote) agrees with the exact neighbours' vote. With --probes, the
float16 index alone is searched at each number of probed lists instead (`ice add` probes
embeddings.add.ADD_PROBES).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import append_section, machine, today
from embeddings.add import ADD_PROBES
from embeddings.fit import PROBES, vote
from ice import run_dir as rd

VARIANTS = [
    ("float32, 256 per list", "Flat", 256),
    ("float32, 64 per list", "Flat", 64),
    ("float16, 64 per list", "SQfp16", 64),
]


def measure(run: Path, queries: int, k: int = 15, probes: list[int] | None = None) -> list[dict]:
    import faiss

    emb = np.load(run / rd.EMBEDDINGS, mmap_mode="r")
    n = len(emb)
    queries = min(queries, n // 6)  # the rest, up to 100,000, is the base
    rng = np.random.default_rng(0)
    base_rows = np.sort(rng.choice(n, min(100_000, n - queries), replace=False))
    query_rows = rng.choice(np.setdiff1d(np.arange(n), base_rows), queries, replace=False)
    base = np.ascontiguousarray(emb[base_rows], dtype=np.float32)
    q = np.ascontiguousarray(emb[query_rows], dtype=np.float32)
    labels = rd.read_items(run, columns=["cluster"])["cluster"].to_numpy()[base_rows]
    d_exact, i_exact = faiss.knn(q, base, k)
    exact_vote = vote(labels, i_exact, d_exact)
    lists = max(1, int(np.sqrt(len(base))))
    out = []
    variants = [(f"{name}, {PROBES} probes", storage, per_list, PROBES) for name, storage, per_list in VARIANTS]
    if probes:
        variants = [(f"{VARIANTS[-1][0]}, {p} probes", *VARIANTS[-1][1:], p) for p in probes]
    for name, storage, per_list, nprobe in variants:
        index = faiss.index_factory(base.shape[1], f"IVF{lists},{storage}")
        index.cp.seed, index.cp.max_points_per_centroid = 0, per_list
        t0 = time.perf_counter()
        index.train(base)
        index.add(base)
        build = time.perf_counter() - t0
        faiss.extract_index_ivf(index).nprobe = nprobe
        t0 = time.perf_counter()
        d, i = index.search(q, k)
        search = time.perf_counter() - t0
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(i, i_exact)])
        agree = float((vote(labels, i, d) == exact_vote).mean())
        out.append({"variant": name, "build": build, "search": search, "recall": recall, "agree": agree})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.place_search", description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", type=Path, required=True)
    p.add_argument("--queries", type=int, default=50_000)
    p.add_argument("--probes", type=int, nargs="+", metavar="P", help="the float16 index at each of these probes")
    p.add_argument("--no-record", dest="record", action="store_false")
    args = p.parse_args(argv)
    command = "python -m benchmarks.place_search " + " ".join(f"--run {r}" for r in args.run)
    command += f" --queries {args.queries}" if args.queries != 50_000 else ""
    command += " --probes " + " ".join(map(str, args.probes)) if args.probes else ""
    lines = [f"- command: `{command}`", f"- machine: {machine()}; date: {today()}", ""]
    lines += [
        "| run | index | build s | search s | neighbours found | vote agrees |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    figures = []
    for run in args.run:
        rows = measure(run, args.queries, probes=args.probes)
        for r in rows:
            lines.append(
                f"| {run.name if run.name != 'run' else run.parent.name} | {r['variant']} | {r['build']:.2f} | "
                f"{r['search']:.2f} | {r['recall']:.4f} | {r['agree']:.4f} |"
            )
        if args.probes:  # `ice add`'s count (or the first given) against the most given
            mine = args.probes.index(ADD_PROBES) if ADD_PROBES in args.probes else 0
            first, last = rows[args.probes.index(max(args.probes))], rows[mine]
            what = f"{args.probes[mine]} probes against {max(args.probes)}"
        else:
            first, last = rows[0], rows[-1]
            what = "float16 on 64 per list against float32 on 256"
        figures.append(
            {
                "group": "scale",
                "order": 6,
                "figure": f"placement search, {run.parent.name if run.name == 'run' else run.name}: "
                f"{what} (build+search time, neighbours found)",
                "value": f"{(last['build'] + last['search']) / (first['build'] + first['search']):.2f}x, "
                f"{last['recall']:.4f} vs {first['recall']:.4f}",
                "target": "",
                "met": None,
            }
        )
    text = "\n".join(lines)
    print(text)
    if args.record:
        title = "probed lists" if args.probes else "float16 rows, fewer training images"
        append_section(f"Placement search: {title}, {today()}", text, figures=figures)


if __name__ == "__main__":
    main()
