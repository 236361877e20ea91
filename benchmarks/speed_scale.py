"""`python -m benchmarks.speed --stage scale`: `ice embed` on N generated images, with the
time and the peak memory of each stage."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import DATA_CACHE, PeakRSS, Row, Section, Timer, build_once, cpu_seconds, today


def bench_scale(args, n: int, sec: Section) -> None:
    import resource

    from .gen_images import generate

    folder = (
        args.data
        or build_once(DATA_CACHE / f"generated-{n}", lambda built: generate(n, built / "images", quiet=True)) / "images"
    )
    # the dry run only proves the plumbing: one epoch at 16x16, no loader workers
    extra = ["--epochs", "1", "--image-size", "16", "--workers", "0", "--kmeans-restarts", "1"] if args.dry_run else []
    with tempfile.TemporaryDirectory(prefix="ice-scale-") as tmp:
        run_dir = Path(tmp, "run")
        budget = ["--epochs", str(args.epochs)] if args.epochs else ["--fast"]
        cmd = ["embed", str(folder), "--out", str(run_dir), *budget, *extra]
        shown = " ".join(["ice", *cmd]).replace(str(run_dir), "RUN_DIR")
        cpu = cpu_seconds()
        with PeakRSS() as mem, Timer() as t:
            finished = _run_watching(run_dir, [sys.executable, "-m", "ice.cli", *cmd])
        cpu = cpu_seconds() - cpu
        manifest = json.loads((run_dir / "manifest.json").read_text())
        disk = {f: (run_dir / f).stat().st_size / 2**30 for f in ("pixels.npy", "embeddings.npy", "index.faiss")}
    images = manifest["counts"]["images"]
    sec.title = f"Scale: `ice embed {' '.join(budget)}` on {images:,} generated images, {today()}"
    stage_rss = _stage_peaks(mem.samples, manifest["stage_seconds"], finished)
    stage_anon = _stage_peaks(mem.samples, manifest["stage_seconds"], finished, column=2)
    for stage, seconds in manifest["stage_seconds"].items():
        sec.rows.append(Row(f"{stage}", seconds, images, "img", stage_rss[stage]))
    sec.rows.append(Row("**total** (`ice embed` process, start to exit)", t.seconds, images, "img", mem.gib, cpu))
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    sec.notes += [
        f"`{shown}` (image_size {manifest['config']['image_size']}, epochs {manifest['config']['epochs']}, "
        f"K {manifest['clusters']} chosen automatically, device {manifest['device']})",
        f"peak memory: {mem.gib:.2f} GiB for `ice embed` and its DataLoader workers together (proportional set "
        f"size sampled every 50 ms: pages the forked workers share count once); {largest:.2f} GiB peak RSS of "
        "the largest single process; "
        "per-stage figures are read off the same samples, each stage's end seen in progress.json",
        f"of it not backed by files (anonymous and shared memory, which the kernel cannot drop; the rest is pages "
        f"of files, the libraries' code and the memory-mapped pixels.npy and embeddings, which it can reread): "
        f"peak {mem.anon_gib:.2f} GiB; by stage "
        + ", ".join(f"{stage} {gib:.2f}" for stage, gib in stage_anon.items()),
        "throughput = images in the set / the stage's seconds (training makes "
        f"{manifest['config']['epochs']} passes over them)",
        "on disk: " + ", ".join(f"{f} {g:.2f} GiB" for f, g in disk.items()),
    ]


def _run_watching(run_dir: Path, cmd: list[str]) -> dict[str, float]:
    """Run `ice embed`; return when (perf_counter) each stage appeared in its progress.json."""
    finished = {}
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        time.sleep(0.2)
        try:
            stages = json.loads((run_dir / "progress.json").read_text())["stages"]
        except (OSError, ValueError, KeyError):
            continue
        for stage in stages:
            finished.setdefault(stage, time.perf_counter())
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return finished


def _stage_peaks(
    samples: list[tuple[float, int, int]], stage_seconds: dict[str, float], finished: dict[str, float], column: int = 1
) -> dict[str, float]:
    """Peak of one column of PeakRSS.samples (1: the summed PSS, 2: its part not backed by
    files), in GiB, within each stage: from its end (seen in progress.json, within 0.2 s)
    back by its recorded seconds."""
    out = {}
    for stage, seconds in stage_seconds.items():
        stop = finished.get(stage, samples[-1][0] if samples else 0.0)
        inside = [s[column] for s in samples if stop - seconds - 0.2 <= s[0] <= stop]
        out[stage] = max(inside or [0]) / 2**20
    return out
