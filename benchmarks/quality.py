"""Cluster quality of the default pipeline on labelled image sets.

    python -m benchmarks.quality --dataset {digits,mnist,cifar10,colours,shapes}
                                 [--split all|train|test] [--limit N] [--fast]
                                 [--device auto|cpu|cuda] [--no-record]

MNIST and CIFAR-10 come from ../shared/data (extracted once to a cache folder); the digits
ship with scikit-learn. `colours` and `shapes` are generated (benchmarks.gen_images, 32x32,
10 classes, --limit images, 10,000 by default): in `colours` only the colours tell the
classes apart and in `shapes` only the shape, which shows what a recipe's training keeps.
K is the number of classes; the labels are read only to score the clusters. Prints
accuracy (Hungarian), NMI, ARI, each class's best-matching cluster's precision and recall,
each stage's time and the peak memory, and appends them to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import DATA_CACHE, SHARED_DATA, append_section, build_once, cpu, extract_once, parse_sets
from embeddings.config import FAST, Config
from embeddings.demo import write_digits
from embeddings.pipeline import run_embed
from ice import run_dir as rd

TARBALLS = {"mnist": "mnist-png.tar.gz", "cifar10": "cifar10-jpg.tar.gz"}
GENERATED = {"colours": "colour", "shapes": "shape"}  # dataset: what tells its classes apart (gen_images --vary)
GENERATED_N = 10_000
CACHE = DATA_CACHE  # where data sets are extracted and subsets linked (tests point it elsewhere)


def dataset_folder(name: str, split: str, limit: int | None, seed: int = 0) -> Path:
    """A folder `<class>/<file>` holding the chosen images (hard links into the extracted set)."""
    if name == "digits":
        return write_digits(CACHE / "digits")
    if name in GENERATED:
        from benchmarks.gen_images import generate

        if split != "all":
            raise SystemExit(f"--split {split}: --dataset {name} is generated and has no splits")
        return build_once(
            CACHE / f"{name}-{limit or GENERATED_N}",
            lambda folder: generate(
                limit or GENERATED_N, folder, vary=GENERATED[name], by_class=True, seed=seed, quiet=True
            ),
        )
    tarball = SHARED_DATA / TARBALLS[name]
    if not tarball.exists():
        raise SystemExit(f"{tarball} not found: the shared data sets are needed for --dataset {name}")
    extracted = extract_once(tarball, CACHE / name)
    splits = ["train", "test"] if split == "all" else [split]
    files = sorted(p for s in splits for p in (extracted / s).glob("*/*") if p.is_file())
    if limit and limit < len(files):
        rng = np.random.default_rng(seed)
        files = [files[i] for i in np.sort(rng.choice(len(files), size=limit, replace=False))]

    def link(subset: Path) -> None:
        for f in files:  # class folder / split-prefixed name keeps names unique
            dest = subset / f.parent.name / f"{f.parent.parent.name}-{f.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dest)
            except OSError:
                shutil.copyfile(f, dest)

    return build_once(CACHE / f"{name}-{split}-{limit or 'all'}", link)


def per_class(labels: np.ndarray, clusters: np.ndarray) -> pd.DataFrame:
    """For each class, the cluster matched to it (Hungarian) and that cluster's precision and recall."""
    from scipy.optimize import linear_sum_assignment

    classes, y = np.unique(labels, return_inverse=True)
    k = int(clusters.max()) + 1
    table = np.zeros((k, len(classes)), dtype=np.int64)
    np.add.at(table, (clusters, y), 1)
    rows, cols = linear_sum_assignment(-table)
    match = dict(zip(cols, rows))
    out = []
    for c, name in enumerate(classes):
        cl = match.get(c)
        hit = table[cl, c] if cl is not None else 0
        out.append(
            {
                "class": name,
                "cluster": cl,
                "precision": hit / max(table[cl].sum(), 1) if cl is not None else 0.0,
                "recall": hit / table[:, c].sum(),
            }
        )
    return pd.DataFrame(out)


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {cpu()}"


def peak_rss_gib() -> float:
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kib, child_kib) / 2**20


def quality_target(args, metrics: dict, seconds: float, device: str) -> tuple[str, bool | None]:
    """The target a run is held to, and whether it met it ("", None where there is none)."""
    if args.dataset == "digits":
        return "NMI >= 0.85", metrics["nmi"] >= 0.85
    if args.dataset == "mnist" and args.split == "test" and args.fast:
        return "accuracy >= 0.90", metrics["accuracy"] >= 0.90
    if args.dataset == "mnist" and args.split == "all" and not args.fast and not args.limit:
        return "accuracy >= 0.98 in <= 30 min", metrics["accuracy"] >= 0.98 and seconds <= 1800
    if args.dataset == "cifar10" and args.split == "all" and not args.limit and device == "cuda":
        return "accuracy >= 0.60", metrics["accuracy"] >= 0.60
    return "", None


