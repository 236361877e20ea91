"""`ice add` against the run it adds to: a run on a data set's train split, then its test split added.

    python -m benchmarks.add_bench --dataset {mnist,cifar10,digits} [--limit N] [--set KEY=VALUE ...]
                                   [--no-record]
    python -m benchmarks.add_bench --run RUN_DIR --images FOLDER [--repeat N] [--no-record]

Builds the run on the train split with the CPU defaults (kept in the data cache, so that a
second call only adds), copies it, and adds the test split with `ice add`. Prints the
clustering accuracy (Hungarian, on the folder labels) of the run's own images and of the
added ones, scored on their own and through the run's own matching of clusters to classes;
the same for the other way to give an added image its cluster (the nearest cluster centre
at its placed manifold position); the add's time against the run's, and against decoding
and embedding the same images alone (in one process, side by side; with --repeat, the median
of N such pairs, since one pair on a shared machine varies by a fifth; an untimed decode and
embed first reads the images into the page cache, so that the first pair does not pay for
it). With --run, the add goes into a copy of that complete run instead (made with
--labels-from-folders), from --images. The 1M+100k figures in BENCHMARKS.md add images
1,000,000 on of the generated set to a run of its first million:

    python -m benchmarks.gen_images 1000000 /tmp/ice-data/gen1m --by-class
    ice embed /tmp/ice-data/gen1m --out /tmp/ice-data/run1m --labels-from-folders --epochs 1
    python -m benchmarks.gen_images 100000 /tmp/ice-data/gen-add100k/images --by-class --first 1000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks.common import DATA_CACHE, append_section, build_once, machine, parse_sets, today
from benchmarks.quality import dataset_folder
from embeddings.add import add_images
from embeddings.cluster import cluster_metrics
from embeddings.config import Config
from embeddings.pipeline import run_embed
from ice import run_dir as rd

TARGETS = {"mnist": 0.01, "cifar10": 0.02, "digits": 0.05}  # added images' accuracy within this of the run's
SPLITS = {"mnist": ("train", "test"), "cifar10": ("train", "test")}


def tiled(folder: Path, times: int) -> Path:
    """A folder holding `folder`'s images `times` over (hard links under copy-<i>/), so that an
    add of many images can be timed from a small test split."""
    if times <= 1:
        return folder

    def link(out: Path) -> None:
        for i in range(times):
            for path in folder.rglob("*"):
                if path.is_file():
                    target = out / f"copy-{i}" / path.relative_to(folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, target)
                    except OSError:
                        shutil.copyfile(path, target)

    return build_once(folder.parent / f"{folder.name}-x{times}", link)


def folders(dataset: str, limit: int | None) -> tuple[Path, Path]:
    """(the images to build the run on, the images to add)."""
    if dataset == "digits":  # no splits: every fifth image is added
        every = dataset_folder("digits", "all", None)

        def split(folder: Path) -> None:
            for i, path in enumerate(sorted(every.rglob("*.png"))):
                target = folder / ("add" if i % 5 == 0 else "run") / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)

        base = build_once(DATA_CACHE / "digits-add-split", split)
        return base / "run", base / "add"
    train, test = SPLITS[dataset]
    return dataset_folder(dataset, train, limit), dataset_folder(dataset, test, limit and limit // 6)


def matched(labels: np.ndarray, clusters: np.ndarray, own_labels: np.ndarray, own_clusters: np.ndarray) -> float:
    """Accuracy of `clusters` through the Hungarian matching of clusters to classes found on the
    run's own images."""
    classes, own = np.unique(own_labels, return_inverse=True)
    k = int(max(own_clusters.max(), clusters.max())) + 1
    table = np.zeros((k, len(classes)))
    np.add.at(table, (own_clusters, own), 1)
    rows, cols = linear_sum_assignment(-table)
    to_class = dict(zip(rows, classes[cols]))
    return float(np.mean([to_class.get(c) == label for c, label in zip(clusters, labels)]))


def decode_and_embed(run_dir: Path, images: Path, scratch: Path) -> float:
    """Seconds to decode and embed `images` alone at the run's settings."""
    import torch

    from embeddings.embed import embed
    from embeddings.images import decode_all, find_images
    from embeddings.train import load_model

    cfg = Config.from_dict(rd.load_manifest(run_dir)["config"])
    t0 = time.perf_counter()
    paths = find_images(images)
    decode_all(
        images,
        paths,
        size=cfg.image_size,
        max_pixels=cfg.max_pixels,
        workers=cfg.workers,
        pixels_path=scratch / rd.PIXELS,
        skipped_path=scratch / rd.SKIPPED,
    )
    dev = torch.device("cpu")
    embed(load_model(run_dir, dev), scratch / rd.PIXELS, scratch / rd.EMBEDDINGS, cfg.resolved(), dev)
    return time.perf_counter() - t0


