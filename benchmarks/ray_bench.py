"""The decode stage on Ray Data against the local engine, side by side on the same images.

    python -m benchmarks.ray_bench [--images FOLDER] [--n 100000] [--repeat 3] [--no-record]
                                   [--job ENCODER_RUN [--object-store-mb MB]]

Without --images, N generated 32x32 JPEGs (benchmarks.gen_images), written once to the data
cache. Each repeat decodes them with the local engine (embeddings.images.decode_all, its
worker processes) and with the Ray engine (embeddings.ray_engine.decode_all_ray, on a local
Ray started once, before the first timing, on this machine's cores), in alternating order,
and checks that both wrote the same pixels. Prints each pair, the median ratio, and the
peak resident memory of this process (the driver; Ray's own processes are not counted).

With --job, the whole job instead: `ice embed IMAGES --encoder-from ENCODER_RUN` (no training,
so that the stages around decoding are timed at their real size) with `--engine local` and
`--engine ray`, each in a process of its own, in alternating order, with the peak memory of
each process tree (Ray's processes included); --object-store-mb caps the Ray engine's object
store.

With --idle, what a local Ray holds at rest, started as `--engine ray` starts one, before any
work: the proportional set size of each of Ray's own processes (not the process that started
it), 10 s after the start. It is the floor under the Ray engine's memory.

With --train RUN, the training stage instead, on RUN's pixels: embeddings.train.train in this
process against `--train-workers` Ray Train workers (embeddings.ray_engine.train_ray, Ray Train
starting included), for --epochs epochs of --recipe, in alternating order; prints the seconds
and the final losses of both.

    python -m benchmarks.ray_bench --train RUN [--train-workers 2] [--epochs 2] [--recipe contrastive-small]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA_CACHE, PeakRSS, append_section, build_once, machine, today
from embeddings.images import decode_all, find_images
from embeddings.ray_engine import decode_all_ray, start_ray
from ice.run_dir import PIXELS, load_rows, open_rows

TARGET = 1.25  # the Ray engine's time over the local engine's


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ray_bench", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, help="a folder of images (default: N generated ones)")
    p.add_argument("--n", type=int, default=100_000, help="generated images without --images (default: 100,000)")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="pairs of timings (default: 3)")
    p.add_argument("--no-record", dest="record", action="store_false", help="print only")
    p.add_argument("--job", type=Path, metavar="ENCODER_RUN", help="time the whole ice embed, with this run's encoder")
    p.add_argument("--object-store-mb", type=int, default=0, help="with --job: cap the Ray engine's object store (MiB)")
    p.add_argument("--idle", action="store_true", help="the memory of a local Ray at rest, as ICE starts it")
    p.add_argument("--train", type=Path, metavar="RUN", help="time the training stage on this run's pixels")
    p.add_argument("--train-workers", type=int, default=2, help="with --train: Ray Train workers (default: 2)")
    p.add_argument("--epochs", type=int, default=2, help="with --train: epochs (default: 2)")
    p.add_argument(
        "--recipe", default="contrastive-small", help="with --train: the recipe (default: contrastive-small)"
    )
    args = p.parse_args(argv)
    if args.idle:
        return idle(args)
    if args.train is not None:
        return train_pairs(args)
    given = args.images
    if args.images is None:
        from benchmarks.gen_images import generate

        args.images = build_once(DATA_CACHE / f"ray-bench-{args.n}", lambda out: generate(args.n, out, quiet=True))
    if args.job is not None:
        return whole_job(args, given)
    paths = find_images(args.images)
    work = DATA_CACHE / "ray-bench-work"
    ray = start_ray()
    cores = int(ray.cluster_resources().get("CPU", 0))
    settings = {"size": 32, "max_pixels": 180_000_000}

    def local() -> float:
        t0 = time.perf_counter()
        decode_all(
            args.images, paths, workers=2, pixels_path=work / "local.npy", skipped_path=work / "l.csv", **settings
        )
        return time.perf_counter() - t0

    def on_ray() -> float:
        t0 = time.perf_counter()
        decode_all_ray(args.images, paths, pixels_path=work / "ray", skipped_path=work / "r.csv", **settings)
        return time.perf_counter() - t0

    def fresh() -> None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)

    def same_pixels() -> None:
        if not np.array_equal(np.load(work / "local.npy", mmap_mode="r"), np.asarray(load_rows(work / "ray"))):
            raise RuntimeError("the two engines decoded different pixels")

    pairs = alternate(args.repeat, local, on_ray, fresh, same_pixels, lambda a, b: f"local {a:.1f} s, ray {b:.1f} s")
    local_s, ray_s = median_pair(pairs)
    ratio = ray_s / local_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    command = "python -m benchmarks.ray_bench" + (f" --images {given}" if given else "")
    command += f" --n {args.n}" if args.n != 100_000 and not given else ""
    command += f" --repeat {args.repeat}" if args.repeat != 3 else ""
    body = "\n".join(
        [
            f"- command: `{command}`",
            f"- machine: {machine()}; date: {today()}; Ray {ray.__version__} with {cores} CPUs, local",
            f"- images: {len(paths):,} of {args.images} (32x32 JPEG), decoded at 32 px",
            f"- decode stage: local engine (2 worker processes) {local_s:.1f} s, Ray engine {ray_s:.1f} s: "
            f"**{ratio:.2f}x**; the same pixels (the target, <= {TARGET}x, is for the whole job: --job)",
            all_pairs(pairs),
            f"- this process's peak resident memory: {peak:.2f} GiB (Ray's raylet, object store and workers "
            "are other processes, not counted)",
        ]
    )
    title = f"Ray engine: the decode stage on {len(paths):,} images, {today()}"
    figure = f"decode stage on Ray Data, {len(paths):,} images: time over the local engine's"
    return publish(args, work, title, body, figure, ray_s, local_s, pairs)


def whole_job(args, given) -> dict:
    """`ice embed` with each engine, side by side: wall seconds, and the decode stage's."""
    import json
    import subprocess
    import sys

    work = DATA_CACHE / "ray-bench-work"

    store = args.object_store_mb
    plain = "import sys\nfrom ice.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    capped = plain
    if store:  # the Ray engine's own local Ray, with its object store capped
        capped = (
            "import ray\nray.init(address='local', object_store_memory=" + str(store * 2**20) + ", "
            "include_dashboard=False, log_to_driver=False, configure_logging=False)\n" + plain
        )

    def run(engine: str) -> tuple[float, float, float]:
        out = work / engine
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-c", capped if engine == "ray" else plain, "embed", str(args.images)]
        cmd += ["--out", str(out)]
        cmd += ["--encoder-from", str(args.job), "--engine", engine]
        t0 = time.perf_counter()
        with PeakRSS(own=False) as mem:  # the command's processes: not this one, which holds torch
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode:
            raise RuntimeError(f"ice embed --engine {engine} failed: {done.stderr.decode()[-2000:]}")
        wall = time.perf_counter() - t0
        manifest = json.loads((out / "manifest.json").read_text())
        return wall, manifest["stage_seconds"]["decode"], mem.gib

    def same_pixels() -> None:
        if not np.array_equal(open_rows(work / "local", PIXELS), np.asarray(open_rows(work / "ray", PIXELS))):
            raise RuntimeError("the two engines decoded different pixels")

    pairs = alternate(
        args.repeat,
        lambda: run("local"),
        lambda: run("ray"),
        check=same_pixels,
        say=lambda a, b: (
            f"local {a[0]:.1f} s (decode {a[1]:.1f}, peak {a[2]:.2f} GiB), "
            f"ray {b[0]:.1f} s (decode {b[1]:.1f}, peak {b[2]:.2f} GiB)"
        ),
    )
    (local_s, local_d, _), (ray_s, ray_d, _) = median_pair(pairs, first)
    local_peak, ray_peak = max(a[2] for a, _ in pairs), max(b[2] for _, b in pairs)
    ratio = ray_s / local_s
    n = len(np.load(work / "local" / PIXELS, mmap_mode="r"))
    command = f"python -m benchmarks.ray_bench --job {args.job}" + (f" --images {given}" if given else "")
    command += f" --repeat {args.repeat}" if args.repeat != 3 else ""
    command += f" --object-store-mb {store}" if store else ""
    body = "\n".join(
        [
            f"- command: `{command}`",
            f"- machine: {machine()}; date: {today()}"
            + (f"; the Ray engine's object store capped at {store} MiB" if store else ""),
            f"- images: {n:,} of {args.images}; `ice embed --encoder-from {args.job}` (no training), each engine "
            "in a process of its own, the Ray engine starting a local Ray on this machine's cores",
            f"- the whole job: local {local_s:.1f} s, Ray {ray_s:.1f} s: **{ratio:.2f}x** (target <= {TARGET}x: "
            f"{'met' if ratio <= TARGET else '**missed**'}); the decode stage: {local_d:.1f} s against {ray_d:.1f} s; "
            "the same pixels",
            all_pairs(pairs, first),
            f"- memory, the peak of the command's process tree's proportional set size (benchmarks.common.PeakRSS: "
            f"each shared page split among the processes that map it; Ray's raylet, object store and workers are "
            f"in the tree): local "
            f"{local_peak:.2f} GiB, Ray {ray_peak:.2f} GiB, the largest of the repeats",
        ]
    )
    title = f"Ray engine: ice embed on {n:,} images, {today()}"
    figure = f"ice embed --engine ray on {n:,} images (no training): time over --engine local"
    memory = f"ice embed --engine ray on {n:,} images (no training): peak memory over --engine local"
    if store:
        title += f", object store {store} MiB"
        figure += f", object store {store} MiB"
        memory += f", object store {store} MiB"
    also = {
        "figure": memory,
        "value": f"{ray_peak / local_peak:.2f}x ({ray_peak:.2f} GiB against {local_peak:.2f} GiB)",
        "target": "<= 1x",
        "met": ray_peak <= local_peak,
    }
    return publish(
        args, work, title, body, figure, ray_s, local_s, pairs, target=f"<= {TARGET}x", met=ratio <= TARGET, also=[also]
    )


