"""`ice add`: place new images into a complete run, leaving every image already there as it is.

Nothing is fitted again. The new images are decoded at the run's working size, embedded by
the run's encoder, and placed from their nearest images of the run (at most BASE_ROWS of
them): each takes the cluster most of its neighbours hold, in the job's clustering and in
every re-clustering, and a position on the map and on the manifold between its nearest
neighbours there, as the map places the images it does not lay out. Saved groups' teach
rounds score them with each round's model.

The addition is built in RUN/adding/ (scan, decode, embed, place), then committed: the
arrays are appended in place (run_dir.append_npy), the new images' rows of items.parquet are
written as items-added/NNNN.parquet (run_dir.read_items), the other tables are replaced
atomically, and the manifest, last, records the addition. Each step records itself in
adding/state.json, so the same command after a kill finishes the addition once. The run's
flock keeps a second `ice add` or an `ice embed` out meanwhile.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ice import run_dir as rd
from ice import teach_state as ts
from ice.errors import IceError
from ice.search_index import grow_index

from .config import Config
from .images import EXTENSIONS, write_skipped, decode_all, display_path, find_images
from .fit import searcher, place, sq_distance, vote
from .project import layout_rows

BASE_ROWS = 100_000  # the run's images that new ones are placed from; above, a seeded sample of them
# lists searched per new image where the search is not exact (above fit.EXACT_PAIRS pairs): a
# quarter of the job's; the neighbours' cluster vote held (BENCHMARKS.md, placement search)
ADD_PROBES = 4
STATE = "state.json"
FILES = "files.parquet"  # the new files: stored path, the path read, size, mtime
DECODED = "decoded.parquet"  # the readable new files: their row in `FILES`, width, height
PLACED = "placed.npz"
INDEX_GROWN = rd.INDEX_ADDED  # adding/index-added.faiss: the run's, with the new images added
TEACH_SCORES = "teach"  # adding/teach/<group key>/round-NNNN.npy: the new images' scores


class Adding:
    """The run directory an addition writes, and its folder of work in progress."""

    def __init__(self, run_dir: Path, manifest: dict):
        self.run_dir, self.manifest = run_dir, manifest
        self.dir = run_dir / rd.ADDING
        self.cfg = Config.from_dict(manifest["config"])
        self.root = Path(manifest["input_root"])

    def path(self, name: str) -> Path:
        return self.dir / name

    def state(self) -> dict | None:
        try:
            return rd.read_json(self.path(STATE))
        except FileNotFoundError:
            return None

    def record(self, state: dict, stage: str, **extra) -> dict:
        state = {**state, "stage": stage, **extra}
        rd.write_json(self.path(STATE), state)
        return state


def add_images(
    run_dir: str | os.PathLike, inputs: list[str | os.PathLike], *, workers: int | None = None, device="auto", log=print
) -> dict:
    """Add the images in `inputs` (folders, read recursively, and files) that the run does not
    hold yet; return the addition's record (as kept in the manifest's `additions`), or one with
    `images` 0 where there was nothing new. An addition stopped earlier is finished first."""
    run_dir = Path(run_dir)
    manifest = rd.load_manifest(run_dir)
    busy = f"{run_dir}: another `ice embed` or `ice add` is writing this run now; wait for it to finish"
    lock = rd.lock_run_dir(run_dir, busy)
    try:
        left = rd.remove_leftovers(run_dir) + rd.remove_leftovers(run_dir / rd.ADDING)
        if left:
            log(f"removed {left / 1e6:,.1f} MB of temporary files that a stopped job left in {run_dir}")
        job = Adding(run_dir, manifest)
        if workers is not None:
            job.cfg = job.cfg.replace(workers=workers)
        pending = job.state()
        if pending is not None:
            log(f"finishing addition {pending['addition']}, which was stopped ({pending['stage']} done)")
            _finish(job, pending, device, log)
            job = Adding(run_dir, rd.load_manifest(run_dir))
            if workers is not None:
                job.cfg = job.cfg.replace(workers=workers)
        return _add(job, inputs, device, log)
    finally:
        if lock is not None:
            os.close(lock)


def _add(job: Adding, inputs: list, device, log) -> dict:
    t0 = time.perf_counter()
    files, refused = scan_inputs(job, inputs)
    number = len(job.manifest.get("additions", [])) + 1
    if not len(files) and not refused:
        return {"addition": None, "images": 0, "skipped": 0, "found": 0}
    n_before = int(job.manifest["counts"]["images"])
    if job.dir.exists():
        shutil.rmtree(job.dir)
    job.dir.mkdir()
    with rd.atomic_path(job.path(FILES)) as tmp:
        files.to_parquet(tmp, index=False)
    with rd.atomic_path(job.path("refused.csv")) as tmp:
        pd.DataFrame(refused, columns=["path", "reason"]).to_csv(tmp, index=False)
    state = {
        "addition": number,
        "n_before": n_before,
        "shard": len(job.manifest.get("shards", [])),  # a version 2 run: the part the addition becomes
        "inputs": [str(Path(p).absolute()) for p in inputs],
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": {"scan": round(time.perf_counter() - t0, 3)},
    }
    state = job.record(state, "scan")
    log(f"addition {number}: {len(files):,} new image files" + (f", {len(refused)} refused" if refused else ""))
    return _finish(job, state, device, log)


def scan_inputs(job: Adding, inputs: list) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The files in `inputs` that the run has not taken up yet: a table of `path` (as stored in
    items.parquet: relative to the input root, or the absolute path for a file outside it),
    `read` (the absolute path, as bytes), `size` and `mtime_ns`; and the (path, reason) of the
    files given that cannot be added. A file taken up before (by the job, or by an addition,
    added or skipped) with the same size and mtime is left out; one changed since is refused,
    since its image id already stands for its old pixels."""
    root = os.path.join(str(job.root), "")
    found: dict[str, str] = {}  # absolute path -> path as stored
    refused: list[tuple[str, str]] = []
    for given in inputs:
        given = Path(given)
        if given.is_dir():
            folder = os.path.join(str(given.resolve()), "")
            inside = folder.startswith(root)  # then every file's stored path is relative to the root
            for rel in find_images(folder, job.cfg.follow_symlinks):
                full = folder + rel
                found.setdefault(full, full[len(root) :] if inside else full)
        elif given.is_file():
            full = str(given.parent.resolve() / given.name)
            if given.suffix.lower() not in EXTENSIONS:
                refused.append((display_path(full), f"not an image file name (expected {', '.join(EXTENSIONS)})"))
            else:
                found.setdefault(full, _stored(full, root))
        else:
            raise IceError(f"{given}: no such file or folder")
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # as os.fsencode
    order = sorted(found.items(), key=lambda kv: kv[1])
    paths = pd.Series([stored.encode(encoding, errors) for _, stored in order], dtype=object)
    kept, sizes, mtimes = [], [], []
    with ThreadPoolExecutor(1) as pool:
        taken = pool.submit(_taken, job, paths)  # the run's records are read while the files are stat'ed
        for i, (full, stored) in enumerate(order):
            try:
                st = os.stat(full)
            except OSError as e:
                refused.append((display_path(stored), f"cannot read: {e.strerror}"))
                continue
            kept.append(i)
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
        before = taken.result().iloc[kept].reset_index(drop=True)
    files = pd.DataFrame(
        {
            "path": paths.iloc[kept].reset_index(drop=True),
            "read": pd.Series([order[i][0].encode(encoding, errors) for i in kept], dtype=object),
            "size": np.array(sizes, np.int64),
            "mtime_ns": np.array(mtimes, np.int64),
        }
    )
    known = before["size"].notna().to_numpy()
    same = known & (before["size"].fillna(-2).to_numpy(np.int64) == files["size"].to_numpy(np.int64))
    same &= before["mtime_ns"].fillna(-2).to_numpy(np.int64) == files["mtime_ns"].to_numpy(np.int64)
    changed = known & ~same
    refused += [
        (display_path(os.fsdecode(p)), "already in the run, changed since; rebuild with `ice embed --force`")
        for p in files["path"][changed]
    ]
    files = files[~same & ~changed].reset_index(drop=True)
    return files, refused


