"""The encoder's learning curve: after every few epochs, how well its embeddings alone separate
the classes of a labelled image set.

    python -m benchmarks.ssl_probe --dataset {digits,mnist,cifar10,colours,shapes} [--limit N] [--every E]
                                   [--device auto|cpu|cuda] [--set key=value ...] [--no-record]

It decodes the images, trains with the given settings (the defaults of `ice embed`, changed
by each --set; the recipe is picked as `ice embed` picks it), and after every E epochs embeds all images and prints:
- kNN accuracy: each image takes the majority label of its 20 nearest neighbours (cosine),
  itself left out;
- k-means accuracy: faiss k-means (K = the number of classes, 3 restarts) on the embeddings,
  scored after Hungarian matching.

These are probes of the embedding, cheap enough to run every epoch; the full pipeline's
figures (manifold, mixture, self-labelling) come from `benchmarks.quality`. The labels are
read only to score.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import append_section, machine, parse_sets, today
from benchmarks.quality import add_dataset_options, dataset_folder
from embeddings.config import Config, pick_recipe
from embeddings.images import decode_all, find_images, has_colour


def knn_accuracy(emb: np.ndarray, labels: np.ndarray, k: int = 20) -> float:
    """Share of images whose k nearest neighbours' (itself left out) majority label is their own."""
    import faiss

    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    _, nn = index.search(emb, k + 1)
    votes = labels[nn[:, 1:]]
    n_classes = int(labels.max()) + 1
    counts = np.stack([(votes == c).sum(1) for c in range(n_classes)], axis=1)
    return float((counts.argmax(1) == labels).mean())


def kmeans_accuracy(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    import faiss

    from embeddings.cluster import cluster_metrics

    km = faiss.Kmeans(emb.shape[1], int(labels.max()) + 1, niter=50, nredo=3, seed=seed, spherical=True)
    km.train(emb)
    _, assigned = km.index.search(emb, 1)
    return cluster_metrics(labels, assigned[:, 0])["accuracy"]


def save_for_later(folder: Path, emb: np.ndarray, labels: np.ndarray, model, cfg: Config, epoch: int) -> None:
    """embeddings.npy (n, d) float16, labels.npy (n,) int16 and model.pt (as train writes it),
    so that clustering can be studied on another machine without retraining."""
    import torch

    from ice.run_dir import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("embeddings.npy", emb.astype(np.float16)), ("labels.npy", labels.astype(np.int16))):
        with atomic_path(folder / name, suffix=".npy") as tmp:
            np.save(tmp, array)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "model_args": model.checkpoint_args(),
                "config": cfg.to_dict(),
                "epoch": epoch,
            },
            tmp,
        )


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ssl_probe", description=__doc__.splitlines()[0])
    add_dataset_options(p)
    p.add_argument("--every", type=int, default=1, help="probe after every this many epochs")
    p.add_argument("--save", type=Path, help="keep the embeddings (float16), labels and model.pt of each probe here")
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)

    import torch

    from embeddings.embed import embed
    from embeddings.train import pick_device, train

    folder = dataset_folder(args.dataset, args.split, args.limit)
    paths = find_images(folder, False)
    names = sorted({Path(q).parent.name for q in paths})
    cfg = Config(
        **{
            "image_size": 32 if args.dataset == "cifar10" else 28 if args.dataset == "mnist" else 16,
            "device": args.device,
            **parse_sets(args.sets),
        }
    ).validate()
    cfg = cfg.replace(image_size=(cfg.image_size + 15) // 16 * 16)
    device = pick_device(cfg.device)
    work = Path(tempfile.mkdtemp(prefix="ice-ssl-probe-"))
    try:
        t0 = time.perf_counter()
        keep, _, _ = decode_all(
            folder,
            paths,
            size=cfg.image_size,
            max_pixels=cfg.max_pixels,
            workers=cfg.workers,
            pixels_path=work / "pixels.npy",
            skipped_path=work / "skipped.csv",
        )
        labels = np.array([names.index(Path(paths[i]).parent.name) for i in keep])
        colour = has_colour(np.load(work / "pixels.npy", mmap_mode="r"), seed=cfg.seed)
        cfg = cfg.resolved(pick_recipe(cfg, device.type == "cuda", colour))  # as the pipeline picks
        print(
            f"decoded {len(keep)} images in {time.perf_counter() - t0:.1f} s; {json.dumps(parse_sets(args.sets))}",
            flush=True,
        )
        rows: list[dict] = []
        t_train = time.perf_counter()

        def probe(epoch: int, model) -> None:
            if epoch % args.every and epoch != cfg.epochs:
                return
            t = time.perf_counter()
            emb = np.ascontiguousarray(embed(model, work / "pixels.npy", work / "emb.npy", cfg, device))
            row = {
                "epoch": epoch,
                "train_s": round(t - t_train - sum(r["probe_s"] for r in rows), 1),
                "knn": knn_accuracy(emb, labels),
                "kmeans": kmeans_accuracy(emb, labels, cfg.seed),
            }
            row["probe_s"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(
                f"epoch {epoch}: kNN {row['knn']:.3f}, k-means {row['kmeans']:.3f} "
                f"(training {row['train_s']} s so far)",
                flush=True,
            )
            if args.save:  # at every probe: a run cut short by a time limit keeps its latest
                save_for_later(args.save, emb, labels, model, cfg, epoch)

        train(work, work / "pixels.npy", cfg, device, on_epoch=probe)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""
    body = "\n".join(
        [
            f"- command: `python -m benchmarks.ssl_probe {' '.join(sys.argv[1:] if argv is None else argv)}`",
            f"- machine: {machine()}{gpu}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
            f"- date: {today()}; {len(labels)} images; recipe {cfg.recipe}; "
            f"settings changed: {parse_sets(args.sets) or 'none'}",
            "",
            "| epoch | training s | kNN accuracy (k=20) | k-means accuracy |",
            "| ---: | ---: | ---: | ---: |",
            *[f"| {r['epoch']} | {r['train_s']} | {r['knn']:.3f} | {r['kmeans']:.3f} |" for r in rows],
        ]
    )
    print(body)
    if args.record:
        append_section(f"Encoder probe: {args.dataset} ({len(labels)} images), {today()}", body)
    return rows


if __name__ == "__main__":
    main()