def report(args, manifest: dict, classes: pd.DataFrame, seconds: float, before: dict | None = None) -> str:
    m = manifest["metrics"]
    lines = [
        f"### Quality: {args.dataset} ({args.split}, {manifest['counts']['images']} images"
        f"{', --fast' if args.fast else ''}), {dt.date.today().isoformat()}",
        "",
        f"- command: `python -m benchmarks.quality {' '.join(sys.argv[1:])}`",
        f"- machine: {machine()}; device: {manifest['device']}",
        f"- settings: image_size {manifest['config']['image_size']}, epochs {manifest['config']['epochs']}, "
        f"width {manifest['config']['width']}, encoder {manifest['config'].get('encoder', 'convnet')}, "
        f"contrastive {manifest['config']['contrastive']}, batch_size {manifest['config']['batch_size']}, "
        f"compile {manifest['config'].get('compile', False)}, "
        f"mixture_pick {manifest['config'].get('mixture_pick', 'likelihood')}, "
        f"graph_rounds {manifest['config'].get('graph_rounds', 0)}, "
        f"cluster_space {manifest['cluster_space']}, self_label_epochs "
        f"{manifest['config'].get('self_label_epochs', 0)}, "
        f"K {manifest['clusters']}",
        f"- **accuracy {m['accuracy']:.4f}, NMI {m['nmi']:.4f}, ARI {m['ari']:.4f}**"
        + (
            f" (the cluster step's clusters, before self-labelling: accuracy {before['accuracy']:.4f}, "
            f"NMI {before['nmi']:.4f})"
            if before
            else ""
        ),
        "- stage seconds: "
        + ", ".join(f"{s} {t:.1f}" for s, t in manifest["stage_seconds"].items())
        + f"; total {seconds:.1f} s; peak RSS {peak_rss_gib():.2f} GiB",
        "",
        "| class | matched cluster | precision | recall |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['class']} | {r['cluster']} | {r['precision']:.3f} | {r['recall']:.3f} |"
        for r in classes.to_dict("records")
    ]
    return "\n".join(lines) + "\n"


def before_self_labelling(run: Path, items: pd.DataFrame) -> dict | None:
    """Metrics of the mixture's clusters, which self-labelling started from (None if it did not
    run)."""
    from embeddings.cluster import cluster_metrics
    from embeddings.stages import ASSIGN

    with np.load(run / ASSIGN) as assign:
        if "first_cluster" not in assign:
            return None
        first = assign["first_cluster"]
    return cluster_metrics(items.sort_values("image_id")["label"].to_numpy(), first)


def keep_for_later(run: Path, keep: Path) -> None:
    """The run's files that clustering starts from, in `keep` (about 28 MB for CIFAR-10).

    The embeddings and the model's weights are kept as float16, for a GPU machine that sends
    back no file over 16 MiB: the GPU recipe's ResNet is 19.5 MiB in float32 (9.8 in float16; its
    model.pt stayed behind on 2026-11-30). train.load_model reads them back into float32.
    """
    import torch

    from embeddings.train import save_checkpoint

    keep.mkdir(parents=True, exist_ok=True)
    np.save(keep / rd.EMBEDDINGS, np.load(run / rd.EMBEDDINGS).astype(np.float16))
    for name in (rd.ITEMS, "assign.npz", rd.MANIFEST):
        shutil.copyfile(run / name, keep / name)
    ckpt = torch.load(run / rd.MODEL, map_location="cpu", weights_only=False)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(keep / rd.MODEL, ckpt)


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """The options that this benchmark and benchmarks.ssl_probe share: which images, where, which settings."""
    p.add_argument("--dataset", choices=["digits", "mnist", "cifar10", *GENERATED], required=True)
    p.add_argument("--split", choices=["all", "train", "test"], default="all")
    p.add_argument(
        "--limit", type=int, help="a random subset of this many images (colours, shapes: how many to generate)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting of ice embed (repeatable), e.g. --set recipe=contrastive",
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    add_dataset_options(p)
    p.add_argument("--fast", action="store_true", help="`ice embed --fast` settings")
    p.add_argument("--epochs", type=int, help="override the default number of epochs")
    p.add_argument("--out", type=Path, help="run directory (default: a temporary folder)")
    p.add_argument(
        "--keep",
        type=Path,
        help="copy what clustering needs (embeddings and model weights as float16, "
        "items, assign.npz, manifest) here, to study it on another machine; the pixels stay",
    )
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)

    folder = dataset_folder(args.dataset, args.split, args.limit)
    n_classes = sum(1 for d in folder.iterdir() if d.is_dir())
    overrides = {
        **(FAST if args.fast else {}),
        "clusters": n_classes,
        "labels_from_folders": True,
        "device": args.device,
    }
    if args.epochs:
        overrides["epochs"] = args.epochs
    overrides.update(parse_sets(args.sets))
    if args.dataset == "digits":
        from embeddings.demo import DEMO_CONFIG

        overrides = {**DEMO_CONFIG, **overrides}
    cfg = Config(**overrides)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"ice-quality-{args.dataset}-")) / "run"
    t0 = time.perf_counter()
    manifest = run_embed(folder, out, cfg, force=True)
    seconds = time.perf_counter() - t0
    items = pd.read_parquet(out / rd.ITEMS)
    classes = per_class(items["label"].to_numpy(), items["cluster"].to_numpy())
    text = report(args, manifest, classes, seconds, before_self_labelling(out, items))
    print(text)
    if args.record:
        title, _, body = text.partition("\n")
        metrics, n = manifest["metrics"], manifest["counts"]["images"]
        figure = f"{args.dataset}, {args.split}, {n:,} images{', --fast' if args.fast else ''}: accuracy; NMI"
        value = f"{metrics['accuracy']:.3f}; {metrics['nmi']:.3f} ({seconds:.0f} s)"
        target, met = quality_target(args, metrics, seconds, manifest["device"])
        row = {"group": "quality", "figure": figure, "value": value, "target": target, "met": met}
        append_section(title.removeprefix("### "), body, figures=[] if args.sets else [row])
    if args.keep:
        keep_for_later(out, args.keep)
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)
    return {**manifest["metrics"], "classes": classes}


if __name__ == "__main__":
    main()
