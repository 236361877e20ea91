"""The stage functions that pipeline.run_embed calls in order.

Each takes (run, device, resume), writes its outputs atomically into the run directory and
returns the figures to record in progress.json. `device()` is the torch device of the stages that
run in this process; torch loads at its first call, or when a stage needs it, so that the Ray
engine's stages on Ray run beside a driver that holds no torch.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ice import run_dir as rd
from ice import storage
from ice import tiles as map_tiles
from ice.errors import IceError
from ice.search_index import write_index
from ice.storage import is_remote

from .cluster import build_index, centres_and_distances, choose_k, faiss_gpus, fit_clusters
from .config import Config, pick_recipe
from .fit import apply_neighbours, fit_rows, others, place, sq_distance, vote
from .images import EXTENSIONS, decode_all, display_path, find_images, has_colour, read_image_list, typical_size
from .project import knn_graph, layout_rows, seed_graph, umap_reduce, warm_up_umap

FILES = "files.parquet"  # every candidate file with its size and mtime, for --resume checks
DECODED = "decoded.parquet"  # the readable images: image_id, path, width, height[, label]
ASSIGN = "assign.npz"  # cluster and distance per image; first_cluster once self-labelling ran
MAP = "map.npy"  # (n, 2) float32 map coordinates


def device_for(cfg: Config) -> Callable:
    """The stages' device as a function that chooses it at its first call. --device cuda is
    checked at once, so that a job without CUDA stops before its first stage."""
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise IceError("--device cuda: no CUDA device is available")

    @functools.cache
    def device():
        from .train import pick_device

        return pick_device(cfg.device)

    return device


def describe(device) -> str:
    import torch

    gpu = f", faiss on {faiss_gpus()} GPU(s)" if faiss_gpus() else ""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}){gpu}"
    return f"cpu ({torch.get_num_threads()} threads){gpu}"


def _fingerprint(root: Path | str, paths: list[str], listed: dict | None = None) -> pd.DataFrame:
    """Each file's size and mtime (-1 where it cannot be read), which --resume compares.
    `listed`: the sizes and mtimes a listing of an object store gave (path -> (size, mtime))."""
    if is_remote(root):
        if listed is None:
            sizes, mtimes = storage.fingerprint(root, paths)
        else:
            sizes, mtimes = [listed[p][0] for p in paths], [listed[p][1] for p in paths]
        return pd.DataFrame({"path": [os.fsencode(p) for p in paths], "size": sizes, "mtime_ns": mtimes})
    base = os.path.join(root, "")  # strings rather than Path objects: twice as fast over 1M files
    sizes, mtimes = [], []
    for p in paths:
        try:
            st = os.stat(base + p)
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
        except OSError:
            sizes.append(-1)
            mtimes.append(-1)
    # paths as bytes: a file name need not be valid UTF-8, and Parquet strings must be
    return pd.DataFrame({"path": [os.fsencode(p) for p in paths], "size": sizes, "mtime_ns": mtimes})


def input_paths(
    run, unlisted: list | None = None, refused: list | None = None, listed: dict | None = None
) -> list[str]:
    """The input's image paths: those --input-list names, or every image in the folder (or
    under the object store's prefix, whose sizes and mtimes go into `listed`)."""
    if run.cfg.input_list is None and is_remote(run.root):
        paths, sizes, mtimes = storage.list_images(run.root, EXTENSIONS)
        if listed is not None:
            listed.update(zip(paths, zip(sizes, mtimes, strict=True), strict=True))
        return paths
    if run.cfg.input_list is None:
        return find_images(run.root, run.cfg.follow_symlinks, unlisted=unlisted)
    paths, bad = read_image_list(run.root, run.cfg.input_list)
    if refused is not None:
        refused += bad
    return paths