def train_pairs(args) -> dict:
    """The training stage in this process and on Ray Train workers, side by side."""
    import torch

    from embeddings.config import Config
    from embeddings.ray_engine import train_ray
    from embeddings.train import train
    from ice import run_dir as rd

    manifest = rd.load_manifest(args.train)
    cfg = Config.from_dict(manifest["config"]).replace(
        epochs=args.epochs, recipe=args.recipe, engine="ray", train_workers=args.train_workers
    )
    pixels = args.train / rd.PIXELS
    n = len(np.load(pixels, mmap_mode="r"))
    work = DATA_CACHE / "ray-bench-work"
    ray = start_ray()
    cores = int(ray.cluster_resources().get("CPU", 0))

    def local() -> tuple[float, float]:
        t0 = time.perf_counter()
        _, loss = train(work / "local", pixels, cfg.replace(engine="local", train_workers=0), torch.device("cpu"))
        return time.perf_counter() - t0, loss

    def on_ray() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = train_ray(work / "ray", pixels, cfg, resume=False)
        return time.perf_counter() - t0, loss

    def fresh() -> None:
        shutil.rmtree(work, ignore_errors=True)
        (work / "local").mkdir(parents=True)
        (work / "ray").mkdir(parents=True)

    def say(a, b) -> str:
        return f"local {a[0]:.1f} s (loss {a[1]:.4f}), ray {b[0]:.1f} s (loss {b[1]:.4f})"

    pairs = alternate(args.repeat, local, on_ray, fresh, say=say)
    (local_s, local_loss), (ray_s, ray_loss) = median_pair(pairs, first)
    ratio = ray_s / local_s
    command = f"python -m benchmarks.ray_bench --train {args.train}"
    command += f" --train-workers {args.train_workers}" if args.train_workers != 2 else ""
    command += f" --epochs {args.epochs}" if args.epochs != 2 else ""
    command += f" --recipe {args.recipe}" if args.recipe != "contrastive-small" else ""
    command += f" --repeat {args.repeat}" if args.repeat != 3 else ""
    body = "\n".join(
        [
            f"- command: `{command}`",
            f"- machine: {machine()}; date: {today()}; Ray {ray.__version__} with {cores} CPUs, local",
            f"- {n:,} images of {args.train} at {cfg.image_size} px, {args.recipe}, {args.epochs} epochs of batches "
            f"of {cfg.resolved().batch_size}",
            f"- training: this process {local_s:.1f} s ({n * args.epochs / local_s:,.0f} images/s, final loss "
            f"{local_loss:.4f}); {args.train_workers} Ray Train workers {ray_s:.1f} s "
            f"({n * args.epochs / ray_s:,.0f} images/s, Ray Train's start included, final loss {ray_loss:.4f}): "
            f"**{ratio:.2f}x**",
            all_pairs(pairs, first),
        ]
    )
    title = f"Ray engine: training on {args.train_workers} Ray Train workers, {n:,} images, {today()}"
    figure = f"training, {args.train_workers} Ray Train workers, {n:,} images: time over one process"
    return publish(args, work, title, body, figure, ray_s, local_s, pairs)