def index_lists(run_dir: Path, new_ids: np.ndarray) -> tuple[float, float] | None:
    """For the added images of a run whose index is IVF (None otherwise): the share that lie in
    the list whose centre is nearest to them, and the share of up to 20,000 of them that a
    search of the run's whole index with their own embedding finds first."""
    import faiss

    from ice.search_index import ivf_lists, read_index

    job = faiss.read_index(str(run_dir / rd.INDEX), faiss.IO_FLAG_MMAP)
    if type(job) is not faiss.IndexIVFFlat or not len(new_ids):
        return None
    emb = np.ascontiguousarray(rd.open_rows(run_dir, rd.EMBEDDINGS)[new_ids], dtype=np.float32)
    lists = ivf_lists(job, faiss.read_index(str(run_dir / rd.INDEX_ADDED)))[new_ids]
    nearest = job.quantizer.search(emb, 1)[1][:, 0]
    step = max(1, len(new_ids) // 20_000)
    _, found = read_index(run_dir).search(emb[::step], 1)
    return float((lists == nearest).mean()), float((found[:, 0] == new_ids[::step]).mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.add_bench", description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=["digits", "mnist", "cifar10"])
    source.add_argument("--run", type=Path, help="a complete run to add to (a copy of it)")
    p.add_argument("--images", type=Path, help="with --run: the images to add")
    p.add_argument("--name", help="with --run: what to call its images in the figures (default: the folder's name)")
    p.add_argument("--limit", type=int, help="images of the train split (the test split: a sixth of it)")
    p.add_argument("--tile", type=int, default=1, metavar="N", help="add the test split N times over (for speed)")
    p.add_argument("--set", dest="sets", nargs="*", default=[], metavar="KEY=VALUE", help="pipeline settings")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="time the add and the decode+embed N times")
    p.add_argument("--no-record", dest="record", action="store_false", help="print only")
    args = p.parse_args(argv)
    if (args.run is None) != (args.images is None):
        p.error("--run and --images go together")
    settings = {"labels_from_folders": True, **parse_sets(args.sets)}
    if args.run is not None:
        source_run, add_images_from = args.run, args.images
        run_images = Path(rd.load_manifest(source_run)["input_root"])
    else:
        run_images, add_images_from = folders(args.dataset, args.limit)
        tag = "-".join(f"{k}={v}" for k, v in sorted(parse_sets(args.sets).items()))
        built = DATA_CACHE / "add-bench" / f"{args.dataset}-{args.limit or 'all'}{'-' + tag if tag else ''}"
        source_run = build_once(built, lambda folder: run_embed(run_images, folder / "run", Config(**settings))) / "run"
    add_images_from = tiled(add_images_from, args.tile)
    run_seconds = sum(rd.load_manifest(source_run)["stage_seconds"].values())
    work = DATA_CACHE / "add-bench" / "work"
    pairs = []  # (add, alone) seconds; the order alternates, so neither always finds a warm cache
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    decode_and_embed(source_run, add_images_from, work)  # untimed: the first pair reads no image from disk
    for i in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source_run, work / "run")
        os.sync()  # else the add's fsync of pixels.npy also writes out the copy's 3 GB, as a real run's would not
        run_dir = work / "run"
        if i % 2 == 0:
            alone = decode_and_embed(run_dir, add_images_from, Path(work))
        t0 = time.perf_counter()
        record = add_images(run_dir, [add_images_from])
        add_seconds = time.perf_counter() - t0
        if i % 2 == 1:
            alone = decode_and_embed(run_dir, add_images_from, Path(work))
        pairs.append((add_seconds, alone))
        print(f"repeat {i + 1}: add {add_seconds:.1f} s, alone {alone:.1f} s, {add_seconds / alone:.2f}x", flush=True)
    add_seconds, alone = pairs[int(np.argsort([a / b for a, b in pairs])[len(pairs) // 2])]  # the median ratio

    items = rd.read_items(run_dir)
    own, new = items[items["added"] == 0], items[items["added"] == 1]
    labels, own_labels = new["label"].to_numpy(), own["label"].to_numpy()
    acc_own = cluster_metrics(own_labels, own["cluster"].to_numpy())["accuracy"]
    acc_new = cluster_metrics(labels, new["cluster"].to_numpy())["accuracy"]
    acc_new_matched = matched(labels, new["cluster"].to_numpy(), own_labels, own["cluster"].to_numpy())
    centre = None
    if (run_dir / rd.MANIFOLD).exists():
        space = np.load(run_dir / rd.MANIFOLD)[new["image_id"].to_numpy()]
        centres = np.load(run_dir / rd.CENTROIDS)
        nearest = ((space[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
        centre = cluster_metrics(labels, nearest)["accuracy"]
    lists = index_lists(run_dir, new["image_id"].to_numpy())
    target = TARGETS.get(args.dataset, 0.02)
    met = acc_own - acc_new <= target
    command = "python -m benchmarks.add_bench " + (
        f"--dataset {args.dataset}" if args.dataset else f"--run {args.run} --images {args.images}"
    )
    command += f" --name {args.name}" if args.name else ""
    command += f" --limit {args.limit}" if args.limit else ""
    command += f" --tile {args.tile}" if args.tile > 1 else ""
    command += f" --set {' '.join(args.sets)}" if args.sets else ""
    command += f" --repeat {args.repeat}" if args.repeat > 1 else ""
    lines = [
        f"- command: `{command}`",
        f"- machine: {machine()}; date: {today()}",
        f"- run: {len(own):,} images of {run_images.name}, {run_seconds:.1f} s (its stages)",
        f"- added: {record['images']:,} images of {add_images_from.name}, {record['skipped']} skipped",
        f"- accuracy of the run's own images: {acc_own:.4f}",
        f"- accuracy of the added images: {acc_new:.4f} on their own, {acc_new_matched:.4f} through the run's"
        f" matching (target: within {target} of the run's: {'met' if met else 'missed'})",
    ]
    if centre is not None:
        lines.append(f"- the other way, the nearest centre at the placed manifold position: {centre:.4f}")
    if lists is not None:
        lines.append(
            f"- search index: {lists[0]:.4f} of the added images lie in their nearest IVF list;"
            f" {lists[1]:.4f} of a sample of them find themselves first"
        )
    lines += [
        f"- `ice add`: {add_seconds:.1f} s = {add_seconds / run_seconds:.3f} of the run's time (target <= 0.1);"
        f" steps {record['seconds']}",
        f"- decoding and embedding the same images alone: {alone:.1f} s; the add takes {add_seconds / alone:.2f}x that",
    ]
    if len(pairs) > 1:
        lines.append(
            f"- of {len(pairs)} repeats (alone first, then the add first, in turn), the median ratio above; all: "
            + ", ".join(f"{a:.1f}/{b:.1f} s = {a / b:.2f}x" for a, b in pairs)
        )
    text = "\n".join(lines)
    print(text)
    size = f"{len(own) // 1000}k+{len(new) // 1000}k" if len(new) >= 1000 else f"{len(own):,}+{len(new):,}"
    name = {"mnist": "MNIST", "cifar10": "CIFAR-10", "digits": "digits"}.get(args.dataset, args.name or run_images.name)
    if len(own) >= 1_000_000:
        size = f"{len(own) / 1e6:g}M+{len(new) // 1000}k"
    speed = {
        "group": "scale",
        "order": 5,
        "figure": f"ice add, {name} {size}: the add's time over decoding and embedding those images alone",
        "value": f"{add_seconds / alone:.2f}x ({add_seconds:.1f} s against {alone:.1f} s)",
        "target": "",
        "met": None,
    }
    if args.tile > 1 or args.run is not None:  # a figure of speed, not of accuracy
        speed["target"], speed["met"] = "<= 1.3x", add_seconds <= 1.3 * alone
        if args.tile > 1 or len(own) < 1_000_000:
            speed["target"], speed["met"] = "", None  # the target is for 100k added to a 1M run
        figures = [speed]
    else:
        figures = [speed] + [
            {
                "group": "scale",
                "order": 5,
                "figure": f"ice add, {name} {size}: accuracy of the added images (the run's own)",
                "value": f"{acc_new:.4f} ({acc_own:.4f})",
                "target": f"within {target} of the run's",
                "met": bool(met),
            },
            {
                "group": "scale",
                "order": 5,
                "figure": f"ice add, {name} {size}: the add's time as a share of the run's",
                "value": f"{add_seconds / run_seconds:.3f} ({add_seconds:.1f} s of {run_seconds:.0f} s)",
                "target": "<= 0.1",
                "met": add_seconds <= 0.1 * run_seconds,
            },
        ]
    if lists is not None:
        figures.append(
            {
                "group": "scale",
                "order": 5,
                "figure": f"ice add, {name} {size}: added images in their nearest IVF list (found first by themselves)",
                "value": f"{lists[0]:.4f} ({lists[1]:.4f})",
                "target": "",
                "met": None,
            }
        )
    if args.record and not args.sets and not args.limit:
        append_section(f"ice add: {name}, {size} images, {today()}", text, figures=figures)
    return {"own": acc_own, "added": acc_new, "matched": acc_new_matched, "centre": centre, "seconds": add_seconds}


if __name__ == "__main__":
    main()