def _stored(full: str, root: str) -> str:
    """A file's path as items.parquet holds it: relative to the input root, '/'-separated, or
    its absolute path where it lies outside."""
    return full[len(root) :] if full.startswith(root) else full


def _taken(job: Adding, paths: pd.Series) -> pd.DataFrame:
    """For each stored path (bytes, each once) in `paths`, the size and mtime_ns the run took it
    up with (by the job, or an addition, read or skipped; the latest), or NA where it never did;
    in that order. A run made before files.parquet was kept matches by path alone (size and
    mtime -1). The run's paths are looked up in a hash of the new ones (arrow's index_in), so
    that the large side is only streamed through, never hashed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = ["path", "size", "mtime_ns"]
    tables = [
        pq.read_table(name, columns=columns).cast(
            pa.schema([("path", pa.binary()), ("size", pa.int64()), ("mtime_ns", pa.int64())])
        )
        for name in (job.run_dir / "files.parquet", job.run_dir / rd.ADDED)
        if name.exists()
    ]
    if not tables:
        items = rd.read_items(job.run_dir, columns=["path"])["path"]
        minus = pa.array(np.full(len(items), -1, np.int64))
        tables = [
            pa.table({"path": pa.array([os.fsencode(p) for p in items], pa.binary()), "size": minus, "mtime_ns": minus})
        ]
    taken = pa.concat_tables(tables)  # oldest first
    query = pc.index_in(taken["path"], value_set=pa.array(paths.tolist(), pa.binary()))
    rows = np.flatnonzero(query.is_valid().to_numpy(zero_copy_only=False))
    asked = query.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
    # where a path was taken up more than once, the last time counts
    last = len(asked) - 1 - np.unique(asked[::-1], return_index=True)[1]
    found = np.zeros(len(paths), bool)
    found[asked[last]] = True
    out = {}
    for name in columns[1:]:
        values = np.zeros(len(paths), np.int64)
        values[asked[last]] = taken[name].to_numpy()[rows[last]]
        out[name] = pd.arrays.IntegerArray(values, ~found)  # NA where not taken; ns stay exact
    return pd.DataFrame(out)


def _finish(job: Adding, state: dict, device, log) -> dict:
    """Run the addition's steps after the last one recorded in `state`, then commit it."""
    steps = [("decode", _decode), ("embed", _embed), ("place", _place)]
    order = ["scan"] + [name for name, _ in steps] + ["commit"]
    with ThreadPoolExecutor(1) as pool:
        # what placing needs from the run is read and indexed while the new images are decoded,
        # on the core time decoding leaves
        prepared = pool.submit(_base, job, state) if order.index(state["stage"]) < order.index("place") else None
        grown = None
        for name, step in steps:
            if order.index(state["stage"]) < order.index(name):
                t0 = time.perf_counter()
                if name == "place":
                    grown = _place(job, state, device, prepared, pool)
                else:
                    step(job, state, device)
                seconds = {**state["seconds"], name: round(time.perf_counter() - t0, 3)}
                state = job.record(state, name, seconds=seconds)
    t0 = time.perf_counter()
    if grown is not None:
        grown.result()  # its error, if any, here
    record = _commit(job, state)
    log(
        f"addition {record['addition']}: {record['images']:,} images added (ids {record['first_id']:,} on), "
        f"{record['skipped']:,} skipped in {sum(record['seconds'].values()) + time.perf_counter() - t0:.1f} s"
    )
    return record


