"""Run the stages in order, skipping those a previous (killed) run already finished.

scan -> decode -> train -> embed -> cluster -> selflabel -> project -> tiles -> finish
Each stage writes its outputs atomically, then records itself in progress.json.
The manifest, written last, is what makes a run complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ice import run_dir as rd
from ice.annotations import RUN_CLUSTERING, Annotations
from ice.errors import IceError, not_a_folder
from ice.storage import is_remote

from . import __version__
from .config import Config

STAGES = ("scan", "decode", "train", "embed", "cluster", "selflabel", "project", "tiles")
# settings a resumed run may change: they change how fast, or where, not what comes out
SPEED_ONLY = ("workers", "ray_address")  # not the engine: the Ray engine writes version 2


class Run:
    """One run directory being built: its config, input and progress record."""

    def __init__(self, root: Path, run_dir: Path, cfg: Config):
        self.root, self.dir, self.cfg = root, run_dir, cfg
        self.progress = {"config": cfg.to_dict(), "input_root": str(root), "stages": {}}
        self.umap_warm_up = None  # the child process of project.warm_up_umap, while training runs on a GPU
        self.lock = None  # the open run directory whose flock says that this process writes it

    def done(self, stage: str) -> bool:
        return stage in self.progress["stages"]

    def finish_stage(self, stage: str, seconds: float, **extra) -> None:
        self.progress["stages"][stage] = {"seconds": round(seconds, 3), **extra}
        rd.write_json(self.dir / rd.PROGRESS, self.progress)

    def path(self, name: str) -> Path:
        return self.dir / name

    def rows(self, name: str) -> Path:
        """Where the per-image array `name` (PIXELS, EMBEDDINGS) goes: the file, or with the Ray
        engine the folder of its parts (a version 2 run, docs/run-format.md)."""
        return self.dir / (rd.parts_folder(name) if self.cfg.engine == "ray" else name)

    def close(self) -> None:
        """Let other processes write the run directory again."""
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


def open_run(root: Path, run_dir: Path, cfg: Config, resume: bool, force: bool, log=print) -> Run:
    """Check the input and the run directory, lock the directory (run_dir.lock_run_dir) and load the
    progress of a run to resume; the caller calls run.close() when it is done writing."""
    if is_remote(root):  # read by Ray tasks, through pyarrow's file system for it
        if cfg.engine != "ray":
            raise IceError(f"{root}: input on an object store needs --engine ray")
        root = str(root).rstrip("/")
    else:
        root = Path(root)
        if not root.is_dir():
            raise not_a_folder(root, "input folder")
        root = root.resolve()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise IceError(f"--out {run_dir}: exists and is not a folder")
    run = Run(root, run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    # before anything is read or removed: a run that another process writes is left alone
    run.lock = rd.lock_run_dir(run_dir)
    try:
        _prepare(run, resume, force, log)
    except BaseException:
        run.close()
        raise
    return run


def _prepare(run: Run, resume: bool, force: bool, log=print) -> None:
    """Start the run directory over (force), load the progress of the run to resume, or refuse
    a folder that holds files without either. Starting over sets the explorer's names, groups
    and re-clusterings aside (run_dir.set_aside_explorer_state); the groups come back at the end."""
    run_dir, cfg = run.dir, run.cfg
    progress_path = run_dir / rd.PROGRESS
    if resume or force:
        left = rd.remove_leftovers(run_dir)
        if left:
            log(f"removed {left / 1e6:,.1f} MB of temporary files that a stopped run left in {run_dir}")
    has_files = any(run_dir.iterdir())
    if force and has_files:
        pending = uncarried_set_aside(run_dir)  # read before progress.json goes
        old = [rd.MANIFEST, rd.PROGRESS, rd.KNN, rd.SEED_KNN, rd.APPLY_KNN, rd.NEIGHBOURS, rd.ADDED, rd.INDEX_ADDED]
        for name in old:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / rd.ADDING, ignore_errors=True)  # an addition to the old run, stopped
        for name in (rd.PIXELS, rd.EMBEDDINGS):  # either version's arrays: the new run may write the other
            (run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(run_dir / rd.parts_folder(name), ignore_errors=True)
        (run_dir / rd.CHECKPOINT).unlink(missing_ok=True)
        aside = rd.set_aside_explorer_state(run_dir)
        shutil.rmtree(run_dir / rd.ITEMS_ADDED, ignore_errors=True)  # the old run's additions, where not set aside
        if aside is not None:
            log(f"--force: the earlier run's cluster names, groups and re-clusterings are kept in {aside}")
        elif pending is not None:
            aside = run_dir / pending
            log(
                f"--force: an earlier --force was stopped before it carried the names and groups in {aside} "
                "back; this run carries them"
            )
        if aside is not None:
            run.progress["set_aside"] = aside.name  # recorded now: a killed run still carries the groups
            rd.write_json(progress_path, run.progress)
    elif resume and progress_path.exists():
        old = rd.read_json(progress_path)
        old["config"] = Config.from_dict(old["config"]).to_dict()  # a setting added since then has its default
        changed = sorted(k for k in cfg.to_dict() if old["config"][k] != cfg.to_dict()[k] and k not in SPEED_ONLY)
        if changed:
            raise IceError(
                f"cannot resume {run_dir}: its options differ ({', '.join(changed)}); "
                "resume with the same options, or start it over with --force"
            )
        old["config"] = cfg.to_dict()  # the speed settings given now
        if old["input_root"] != str(run.root):
            raise IceError(f"cannot resume {run_dir}: it was made from {old['input_root']}, not {run.root}")
        run.progress = old
    elif has_files and not resume:
        raise IceError(
            f"--out {run_dir}: folder is not empty; use --resume to continue a run or --force to start it over"
        )


# what a run that reuses another's encoder (--encoder-from) takes from that run's settings
ENCODER_SETTINGS = (
    "image_size", "recipe", "dim", "width", "encoder", "depth", "epochs", "batch_size", "lr", "weight_decay",
    "contrastive", "temperature", "reconstruction", "noise", "crop", "flip", "jitter", "aspect", "hue", "gray",
)  # fmt: skip


def with_encoder_from(cfg: Config) -> Config:
    """cfg with the encoder's run's working size and recipe (ENCODER_SETTINGS), and its
    encoder_from made absolute; IceError if that folder is not a complete run with a model, or
    if cfg asks for another working size."""
    source = Path(cfg.encoder_from)
    manifest = rd.load_manifest(source)
    if not (source / rd.MODEL).is_file():
        raise IceError(f"--encoder-from {source}: it holds no {rd.MODEL}")
    other = Config.from_dict(manifest["config"])
    if cfg.image_size and cfg.image_size != other.image_size:
        raise IceError(
            f"--image-size {cfg.image_size}: the encoder of {source} works at {other.image_size}; leave it out"
        )
    taken = {name: getattr(other, name) for name in ENCODER_SETTINGS}
    return cfg.replace(encoder_from=str(source.resolve()), **taken)


def uncarried_set_aside(run_dir: Path) -> str | None:
    """The before-force-* folder that an earlier --force set aside and was stopped before it
    carried the groups and names back (its progress.json names it, and no manifest says it
    finished); else None."""
    if (run_dir / rd.MANIFEST).exists():
        return None
    try:
        name = rd.read_json(run_dir / rd.PROGRESS).get("set_aside")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name.startswith(rd.SET_ASIDE) and (run_dir / name).is_dir() else None


def run_embed(root: Path, run_dir: Path, cfg: Config, resume: bool = False, force: bool = False, log=print) -> dict:
    """Build a complete run directory from a folder of images; return its manifest."""
    cfg.validate()
    if cfg.encoder_from:
        cfg = with_encoder_from(cfg)
    run = open_run(root, run_dir, cfg, resume, force, log)
    with contextlib.closing(run):
        if resume and (run.dir / rd.MANIFEST).exists():
            manifest = rd.read_json(run.dir / rd.MANIFEST)
            if manifest.get("complete"):
                return manifest
        return _run_stages(run, cfg, resume)


def _run_stages(run: Run, cfg: Config, resume: bool) -> dict:
    from . import stages  # faiss and friends load only once the arguments are known good

    device = stages.device_for(cfg)
    if run.done("scan"):
        stages.verify_input(run)
    steps = (
        stages.scan,
        stages.decode,
        stages.train,
        stages.embed,
        stages.cluster,
        stages.selflabel,
        stages.project,
        stages.tiles,
    )
    for name, step in zip(STAGES, steps, strict=True):
        if name == "cluster" and cfg.parallel_layout is None:  # the first stage to lay out a UMAP
            # unset: unseeded where the run cannot be repeated exactly anyway
            run.cfg = run.cfg.replace(parallel_layout=device().type == "cuda")
        if not run.done(name):
            t0 = time.perf_counter()
            extra = step(run, device, resume) or {}
            run.finish_stage(name, time.perf_counter() - t0, **extra)
        if name == "scan":  # settle the working size once; the manifest records it
            run.cfg = run.cfg.replace(image_size=run.progress["stages"]["scan"]["image_size"])
        if name == "decode":  # and the training recipe, which needs the pixels (older runs recorded none)
            run.cfg = run.cfg.resolved(run.progress["stages"]["decode"].get("recipe", "autoencoder"))
    return write_manifest(run, stages.describe(device()))


def write_manifest(run: Run, device_name: str) -> dict:
    """Join the stage outputs into items.parquet, then write the manifest, last."""
    items = pd.read_parquet(run.path("decoded.parquet"))
    assign = np.load(run.path("assign.npz"))
    xy = np.load(run.path("map.npy"))
    items["cluster"] = assign["cluster"].astype(np.int32)
    items["x"], items["y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    items["distance"] = assign["distance"].astype(np.float32)
    cols = ["image_id", "path", "width", "height", "cluster", "x", "y", "distance"]
    items = items[cols + (["label"] if "label" in items else [])]
    shards = None
    if run.cfg.engine == "ray":  # version 2: the items in parts, as the pixels are
        starts = rd.Rows.load(run.rows(rd.PIXELS)).starts
        shards = [[int(a), int(b - a)] for a, b in zip(starts[:-1], starts[1:], strict=True)]
        folder = run.dir / rd.parts_folder(rd.ITEMS)
        shutil.rmtree(folder, ignore_errors=True)
        for k, (first, count) in enumerate(shards):
            with rd.atomic_path(rd.part_path(folder, k, ".parquet")) as tmp:
                items.iloc[first : first + count].to_parquet(tmp, index=False)
    else:
        with rd.atomic_path(run.path(rd.ITEMS)) as tmp:
            items.to_parquet(tmp, index=False)
    stages = run.progress["stages"]
    metrics = None
    if "label" in items:
        from .cluster import cluster_metrics

        metrics = cluster_metrics(items["label"].to_numpy(), items["cluster"].to_numpy())
    manifest = {
        "schema_version": rd.SHARDED if shards else 1,
        "complete": True,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "input_root": str(run.root),
        "config": run.cfg.to_dict(),
        "versions": _versions(),
        "device": device_name,
        "counts": {
            "found": stages["scan"]["found"],
            "images": len(items),
            "skipped": stages["decode"]["skipped"],
            "unlisted_folders": len(stages["scan"].get("unlisted", [])),
        },
        "clusters": stages["selflabel"].get("k", stages["cluster"]["k"]),
        "cluster_space": run.cfg.cluster_space,
        "stage_seconds": {s: stages[s]["seconds"] for s in STAGES},
        "tiles": {k: v for k, v in stages["tiles"].items() if k != "seconds"},
        "train_loss": stages["train"]["loss"],
        "metrics": metrics,
    }
    if shards:
        manifest["shards"] = shards  # [first image_id, count] of each part
    if run.progress.get("set_aside"):
        aside = run.dir / run.progress["set_aside"]
        manifest["carried_groups"] = carry_groups(run.dir, aside, items["path"])
        manifest["carried_names"] = carry_names(run.dir, aside, items["path"], items["cluster"].to_numpy())
    keep_neighbours(run)
    rd.write_json(run.path(rd.MANIFEST), manifest)
    for name in (rd.KNN, rd.SEED_KNN, rd.APPLY_KNN):  # only the cluster and map stages needed them
        run.path(name).unlink(missing_ok=True)
    for path in run.path(rd.parts_folder(rd.PIXELS)).glob(".decoded-*.npz"):  # the Ray decode's records
        path.unlink()
    return manifest


def keep_neighbours(run: Run) -> None:
    """Keep the neighbour graph's rows (n, j) as int32 in neighbours.npy when the cluster stage
    climbed along it (graph_rounds) over every image, so that the explorer's re-clustering
    climbs too; else (also where it climbed over a fit sample) remove any an earlier run left."""
    cfg = run.cfg
    n = len(rd.load_rows(run.rows(rd.EMBEDDINGS)))
    if cfg.refine == "gmm" and cfg.graph_rounds and run.path(rd.KNN).exists():
        with np.load(run.path(rd.KNN)) as z:
            if len(z["ind"]) == n:  # not a fit sample's graph: the explorer climbs over every image
                rd.save_npy(run.path(rd.NEIGHBOURS), z["ind"].astype(np.int32))
                return
    run.path(rd.NEIGHBOURS).unlink(missing_ok=True)


def carry_groups(run_dir: Path, aside: Path, paths: pd.Series) -> dict:
    """Add the groups kept in `aside` to the run's annotations, mapping image ids through the
    file paths; images no longer in the run are left out. Saving adds members, so doing it
    again (a run killed before its manifest) changes nothing."""
    carried = {"from": aside.name, "groups": 0, "of": 0, "images": 0, "dropped": 0}
    if not (aside / rd.ANNOTATIONS).exists() or not rd.has_items(aside):
        return carried
    before = Annotations(aside / rd.ANNOTATIONS, read_only=True)
    groups = before.groups()
    if not groups:
        return carried
    after = Annotations(run_dir / rd.ANNOTATIONS)
    old_paths = rd.read_items(aside, columns=["path"])["path"].to_numpy()
    new_id = {p: i for i, p in enumerate(paths)}
    for group in groups:
        members = [old_paths[i] for i in before.group_members(group) if i < len(old_paths)]
        ids = [new_id[p] for p in members if p in new_id]
        carried["dropped"] += len(members) - len(ids)
        if ids:
            after.save_group(group, ids)
            carried["groups"] += 1
            carried["images"] += len(ids)
    carried["of"] = len(groups)
    return carried


NAME_OVERLAP = 0.5  # a name moves to a new cluster whose images are more than half the same


def carry_names(run_dir: Path, aside: Path, paths: pd.Series, clusters: np.ndarray) -> dict:
    """Name the new clusters after the job's clusters kept in `aside` that they match: an old
    cluster's name goes to the new cluster that holds most of its images (by file path) when
    their Jaccard overlap, over the images in both runs, is above NAME_OVERLAP, which no two
    old clusters can reach with one new cluster. A new cluster that has a name keeps it, so
    doing it again (a run killed before its manifest) changes nothing."""
    carried = {"from": aside.name, "names": 0, "of": 0}
    if not (aside / rd.ANNOTATIONS).exists() or not rd.has_items(aside):
        return carried
    names = Annotations(aside / rd.ANNOTATIONS, read_only=True).cluster_names(RUN_CLUSTERING)
    if not names:
        return carried
    old = rd.read_items(aside, columns=["path", "cluster"])
    new_id = pd.Series(np.arange(len(paths)), index=pd.Index(paths))
    ids = new_id.reindex(old["path"]).to_numpy()  # NaN: not in the new run
    present = ~np.isnan(ids)
    old_cluster = old["cluster"].to_numpy()[present]
    new_cluster = clusters[ids[present].astype(np.int64)]
    sizes = np.bincount(clusters)
    after = Annotations(run_dir / rd.ANNOTATIONS)
    taken = after.cluster_names(RUN_CLUSTERING)
    for cluster, name in sorted(names.items()):
        mine = new_cluster[old_cluster == cluster]
        if not len(mine):
            continue
        best = int(np.bincount(mine).argmax())
        shared = int((mine == best).sum())
        if shared / (len(mine) + sizes[best] - shared) > NAME_OVERLAP and taken.get(best, name) == name:
            after.set_cluster_name(RUN_CLUSTERING, best, name)
            carried["names"] += 1
    carried["of"] = len(names)
    return carried


def _versions() -> dict:
    import faiss
    import torch
    import umap

    return {
        "ice": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "umap": getattr(umap, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def summary_line(manifest: dict) -> str:
    c = manifest["counts"]
    times = " ".join(f"{s} {t:.1f}s" for s, t in manifest["stage_seconds"].items())
    line = f"{c['images']} images, {c['skipped']} skipped, {manifest['clusters']} clusters | {times}"
    if manifest.get("metrics"):
        m = manifest["metrics"]
        line += f" | accuracy {m['accuracy']:.3f} NMI {m['nmi']:.3f} ARI {m['ari']:.3f}"
    return line