def first(timing):
    """The seconds of a timing that is (seconds, something else)."""
    return timing[0]


def alternate(repeat: int, local, on_ray, fresh=None, check=None, say=None) -> list[tuple]:
    """`repeat` pairs (local(), on_ray()), the one that runs first alternating; fresh() before
    each pair, check() after it, say(a, b) printed."""
    pairs = []
    for i in range(repeat):
        if fresh is not None:
            fresh()
        if i % 2 == 0:
            a, b = local(), on_ray()
        else:
            b, a = on_ray(), local()
        if check is not None:
            check()
        pairs.append((a, b))
        print(f"repeat {i + 1}: {say(a, b)}", flush=True)
    return pairs


def median_pair(pairs: list[tuple], seconds=lambda t: t) -> tuple:
    """The pair of the median ratio, Ray's seconds over local's."""
    return pairs[int(np.argsort([seconds(b) / seconds(a) for a, b in pairs])[len(pairs) // 2])]


def all_pairs(pairs: list[tuple], seconds=lambda t: t) -> str:
    return f"- of {len(pairs)} pairs (in alternating order), the median ratio above; all: " + ", ".join(
        f"{seconds(a):.1f}/{seconds(b):.1f} s = {seconds(b) / seconds(a):.2f}x" for a, b in pairs
    )


def idle(args, settle: float = 10.0) -> dict:
    """Start a local Ray in a process of its own, through embeddings.ray_engine.start_ray, and
    measure the PSS of each process it started once `settle` seconds have passed."""
    import subprocess
    import sys

    from benchmarks.common import _cmdline, _descendants, _pss_kib

    script = "import sys\nfrom embeddings.ray_engine import start_ray\nstart_ray()\nprint('up', flush=True)\n"
    script += "sys.stdin.read()\n"  # Ray runs until this process's input is closed
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "up":
            raise RuntimeError("the local Ray did not start")
        time.sleep(settle)
        rows = sorted(
            ((_pss_kib(pid)[0] / 2**10, _process_name(_cmdline(pid))) for pid in _descendants(child.pid)), reverse=True
        )
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    total = sum(mib for mib, _ in rows) / 2**10
    body = "\n".join(
        [
            "- command: `python -m benchmarks.ray_bench --idle`",
            f"- machine: {machine()}; date: {today()}; {settle:.0f} s after the start, no work given",
            f"- Ray's own processes: **{total:.2f} GiB** (PSS) in {len(rows)} processes: "
            + ", ".join(f"{name} {mib:.0f} MiB" for mib, name in rows),
        ]
    )
    print(body)
    if args.record:
        figure = "a local Ray at rest, as --engine ray starts it: memory of its own processes (PSS)"
        value = f"{total:.2f} GiB in {len(rows)} processes"
        append_section(
            f"Ray engine: a local Ray at rest, {today()}",
            body,
            figures=[{"group": "scale", "figure": figure, "value": value, "target": "", "met": None}],
        )
    return {"gib": total, "processes": rows}


def _process_name(cmdline: bytes) -> str:
    """A Ray process's short name: its title (ray::IDLE), its program's, or its Python script's."""
    words = cmdline.decode(errors="replace").split("\0")
    if words[0].startswith("ray::"):
        return words[0].strip()
    name = words[0].rsplit("/", 1)[-1]
    script = next((w for w in words[1:] if w.endswith(".py")), None)
    return script.rsplit("/", 1)[-1] if name.startswith("python") and script else name


def publish(
    args, work: Path, title: str, body: str, figure: str, ray_s, local_s, pairs, target="", met=None, also=()
) -> dict:
    """Print the section, record it with its figure, Ray's time over local's, and the figures in
    `also` (unless --no-record), and clear `work`."""
    print(f"\n### {title}\n\n{body}\n", flush=True)
    ratio = ray_s / local_s
    if args.record:
        value = f"{ratio:.2f}x ({ray_s:.1f} s against {local_s:.1f} s)"
        figures = [{"group": "scale", "figure": figure, "value": value, "target": target, "met": met}]
        figures += [{"group": "scale", **extra} for extra in also]
        append_section(title, body, figures=figures)
    shutil.rmtree(work, ignore_errors=True)
    return {"ratio": ratio, "pairs": pairs}


if __name__ == "__main__":
    main()