def _decode(job: Adding, state: dict, device) -> None:
    files = pd.read_parquet(job.path(FILES))
    read = [os.fsdecode(p)[1:] for p in files["read"]]  # relative to "/"
    cfg = job.cfg
    keep, sizes, _ = decode_all(
        Path("/"),
        read,
        size=cfg.image_size,
        max_pixels=cfg.max_pixels,
        workers=cfg.workers,
        pixels_path=job.path(rd.PIXELS),
        skipped_path=job.path(rd.SKIPPED),
        resume=True,
    )
    decoded = pd.DataFrame({"row": np.asarray(keep, np.int64), "width": sizes[:, 0], "height": sizes[:, 1]})
    with rd.atomic_path(job.path(DECODED)) as tmp:
        decoded.to_parquet(tmp, index=False)


def _embed(job: Adding, state: dict, device) -> None:
    from .embed import embed
    from .train import load_model, pick_device

    if not len(pd.read_parquet(job.path(DECODED))):
        return
    dev = pick_device(device)
    embed(load_model(job.run_dir, dev), job.path(rd.PIXELS), job.path(rd.EMBEDDINGS), job.cfg.resolved(), dev)


def _base(job: Adding, state: dict) -> dict:
    """What the new images are placed from, read from the run alone, so that it is built while
    they are decoded and embedded: the run's images they are placed among (`base`), a search
    of their embeddings, and their labels, map and manifold positions."""
    run_dir, cfg, n = job.run_dir, job.cfg, int(state["n_before"])
    queries = len(pd.read_parquet(job.path(FILES), columns=["size"]))  # files, not images: fixed once scanned
    emb = rd.open_rows(run_dir, rd.EMBEDDINGS, n)
    base = np.arange(n) if n <= BASE_ROWS else layout_rows(n, BASE_ROWS, cfg.seed)
    k = min(cfg.neighbors, len(base))
    items = rd.read_items(run_dir, columns=["cluster", "x", "y"])
    manifold = np.load(run_dir / rd.MANIFOLD, mmap_mode="r") if (run_dir / rd.MANIFOLD).exists() else None
    return {
        "base": base,
        "search": searcher(np.ascontiguousarray(emb[base], dtype=np.float32), max(queries, 1), k, cfg.seed, ADD_PROBES),
        "labels": items["cluster"].to_numpy()[base],
        "xy": np.stack([items["x"].to_numpy(np.float32), items["y"].to_numpy(np.float32)], 1)[base],
        "manifold": None if manifold is None else np.asarray(manifold[base]),
    }


