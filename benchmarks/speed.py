"""Speed and memory of every stage, each side by side with what a user would otherwise use.

    python -m benchmarks.speed [--stage S] [--n N] [--dry-run | --quick] [--data PATH] [--cold] [--device D]
                               [--record PATH | --no-record] [--umap-timeout SECONDS]

Stages (default `all`: every one but `scale` and `map`):
  decode  the CIFAR-10 JPEGs: ICE's decode_all with DataLoader workers vs a single-process Pillow loop;
          read from the page cache, or with --cold from the disk, with ICE's read-ahead on and off too
  train   training steps/s (images/s) at 32x32 and 64x64; on CUDA, bf16 autocast vs fp32
  embed   encoder images/s at 32x32 and 64x64, bare and through embeddings.embed.embed
  kmeans  1M x 64 float32, K=100, 20 iterations: ICE's faiss KMeans vs scikit-learn's
  knn     k=50 single-query latency over 1M embeddings: faiss IndexFlatIP vs numpy
  umap    200k and 1M points to 2-D: ICE's umap_reduce vs a full umap.UMAP().fit_transform
  scale   `ice embed --fast` (or `--epochs N`) on N generated images: time and peak memory of each stage,
          and the part of that memory not backed by files (not the mapped pixels, not the libraries' code)
  map     the explorer's first map of 1M points in headless Chromium (benchmarks.explorer_bench)

Every comparison runs in the same process, one side right after the other, so that the
ratio holds on a busy machine. Each stage prints its table and appends it to BENCHMARKS.md
with the command, the machine and the date. `--dry-run` runs each stage at a tiny size in
seconds, and records nothing unless `--record` is given.

`--quick` (with `--stage all`: decode, kmeans, umap and map) runs the ratio benchmarks and the
first map at sizes that take about four minutes on 2 idle cores, then prints each target as met
or missed on this CPU; it records nothing unless `--record` is given. A check for a developer's
machine, not a test: a busy machine moves the figures and the time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import embeddings  # noqa: F401  sets OMP_WAIT_POLICY before faiss, torch or sklearn load, as `ice` does

from .common import (
    DATA_CACHE,
    SHARED_DATA,
    PeakRSS,
    Row,
    Section,
    append_section,
    clustered_embeddings,
    extract_once,
    machine,
    measure,
    today,
    verdict,
)
from .explorer_bench import bench_map
from .speed_scale import bench_scale
from .speed_umap import bench_umap, full_umap

STAGES = ("decode", "train", "embed", "kmeans", "knn", "umap")
QUICK_STAGES = ("decode", "kmeans", "umap", "map")  # the ratio benchmarks and the first map
# the sizes; --n overrides them
SIZES = {
    "decode": 60_000,
    "train": 0,
    "embed": 8192,
    "kmeans": 1_000_000,
    "knn": 1_000_000,
    "umap": (200_000, 1_000_000),
    "scale": 100_000,
    "map": 1_000_000,
}
DRY = {"decode": 200, "train": 0, "embed": 256, "kmeans": 5000, "knn": 5000, "umap": (600,), "scale": 64, "map": 2000}
# --quick: UMAP above 100k points, where its neighbour graph is approximate as at 200k
QUICK = {**SIZES, "decode": 30_000, "umap": (110_000,)}


# --- decode -----------------------------------------------------------------------------


def pillow_loop(root: Path, paths: list[str], size: int) -> np.ndarray:
    """What a user would write: open, RGB, centre square, bilinear resize, one file at a time."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(root / p) as img:
            img = img.convert("RGB")
            side = min(img.size)
            left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
            out[i] = np.asarray(
                img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
            )
    return out


