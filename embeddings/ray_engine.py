"""`ice embed --engine ray`: the decode stage on Ray Data, and with --train-workers the training
on Ray Train, on a local Ray or a cluster.

The run is written in version 2 of the run format (docs/run-format.md): a Ray Data actor
(Decoder) reads a shard of files whole, decodes them with images.decode_bytes, the twin of the local engine's
decode_image (the same pixels, sizes and skip reasons), and writes the shard's part of the
pixels and then a record of its files; shards finish in any order, and the run does not depend
on which finished first. Ray retries a shard whose actor was lost, and a killed run resumed
(`ice embed --resume`) decodes only the shards without a record.

The embed stage runs on Ray Data actors (Embedder): each loads the run's encoder once and
embeds shards of the pixels into their parts of the embeddings, on a GPU each where the
cluster has GPUs; an image's embedding does not depend on the shard it came in.

With --train-workers N, N Ray Train workers run embeddings.train.train together (PyTorch DDP's
scheme: each its share of every batch, the gradients averaged; gloo on CPUs, NCCL on GPUs). The
first writes the checkpoint into the run directory after each epoch (a file system all nodes
share, as for the pixels); a lost worker makes Ray Train start the group again, which goes on
from that checkpoint. The other stages run in this process, as with the local engine.

Each stage on Ray is driven from a process forked for it (on_ray), so that the job's process,
which runs the fits and self-labelling, never imports ray. Only this module imports ray, and
only when the engine is chosen (tests/test_ray.py).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import traceback
from pathlib import Path

import numpy as np

from ice import storage
from ice.errors import IceError, ImageError
from ice.run_dir import MODEL, Rows, atomic_path, load_rows, part_path, save_npy

from .images import Decoded, _jpeg_operator, _reason, decode_bytes, display_path, missing_reason, write_skipped
from .progress import progress


def start_ray(address: str | None = None):
    """The ray module, connected: to `address` (a running cluster), else to the Ray this process
    already runs, else to a new local Ray on this machine's cores."""
    try:
        import ray
    except ImportError:
        raise IceError("--engine ray needs Ray: pip install -e '.[ray]' (or pip install 'ice-explorer[ray]')") from None
    if not ray.is_initialized():  # "local": a new Ray here, even where a file of an earlier one is left
        with contextlib.nullcontext() if address else _lean_local_ray():
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


_STAGE_PROCESS = False  # set in a process that on_ray forked


def on_ray(stage):
    """Run the decorated stage in a process forked for it, which starts (or connects to) Ray
    through ray_stage and ends with the stage; its answer, or its error, comes back pickled.
    The job's process then never imports ray: a Ray driver's modules and the memory its core
    worker leaves after ray.shutdown() would otherwise stay beside the fits it runs alone, and
    in the DataLoader workers it forks (BENCHMARKS.md, ray_bench). Forked, the process shares
    the job's memory rather than importing all of it again. A process that already runs Ray (a
    calling program, the tests' session) runs the stage itself, on that Ray."""

    @functools.wraps(stage)
    def run(*args, **kwargs):
        running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        if _STAGE_PROCESS or running or not hasattr(os, "fork"):
            return stage(*args, **kwargs)
        return _forked(stage, args, kwargs)

    return run


def _forked(stage, args: tuple, kwargs: dict):
    """stage(*args, **kwargs) in a forked process: its answer, or its error raised here."""
    read, write = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the stage's process: it never returns from here
        status = 1
        try:
            os.close(read)
            _stage_process(parent)
            try:
                answer = (True, stage(*args, **kwargs))
            except BaseException as e:  # a KeyboardInterrupt too: the job's process re-raises it
                if not isinstance(e, (IceError, KeyboardInterrupt)):  # its traceback goes with it
                    e.add_note("".join(traceback.format_exception(e)).rstrip())
                answer = (False, e)
            with os.fdopen(write, "wb") as out:
                try:
                    out.write(pickle.dumps(answer, protocol=5))
                except Exception:  # an error that does not pickle: its message
                    out.write(pickle.dumps((False, IceError(f"{type(answer[1]).__name__}: {answer[1]}"))))
            status = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # not the job's exit handlers
    os.close(write)
    try:
        with os.fdopen(read, "rb") as f:
            data = f.read()
    finally:
        _, status = os.waitpid(pid, 0)  # after a Ctrl-C too, once the stage has shut its Ray down
    if not data:
        raise IceError(f"the stage on Ray ended without an answer (exit status {os.waitstatus_to_exitcode(status)})")
    ok, answer = pickle.loads(data)
    if not ok:
        raise answer
    return answer