def _place(job: Adding, state: dict, device, prepared=None, pool=None):
    """The new images' clusters, distances, manifold and map positions, neighbour rows and
    teach scores, from their nearest images of the run, into adding/placed.npz. `prepared`:
    a future of _base's answer (None: read it now, as after a kill). With a thread `pool`, the
    grown search index too (adding/index-added.faiss), built there beside the numpy work here;
    the future of it is returned."""
    if not len(pd.read_parquet(job.path(DECODED))):
        return None
    run_dir, cfg, n = job.run_dir, job.cfg, int(state["n_before"])
    new = np.ascontiguousarray(np.load(job.path(rd.EMBEDDINGS)), dtype=np.float32)
    prepared = _base(job, state) if prepared is None else prepared.result()
    base = prepared["base"]
    d2, near = prepared["search"](new)
    rng = np.random.default_rng([cfg.seed, int(state["addition"])])
    out = {"near": np.where(near >= 0, base[np.maximum(near, 0)], -1)}
    grown = None
    if pool is not None:
        grown = pool.submit(grow_index, run_dir, new, n, job.path(INDEX_GROWN), out["near"])
    out["xy"] = place(prepared["xy"], near, d2, rng)
    space = new
    if prepared["manifold"] is not None:
        out["manifold"] = space = place(prepared["manifold"], near, d2, rng)
    cluster = vote(prepared["labels"], near, d2)
    centroids = np.load(run_dir / rd.CENTROIDS)
    out["cluster"], out["distance"] = cluster, sq_distance(space, centroids, cluster)
    for path in sorted((run_dir / rd.CLUSTERINGS).glob("k*.npz")):
        with np.load(path) as z:
            labels, centres = z["cluster"], z["centroids"]
        if len(labels) == n:
            mine = vote(labels[base], near, d2)
            out[f"{path.stem}.cluster"], out[f"{path.stem}.distance"] = mine, sq_distance(space, centres, mine)
    with rd.atomic_path(job.path(PLACED), suffix=".npz") as tmp:
        np.savez(tmp, **out)
    _score_teach_rounds(job, n, device)
    return grown


