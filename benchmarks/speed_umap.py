"""`python -m benchmarks.speed --stage umap`: ICE's umap_reduce against a full
umap.UMAP().fit_transform on the same synthetic embeddings, with the share of each point's
10 nearest neighbours that each map keeps."""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import PeakRSS, Row, Section, Timer, clustered_embeddings, cpu_seconds, measure, today

KEPT_ROWS = 10_000  # rows whose 10-NN are compared: with 2,000 rows the share of one map moved by
# +-3% from one sample of rows to another, more than seeds or CPUs moved it (BENCHMARKS.md, 2026-12-04)


def neighbours(x: np.ndarray, rows: np.ndarray, k: int = 10) -> np.ndarray:
    """(len(rows), k) exact nearest rows of x[rows] in x, the row itself left out: a k-d tree in
    2-D, else a faiss flat index."""
    x = np.ascontiguousarray(x, dtype="float32")
    if x.shape[1] <= 3:
        from scipy.spatial import cKDTree

        _, ids = cKDTree(x).query(x[rows], k + 1)
    else:
        import faiss

        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        _, ids = index.search(x[rows], k + 1)
    return np.array([[j for j in r if j != row][:k] for r, row in zip(ids.tolist(), rows.tolist())])


def kept(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row's neighbours in `a` (rows, k) that are also among its neighbours in `b`."""
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]))


def knn_kept(high: np.ndarray, low: np.ndarray, rows: np.ndarray, k: int = 10) -> float:
    """Mean share of each sampled row's k nearest neighbours in `high` that are also among its
    k nearest in `low` (exact neighbours, the row itself left out)."""
    return kept(neighbours(high, rows, k), neighbours(low, rows, k))


WARM_UP = 4000  # points of the untimed UMAP run that compiles numba's functions


def full_umap(n: int, seed: int, out: str) -> None:
    """The baseline, what a user types; prints its seconds and peak RSS as JSON."""
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n > WARM_UP:  # compile the numba functions first, as bench_umap does for ICE
            umap.UMAP().fit_transform(clustered_embeddings(WARM_UP, 64, seed=seed + 1))
    x = clustered_embeddings(n, 64, seed=seed)
    cpu = cpu_seconds()
    with PeakRSS() as mem, Timer() as t, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xy = umap.UMAP().fit_transform(x)
    np.save(out, xy.astype(np.float32))
    print(json.dumps({"seconds": t.seconds, "rss_gib": mem.gib, "cpu": cpu_seconds() - cpu}))


