"""Write N small generated images with clustered content, for the scale runs of `ice embed`.

    python -m benchmarks.gen_images N OUT_DIR [--size 32] [--format jpg|png] [--classes 10]
                                    [--vary both|colour|shape] [--by-class] [--seed 0] [--first I]
                                    [--workers W]

Each image belongs to one of `--classes` kinds (a shape and a pair of colours per kind)
drawn at a random place and scale, with colour jitter and noise, so the set has clusters
to find. `--vary colour` keeps each kind's colours but draws every image's shape at random,
so only colour tells the kinds apart; `--vary shape` keeps each kind's shape but draws every
image's colours at random. Files go to OUT_DIR/<shard>/c<class>_<number>.<format>, 1,000 per
shard folder, or with `--by-class` to OUT_DIR/c<class>/<shard>-<number>.<format> (a folder
per class, as labelled sets are laid out). The same N, size, classes, vary and seed give the
same images, whatever the number of workers. `--first I` writes images I to I+N-1 of the set
instead of 0 to N-1: other images of the same kinds, to add to a run of the first I.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARD = 1000  # images per folder and per task
VARY = ("both", "colour", "shape")  # what tells the kinds apart
SHAPES = ("disc", "square", "hstripes", "vstripes", "gradient", "checker", "ring", "cross", "triangle", "dots")


def palette(classes: int, seed: int) -> np.ndarray:
    """(classes, 2, 3) float background and foreground colours, fixed by the seed."""
    return np.random.default_rng([seed, 10_007]).uniform(0, 255, size=(classes, 2, 3))


def draw(kind: int, colours: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 image of shape `kind` (modulo the shapes) in `colours` (2, 3):
    background and foreground, swapped where `kind` is past the last shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = rng.uniform(0.25, 0.75, size=2)
    r = rng.uniform(0.15, 0.35)
    freq = rng.uniform(3, 6)
    shape = SHAPES[kind % len(SHAPES)]
    if shape == "disc":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    elif shape == "square":
        mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
    elif shape == "hstripes":
        mask = np.sin(yy * freq * 2 * np.pi + cx * 6) > 0
    elif shape == "vstripes":
        mask = np.sin(xx * freq * 2 * np.pi + cy * 6) > 0
    elif shape == "gradient":
        mask = rng.uniform(0, 1, size=(size, size)) < (xx + yy) / 2
    elif shape == "checker":
        mask = (np.floor(xx * freq) + np.floor(yy * freq)) % 2 == 0
    elif shape == "ring":
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        mask = abs(d - r) < 0.06
    elif shape == "cross":
        mask = (abs(xx - cx) < r / 3) | (abs(yy - cy) < r / 3)
    elif shape == "triangle":
        mask = (yy > cy - r) & (abs(xx - cx) < (yy - cy + r) / 2)
    else:
        mask = (np.sin(xx * freq * 2 * np.pi) * np.sin(yy * freq * 2 * np.pi)) > 0.5
    bg, fg = colours * rng.uniform(0.8, 1.2, size=(2, 1))
    if kind >= len(SHAPES):  # more classes than shapes: a shape recurs with other colours
        bg, fg = fg, bg
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_shard(task: tuple) -> int:
    shard, end, out, size, fmt, classes, seed, vary, by_class = task
    rng = np.random.default_rng([seed, shard])
    colours = palette(classes, seed)
    folder = Path(out) / f"{shard:04d}"
    if not by_class:
        folder.mkdir(parents=True, exist_ok=True)
    start = shard * SHARD
    for i in range(start, min(start + SHARD, end)):
        kind = int(rng.integers(classes))
        shape, pair = kind, colours[kind]
        if vary == "colour":  # any of the shapes, in the kind's colours unswapped
            shape = int(rng.integers(len(SHAPES)))
        elif vary == "shape":
            pair = rng.uniform(0, 255, size=(2, 3))
        img = Image.fromarray(draw(shape, pair, size, rng))
        if by_class:
            path = Path(out) / f"c{kind}" / f"{shard:04d}-{i:07d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            path = folder / f"c{kind}_{i:07d}.{fmt}"
        if fmt == "png":
            img.save(path, compress_level=1)
        else:
            img.save(path, quality=90)
    return min(start + SHARD, end) - start


def generate(
    n: int,
    out: Path,
    size: int = 32,
    fmt: str = "jpg",
    classes: int = 10,
    seed: int = 0,
    workers: int | None = None,
    quiet: bool = False,
    vary: str = "both",
    by_class: bool = False,
    first: int = 0,
) -> Path:
    """Write images first to first + n - 1 under `out`; return `out`."""
    if n < 1:
        raise ValueError(f"N {n}: must be at least 1")
    if first < 0 or first % SHARD:
        raise ValueError(f"--first {first}: must be 0 or a positive multiple of {SHARD:,}")
    if not 8 <= size <= 1024:
        raise ValueError(f"--size {size}: must be between 8 and 1024")
    if classes < 1:
        raise ValueError(f"--classes {classes}: must be at least 1")
    if vary not in VARY:
        raise ValueError(f"--vary {vary}: must be {', '.join(VARY[:-1])} or {VARY[-1]}")
    out.mkdir(parents=True, exist_ok=True)
    end = first + n
    shards = range(first // SHARD, -(-end // SHARD))
    tasks = [(s, end, str(out), size, fmt, classes, seed, vary, by_class) for s in shards]
    workers = workers or os.cpu_count() or 1
    from tqdm import tqdm

    with tqdm(total=n, desc="images", unit="img", disable=quiet) as bar:
        if workers == 1 or len(tasks) == 1:
            for t in tasks:
                bar.update(write_shard(t))
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                for done in pool.imap_unordered(write_shard, tasks):
                    bar.update(done)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gen_images", description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, metavar="N", help="how many images")
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="folder to write (created)")
    p.add_argument("--size", type=int, default=32, help="side in pixels (default: 32)")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg", help="file format (default: jpg)")
    p.add_argument("--classes", type=int, default=10, help="kinds of image, the clusters (default: 10)")
    p.add_argument(
        "--vary",
        choices=VARY,
        default="both",
        help="what tells the kinds apart: shape and colour (default), colour only or shape only",
    )
    p.add_argument("--by-class", action="store_true", help="a folder per class instead of shard folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, default=0, metavar="I", help="number of the first image (default: 0)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        generate(
            args.n,
            args.out,
            args.size,
            args.format,
            args.classes,
            args.seed,
            args.workers,
            vary=args.vary,
            by_class=args.by_class,
            first=args.first,
        )
    except ValueError as e:
        p.error(str(e))
    seconds = time.perf_counter() - t0
    print(
        f"wrote {args.n} {args.size}x{args.size} {args.format} images to {args.out} in {seconds:.1f} s "
        f"({args.n / seconds:.0f} images/s)"
    )


if __name__ == "__main__":
    main()