def _stage_process(parent: int) -> None:
    """The start of on_ray's process. Its garbage collector leaves the objects it inherited
    alone (collecting would touch, and so copy, the job's pages), and on Linux it is killed when
    the job's process dies, as the local Ray's processes are when it dies."""
    global _STAGE_PROCESS
    _STAGE_PROCESS = True
    gc.freeze()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the job died before that was set
            os._exit(1)


@contextlib.contextmanager
def _lean_local_ray():
    """While ray.init starts a local Ray: without the autoscaler's monitor (a Ray of one machine
    has no nodes to add), the log monitor (log_to_driver=False: no one reads the workers' logs)
    and the dashboard's API server (with include_dashboard=False it still serves the job and
    state APIs, which ICE does not use): three Python processes beside every stage on Ray
    (BENCHMARKS.md, `ray_bench --idle`). Ray 2.60's ray.init has no switch for them; the head
    Node it makes reads the first two from its RayParams and starts the third in
    start_api_server."""
    from ray._private import node

    init, api = node.Node.__init__, node.Node.start_api_server

    def lean(self, ray_params, *args, head: bool = False, **kwargs):
        if head:
            ray_params.no_monitor, ray_params.include_log_monitor = True, False
        init(self, ray_params, *args, head=head, **kwargs)

    def no_api_server(self, *, include_dashboard, raise_on_failure):
        self._webui_url = None

    node.Node.__init__, node.Node.start_api_server = lean, no_api_server
    try:
        yield
    finally:
        node.Node.__init__, node.Node.start_api_server = init, api


@contextlib.contextmanager
def ray_stage(address: str | None = None):
    """start_ray for one stage on Ray. A Ray that the stage started (or connected to) is shut
    down when the stage ends, so that Ray's processes do not sit idle beside the stages the
    driver runs alone (BENCHMARKS.md); the next stage on Ray starts it again. A Ray that was
    running before, as a calling program's, stays."""
    running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    ray = start_ray(address)
    try:
        yield ray
    finally:
        if not running:
            ray.shutdown()


def blocks(ray, tables: list):
    """A Ray dataset of the pyarrow `tables`, a block each, as given. ray.data.from_blocks reads
    their schemas and sizes in this process; from_arrow would run a Ray task per table for them,
    and the worker processes those tasks ran in would keep pyarrow and Ray Data imported (about
    70 MB each) while they wait idle for the rest of the job."""
    return ray.data.from_blocks(tables)


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


def decoded_path(folder: Path, shard: int) -> Path:
    """Where a shard's decode records which of its files were decoded, their sizes and the
    others' skip reasons; written after its pixels, so that a shard with both is done."""
    return folder / f".decoded-{shard:05d}.npz"