def _teach_rounds(run_dir: Path):
    """(group folder, round number, round record) of every saved teach round."""
    for folder in sorted((run_dir / rd.TEACH).glob("g*")):
        try:
            state = rd.read_json(folder / ts.STATE)
        except (OSError, ValueError):
            continue
        for r in state.get("rounds", []):
            yield folder, int(r["round"]), r


def _score_teach_rounds(job: Adding, n: int, device) -> None:
    """Score the new images with each teach round's model whose scores cover the run, blended
    with the round's regression (its record's "likeness") as the round blended its own."""
    rounds = [
        (f, r, rec)
        for f, r, rec in _teach_rounds(job.run_dir)
        if ts.round_path(f, r, ".pt").exists() and _rows(f, r) == n
    ]
    if not rounds:
        return
    import torch

    from ice import likeness

    from .teach import mix, new_scorer, score, views_config
    from .train import pick_device

    dev = pick_device(device)
    pixels = np.load(job.path(rd.PIXELS), mmap_mode="r")
    embeddings = np.load(job.path(rd.EMBEDDINGS), mmap_mode="r")
    with np.load(job.path(PLACED)) as placed:
        manifold = placed["manifold"] if "manifold" in placed else None
    cfg = views_config(job.run_dir)
    net = new_scorer(job.run_dir, dev, 0)
    features = None  # the new images' pixel features, for the rounds whose regression read them
    for folder, r, record in rounds:
        net.load_state_dict(torch.load(ts.round_path(folder, r, ".pt"), map_location=dev, weights_only=True))
        scores = score(net, pixels, cfg, dev)
        model, blend = record.get("likeness"), float(record.get("settings", {}).get("blend", 0))
        if model and blend:
            if model.get("patches") and features is None:
                features = _pixel_features(job.run_dir, pixels)
            scores = mix(scores, likeness.apply(model, embeddings, manifold, patches=features), blend)
        rd.save_npy(ts.round_path(job.path(TEACH_SCORES) / folder.name, r, ".npy"), scores)


def _pixel_features(run_dir: Path, pixels: np.ndarray) -> np.ndarray:
    """The pixel features of the new images, by the run's patch model (embeddings.patches),
    which the rounds that read them made. IceError where it is gone."""
    from . import patches

    model = patches.read_model(run_dir)
    if model is None:
        raise IceError(f"{run_dir / rd.TEACH / patches.MODEL}: missing, and the teach rounds' models read it")
    return patches.apply(model, pixels)


def _rows(folder: Path, r: int) -> int:
    try:
        return len(np.load(ts.round_path(folder, r, ".npy"), mmap_mode="r"))
    except (OSError, ValueError):
        return -1


