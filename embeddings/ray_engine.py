"""`ice embed --engine ray`: the decode stage on Ray Data, and with --train-workers the training
on Ray Train, on a local Ray or a cluster.

Each Ray task reads a block of files whole and decodes them with images.decode_bytes, the twin
of the local engine's decode_image, so both engines give the same pixels, sizes and skip
reasons. Each image goes to its row (its position in the sorted list of files) of the scratch
pixels file, which the task writes itself, as the local engine's worker processes do; blocks
finish in any order, and the run does not depend on which finished first. Ray retries a task
whose worker was lost. The driver keeps the local engine's decode journal of the files done,
so that a killed run resumed (`ice embed --resume`) decodes only the others.

The embed stage runs on Ray Data actors (Embedder): each loads the run's encoder once and
embeds blocks of rows of the run's pixels into their rows of a scratch file, on a GPU each where
the cluster has GPUs; an image's embedding does not depend on the block it came in.

With --train-workers N, N Ray Train workers run embeddings.train.train together (PyTorch DDP's
scheme: each its share of every batch, the gradients averaged; gloo on CPUs, NCCL on GPUs). The
first writes the checkpoint into the run directory after each epoch (a file system all nodes
share, as for the pixels); a lost worker makes Ray Train start the group again, which goes on
from that checkpoint. The other stages run in this process, as with the local engine.

Only this module imports ray, and only when the engine is chosen (tests/test_ray.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ice import storage
from ice.errors import IceError, ImageError
from ice.run_dir import MODEL, new_memmap

from . import images
from .images import Decoded, _keep_rows, _reason, decode_bytes, display_path, missing_reason, write_skipped
from .progress import progress

BLOCK = 1024  # files per Ray task


def start_ray(address: str | None = None):
    """The ray module, connected: to `address` (a running cluster), else to the Ray this process
    already runs, else to a new local Ray on this machine's cores."""
    try:
        import ray
    except ImportError:
        raise IceError("--engine ray needs Ray: pip install -e '.[ray]' (or pip install 'ice-explorer[ray]')") from None
    if not ray.is_initialized():  # "local": a new Ray here, even where a file of an earlier one is left
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def read_and_decode(root: str, path: str, size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """decode_image's answer for the file `path` under `root` (a folder, or an object store's
    s3:// root), through its bytes: the same pixels, sizes and reasons (a file gone or
    unreadable gives decode_image's reason too)."""
    if storage.is_remote(root):
        return decode_bytes(storage.read_bytes(root, path), size, max_pixels)
    full = os.path.join(root, path)
    try:
        with open(full, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageError(missing_reason(full)) from None
    except Exception as e:  # _reason re-raises what is not a reading failure
        raise ImageError(_reason(e, empty=False)) from None
    return decode_bytes(data, size, max_pixels)


def decode_block(batch: dict, root: str, size: int, max_pixels: int, scratch: str) -> dict:
    """Ray Data's map_batches function, run as a Ray task: decode a block of {row, path} into
    their rows of the scratch file (on the shared file system the run directory is on, as the
    local engine's worker processes do), and answer their original sizes and skip reasons ("" where
    decoded). Only those small arrays go back through Ray's object store."""
    rows = np.load(scratch, mmap_mode="r+")  # per task: a later run's scratch file is a new file
    wh = np.zeros((len(batch["row"]), 2), np.int32)
    errors = []
    for j, (row, path) in enumerate(zip(batch["row"], batch["path"], strict=True)):
        try:
            rows[row], wh[j, 0], wh[j, 1] = read_and_decode(root, str(path), size, max_pixels)
            errors.append("")
        except ImageError as e:
            errors.append(str(e))
    rows.flush()
    del rows
    return {"row": batch["row"], "wh": wh, "error": np.array(errors, dtype=object)}


def decode_all_ray(
    root: Path | str,
    paths: list[str],
    *,
    size: int,
    max_pixels: int,
    pixels_path: Path,
    skipped_path: Path,
    address: str | None = None,
    resume: bool = False,
    also_skipped: list[tuple[str, str]] = (),
) -> Decoded:
    """images.decode_all on Ray Data: the same pixels_path, skipped_path, journal and answer.
    With `resume`, a call on the same paths and size after a killed one decodes only the files
    its journal does not hold."""
    import pyarrow as pa

    ray = start_ray(address)
    n = len(paths)
    scratch = pixels_path.with_name(pixels_path.name + ".partial")
    journal = pixels_path.with_name(pixels_path.name + ".journal.npz")
    key = images._journal_key(paths, size)
    state = images._read_journal(journal, scratch, key, n, size) if resume else None
    if state is None:
        journal.unlink(missing_ok=True)
        new_memmap(scratch, np.uint8, (max(n, 1), size, size, 3)).flush()
        done, ok, sizes, skipped = np.zeros(n, bool), np.zeros(n, bool), np.zeros((n, 2), np.int32), []
    else:  # the journal lists its skipped files in row order: the rows done and not decoded
        done, ok, sizes, listed = state
        skipped = [(int(i), reason) for i, (_, reason) in zip(np.flatnonzero(done & ~ok), listed, strict=True)]
    resumed = int(done.sum())
    todo = np.flatnonzero(~done)
    table = pa.table({"row": todo.astype(np.int64), "path": pa.array([paths[i] for i in todo], pa.string())})
    blocks = [table.slice(start, BLOCK) for start in range(0, len(todo), BLOCK)] or [table]
    ds = ray.data.from_arrow(blocks)  # a block per task
    ds = ds.map_batches(
        decode_block,
        fn_kwargs={"root": str(root), "size": size, "max_pixels": max_pixels, "scratch": str(scratch)},
        batch_size=BLOCK,
        batch_format="numpy",
    )
    last_save = time.monotonic()
    with progress(n, "decode", initial=resumed) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            got = batch["row"]
            good = np.array([not e for e in batch["error"]], dtype=bool)
            ok[got[good]], sizes[got[good]] = True, batch["wh"][good]
            skipped += [(int(i), str(e)) for i, e in zip(got[~good], batch["error"][~good], strict=True)]
            done[got] = True
            bar.update(len(got))
            if time.monotonic() - last_save >= images.JOURNAL_SECONDS:  # the block's task synced its rows
                listed = [(display_path(paths[i]), e) for i, e in sorted(skipped)]
                images._save_journal(journal, scratch, None, key, done, ok, sizes, listed)
                last_save = time.monotonic()
    keep = np.flatnonzero(ok)
    # in row order, as the local engine lists them
    write_skipped(skipped_path, [(display_path(paths[i]), e) for i, e in sorted(skipped)] + list(also_skipped))
    _keep_rows(scratch, pixels_path, keep, n)
    journal.unlink(missing_ok=True)
    return Decoded(keep.tolist(), sizes[keep], resumed)


TRAIN_RETRIES = 3  # times Ray Train starts the training group again after a lost worker


def train_worker(config: dict) -> None:
    """Ray Train's function, run by each worker: embeddings.train.train in the process group
    Ray Train set up, resuming from the run's checkpoint when the group was started again."""
    import ray.train
    from ray.train import Checkpoint
    from ray.train.torch import get_device

    from .train import train

    rank = ray.train.get_context().get_world_rank()
    restarted = ray.train.get_checkpoint() is not None  # a report below was made: a lost worker's restart
    run_dir = Path(config["run_dir"])

    def on_epoch(epoch: int, model) -> None:
        # a small checkpoint for Ray Train to hand a restarted group: the real one is in run_dir
        if rank == 0:
            marker = run_dir / f".ray-train-epoch-{epoch}"
            marker.mkdir(exist_ok=True)
            (marker / "epoch").write_text(str(epoch))
            ray.train.report({"epoch": epoch}, checkpoint=Checkpoint.from_directory(str(marker)))
        else:
            ray.train.report({"epoch": epoch})

    train(
        run_dir,
        Path(config["pixels"]),
        config["cfg"],
        get_device(),
        resume=config["resume"] or restarted,
        on_epoch=on_epoch,
    )


def train_ray(run_dir: Path, pixels_path: Path, cfg, resume: bool) -> float:
    """Train the run's encoder on cfg.train_workers Ray Train workers (a GPU each where the
    cluster has GPUs); they write run_dir's checkpoint and model as embeddings.train.train does.
    Returns the final loss."""
    import shutil

    ray = start_ray(cfg.ray_address)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    gpu = bool(ray.cluster_resources().get("GPU", 0))
    storage = run_dir / "ray-train"  # Ray Train's own records, removed after
    shutil.rmtree(storage, ignore_errors=True)  # a killed run's: the run's own checkpoint is what resumes
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"run_dir": str(run_dir), "pixels": str(pixels_path), "cfg": cfg, "resume": resume},
        scaling_config=ScalingConfig(num_workers=cfg.train_workers, use_gpu=gpu),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(
            name="train",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=TRAIN_RETRIES),
        ),
    )
    try:
        trainer.fit()
    except Exception as e:  # Ray Train wraps the workers' errors: their own message, on one line
        cause = e.__cause__ or e
        raise IceError(f"training on Ray Train failed: {str(cause).strip().splitlines()[-1][:300]}") from e
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        for marker in run_dir.glob(".ray-train-epoch-*"):
            shutil.rmtree(marker, ignore_errors=True)
    import torch

    return float(torch.load(run_dir / MODEL, map_location="cpu", weights_only=False)["loss"])