def decode_files(root: str, paths: list[str], size: int, max_pixels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """read_and_decode over `paths`: their pixels (zeros where skipped), their (width, height)
    and their skip reasons ("" where decoded)."""
    pixels = np.zeros((len(paths), size, size, 3), np.uint8)
    wh = np.zeros((len(paths), 2), np.int32)
    errors = []
    for j, path in enumerate(paths):
        try:
            pixels[j], wh[j, 0], wh[j, 1] = read_and_decode(root, path, size, max_pixels)
            errors.append("")
        except ImageError as e:
            errors.append(str(e))
    return pixels, wh, errors


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # blocked from fork until a decode process's own handlers


def _forked_decoder() -> None:
    """A decode process forked from a Decoder actor: one torch thread, as in DataLoader's
    workers, and the default signal handlers rather than the Ray worker's."""
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


@contextlib.contextmanager
def _decode_pool(processes: int):
    """A pool of `processes` decode processes forked from this one. They are forked with SIGINT
    and SIGTERM blocked, until _forked_decoder has put back the default handlers: a signal that
    reached one before, under the Ray worker's handler, could leave it running for ever, and
    the pool's end waiting on it. The pool ends by closing (each process finishes its tasks and
    exits) and is terminated only when the block raised."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pool = multiprocessing.get_context("fork").Pool(processes, _forked_decoder)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    done = False
    try:
        yield pool
        done = True
    finally:
        if done:
            pool.close()
        else:
            pool.terminate()
        pool.join()


def decode_shard(batch: dict, root: str, size: int, max_pixels: int, folder: str, processes: int = 1) -> dict:
    """Ray Data's map_batches function, run by a Decoder actor: decode each shard of {shard, row,
    path} in the batch into its part of the pixels (folder/part-NNNNN.npy, the images decoded,
    in row order) and its record (decoded_path), each written atomically on the file system
    the run directory is on. With `processes` > 1 the files are decoded in that many processes
    forked from this one, which share its torch as the local engine's decode workers share
    theirs. Only the shard numbers and file counts go back through Ray's object store."""
    folder = Path(folder)
    shards = np.asarray(batch["shard"])
    with _decode_pool(processes) if processes > 1 else contextlib.nullcontext() as pool:
        for shard in np.unique(shards):
            take = np.flatnonzero(shards == shard)
            paths = [str(batch["path"][i]) for i in take]
            if pool is None:
                pixels, wh, errors = decode_files(root, paths, size, max_pixels)
            else:
                chunks = [paths[a : a + 256] for a in range(0, len(paths), 256)]
                parts = pool.starmap(decode_files, [(root, c, size, max_pixels) for c in chunks])
                pixels, wh = np.concatenate([q[0] for q in parts]), np.concatenate([q[1] for q in parts])
                errors = [e for q in parts for e in q[2]]
            ok = np.array([not e for e in errors], dtype=bool)
            save_npy(part_path(folder, int(shard), ".npy"), pixels[ok])
            with atomic_path(decoded_path(folder, int(shard)), suffix=".npz") as tmp:
                np.savez(tmp, row=np.asarray(batch["row"])[take], wh=wh, error=np.array(errors, dtype=str))
    counts = [int((shards == k).sum()) for k in np.unique(shards)]
    return {"shard": np.unique(shards), "files": np.array(counts, np.int64)}