def drop_from_page_cache(root: Path, paths: list[str]) -> None:
    """Ask the kernel to forget the files' cached pages, so that the next read comes from the disk."""
    for p in paths:
        fd = os.open(root / p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bench_decode(args, n: int, sec: Section) -> None:
    from embeddings.config import Config
    from embeddings.images import decode_all, find_images, typical_size

    root = args.data or extract_once(SHARED_DATA / "cifar10-jpg.tar.gz", DATA_CACHE / "cifar10")
    find, paths = measure("find_images", 0, "file", find_images, root)
    find.label, find.count = f"find_images ({len(paths):,} files found)", len(paths)
    paths = paths if n >= len(paths) else [paths[i] for i in np.linspace(0, len(paths) - 1, n).astype(int)]
    size = typical_size(root, paths)
    if args.cold and not hasattr(os, "posix_fadvise"):
        raise SystemExit("--cold needs posix_fadvise (Linux) to drop the files from the page cache")
    for p in [] if args.cold else paths:  # warm the page cache, so that neither side pays for the first read
        (root / p).read_bytes()
    workers = Config().workers
    state = "each side reading them from disk" if args.cold else "from the page cache"
    sec.title = f"Speed: decode {len(paths):,} images to {size}x{size}, {state}, {today()}"
    sec.rows.append(find)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:

        def ice(w: int, ahead: bool = True):
            return decode_all(
                root,
                paths,
                size=size,
                max_pixels=Config().max_pixels,
                workers=w,
                pixels_path=Path(tmp, "pixels.npy"),
                skipped_path=Path(tmp, "skipped.csv"),
                read_ahead=ahead,
            )

        sides = [
            ("Pillow loop, 1 process", lambda: pillow_loop(root, paths, size)),
            (f"ICE decode_all, {workers} DataLoader workers", lambda: ice(workers)),
            ("ICE decode_all, 0 DataLoader workers", lambda: ice(0)),
        ]
        if args.cold:
            sides.append((f"ICE decode_all, {workers} workers, no read-ahead", lambda: ice(workers, ahead=False)))
        for _ in range(1 if args.dry_run else 2):  # two rounds, alternating: the best of each counts
            for label, side in sides:
                if args.cold:
                    drop_from_page_cache(root, paths)
                row, out = measure(label, len(paths), "img", side)
                if label.startswith("Pillow"):
                    base = out
                sec.rows.append(row)
                best[label] = min(best.get(label, (np.inf, 0)), (row.seconds, row.cpu))
        ice_pixels = np.load(Path(tmp, "pixels.npy"))
    same = float((np.abs(ice_pixels.astype(np.int16) - base).max(axis=(1, 2, 3)) <= 2).mean())
    (base_s, base_cpu), (ice_s, ice_cpu), (ice0_s, ice0_cpu) = list(best.values())[:3]
    us = 1e6 / len(paths)
    sec.notes += [
        f"ICE with {workers} workers vs the Pillow loop: **{base_s / ice_s:.2f}x** (wall, best of each); "
        + sec.target("decode >= 1.8x the Pillow loop", base_s / ice_s >= 1.8, f"{base_s / ice_s:.2f}x"),
        f"ICE with 0 workers vs the Pillow loop: {base_s / ice0_s:.2f}x (one process: libjpeg through torchvision "
        "for small JPEGs, no Python header parsing)",
        f"CPU per image: Pillow loop {base_cpu * us:.0f} us, ICE {ice_cpu * us:.0f} us with {workers} workers "
        f"(main process and workers), {ice0_cpu * us:.0f} us with 0; so on {workers} idle cores ICE's speed-up "
        f"over the loop is bounded by {min(workers, os.cpu_count() or 1) * base_cpu / ice_cpu:.2f}x "
        "(cores x loop CPU / ICE CPU: a bound, not a measured speed-up)",
        f"images whose pixels match the Pillow loop's within 2 levels: {same:.1%}",
    ]
    if args.cold:
        plain_s = best[sides[-1][0]][0]
        sec.notes.insert(
            0,
            "`--cold`: before each side the files were dropped from the page cache "
            "(posix_fadvise DONTNEED), so every side read them from the disk",
        )
        sec.notes.append(
            f"read-ahead (a batch that starts on disk asks for all its files at once) vs none, "
            f"{workers} workers: **{plain_s / ice_s:.2f}x**"
        )


# --- train and embed --------------------------------------------------------------------


def _device(name: str):
    from embeddings.train import pick_device

    return pick_device(name)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rate(
    size: int,
    precision: str,
    device,
    batch_size: int,
    steps: int,
    warmup: int,
    recipe: str = "autoencoder",
    compiled: bool = False,
) -> Row:
    """Images/s of train()'s loop body (step_loss, backward, AdamW) on random pixels, with `recipe`'s model and
    loss; `compiled`: through torch.compile, as --compile trains (the warm-up steps compile)."""
    import torch

    from embeddings.config import Config
    from embeddings.model import AutoEncoder
    from embeddings.train import compiled_parts, model_args, step_loss

    cfg = Config(image_size=size).resolved(recipe)
    torch.manual_seed(0)
    model = AutoEncoder(model_args(cfg)).to(device, memory_format=torch.channels_last)
    parts = compiled_parts(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    batch = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8)
    batch = batch.pin_memory() if device.type == "cuda" else batch

    def steps_of(k: int) -> None:  # as train() runs them: the loss is read once in a while, not every step
        for _ in range(k):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = step_loss(parts, batch.to(device, non_blocking=True), cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()

    steps_of(warmup)
    _sync(device)
    row, _ = measure(
        f"train step {size}x{size}, {precision}{', compiled' if compiled else ''}, batch {batch_size}, {recipe}",
        steps * batch_size,
        "img",
        steps_of,
        steps,
    )
    return row


def encoder_rate(size: int, precision: str, device, batches: int, batch_size: int = 512) -> Row:
    """Images/s of embed()'s loop body (host-to-device, encoder, normalise, back) without the loader."""
    import torch
    from torch.nn import functional as F

    from embeddings.config import Config
    from embeddings.model import AutoEncoder, to_input
    from embeddings.train import model_args

    cfg = Config(image_size=size).resolved()
    model = AutoEncoder(model_args(cfg)).to(device, memory_format=torch.channels_last).eval()
    batch = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8)
    batch = batch.pin_memory() if device.type == "cuda" else batch

    @torch.no_grad()
    def run(k: int) -> None:
        for _ in range(k):
            x = to_input(batch.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                z = model.encoder(x)
            F.normalize(z.float(), dim=1).cpu().numpy()

    run(2)
    _sync(device)
    row, _ = measure(
        f"encoder {size}x{size}, {precision}, batch {batch_size}", batches * batch_size, "img", run, batches
    )
    return row


def _model_settings(recipe: str = "autoencoder") -> str:
    from embeddings.config import Config

    cfg = Config().resolved(recipe)
    return f"the {recipe} recipe: {cfg.encoder} width {cfg.width}, dim {cfg.dim}, contrastive {cfg.contrastive}"


def _auto_recipes(device) -> list[str]:
    """The recipes that `auto` picks on this device: for greyscale images, then for colour ones."""
    from embeddings.config import Config, pick_recipe

    return list(dict.fromkeys(pick_recipe(Config(), device.type == "cuda", colour) for colour in (False, True)))


def _precisions(device) -> tuple[str, ...]:
    return ("bf16", "fp32") if device.type == "cuda" else ("fp32",)  # ICE autocasts to bf16 on CUDA only


def _ratio_notes(sec: Section) -> None:
    by = {r.label: r.rate for r in sec.rows}
    for label, rate in by.items():
        if ", bf16," in label and label.replace("bf16", "fp32") in by:
            sec.notes.append(
                f"{label.replace(', bf16', '')}: bf16 autocast + channels_last vs fp32 "
                f"(same code): **{rate / by[label.replace('bf16', 'fp32')]:.2f}x**"
            )


def bench_train(args, n: int, sec: Section) -> None:
    import torch

    device = _device(args.device)
    cuda = device.type == "cuda"
    batch, steps, warmup = (16, 1, 1) if args.dry_run else (256, 100 if cuda else 3, 10 if cuda else 1)
    recipes = _auto_recipes(device)
    sec.title = f"Speed: training on {device.type}, {today()}"
    rows = {}
    for recipe in recipes:
        for size in (32, 64):
            for precision in _precisions(device):
                rows[recipe, size, precision] = train_rate(size, precision, device, batch, steps, warmup, recipe)
    sec.rows += rows.values()
    if cuda or args.dry_run:  # --compile against the same eager step, at CIFAR-10's size; compiling takes
        precision = _precisions(device)[0]  # a while by itself (on the CPU, 25-35 s and no gain: dry run only)
        eager = rows[recipes[-1], 32, precision]
        compiled = train_rate(32, precision, device, batch, steps, warmup, recipes[-1], compiled=True)
        sec.rows.append(compiled)
        sec.notes.append(f"{compiled.label}: torch.compile vs eager (same step): **{compiled.rate / eager.rate:.2f}x**")
    _ratio_notes(sec)
    sec.notes.append(
        f"{steps} timed steps after {warmup} warm-up, batch {batch} for every recipe (a contrastive "
        "step encodes two views of each image); random pixels; "
        + "; ".join(_model_settings(r) for r in recipes)
        + f"; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )


def bench_embed(args, n: int, sec: Section) -> None:
    import torch

    from embeddings.config import Config
    from embeddings.embed import embed
    from embeddings.model import AutoEncoder
    from embeddings.train import model_args

    device = _device(args.device)
    cuda = device.type == "cuda"
    n = n if args.n or args.dry_run or not cuda else 100_000
    cfg = Config().resolved()
    sec.title = f"Speed: embedding {n:,} images on {device.type}, {today()}"
    for size in (32, 64):
        for precision in _precisions(device):
            sec.rows.append(encoder_rate(size, precision, device, 1 if args.dry_run else max(4, n // 512)))
        with tempfile.TemporaryDirectory() as tmp:
            pixels = _random_pixels(Path(tmp, "pixels.npy"), n, size)
            model = AutoEncoder(model_args(cfg.replace(image_size=size))).to(device, memory_format=torch.channels_last)
            row, _ = measure(
                f"embeddings.embed.embed {size}x{size}, {cfg.workers} loader workers",
                n,
                "img",
                embed,
                model,
                pixels,
                Path(tmp, "emb.npy"),
                cfg.replace(image_size=size),
                device,
            )
            sec.rows.append(row)
    _ratio_notes(sec)
    if cuda:
        best = max(r.rate for r in sec.rows if "64x64" in r.label and "bf16" in r.label)
        full = next(r.rate for r in sec.rows if r.label.startswith("embeddings.embed.embed 64x64"))
        sec.notes.append(
            f"64x64 inference: {best:,.0f} images/s bare, {full:,.0f} through embed(); target >= 20,000: "
            f"{verdict(best >= 20_000)} (bare), {verdict(full >= 20_000)} (embed())"
        )
    sec.notes.append(
        f"{_model_settings()}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if cuda else "")
    )


def _random_pixels(path: Path, n: int, size: int) -> Path:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    rng = np.random.default_rng(0)
    for start in range(0, n, 16_384):
        out[start : start + 16_384] = rng.integers(0, 256, size=out[start : start + 16_384].shape, dtype=np.uint8)
    out.flush()
    del out
    return path


# --- kmeans and knn ---------------------------------------------------------------------


@contextlib.contextmanager
def faiss_threads(n: int | None):
    """Run the block with faiss limited to n OpenMP threads (None: leave it as it is)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n or before)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def ice_kmeans(x: np.ndarray, k: int, iters: int, threads: int | None = None) -> float:
    """ICE's KMeans as shipped (k-means++ seeds; above 200k rows it iterates on 256 rows per
    centroid, then assigns every row); returns the objective over all rows."""
    from embeddings.cluster import KMeans

    with faiss_threads(threads):
        return float(KMeans(k, n_iter=iters, n_init=1, seed=0).fit(x).distances_.sum())


def bench_kmeans(args, n: int, sec: Section) -> None:
    from sklearn.cluster import KMeans as SKKMeans

    k, iters = (10, 5) if args.dry_run else (100, 20)
    x = clustered_embeddings(n, 64, clusters=k, seed=1)
    from embeddings.cluster import assign

    t0 = time.perf_counter()  # once per process: numba compiles the assignment kernel or loads it
    assign(x[:10_000], x[:k])  # from its cache; not timed, like torch's import
    warm = time.perf_counter() - t0
    sec.title = f"Speed: k-means, {n:,} x 64 float32, K={k}, {iters} iterations, {today()}"
    runs = {  # label: (function, arguments); each returns the objective over all rows
        "ICE KMeans (faiss), as shipped": (ice_kmeans, (x, k, iters)),
        "ICE KMeans, faiss limited to 1 OpenMP thread": (ice_kmeans, (x, k, iters, 1)),
        "scikit-learn KMeans (lloyd, init=random, all rows)": (
            lambda: (
                SKKMeans(k, init="random", n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=0)
                .fit(x)
                .inertia_
            ),
            (),
        ),
    }
    objective, best = {}, {}
    for _ in range(1 if args.dry_run else 2):  # two rounds, alternating: the best of each counts
        for label, (fn, fn_args) in runs.items():
            row, objective[label] = measure(label, n, "pt", fn, *fn_args, sample=False)
            sec.rows.append(row)
            best[label] = min(best.get(label, row), row, key=lambda r: r.seconds)
    *ours, sk = best.values()
    for row in ours:
        ratio = sk.seconds / row.seconds
        sec.notes.append(
            f"{row.label} vs scikit-learn: **{ratio:.2f}x**"
            + (f"; {sec.target('k-means >= 10x scikit-learn', ratio >= 10, f'{ratio:.2f}x')}" if row is ours[0] else "")
            + f"; objective {objective[row.label] / objective[sk.label]:.3f} of scikit-learn's"
        )
    sec.notes += [
        f"objective = sum of squared distances to the nearest centroid over all {n:,} rows "
        f"(scikit-learn: {objective[sk.label]:.1f}, after all {iters} iterations: tol=0)",
        "scikit-learn starts from random rows (init='random'), its cheapest start; ICE's times include its "
        "k-means++ seeding, drawing its sample and the final assignment of every row",
        "two rounds, one side after the other; each ratio compares the best time of each side",
        f"not timed: the first call of the assignment kernel in this process (numba compiles it or loads "
        f"it from its cache), {warm:.2f} s on 10,000 rows",
    ]


def bench_knn(args, n: int, sec: Section) -> None:
    import faiss

    from embeddings.cluster import build_index

    k, queries = 50, 20 if args.dry_run else 50 if args.quick else 300
    data = clustered_embeddings(n + queries, 64, seed=2)
    emb, qs = data[:n], data[n:]
    sec.title = f"Speed: nearest neighbours, k={k} over {n:,} x 64 embeddings, single queries, {today()}"
    row, index = measure("build_index", n, "pt", build_index, emb, sample=False)
    kind = type(index).__name__ + (f" ({index.nlist} lists, nprobe {index.nprobe})" if hasattr(index, "nprobe") else "")
    row.label = f"build_index: {kind}"
    flat = faiss.IndexFlatIP(emb.shape[1])
    flat.add(emb)
    sec.rows.append(row)

    def numpy_search(q):
        s = emb @ q
        top = np.argpartition(-s, k)[:k]
        return top[np.argsort(-s[top])]

    def faiss_search(idx, q, threads=None):
        with faiss_threads(threads):
            return idx.search(q[None], k)[1][0]

    searches = {
        f"ICE's index ({kind})": lambda q: faiss_search(index, q),
        "faiss IndexFlatIP, exact": lambda q: faiss_search(flat, q),
        "faiss IndexFlatIP, exact, 1 OpenMP thread": lambda q: faiss_search(flat, q, 1),
        "numpy brute force (matmul + argpartition)": numpy_search,
    }
    for q in qs[:5]:  # warm-up
        [fn(q) for fn in searches.values()]
    lat = {label: [] for label in searches}
    recall = {label: [] for label in searches}
    with PeakRSS(sample=False) as mem:  # no sampler thread beside the timed queries
        for q in qs:  # interleaved, so that all see the same machine
            found = {}
            for label, fn in searches.items():
                t0 = time.perf_counter()
                found[label] = fn(q)
                lat[label].append(time.perf_counter() - t0)
            exact = set(found[label].tolist())  # numpy's, the last
            for label in searches:
                recall[label].append(len(exact & set(found[label].tolist())) / k)
    numpy_p50 = np.percentile(lat[label], 50)
    for label, v in lat.items():
        sec.rows.append(Row(f"{label}, 1 query", sum(v), queries, "query", mem.gib))
        p50, p95 = np.percentile(v, [50, 95]) * 1000
        sec.notes.append(
            f"{label}: p50 {p50:.1f} ms, p95 **{p95:.1f} ms**, recall@{k} {np.mean(recall[label]):.3f}"
            + (
                f"; {numpy_p50 * 1000 / p50:.1f}x the speed of numpy at p50; target p95 <= 50 ms: {verdict(p95 <= 50)}"
                if label.startswith(("ICE", "faiss"))
                else ""
            )
        )
        if label.startswith("ICE"):
            sec.target("nearest neighbours p95 <= 50 ms", p95 <= 50, f"{p95:.1f} ms")
    sec.notes.append(f"{queries} queries, each searched by all four in turn; recall against numpy's exact answer")


# --- command line -----------------------------------------------------------------------

RUNNERS = {
    "decode": bench_decode,
    "train": bench_train,
    "embed": bench_embed,
    "kmeans": bench_kmeans,
    "knn": bench_knn,
    "umap": bench_umap,
    "scale": bench_scale,
    "map": bench_map,
}


def command(args, stage: str) -> str:
    """The command that reruns just this stage with these settings."""
    parts = ["python -m benchmarks.speed --stage", stage]
    parts += [f"--n {args.n}"] if args.n else []
    parts += ["--dry-run"] if args.dry_run else []
    parts += ["--quick"] if args.quick else []
    parts += [f"--data {args.data}"] if args.data and stage in ("decode", "scale") else []
    parts += ["--cold"] if args.cold and stage == "decode" else []
    parts += [f"--epochs {args.epochs}"] if args.epochs and stage == "scale" else []
    parts += [f"--device {args.device}"] if args.device != "auto" and stage in ("train", "embed") else []
    parts += [f"--umap-timeout {args.umap_timeout:g}"] if stage == "umap" else []
    return " ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[5:16]),
    )
    p.add_argument(
        "--stage",
        choices=[*STAGES, "scale", "map", "all"],
        default="all",
        help="one stage, or all (every stage but scale and map; default)",
    )
    p.add_argument("--n", type=int, help="points or images instead of the issue's size (umap: one size)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, seconds in all; records nothing unless --record")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the ratio benchmarks and the first map at reduced sizes (minutes in all), then each target "
        "met or missed on this CPU; records nothing unless --record",
    )
    p.add_argument("--data", type=Path, help="decode, scale: a folder of images instead of CIFAR-10 / generated ones")
    p.add_argument(
        "--cold",
        action="store_true",
        help="decode: drop the files from the page cache before each side, as on a disk not read lately",
    )
    p.add_argument("--epochs", type=int, help="scale: train this many epochs instead of --fast's")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="train, embed (default: auto)")
    p.add_argument(
        "--umap-timeout",
        type=float,
        default=1800,
        help="stop the full UMAP fit after this many seconds and report a lower bound (default: 1800)",
    )
    p.add_argument(
        "--record", type=Path, help="append the results to this Markdown file (default: benchmarks/results/speed.jsonl)"
    )
    p.add_argument("--no-record", action="store_true", help="print only")
    p.add_argument("--full-umap-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1:
        p.error(f"--n {args.n}: must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs {args.epochs}: must be at least 1")
    if args.quick and args.dry_run:
        p.error("--quick and --dry-run: choose one")
    return args


def main(argv: list[str] | None = None) -> list[Section]:
    args = parse_args(argv)
    if args.full_umap_child:
        n, seed, out = args.full_umap_child
        full_umap(int(n), int(seed), out)
        return []
    trial = args.dry_run or args.quick
    record = None if args.no_record or (trial and not args.record) else (args.record or "results")
    sizes = DRY if args.dry_run else QUICK if args.quick else SIZES
    done = []
    load = os.getloadavg()[0]
    for stage in (QUICK_STAGES if args.quick else STAGES) if args.stage == "all" else (args.stage,):
        size = args.n or sizes[stage]
        size = (size,) if stage == "umap" and args.n else size
        sec = Section(stage, command(args, stage))
        RUNNERS[stage](args, size, sec)
        print(f"\n### {sec.title}\n\n{sec.body()}\n", flush=True)
        if record:
            path = None if record == "results" else record
            append_section(sec.title, sec.body(), path, figures=[] if path else figures(args, sec))
        done.append(sec)
    if args.quick:
        title, body = quick_summary(args, done, load)
        print(f"\n### {title}\n\n{body}\n", flush=True)
        if record:
            append_section(title, body, None if record == "results" else record)
    return done


# BENCHMARKS.md's row for each target of a full-size run: (its figure, its target)
FIGURES = {
    "k-means": ("k-means, 1M x 64, K=100, 20 iterations, vs scikit-learn", ">= 10x"),
    "decode": ("decode 60k CIFAR-10 JPEGs to 32x32 (page cache), vs a Pillow loop", ">= 1.8x"),
    "decode --cold": ("decode 60k CIFAR-10 JPEGs from disk, vs a Pillow loop", ">= 1.8x"),
    "UMAP at 200,000": ("UMAP to 2-D, 200k, vs umap.UMAP(): 10-NN kept, speed-up", "kept >= 0.9 at >= 1.5x"),
    "UMAP at 1,000,000": ("UMAP to 2-D, 1M, vs umap.UMAP(): 10-NN kept, speed-up", "kept >= 0.9 at >= 5x"),
    "nearest neighbours": ("nearest neighbours, 1M, k=50, one query: p95", "<= 50 ms"),
    "first map at 1,000,000": ("first map at 1M points, drawn in headless Chromium (median)", "<= 5 s"),
}


def figures(args, sec: Section) -> list[dict]:
    """The BENCHMARKS.md rows that a section's targets give, at the full sizes only."""
    if args.dry_run or args.quick:
        return []
    rows = []
    for what, met, measured in sec.targets:
        key = next((k for k in FIGURES if what.startswith(k.replace(" --cold", ""))), None)
        if key == "decode" and args.cold:
            key = "decode --cold"
        if key and (not key.startswith("decode") or "decode 60,000 " in sec.title):
            figure, target = FIGURES[key]
            group = "explorer" if key.startswith("first map") else "speed"
            rows.append({"group": group, "figure": figure, "value": measured, "target": target, "met": met})
    return rows


def quick_summary(args, done: list[Section], load: float) -> tuple[str, str]:
    """The title and body of --quick's summary: each target met or missed, on this CPU."""
    lines = [
        f"- command: `python -m benchmarks.speed --stage {args.stage} --quick`",
        f"- machine: {machine()} at the end, {load:.1f} at the start",
        f"- date: {today()}",
        "",
    ]
    lines += [f"- {what}: {verdict(met)} ({measured})" for sec in done for what, met, measured in sec.targets]
    lines += [
        "- reduced sizes: " + "; ".join(sec.title.split(": ", 1)[-1].rsplit(", ", 1)[0] for sec in done),
        "- each figure ran once or twice on a machine that may be busy; BENCHMARKS.md keeps the full runs",
    ]
    return f"Quick check: each target on this CPU, {today()}", "\n".join(lines)


if __name__ == "__main__":
    main()