def _commit(job: Adding, state: dict) -> dict:
    """Append the addition to the run. Each write checks whether it was done already (the
    file's length says), so a commit killed part way and run again ends the same."""
    run_dir, n = job.run_dir, int(state["n_before"])
    files = pd.read_parquet(job.path(FILES))
    decoded = pd.read_parquet(job.path(DECODED))
    m = len(decoded)
    number = int(state["addition"])
    sharded, shard = "shards" in job.manifest, int(state.get("shard", 0))
    with ThreadPoolExecutor(1) as writer:
        pixels = None
        if m:
            placed = dict(np.load(job.path(PLACED)))
            new_emb = np.load(job.path(rd.EMBEDDINGS))
            # the pixels, the largest append, are written and synced while the rest is committed
            if sharded:  # a part each, which the manifest lists once it records the addition
                pixels = writer.submit(_write_part, run_dir, rd.PIXELS, shard, job.path(rd.PIXELS), m)
                _write_part(run_dir, rd.EMBEDDINGS, shard, job.path(rd.EMBEDDINGS), m)
            else:
                pixels = writer.submit(
                    rd.append_npy, run_dir / rd.PIXELS, np.load(job.path(rd.PIXELS), mmap_mode="r"), n
                )
                rd.append_npy(run_dir / rd.EMBEDDINGS, new_emb, n)
            if "manifold" in placed:
                rd.append_npy(run_dir / rd.MANIFOLD, placed["manifold"], n)
            if (run_dir / rd.NEIGHBOURS).exists():
                j = np.load(run_dir / rd.NEIGHBOURS, mmap_mode="r").shape[1]
                rows = np.full((m, j), -1, np.int32)
                rows[:, 0] = np.arange(n, n + m)
                take = min(j - 1, placed["near"].shape[1])
                rows[:, 1 : 1 + take] = placed["near"][:, :take]
                rd.append_npy(run_dir / rd.NEIGHBOURS, rows, n)
            # index-added.faiss: the job's index is not rewritten. Grown while placing, or now after
            # a kill; none grown, and none to grow, where a killed commit put it in place already
            grown = job.path(INDEX_GROWN)
            if grown.exists() or grow_index(run_dir, new_emb, n, grown, placed["near"]):
                os.replace(grown, run_dir / rd.INDEX_ADDED)
            for key in sorted({k.split(".")[0] for k in placed if k.startswith("k")}):
                path = run_dir / rd.CLUSTERINGS / f"{key}.npz"
                with np.load(path) as z:
                    saved = dict(z)
                if len(saved["cluster"]) == n:
                    saved["cluster"] = np.concatenate([saved["cluster"], placed[f"{key}.cluster"]])
                    saved["distance"] = np.concatenate([saved["distance"], placed[f"{key}.distance"]])
                    with rd.atomic_path(path) as tmp, open(tmp, "wb") as f:
                        np.savez(f, **saved)
            for scores in sorted(job.path(TEACH_SCORES).glob("g*/round-*.npy")):
                target = run_dir / rd.TEACH / scores.parent.name / scores.name
                if target.exists() and _rows(target.parent, int(target.stem.split("-")[1])) == n:
                    rd.save_npy(target, np.concatenate([np.load(target), np.load(scores)]))
        part = run_dir / rd.ITEMS_ADDED / f"{number:04d}.parquet"
        if sharded:
            part = rd.part_path(run_dir / rd.parts_folder(rd.ITEMS), shard, ".parquet")
        if m and not part.exists():
            _write_items(run_dir, part, files, decoded, placed, n, number)
        if pixels is not None:
            pixels.result()  # its error, if any, here
    skipped = _skipped_rows(job, files)
    _record_files(job, files, decoded, n, number)
    _add_skipped(run_dir, skipped)
    manifest = rd.read_json(run_dir / rd.MANIFEST)
    additions = manifest.setdefault("additions", [])
    if not additions or additions[-1]["addition"] != number:
        record = {
            "addition": number,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": state["inputs"],
            "found": len(files),
            "images": m,
            "skipped": len(skipped),
            "first_id": n,
            "seconds": state["seconds"],
        }
        additions.append(record)
        manifest["counts"]["images"] = n + m
        if "shards" in manifest and m:
            manifest["shards"].append([n, m])
        rd.write_json(run_dir / rd.MANIFEST, manifest)
    shutil.rmtree(job.dir, ignore_errors=True)
    return additions[-1]