def per_node(nodes: list[dict]) -> tuple[int, int]:
    """CPU actors for a stage on the cluster's `nodes` (ray.nodes()), one per node with all of
    its CPUs: (CPUs each, actors). Each actor imports torch once, as the local engine does on
    one machine, rather than once per CPU. On nodes of unequal sizes each actor takes the
    smallest node's CPUs."""
    cpus = [int(node["Resources"].get("CPU", 0)) for node in nodes if node["Alive"]]
    cpus = [c for c in cpus if c > 0] or [1]
    each = min(cpus)
    return each, sum(c // each for c in cpus)


class Decoder:
    """Ray Data's actor for the decode stage (decode_shard), one per node. Actors, not tasks:
    Ray ends an actor pool with its stage, where it keeps a task's worker process idle for
    later tasks, and a decoder holds torch (for torchvision's JPEG decoder; BENCHMARKS.md),
    which would then sit beside the embed stage's actors."""

    def __init__(self, **settings):
        self.settings = settings
        _jpeg_operator()  # torch and the JPEG decoder, loaded before decode_shard forks: shared

    def __call__(self, batch: dict) -> dict:
        return decode_shard(batch, **self.settings)


SHARD = 4096  # files per shard: a Ray actor decodes one at a time into its part of the pixels


def _recorded(folder: Path, shard: int, n: int) -> bool:
    """Whether the shard's part and record are written, for the files this SHARD gives it."""
    if not part_path(folder, shard, ".npy").exists():
        return False
    try:
        with np.load(decoded_path(folder, shard)) as z:
            rows = z["row"]
    except (OSError, ValueError, KeyError):
        return False
    return np.array_equal(rows, np.arange(shard * SHARD, min(n, (shard + 1) * SHARD)))


@on_ray
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
    """images.decode_all on Ray Data, into a version 2 run's pixel parts: pixels_path is the
    folder, and shard k, files k * SHARD to (k + 1) * SHARD - 1 of `paths`, gives its decoded
    images as part k. The same skipped_path and answer as decode_all. With `resume`, a call on
    the same paths and size after a killed one decodes only the shards not written."""
    import pyarrow as pa

    n = len(paths)
    folder = Path(pixels_path)
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, -(-n // SHARD))
    done = [k for k in range(shards) if _recorded(folder, k, n)]
    todo = sorted(set(range(shards)) - set(done))
    resumed = sum(min(SHARD, n - k * SHARD) for k in done)
    tables = []
    for k in todo:
        rows = np.arange(k * SHARD, min(n, (k + 1) * SHARD), dtype=np.int64)
        path = pa.array([paths[i] for i in rows], pa.string())
        tables.append(pa.table({"shard": np.full(len(rows), k, np.int64), "row": rows, "path": path}))
    if tables:
        with ray_stage(address) as ray:
            each, actors = per_node(ray.nodes())
            settings = {"root": str(root), "size": size, "max_pixels": max_pixels, "folder": str(folder)}
            ds = blocks(ray, tables)  # a shard per block, and a block per call
            ds = ds.map_batches(
                Decoder,
                fn_constructor_kwargs={**settings, "processes": each},
                batch_size=None,
                batch_format="numpy",
                concurrency=min(actors, len(tables)),
                num_cpus=each,
            )
            with progress(n, "decode", initial=resumed) as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    bar.update(int(batch["files"].sum()))
    ok, sizes, skipped = np.zeros(n, bool), np.zeros((n, 2), np.int32), []
    for k in range(shards):
        with np.load(decoded_path(folder, k)) as z:
            rows, wh, errors = z["row"], z["wh"], z["error"]
        good = errors == ""
        ok[rows[good]], sizes[rows[good]] = True, wh[good]
        skipped += [(display_path(paths[i]), str(e)) for i, e in zip(rows[~good], errors[~good], strict=True)]
    write_skipped(skipped_path, skipped + list(also_skipped))  # in row order, as the local engine lists them
    keep = np.flatnonzero(ok)
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


@on_ray
def train_ray(run_dir: Path, pixels_path: Path, cfg, resume: bool) -> float:
    """Train the run's encoder on cfg.train_workers Ray Train workers (a GPU each where the
    cluster has GPUs); they write run_dir's checkpoint and model as embeddings.train.train does.
    Returns the final loss."""
    import shutil

    with ray_stage(cfg.ray_address) as ray:
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


class Embedder:
    """Ray Data's actor for the embed stage: the run's encoder, loaded once per actor (one per
    GPU, else one per node on `threads` CPUs); each call embeds shards of the pixels (their
    parts) into their parts of the embeddings."""

    def __init__(self, run_dir: str, pixels: str, out: str, cfg, threads: int = 1):
        import torch

        from .train import load_model, pick_device

        torch.set_num_threads(threads)
        self.device = pick_device("auto")
        self.model = load_model(Path(run_dir), self.device).eval()
        self.pixels, self.out, self.dim = Path(pixels), Path(out), cfg.dim
        self.batch = max(cfg.resolved().batch_size, 512)  # as embeddings.embed.embed

    def __call__(self, block: dict) -> dict:
        import torch

        from .embed import encode

        rows = []
        for shard in block["shard"]:
            pixels = np.load(part_path(self.pixels, int(shard), ".npy"), mmap_mode="r")
            out = np.empty((len(pixels), self.dim), np.float32)
            for a in range(0, len(pixels), self.batch):
                with torch.no_grad():
                    batch = torch.from_numpy(np.ascontiguousarray(pixels[a : a + self.batch])).to(self.device)
                    out[a : a + self.batch] = encode(self.model, batch, self.device)
            save_npy(part_path(self.out, int(shard), ".npy"), out)
            rows.append(len(out))
        return {"rows": np.array(rows, np.int64)}


@on_ray
def embed_ray(run_dir: Path, pixels: Path, out: Path, cfg, resume: bool = False) -> None:
    """embeddings.embed.embed on Ray Data actors, shard by shard: from each part of the pixels
    folder `pixels` to the same part of the folder `out`, (rows, dim) float32, with the
    encoder in run_dir (a file system all nodes share, as for decoding). With `resume`, the
    parts already written are kept."""
    import pyarrow as pa

    with ray_stage(cfg.ray_address) as ray:
        cfg = cfg.resolved()
        counts = np.diff(Rows.load(pixels).starts)
        if not resume:
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        todo = np.array([k for k in range(len(counts)) if not part_path(out, k, ".npy").exists()], np.int64)
        if not len(todo):
            return
        gpus = int(ray.cluster_resources().get("GPU", 0))
        each, actors = (1, gpus) if gpus else per_node(ray.nodes())
        settings = {"run_dir": str(run_dir), "pixels": str(pixels), "out": str(out), "cfg": cfg, "threads": each}
        ds = blocks(ray, [pa.table({"shard": todo[i : i + 1]}) for i in range(len(todo))])  # a shard per call
        ds = ds.map_batches(
            Embedder,
            fn_constructor_kwargs=settings,
            batch_size=1,
            batch_format="numpy",
            concurrency=min(actors, len(todo)),  # no more than shards
            **({"num_gpus": 1} if gpus else {"num_cpus": each}),
        )
        with progress(int(counts.sum()), "embed", initial=int(counts.sum() - counts[todo].sum())) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                bar.update(int(batch["rows"].sum()))


APPLY_BLOCK = 65_536  # images outside the fit sample per call of the apply search


class Neighbours:
    """Ray Data's actor for applying the fits: the fit sample's search (its IVF index, or its
    vectors where the search is exact), made in the driver and loaded once per actor, and the
    run's embeddings, opened once; each call finds the nearest sampled images of a block of
    the other images."""

    def __init__(self, emb: str, index, base, k: int):
        import faiss

        faiss.omp_set_num_threads(1)  # an actor per CPU
        self.emb = load_rows(emb)
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
    exact, or the same IVF index, trained here and loaded by the actors from the object store)."""
    import faiss

    from .fit import EXACT_PAIRS, ivf_index

    exact = len(rest) * len(base) <= EXACT_PAIRS
    index = None if exact else faiss.serialize_index(ivf_index(base, seed))
    near, d2 = _shared((len(rest), k), np.int64), _shared((len(rest), k), np.float32)
    _search_ray(emb_path, base if exact else None, index, rest, k, near, d2, address)
    return near, d2


def _shared(shape: tuple[int, int], dtype) -> np.ndarray:
    """A zeroed array in memory that the processes this one forks share: on_ray's stage
    writes its answer there rather than sending it back."""
    import mmap

    count = shape[0] * shape[1]
    buffer = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    return np.frombuffer(buffer, dtype, count=count).reshape(shape)


@on_ray
def _search_ray(emb_path: Path, base, index, rest: np.ndarray, k: int, near, d2, address: str | None) -> None:
    """neighbours_ray's search on Ray, into `near` and `d2`."""
    import pyarrow as pa

    with ray_stage(address) as ray:
        table = pa.table({"pos": np.arange(len(rest), dtype=np.int64), "id": rest.astype(np.int64)})
        parts = [table.slice(start, APPLY_BLOCK) for start in range(0, len(rest), APPLY_BLOCK)]
        actors = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(parts)))
        ds = blocks(ray, parts).map_batches(
            Neighbours,
            fn_constructor_kwargs={"emb": str(emb_path), "index": index, "base": base, "k": k},
            batch_size=APPLY_BLOCK,
            batch_format="numpy",
            concurrency=actors,
        )
        with progress(len(rest), "apply") as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                near[batch["pos"]], d2[batch["pos"]] = batch["near"], batch["d2"]
                bar.update(len(batch["pos"]))
