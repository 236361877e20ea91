"""`--fit-sample`: the fitting stages' time, and the clusters' accuracy against a fit on every image.

    python -m benchmarks.fit_bench --dataset {mnist,cifar10,digits} [--samples 10000,25000,all]
    python -m benchmarks.fit_bench --images FOLDER --encoder-from RUN [--samples 100000]
                                   [--set KEY=VALUE ...] [--no-record]
    python -m benchmarks.fit_bench --apply-costs EMBEDDINGS.npy [--samples 100000]

Runs `ice embed` once per fit sample with a trained encoder and no training, so that only the
fit changes between the runs: with --dataset, on the whole data set (train and test splits)
with the encoder of the run `benchmarks.add_bench` builds on its train split (built here if
absent); with --images, on that folder (labelled by its subfolders) with the encoder of
--encoder-from. Prints, per fit sample, the seconds of the fitting stages (cluster: the
neighbour graph, the manifold, K, the mixture and the index; selflabel; project: the map),
the images placed instead of fitted, and the clustering accuracy (Hungarian, folder labels).

--apply-costs times, on a run's embeddings, the steps that grow with the collection once the
fits are done (per image): the search of each other image's nearest sampled images, the vote
and the placements, and the search index's training and additions.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from benchmarks.add_bench import folders
from benchmarks.common import DATA_CACHE, append_section, build_once, machine, parse_sets, today
from benchmarks.quality import dataset_folder
from embeddings.config import Config
from embeddings.pipeline import run_embed
from ice import run_dir as rd

FITTING = ("cluster", "selflabel", "project")  # the stages that learn from the collection


def warm_up() -> None:
    """Compile UMAP's numba code in this process first, so that the first run does not pay for it."""
    import numpy as np

    from embeddings.project import umap_reduce

    x = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    for dim, min_dist in ((10, 0.0), (2, 0.1)):
        umap_reduce(x, dim, neighbors=15, min_dist=min_dist, sample=10**6, seed=0, desc="warm-up")