def scan(run, device, resume) -> dict:
    unlisted, refused, listed = [], [], {}
    paths = input_paths(run, unlisted, refused, listed)
    unlisted = [[display_path(folder), reason] for folder, reason in unlisted]
    refused = [[display_path(path), reason] for path, reason in refused]
    n = len(unlisted)
    which = (
        (
            f"{n} folder{'s' if n > 1 else ''} could not be listed ({unlisted[0][1]}: {unlisted[0][0]}"
            f"{', ...' if n > 1 else ''})"
        )
        if n
        else ""
    )
    if not paths and run.cfg.input_list is not None:
        raise IceError(f"--input-list {run.cfg.input_list}: names no image file inside {run.root}")
    if not paths:
        raise IceError(
            f"no images found in {run.root} (looked for {', '.join(EXTENSIONS)})" + (f"; {which}" if n else "")
        )
    if n:
        print(
            f"ice: warning: {which}, so {'their' if n > 1 else 'its'} images are left out; "
            f"{run.path(rd.SKIPPED)} will list {'each' if n > 1 else 'it'}",
            file=sys.stderr,
            flush=True,
        )
    files = _fingerprint(run.root, paths, listed or None)
    with rd.atomic_path(run.path(FILES)) as tmp:
        files.to_parquet(tmp, index=False)
    size = run.cfg.image_size or typical_size(run.root, paths, seed=run.cfg.seed)
    return {
        "found": len(paths),
        "image_size": size,
        **({"unlisted": unlisted} if unlisted else {}),
        **({"refused": refused} if refused else {}),
    }


def verify_input(run) -> None:
    """Refuse to resume when the input folder changed since the scan; name what changed."""
    old = pd.read_parquet(run.path(FILES))
    listed = {}
    now = _fingerprint(run.root, input_paths(run, listed=listed), listed or None)
    merged = old.merge(now, on="path", how="outer", suffixes=("_old", "_new"), indicator=True)
    added = merged.loc[merged["_merge"] == "right_only", "path"].tolist()
    removed = merged.loc[merged["_merge"] == "left_only", "path"].tolist()
    both = merged[merged["_merge"] == "both"]
    modified = both.loc[
        (both["size_old"] != both["size_new"]) | (both["mtime_ns_old"] != both["mtime_ns_new"]), "path"
    ].tolist()
    parts = [
        f"{len(v)} {what} (e.g. {display_path(os.fsdecode(v[0]))})"
        for what, v in (("added", added), ("removed", removed), ("modified", modified))
        if v
    ]
    if parts:
        raise IceError(
            f"cannot resume {run.dir}: the input folder changed since the run started: "
            f"{'; '.join(parts)}; start it over with --force, or use another --out"
        )


def decode(run, device, resume) -> dict:
    files = pd.read_parquet(run.path(FILES))
    paths = [os.fsdecode(p) for p in files["path"]]
    scanned = run.progress["stages"]["scan"]
    unlisted = [(folder, f"folder not listed: {reason}") for folder, reason in scanned.get("unlisted", [])]
    unlisted += [tuple(row) for row in scanned.get("refused", [])]  # --input-list lines naming no image
    common = dict(
        size=run.cfg.image_size,
        max_pixels=run.cfg.max_pixels,
        pixels_path=run.rows(rd.PIXELS),
        skipped_path=run.path(rd.SKIPPED),
        also_skipped=unlisted,
    )
    if run.cfg.engine == "ray":
        from .ray_engine import decode_all_ray

        keep, sizes, resumed = decode_all_ray(run.root, paths, address=run.cfg.ray_address, resume=resume, **common)
    else:
        keep, sizes, resumed = decode_all(run.root, paths, workers=run.cfg.workers, resume=resume, **common)
    if not keep:
        raise IceError(f"none of the {len(paths)} image files in {run.root} could be read; see {run.path(rd.SKIPPED)}")
    if len(keep) < 2:  # k-means needs two; the CLI said "--clusters 2: more clusters than the 1 images"
        found = f"one of the {len(paths)} image files" if len(paths) > 1 else "one image file"
        raise IceError(f"only {found} in {run.root} could be read: clustering needs at least two")
    if run.cfg.clusters and run.cfg.clusters > len(keep):  # here, not after training
        raise IceError(
            f"--clusters {run.cfg.clusters}: more clusters than the {len(keep)} images that could be "
            f"read; give {len(keep)} or fewer (with --force, to start this run again)"
        )
    kept_paths = [display_path(paths[i]) for i in keep]
    decoded = pd.DataFrame(
        {
            "image_id": np.arange(len(keep), dtype=np.int64),
            "path": kept_paths,
            "width": sizes[:, 0],
            "height": sizes[:, 1],
        }
    )
    if run.cfg.labels_from_folders:
        decoded["label"] = [PurePosixPath(p).parent.name for p in kept_paths]
    with rd.atomic_path(run.path(DECODED)) as tmp:
        decoded.to_parquet(tmp, index=False)
    colour = has_colour(rd.load_rows(run.rows(rd.PIXELS)), seed=run.cfg.seed)
    gpu = run.cfg.recipe == "auto" and colour and device().type == "cuda"  # asked only where it decides
    return {
        "skipped": len(paths) - len(keep),
        "colour": colour,
        "recipe": pick_recipe(run.cfg, gpu, colour),
        **({"resumed_at": resumed} if resumed else {}),
    }


