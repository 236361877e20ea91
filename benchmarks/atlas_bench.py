"""The image atlas and the density image: the server's time and bytes to draw a view of a large map.

    python -m benchmarks.atlas_bench [--n 1000000] [--size 32] [--width 1000 --height 700] [--no-record]

A generated map of --n points in 20 clusters, each image a --size square of random pixels
(the worst case for the WebP's bytes), in a memory-mapped pixels.npy as a run keeps it. Views
are zoomed in on one place, by halves, until they hold few enough pictures; each row is the median of 5
draws of that view: finding the images in it, drawing them and encoding the WebP.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import append_section, machine, today
from explorer.atlas import ATLAS_MAX, in_view, render, to_data_uri
from explorer.figures import cluster_colors


def generated_map(n: int, size: int, folder: Path, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, (20, 2))
    cluster = rng.integers(0, 20, n).astype(np.int32)
    xy = (centres[cluster] + rng.normal(0, 1.5, (n, 2))).astype(np.float32)
    pixels = np.lib.format.open_memmap(folder / "pixels.npy", "w+", np.uint8, (n, size, size, 3))
    block = rng.integers(0, 256, (4096, size, size, 3), dtype=np.uint8)
    for start in range(0, n, len(block)):
        pixels[start : start + len(block)] = block[: n - start]
    pixels.flush()
    return xy[:, 0], xy[:, 1], np.load(folder / "pixels.npy", mmap_mode="r"), cluster


def measure(x, y, pixels, cluster, width: int, height: int, repeats: int = 5) -> list[dict]:
    colors = cluster_colors(int(cluster.max()) + 1)
    cx, cy = float(np.median(x)), float(np.median(y))

    def around(span):
        return {"x": [cx - span, cx + span], "y": [cy - span * height / width, cy + span * height / width]} | {
            "w": width,
            "h": height,
        }

    spans = [float(x.max() - x.min())]  # the whole map, then halved until few enough, then thrice more
    while len(in_view(x, y, around(spans[-1]), cluster)) > ATLAS_MAX:
        spans.append(spans[-1] / 2)
    spans = [spans[0], *([spans[-2]] if len(spans) > 2 else []), *(spans[-1] / 2**i for i in range(4))]
    rows = []
    for span in spans:
        view = around(span)
        draw, encode, size, count = [], [], 0, 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            image, count = render(x, y, pixels, cluster, colors, view)
            t1 = time.perf_counter()
            size = len(to_data_uri(image)) if image is not None else 0
            draw.append(t1 - t0)
            encode.append(time.perf_counter() - t1)
        rows.append(
            {"pictures": count, "drawn": image is not None, "draw": np.median(draw), "encode": np.median(encode)}
            | {"bytes": size}
        )
    return rows


def measure_density(x, y, cluster, width: int, height: int, repeats: int = 5) -> dict:
    """Seconds to build the density's points frame once, and the median of `repeats` renders
    and WebP encodings of the whole map's view, after one untimed render (datashader compiles)."""
    from explorer.density import points_frame
    from explorer.density import render as render_density

    colors = cluster_colors(int(cluster.max()) + 1)
    t0 = time.perf_counter()
    frame = points_frame(x, y, cluster, colors)
    build = time.perf_counter() - t0
    view = {"x": [float(x.min()), float(x.max())], "y": [float(y.min()), float(y.max())], "w": width, "h": height}
    render_density(frame, view)
    draw, encode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        image = render_density(frame, view)
        t1 = time.perf_counter()
        to_data_uri(image)
        draw.append(t1 - t0)
        encode.append(time.perf_counter() - t1)
    return {"build": build, "draw": float(np.median(draw)), "encode": float(np.median(encode))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.atlas_bench", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--height", type=int, default=700)
    p.add_argument("--no-record", dest="record", action="store_false")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        x, y, pixels, cluster = generated_map(args.n, args.size, Path(tmp))
        rows = measure(x, y, pixels, cluster, args.width, args.height)
        dens = measure_density(x, y, cluster, args.width, args.height)
    command = f"python -m benchmarks.atlas_bench --n {args.n} --size {args.size}"
    lines = [
        f"- command: `{command}`",
        f"- machine: {machine()}; date: {today()}",
        f"- {args.n:,} points, {args.size} px images, a {args.width}x{args.height} px map; "
        f"pictures drawn at {ATLAS_MAX:,} or fewer in the view",
        "",
        "| images in view | drawn | find + draw ms | WebP ms | bytes sent |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['pictures']:,} | {'yes' if r['drawn'] else 'no (points)'} | {1000 * r['draw']:.1f} | "
            f"{1000 * r['encode']:.1f} | {r['bytes']:,} |"
        )
    lines += [
        "",
        f"- density image of the whole map (explorer/density.py, datashader): points frame built once in "
        f"{1000 * dens['build']:.0f} ms; each view rendered in {1000 * dens['draw']:.0f} ms and encoded in "
        f"{1000 * dens['encode']:.0f} ms (medians of 5)",
    ]
    drawn = [r for r in rows if r["drawn"]]
    worst = max(drawn, key=lambda r: r["draw"] + r["encode"]) if drawn else None
    text = "\n".join(lines)
    print(text)
    if args.record and worst is not None:
        figures = [
            {
                "group": "explorer",
                "order": 9,
                "figure": f"image atlas at {args.n:,} points: server time for the view of the most pictures "
                f"({worst['pictures']:,})",
                "value": f"{1000 * (worst['draw'] + worst['encode']):.0f} ms, {worst['bytes'] / 1e6:.2f} MB",
                "target": "",
                "met": None,
            },
            {
                "group": "explorer",
                "order": 9,
                "figure": f"density image at {args.n:,} points: server time for the whole map's view",
                "value": f"{1000 * (dens['draw'] + dens['encode']):.0f} ms",
                "target": "",
                "met": None,
            },
        ]
        append_section(f"Image atlas: {args.n:,} points, {today()}", text, figures=figures)


if __name__ == "__main__":
    main()