def apply_costs(path: Path, sample: int, record: bool) -> dict:
    """Seconds of each applying step on the embeddings at `path` with a fit sample of `sample`."""
    import tempfile

    import numpy as np

    from embeddings.cluster import build_index
    from embeddings.fit import apply_neighbours, fit_rows, others, place, vote

    emb = np.load(path, mmap_mode="r")
    n, cfg = len(emb), Config()
    rows = fit_rows(n, sample, cfg.seed)
    if rows is None:
        raise SystemExit(f"--samples {sample}: not below the {n:,} embeddings")
    rest = others(n, rows)
    rng = np.random.default_rng(0)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        near, d2 = apply_neighbours(Path(tmp) / "knn.npz", emb, rows, cfg.neighbors, cfg.seed)
        times["nearest sampled images"] = time.perf_counter() - t0
    labels = rng.integers(0, 10, size=len(rows))
    t0 = time.perf_counter()
    vote(labels, near, d2)
    times["vote"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    place(rng.normal(size=(len(rows), cfg.manifold_dim)).astype(np.float32), near, d2, rng)
    place(rng.normal(size=(len(rows), 2)).astype(np.float32), near, d2, rng)
    times["placement (manifold and map)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_index(emb, cfg.seed)
    times["search index (train and add)"] = time.perf_counter() - t0
    lines = [
        f"- command: `python -m benchmarks.fit_bench --apply-costs {path} --samples {sample}`",
        f"- machine: {machine()}; date: {today()}",
        f"- {n:,} embeddings of {emb.shape[1]} floats; fit sample {sample:,}; {len(rest):,} images applied to",
        "",
        "| step | seconds | microseconds per image |",
        "| --- | ---: | ---: |",
    ]
    for step, seconds in times.items():
        per = len(rest) if step != "search index (train and add)" else n
        lines.append(f"| {step} | {seconds:.1f} | {seconds / per * 1e6:.1f} |")
    text = "\n".join(lines)
    print(text)
    if record:
        append_section(f"--fit-sample: applying costs, {n:,} embeddings, {today()}", text)
    return times


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fit_bench", description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=["digits", "mnist", "cifar10"])
    source.add_argument("--images", type=Path, help="a folder of <class>/<file> images")
    source.add_argument("--apply-costs", type=Path, metavar="EMBEDDINGS", help="time the applying steps only")
    p.add_argument("--encoder-from", type=Path, help="with --images: the run whose encoder embeds them")
    p.add_argument("--samples", default="10000,25000,all", help="fit samples to compare; 'all' fits on every image")
    p.add_argument("--set", dest="sets", nargs="*", default=[], metavar="KEY=VALUE", help="pipeline settings")
    p.add_argument("--name", help="what to call the images in the figures (default: the data set or folder)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the last run there (replaced)")
    p.add_argument("--no-record", dest="record", action="store_false", help="print only")
    args = p.parse_args(argv)
    if args.images is not None and args.encoder_from is None:
        p.error("--images needs --encoder-from")
    settings = {"labels_from_folders": True, **parse_sets(args.sets)}
    if args.apply_costs:
        return [apply_costs(args.apply_costs, int(args.samples.split(",")[0]), args.record)]
    if args.dataset:
        train_images, _ = folders(args.dataset, None)
        encoder = build_once(
            DATA_CACHE / "add-bench" / f"{args.dataset}-all",
            lambda folder: run_embed(train_images, folder / "run", Config(labels_from_folders=True)),
        )
        encoder, images = encoder / "run", dataset_folder(args.dataset, "all", None)
    else:
        encoder, images = args.encoder_from, args.images
    work = DATA_CACHE / "fit-bench"
    warm_up()
    rows = []
    for sample in args.samples.split(","):
        cfg = Config(**settings, encoder_from=str(encoder))
        if sample != "all":
            cfg = cfg.replace(fit_sample=int(sample))
        else:
            cfg = cfg.replace(fit_sample=10**9)
        out = work / "run"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        manifest = run_embed(images, out, cfg, log=lambda *a: None)
        wall = time.perf_counter() - t0
        n = manifest["counts"]["images"]
        seconds = manifest["stage_seconds"]
        rows.append(
            {
                "sample": sample,
                "fitted_on": min(n, cfg.fit_sample),
                "n": n,
                "k": manifest["clusters"],
                "accuracy": manifest["metrics"]["accuracy"],
                "nmi": manifest["metrics"]["nmi"],
                "stages": {s: seconds[s] for s in FITTING},
                "fitting": sum(seconds[s] for s in FITTING),
                "wall": wall,
            }
        )
        print(rows[-1], flush=True)
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        shutil.move(work / "run", args.keep)
    shutil.rmtree(work / "run", ignore_errors=True)
    name = args.name or args.dataset or images.name
    command = "python -m benchmarks.fit_bench " + (
        f"--dataset {args.dataset}" if args.dataset else f"--images {args.images} --encoder-from {args.encoder_from}"
    )
    command += f" --samples {args.samples}" + (f" --set {' '.join(args.sets)}" if args.sets else "")
    lines = [
        f"- command: `{command}`",
        f"- machine: {machine()}; date: {today()}",
        f"- images: {rows[0]['n']:,} of {images}; encoder from {encoder} (no training); recipe "
        f"{rd.load_manifest(encoder)['config']['recipe']}",
        "",
        "| fit sample | fitted on | K | accuracy | NMI | cluster s | selflabel s | project s | fitting s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s = r["stages"]
        lines.append(
            f"| {r['sample']} | {r['fitted_on']:,} | {r['k']} | {r['accuracy']:.4f} | {r['nmi']:.4f} | "
            f"{s['cluster']:.1f} | {s['selflabel']:.1f} | {s['project']:.1f} | {r['fitting']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.record:
        figures = []
        full = next((r for r in rows if r["sample"] == "all"), None)
        given = "".join(f" and --{k.replace('_', '-')} {v}" for k, v in parse_sets(args.sets).items())
        for r in rows:
            if r["sample"] == "all":
                continue
            size = f"{r['n'] / 1e6:g}M" if r["n"] >= 1_000_000 else f"{r['n'] // 1000}k"
            value = f"{r['fitting']:,.0f} s; accuracy {r['accuracy']:.4f}"
            if full is not None:
                value += f" (every image: {full['fitting']:,.0f} s; {full['accuracy']:.4f})"
            figures.append(
                {
                    "group": "scale",
                    "order": 6,
                    "figure": (
                        f"fitting stages with --fit-sample {int(r['sample']):,}{given}, {name} {size}: time; accuracy"
                    ),
                    "value": value,
                    "target": "<= 600 s at 1M" if r["n"] >= 1_000_000 else "",
                    "met": r["fitting"] <= 600 if r["n"] >= 1_000_000 else None,
                }
            )
        append_section(f"--fit-sample: {name}, {rows[0]['n']:,} images, {today()}", text, figures=figures)
    return rows


if __name__ == "__main__":
    main()