def train(run, device, resume) -> dict:
    if run.cfg.encoder_from:  # another run's encoder: copied, not trained
        source = Path(run.cfg.encoder_from) / rd.MODEL
        with rd.atomic_path(run.path(rd.MODEL)) as tmp:
            shutil.copyfile(source, tmp)
        loss = rd.load_manifest(source.parent).get("train_loss", float("nan"))  # its model's, rounded
        return {"loss": round(float(loss), 6), "encoder_from": str(source.parent)}
    if run.cfg.train_workers:
        from .ray_engine import train_ray

        loss = train_ray(run.dir, run.rows(rd.PIXELS), run.cfg, resume)
        return {"loss": round(float(loss), 6), "train_workers": run.cfg.train_workers}
    if device().type == "cuda" and run.umap_warm_up is None:  # the CPU is idle meanwhile: fill numba's cache
        run.umap_warm_up = warm_up_umap(run.cfg.manifold_dim)
    from .train import train as run_training

    _, loss = run_training(run.dir, run.rows(rd.PIXELS), run.cfg, device(), resume=resume)
    return {"loss": round(float(loss), 6)}


def embed(run, device, resume) -> dict:
    if run.cfg.engine == "ray":
        from .ray_engine import embed_ray

        embed_ray(run.dir, run.rows(rd.PIXELS), run.rows(rd.EMBEDDINGS), run.cfg, resume)
        return {}
    from .embed import embed as run_encoder
    from .train import load_model

    model = load_model(run.dir, device())
    run_encoder(model, run.path(rd.PIXELS), run.path(rd.EMBEDDINGS), run.cfg, device())
    return {}