EMBED_BLOCK = 4096  # rows per Ray Data block of the embed stage


class Embedder:
    """Ray Data's actor for the embed stage: the run's encoder, loaded once per actor, and the
    pixels and scratch embeddings file, opened once; each call embeds blocks of rows."""

    def __init__(self, run_dir: str, pixels: str, scratch: str, cfg):
        from .train import load_model, pick_device

        self.device = pick_device("auto")
        self.model = load_model(Path(run_dir), self.device).eval()
        self.pixels = np.load(pixels, mmap_mode="r")
        self.out = np.load(scratch, mmap_mode="r+")
        self.batch = max(cfg.resolved().batch_size, 512)  # as embeddings.embed.embed

    def __call__(self, block: dict) -> dict:
        import torch

        from .embed import encode

        for start, stop in zip(block["start"], block["stop"], strict=True):
            for a in range(int(start), int(stop), self.batch):
                b = min(a + self.batch, int(stop))
                with torch.no_grad():
                    batch = torch.from_numpy(np.ascontiguousarray(self.pixels[a:b])).to(self.device)
                    self.out[a:b] = encode(self.model, batch, self.device)
        self.out.flush()
        return {"rows": np.asarray(block["stop"]) - np.asarray(block["start"])}


def embed_ray(run_dir: Path, pixels_path: Path, out_path: Path, cfg) -> None:
    """embeddings.embed.embed on Ray Data actors: the same out_path, (n, dim) float32 rows in
    image_id order, from the encoder in run_dir (a shared file system, as for decoding). A
    killed call is started again from the first row."""
    import pyarrow as pa

    ray = start_ray(cfg.ray_address)
    cfg = cfg.resolved()
    n = len(np.load(pixels_path, mmap_mode="r"))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    scratch = out_path.with_name(out_path.name + ".partial")
    new_memmap(scratch, np.float32, (n, cfg.dim)).flush()
    starts = np.arange(0, n, EMBED_BLOCK, dtype=np.int64)
    actors = min(actors, len(starts))  # no more actors than blocks
    table = pa.table({"start": starts, "stop": np.minimum(starts + EMBED_BLOCK, n)})
    ds = ray.data.from_arrow([table.slice(i, 1) for i in range(len(starts))])  # a block per call
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "run_dir": str(run_dir),
            "pixels": str(pixels_path),
            "scratch": str(scratch),
            "cfg": cfg,
        },
        batch_size=1,
        batch_format="numpy",
        concurrency=actors,
        num_gpus=1 if gpus else 0,
    )
    with progress(n, "embed") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            bar.update(int(batch["rows"].sum()))
    os.replace(scratch, out_path)