def _write_part(run_dir: Path, name: str, shard: int, source: Path, m: int) -> None:
    """Make the addition's array `source` (m rows) the part of a version 2 run's `name`, unless
    a killed commit did already: a hard link (the job's folder is inside the run, and its
    file is removed with the folder once the manifest lists the part), or a copy where the
    filesystem has none."""
    part = rd.part_path(run_dir / rd.parts_folder(name), shard, ".npy")
    with contextlib.suppress(OSError, ValueError):
        if len(np.load(part, mmap_mode="r")) == m:
            return
    with rd.atomic_path(part, suffix=".npy") as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _write_items(
    run_dir: Path, part: Path, files: pd.DataFrame, decoded: pd.DataFrame, placed: dict, n: int, number: int
) -> None:
    """The added images' rows of items.parquet, as its own file `part` (rd.read_items)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    stored = pa.array(files["path"].to_numpy()[decoded["row"].to_numpy()], pa.binary())
    try:
        paths = stored.cast(pa.string())  # nearly always: every path is UTF-8
    except pa.ArrowInvalid:  # as display_path: bytes that are not UTF-8 become \xNN
        paths = pa.array([display_path(os.fsdecode(p)) for p in stored.to_pylist()], pa.string())
    m = len(decoded)
    columns = {
        "image_id": pa.array(np.arange(n, n + m, dtype=np.int64)),
        "path": paths,
        "width": pa.array(decoded["width"].to_numpy(np.int32)),
        "height": pa.array(decoded["height"].to_numpy(np.int32)),
        "cluster": pa.array(placed["cluster"].astype(np.int32)),
        "x": pa.array(placed["xy"][:, 0].astype(np.float32)),
        "y": pa.array(placed["xy"][:, 1].astype(np.float32)),
        "distance": pa.array(placed["distance"].astype(np.float32)),
    }
    # the parent folder's name, as stages.decode labels the job's images (PurePosixPath(p).parent.name)
    if "label" in rd.items_schema(run_dir):
        columns["label"] = pc.replace_substring_regex(paths, r"^(?:.*/)?([^/]*)/[^/]*$|^[^/]*$", r"\1")
    columns["added"] = pa.array(np.full(m, number, np.int32))
    part.parent.mkdir(exist_ok=True)
    with rd.atomic_path(part) as tmp:
        pq.write_table(pa.table(columns), tmp)


def _skipped_rows(job: Adding, files: pd.DataFrame) -> list[tuple[str, str]]:
    """The new files that could not be read, by their stored path, and the files refused."""
    rows = []
    with contextlib.suppress(FileNotFoundError):
        with open(job.path(rd.SKIPPED), newline="", encoding="utf-8") as f:
            unread = list(csv.DictReader(f))
        if unread:  # listed by the path read (decode_all's root is "/"): back to the stored path
            stored = {
                display_path(os.fsdecode(r))[1:]: display_path(os.fsdecode(p))
                for r, p in zip(files["read"], files["path"])
            }
            rows += [(stored.get(r["path"], r["path"]), r["reason"]) for r in unread]
    with contextlib.suppress(FileNotFoundError, pd.errors.EmptyDataError):
        refused = pd.read_csv(job.path("refused.csv"), dtype=str, keep_default_na=False)
        rows += list(zip(refused["path"], refused["reason"]))
    return rows


def _record_files(job: Adding, files: pd.DataFrame, decoded: pd.DataFrame, n: int, number: int) -> None:
    """Add this addition's files to added.parquet (once): the images, with their image_id, and
    those skipped, with -1, so that neither is taken up again while unchanged."""
    path = job.run_dir / rd.ADDED
    old = pd.read_parquet(path) if path.exists() else None
    if old is not None and (old["addition"] == number).any():
        return
    ids = np.full(len(files), -1, np.int64)
    ids[decoded["row"].to_numpy()] = np.arange(n, n + len(decoded))
    new = files[["path", "size", "mtime_ns"]].assign(addition=np.int32(number), image_id=ids)
    table = new if old is None else pd.concat([old, new], ignore_index=True)
    with rd.atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def _add_skipped(run_dir: Path, rows: list[tuple[str, str]]) -> None:
    """skipped.csv, with `rows` added to it (once: rows already there are not repeated), written
    as the job writes it."""
    if not rows:
        return
    path = run_dir / rd.SKIPPED
    old = []
    with contextlib.suppress(FileNotFoundError):
        with open(path, newline="", encoding="utf-8") as f:
            old = [(r["path"], r["reason"]) for r in csv.DictReader(f)]
    have = set(old)
    write_skipped(path, old + [r for r in rows if r not in have])