def neighbour_graph(run, emb: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k-nearest-neighbour graph of `emb` (the embeddings, or those of the fit sample
    `rows`) that the manifold UMAP starts from, and the map up to cfg.umap_sample images:
    built once, kept in the run directory until the run completes."""
    k = min(run.cfg.neighbors, len(emb) - 1)
    return _kept_graph(run.path(rd.KNN), len(emb), k, lambda: knn_graph(emb, k, run.cfg.seed), rows)


def fit_sample(run, emb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """The ids of the fit sample (None: every image) and their embeddings (fit.fit_rows)."""
    rows = fit_rows(len(emb), run.cfg.fit_sample, run.cfg.seed)
    return rows, (np.asarray(emb) if rows is None else np.ascontiguousarray(emb[rows], dtype=np.float32))


def applied(run, emb: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image outside the fit sample's nearest sampled images (fit.apply_neighbours)."""
    k = min(run.cfg.neighbors, len(rows))
    search_all = None
    if run.cfg.engine == "ray":  # the search on Ray Data actors, each with the sample's index
        from .ray_engine import neighbours_ray

        search_all = functools.partial(neighbours_ray, run.rows(rd.EMBEDDINGS), address=run.cfg.ray_address)
    return apply_neighbours(run.path(rd.APPLY_KNN), emb, rows, k, run.cfg.seed, search_all)


def spread(run, emb: np.ndarray, rows: np.ndarray, fitted: np.ndarray, nearest, salt: int) -> np.ndarray:
    """(n, c) float32: the sample's positions `fitted` (len(rows), c) at their rows, every other
    image placed between its nearest sampled images' positions (fit.place); `nearest` is
    applied(run, emb, rows)."""
    near, d2 = nearest
    out = np.empty((len(emb), fitted.shape[1]), dtype=np.float32)
    out[rows] = fitted
    out[others(len(emb), rows)] = place(fitted, near, d2, np.random.default_rng([run.cfg.seed, salt]))
    return out


def layout_graph(run, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Above cfg.umap_sample images, the graph of the images that both UMAPs lay out first
    (project.seed_graph, built once so that the second UMAP does not pay for it again); kept
    like neighbour_graph. None at or below umap_sample."""
    cfg = run.cfg
    if len(emb) <= cfg.umap_sample:
        return None
    rows = layout_rows(len(emb), cfg.umap_sample, cfg.seed)
    k = min(cfg.neighbors, len(rows) - 1)
    return _kept_graph(
        run.path(rd.SEED_KNN), len(rows), k, lambda: seed_graph(emb, cfg.neighbors, cfg.umap_sample, cfg.seed), rows
    )


def _kept_graph(path: Path, n: int, k: int, build, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """build()'s (ind, dist) over n rows with k neighbours each, or the copy kept at `path` from an
    earlier call of the same shape and, where given, over the same `rows` (ids)."""
    if path.exists():
        with np.load(path) as saved:
            same_rows = rows is None or ("rows" in saved and np.array_equal(saved["rows"], rows))
            if saved["ind"].shape == (n, k) and same_rows:
                return saved["ind"], saved["dist"]
    knn = build()
    with rd.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, ind=knn[0], dist=knn[1], **({} if rows is None else {"rows": rows}))
    return knn


def cluster(run, device, resume) -> dict:
    if run.umap_warm_up is not None:  # let it finish writing the cache first (it took 29 s on 2 cores)
        try:
            run.umap_warm_up.wait(timeout=120)
        except subprocess.TimeoutExpired:  # never seen; the stage compiles what it needs itself
            run.umap_warm_up.kill()
    cfg = run.cfg
    emb = rd.load_rows(run.rows(rd.EMBEDDINGS))  # --clusters against n: decode checked it
    rows, fit = fit_sample(run, emb)
    space, knn = fit, None
    manifold = cfg.cluster_space == "manifold" and len(fit) > cfg.manifold_dim + 2
    if manifold:
        knn = neighbour_graph(run, fit, rows)
        space = umap_reduce(
            fit,
            cfg.manifold_dim,
            neighbors=cfg.neighbors,
            min_dist=0.0,
            sample=cfg.umap_sample,
            seed=cfg.seed,
            desc="manifold",
            knn=knn,
            seed_knn=layout_graph(run, fit),
            parallel=bool(cfg.parallel_layout),
        )
    k = cfg.clusters or choose_k(space, cfg.seed)[0]
    graph = None
    if cfg.refine == "gmm" and (cfg.mixture_pick == "graph" or cfg.graph_rounds):
        graph = (knn if knn is not None else neighbour_graph(run, fit, rows))[0]  # the manifold's graph, read once
    km = fit_clusters(
        space,
        k,
        cfg.refine,
        cfg.kmeans_restarts,
        cfg.kmeans_iters,
        cfg.seed,
        neighbours=graph,
        pick=cfg.mixture_pick,
        graph_rounds=cfg.graph_rounds or 0,
    )
    labels, distance = km.labels_, km.distances_
    if rows is not None:  # every other image takes the cluster its nearest sampled images hold most
        near, d2 = applied(run, emb, rows)
        labels = np.empty(len(emb), dtype=np.int32)
        labels[rows] = km.labels_
        labels[others(len(emb), rows)] = vote(km.labels_, near, d2)
        space = spread(run, emb, rows, space, (near, d2), salt=1) if manifold else emb
        distance = sq_distance(space, km.centroids_, labels)
    if manifold:
        rd.save_npy(run.path(rd.MANIFOLD), space)
    rd.save_npy(run.path(rd.CENTROIDS), km.centroids_)
    with rd.atomic_path(run.path(ASSIGN), suffix=".npz") as tmp:
        np.savez(tmp, cluster=labels, distance=distance)
    write_index(build_index(emb, cfg.seed), run.path(rd.INDEX))
    return {"k": int(len(km.centroids_)), "fitted_on": len(fit)}


SELF_LABEL_MIN = 100  # images; fewer make too few batches to learn from


def selflabel(run, device, resume) -> dict:
    """Relabel every image: the encoder fine-tuned to predict the clusters (selflabel.py) gives
    each image its cluster; the centres become the means of the new clusters in the clustering
    space. "changed" counts the images that self-labelling moved."""
    cfg = run.cfg
    assign = dict(np.load(run.path(ASSIGN)))
    first = assign.get("first_cluster", assign["cluster"])  # a resumed run starts from the mixture again
    if not cfg.self_label_epochs or len(first) < SELF_LABEL_MIN or first.max() < 1:
        return {}
    from .selflabel import self_label
    from .train import load_model

    model = load_model(run.dir, device())
    rows = fit_rows(len(first), cfg.fit_sample, cfg.seed)  # trained on the fit sample, applied to all
    cluster = self_label(model, run.rows(rd.PIXELS), first, cfg, device(), rows=rows)
    stats = {"changed": int((cluster != first).sum())}
    _, cluster = np.unique(cluster, return_inverse=True)  # a cluster may win no image
    cluster = cluster.astype(np.int32)
    space = rd.load_rows(run.path(rd.MANIFOLD) if cfg.cluster_space == "manifold" else run.rows(rd.EMBEDDINGS))
    centres, distance = centres_and_distances(space, cluster)
    rd.save_npy(run.path(rd.CENTROIDS), centres)
    with rd.atomic_path(run.path(ASSIGN), suffix=".npz") as tmp:
        np.savez(tmp, cluster=cluster, distance=distance, first_cluster=first)
    return {"k": len(centres), **stats}


def project(run, device, resume) -> dict:
    cfg = run.cfg
    emb = rd.load_rows(run.rows(rd.EMBEDDINGS))
    if len(emb) > 3:
        rows, fit = fit_sample(run, emb)
        # above umap_sample the map places the rows it does not lay out (project._place_between),
        # so it needs no graph of every image
        knn = neighbour_graph(run, fit, rows) if len(fit) <= cfg.umap_sample else None
        xy = umap_reduce(
            fit,
            2,
            neighbors=cfg.neighbors,
            min_dist=0.1,
            sample=cfg.umap_sample,
            seed=cfg.seed,
            desc="map",
            knn=knn,
            seed_knn=layout_graph(run, fit),
            parallel=bool(cfg.parallel_layout),
            refine=False,
        )
        if rows is not None:
            xy = spread(run, emb, rows, xy, applied(run, emb, rows), salt=2)
    else:  # UMAP needs a few points; a handful of images get a line
        xy = np.stack([np.arange(len(emb)), np.zeros(len(emb))], 1).astype(np.float32)
    rd.save_npy(run.path(MAP), xy)
    return {}


def tiles(run, device, resume) -> dict:
    """The map's quadtree of tiles (ice/tiles.py), from which the explorer gives each view of a
    large map its points."""
    xy = np.load(run.path(MAP))
    return map_tiles.write(run.dir, xy[:, 0], xy[:, 1])