APPLY_BLOCK = 65_536  # images outside the fit sample per call of the apply search


class Neighbours:
    """Ray Data's actor for applying the fits: the fit sample's search (its IVF index, or its
    vectors where the search is exact), made in the driver and loaded once per actor, and the
    run's embeddings, opened once; each call finds the nearest sampled images of a block of
    the other images."""

    def __init__(self, emb: str, index, base, k: int):
        import faiss

        faiss.omp_set_num_threads(1)  # an actor per CPU
        self.emb = np.load(emb, mmap_mode="r")
        self.index = None if index is None else faiss.deserialize_index(index)
        self.base, self.k = base, k

    def __call__(self, block: dict) -> dict:
        import faiss

        x = np.ascontiguousarray(self.emb[block["id"]], dtype=np.float32)
        d2, near = faiss.knn(x, self.base, self.k) if self.index is None else self.index.search(x, self.k)
        return {"pos": block["pos"], "near": near.astype(np.int64), "d2": d2}


def neighbours_ray(
    emb_path: Path, base: np.ndarray, rest: np.ndarray, k: int, seed: int, address: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """fit.apply_neighbours' search on Ray Data actors: for each image id in `rest`, its k
    nearest rows of `base` (the fit sample's embeddings), by the same search (fit.searcher:
    exact, or the same IVF index, which the actors load from the object store)."""
    import faiss
    import pyarrow as pa

    from .fit import EXACT_PAIRS, ivf_index

    ray = start_ray(address)
    exact = len(rest) * len(base) <= EXACT_PAIRS
    index = None if exact else faiss.serialize_index(ivf_index(base, seed))
    table = pa.table({"pos": np.arange(len(rest), dtype=np.int64), "id": rest.astype(np.int64)})
    blocks = [table.slice(start, APPLY_BLOCK) for start in range(0, len(rest), APPLY_BLOCK)]
    actors = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(blocks)))
    ds = ray.data.from_arrow(blocks).map_batches(
        Neighbours,
        fn_constructor_kwargs={"emb": str(emb_path), "index": index, "base": base if exact else None, "k": k},
        batch_size=APPLY_BLOCK,
        batch_format="numpy",
        concurrency=actors,
    )
    near = np.empty((len(rest), k), dtype=np.int64)
    d2 = np.empty((len(rest), k), dtype=np.float32)
    with progress(len(rest), "apply") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            near[batch["pos"]], d2[batch["pos"]] = batch["near"], batch["d2"]
            bar.update(len(batch["pos"]))
    return near, d2