def run_full_umap(n: int, seed: int, timeout: float, tmp: str) -> tuple[dict | None, np.ndarray | None]:
    """(seconds and peak RSS, the 2-D map) of the full fit; (None, None) when it ran out of time.
    Up to 200k points it runs in this process: the numba functions are compiled already."""
    out = str(Path(tmp, f"full-{n}.npy"))
    if n <= 200_000:
        import io

        with contextlib.redirect_stdout(io.StringIO()) as printed:
            full_umap(n, seed, out)
        return json.loads(printed.getvalue()), np.load(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.speed", "--full-umap-child", str(n), str(seed), out],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None, None
    if proc.returncode != 0:
        raise RuntimeError(f"the full UMAP fit on {n} points failed (exit {proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1]), np.load(out)


def bench_umap(args, sizes: tuple[int, ...], sec: Section) -> None:
    from embeddings.config import Config
    from embeddings.project import SEED_LAYOUT_ROWS, umap_reduce

    cfg = Config()
    sample = 200 if args.dry_run else cfg.umap_sample
    sec.title = f"Speed: UMAP to 2-D at {', '.join(f'{n:,}' for n in sizes)} points, {today()}"
    if max(sizes) > WARM_UP:  # compile the numba functions (fit and transform) before timing
        # the paths the sizes take: fit on all; above `sample`, a laid-out sample, then all rows
        for fit_rows in (WARM_UP, WARM_UP // 2) if max(sizes) > sample else (WARM_UP,):
            for parallel in (False,) if args.quick else (False, True):
                umap_reduce(
                    clustered_embeddings(WARM_UP, 64, seed=4),
                    2,
                    neighbors=cfg.neighbors,
                    min_dist=0.1,
                    sample=fit_rows,
                    seed=cfg.seed,
                    desc="warm-up",
                    parallel=parallel,
                    refine=False,
                )
    for n in sizes:
        x = clustered_embeddings(n, 64, seed=3)
        size = min(n, 100 if args.dry_run else KEPT_ROWS)
        rows = np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))
        high = neighbours(x, rows)
        how = (
            "FAISS neighbour graph, fit on all"
            if n <= sample
            else f"{min(sample, SEED_LAYOUT_ROWS):,} laid out first, the rest placed between them"
        )
        # the map as the job draws it; a partial, since measure() has a `sample` of its own
        ice_map = functools.partial(
            umap_reduce,
            x,
            2,
            neighbors=cfg.neighbors,
            min_dist=0.1,
            sample=sample,
            seed=cfg.seed,
            desc="map",
            refine=False,
        )
        row, xy = measure(f"ICE umap_reduce, n={n:,} ({how})", n, "pt", ice_map)
        sec.rows.append(row)
        kept_ice = kept(high, neighbours(xy, rows))
        par = None
        if not args.quick:  # the layout on every core, the default of GPU runs only
            par, par_xy = measure(
                f"ICE umap_reduce, n={n:,}, layout on every core (--parallel-layout)",
                n,
                "pt",
                functools.partial(ice_map, parallel=True),
            )
            sec.rows.append(par)
            kept_par = kept(high, neighbours(par_xy, rows))
        with tempfile.TemporaryDirectory() as tmp:
            full, full_xy = run_full_umap(n, 3, args.umap_timeout, tmp)
        if full is None:
            sec.notes.append(
                f"n={n:,}: the full fit did not finish in {args.umap_timeout:,.0f} s and was stopped, so "
                f"ICE is at least **{args.umap_timeout / row.seconds:.1f}x** faster (a lower bound); "
                f"ICE keeps {kept_ice:.3f} of each point's 10 nearest neighbours in 2-D; "
                "the full fit's share was not measured"
            )
            continue
        sec.rows.append(
            Row(
                f"umap.UMAP().fit_transform, n={n:,} (all points)",
                full["seconds"],
                n,
                "pt",
                full["rss_gib"],
                full["cpu"],
            )
        )
        kept_full = kept(high, neighbours(full_xy, rows))
        ratio, share = full["seconds"] / row.seconds, kept_ice / kept_full
        speed = 5 if n >= 1_000_000 else 1.5  # the targets: kept >= 0.9 of the full fit's share, at this speed-up
        sec.notes.append(
            f"n={n:,}: ICE vs full fit **{ratio:.2f}x** faster; 10-NN kept in 2-D: ICE {kept_ice:.3f}, "
            f"full {kept_full:.3f}, ratio **{share:.2f}**; "
            + sec.target(
                f"UMAP at {n:,} kept >= 0.9 at >= {speed:g}x",
                share >= 0.9 and ratio >= speed,
                f"kept {share:.2f} at {ratio:.2f}x",
            )
        )
        if par is not None:
            sec.notes.append(
                f"n={n:,}, layout on every core (not ICE's default on a CPU): "
                f"{full['seconds'] / par.seconds:.2f}x faster than the full fit; "
                f"10-NN kept {kept_par:.3f}, ratio {kept_par / kept_full:.2f}"
            )
    if max(sizes) > WARM_UP:
        sec.notes.append(f"both sides ran once untimed on {WARM_UP:,} points first: numba's compilation is not timed")
    sec.notes += [
        f"synthetic clustered embeddings (50 clusters, 4-D patches, 64-D, L2-normalised); 10-NN kept "
        f"measured on {len(rows):,} random points with exact neighbours",
        "ICE passes random_state (reproducible, single-threaded layout) unless its layout runs on every "
        "core (--parallel-layout, the default only for GPU runs); the full fit is umap.UMAP() "
        "as a user types it (no seed, parallel); above 200k points it runs in a child process, "
        "so that it can be stopped",
    ]
