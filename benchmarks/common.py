"""Helpers every benchmark shares: the machine, peak memory, timing, synthetic embeddings,
and the sections it prints (`measure` gives a `Row`; a `Section` renders rows and notes).

To record a result from any benchmark:

    from benchmarks.common import append_section, machine
    append_section("Quality: mnist, 2026-11-27", f"- machine: {machine()}\\n- accuracy 0.93",
                   figures=[{"group": "quality", "figure": "MNIST accuracy", "value": "0.93"}])

`append_section` keeps the run as one JSON line in benchmarks/results/ (benchmarks.results)
and writes BENCHMARKS.md again from them; with `path`, it appends the section to that
Markdown file instead, as `--record PATH` does.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import resource
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
# where the shared data sets are (the GPU machine has them only where a caller carried them)
SHARED_DATA = Path(os.environ.get("ICE_SHARED_DATA", REPO.parent / "shared" / "data"))
DATA_CACHE = Path(os.environ.get("ICE_DATA_CACHE", Path(tempfile.gettempdir()) / "ice-data"))


def append_section(title: str, body: str, path: str | os.PathLike | None = None, *, figures: list[dict] = ()) -> None:
    """Keep a benchmark's run: a record in benchmarks/results/ (named after the running
    benchmark's module), from which BENCHMARKS.md is written; or, given `path`, `### title`
    and `body` appended to that file in one O_APPEND write, so that two benchmarks finishing at
    once never interleave their lines."""
    if path is None:
        from benchmarks import results

        command = re.search(r"- command: `([^`]+)`", body)
        results.record(
            running_benchmark(),
            title,
            body,
            figures=figures,
            date=today(),
            machine=machine(),
            command=command.group(1) if command else None,
        )
        return
    data = f"\n### {title}\n\n{body.strip()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def running_benchmark() -> str:
    """The benchmark that runs: its module's name under benchmarks/ ("speed"), else "notes"."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    return name.split(".", 1)[1] if name.startswith("benchmarks.") else "notes"


def machine() -> str:
    """'2 cores, 24 GiB RAM, AMD EPYC (AVX2, AVX-512; BLAS: numpy OpenBLAS 0.3.31 SkylakeX, ...),
    load average 2.4' (and the GPU, if torch sees one): the CPU as cpu() describes it."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {cpu()}, load average {os.getloadavg()[0]:.1f}"
    gpu = gpu_name()
    return text + (f", GPU {gpu}" if gpu else "")


# the instruction sets that pick the kernels of ICE's libraries (BLAS, faiss, numba, libjpeg)
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX"}


def cpu_info() -> tuple[str, list[str]]:
    """(the CPU's model name, the ISA_FLAGS it has), from /proc/cpuinfo where there is one."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:  # the first processor's fields
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model, flags = fields.get("model name") or platform.processor() or "unknown CPU", fields.get("flags", "").split()
    return model, [name for flag, name in ISA_FLAGS.items() if flag in flags]


def blas_kernels() -> list[str]:
    """The BLAS libraries loaded in this process, as threadpoolctl finds them: whose copy, which
    library, its version and the kernels it chose for this CPU ('numpy OpenBLAS 0.3.31 SkylakeX').
    torch's MKL is linked into torch, where threadpoolctl does not see it; it is named when loaded."""
    from threadpoolctl import threadpool_info

    out = []
    for lib in threadpool_info():
        if lib["user_api"] != "blas":
            continue
        path = Path(lib["filepath"])
        owner = next(
            (
                p.name.split(".libs")[0].split("_")[0]
                for p in path.parents
                if p.name.endswith(".libs") or p.parent.name == "site-packages"
            ),
            path.name,
        )
        name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(lib["internal_api"], lib["internal_api"])
        out.append(" ".join(str(v) for v in (owner, name, lib.get("version"), lib.get("architecture")) if v))
    torch = sys.modules.get("torch")
    if torch is not None and torch.backends.mkl.is_available():
        out.append("torch MKL")
    return sorted(out)


def cpu() -> str:
    """'AMD EPYC (AVX2, AVX-512; BLAS: numpy OpenBLAS 0.3.31 SkylakeX, faiss OpenBLAS 0.3.15 Zen)'."""
    model, isa = cpu_info()
    blas = blas_kernels()
    return f"{model} ({', '.join(isa) or 'no AVX2'}; BLAS: {', '.join(blas) or 'none loaded'})"


def gpu_name() -> str | None:
    if "torch" not in sys.modules:  # never import torch just to describe the machine
        return None
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def today() -> str:
    return dt.date.today().isoformat()


def _rss_kib(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except (OSError, ValueError):
        return 0


def _pss_kib(pid: int | str) -> tuple[int, int]:
    """(proportional set size, the part of it not backed by a file) in KiB.

    Each shared page is split between the processes that map it, so that a sum over forked
    DataLoader workers counts it once. The second figure is anonymous memory plus shared
    memory (Pss_Anon + Pss_Shmem: the heap and torch's shared batches), which the kernel
    cannot drop; the rest is pages of files such as the memory-mapped pixels, which it can.
    RSS for both where the kernel lacks smaps_rollup or its split (before Linux 5.x).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {
                k: int(v.split()[0])
                for k, v in (line.split(":", 1) for line in f if ":" in line)
                if k in ("Pss", "Pss_Anon", "Pss_Shmem")
            }
        pss = fields["Pss"]
        if "Pss_Anon" not in fields:
            return pss, pss
        return pss, fields["Pss_Anon"] + fields.get("Pss_Shmem", 0)
    except (OSError, KeyError, ValueError):
        rss = _rss_kib(pid)
        return rss, rss


def _cmdline(pid) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _descendants(pid: int) -> list[str]:
    out, todo = [], [str(pid)]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = f.read().split()
                out += kids
                todo += kids
        except OSError:
            continue
    return out


class PeakRSS:
    """Peak resident memory, in GiB, while the `with` block runs: the larger of this process's
    own peak RSS (the kernel's high-water mark, reset on entry where Linux allows it) and the
    proportional set size summed over this process and its children (DataLoader workers,
    `ice embed`), sampled every 50 ms. `samples` keeps (perf_counter, that sum in KiB, the
    part of it not backed by files in KiB); `anon_gib` is the peak of that part.

    `sample=False` reads only the high-water mark, for blocks that start no processes: it is
    exact there, and the sampler's reads of /proc (~4 ms each with 1 GiB mapped) would take
    ~10% of a core from what is timed. `anon_gib` is then 0 (not measured). `own=False`
    counts the children only: a block that runs a command, whose memory this process's
    imports should not add to."""

    def __init__(self, sample: bool = True, own: bool = True):
        self._sampling, self._own = sample, own

    def __enter__(self) -> "PeakRSS":
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._peak_kib, self._peak_anon_kib, self._stop, self.samples = 0, 0, threading.Event(), []
        self._thread = threading.Thread(target=self._sample, daemon=True) if self._sampling else None
        if self._thread is not None:
            self._thread.start()
        return self

    def _sample(self) -> None:
        me = os.getpid()
        # a child started but not yet past exec() still shows this process's memory (and command)
        mine = _cmdline(me)
        while True:
            procs = [me, *_descendants(me)] if self._own else [p for p in _descendants(me) if _cmdline(p) != mine]
            sizes = [_pss_kib(p) for p in procs]
            total, anon = sum(pss for pss, _ in sizes), sum(a for _, a in sizes)
            self._peak_kib, self._peak_anon_kib = max(self._peak_kib, total), max(self._peak_anon_kib, anon)
            self.samples.append((time.perf_counter(), total, anon))
            if self._stop.wait(0.05):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        own = _hwm_kib() if self._hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.gib = max(self._peak_kib, own if self._own else 0) / 2**20
        self.anon_gib = self._peak_anon_kib / 2**20


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)


class Timer:
    """`with Timer() as t: ...` then t.seconds (wall clock)."""

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0


def build_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """`folder`, made by `build(folder)` unless an earlier build finished there (a `.done`
    marker inside says so); what a build cut short left behind is removed first."""
    if not (folder / ".done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        build(folder)
        (folder / ".done").touch()
    return folder


def extract_once(tarball: Path, folder: Path) -> Path:
    """`folder`, extracted from `tarball` (whose top folder has folder's name) into its
    parent unless a finished extraction is there."""

    def extract(folder: Path) -> None:
        if not tarball.exists():
            raise SystemExit(f"{tarball} not found: set ICE_SHARED_DATA to the folder that holds it")
        with tarfile.open(tarball) as tar:
            tar.extractall(folder.parent, filter="data")

    return build_once(folder, extract)


def clustered_embeddings(n: int, dim: int = 64, clusters: int = 50, latent: int = 4, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 L2-normalised rows, like ICE's embeddings, with structure to find:
    `clusters` groups, each a random `latent`-dimensional patch around its centre plus a
    little noise, so that neighbours inside a cluster mean something too."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    bases = rng.normal(scale=0.4, size=(clusters, latent, dim))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        m = min(65_536, n - start)
        label = rng.integers(clusters, size=m)
        z = rng.normal(size=(m, latent))
        x = centres[label] + np.einsum("ml,mld->md", z, bases[label]) + rng.normal(scale=0.1, size=(m, dim))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


# --- measuring and reporting ------------------------------------------------------------


@dataclass
class Row:
    """One measured run: `count` items of `unit` in `seconds`, with the CPU time (this process
    and the children it waited for) and the peak memory it took."""

    label: str
    seconds: float
    count: int
    unit: str
    rss_gib: float
    cpu: float | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def markdown(self) -> str:
        cpu = f"{self.cpu:.2f}" if self.cpu is not None else ""
        return f"| {self.label} | {self.seconds:.2f} | {cpu} | {self.rate:,.0f} {self.unit}/s | {self.rss_gib:.2f} |"


@dataclass
class Section:
    """One benchmark's section of BENCHMARKS.md: its rows, then notes (ratios, targets).
    `targets` keeps each target's (what, met, measured) for a summary (speed --quick)."""

    title: str
    command: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)

    def target(self, what: str, met: bool, measured: str) -> str:
        """Keep a target's verdict; returns 'target WHAT: **met**' for a note."""
        self.targets.append((what, met, measured))
        return f"target {what}: {verdict(met)}"

    def body(self) -> str:
        env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ)
        date = f"- date: {today()}" + (f"; {env}" if env else "")
        lines = [f"- command: `{self.command}`", f"- machine: {machine()}", date, ""]
        if self.rows:
            lines += ["| run | wall s | CPU s | throughput | peak RSS GiB |", "| --- | ---: | ---: | ---: | ---: |"]
            lines += [r.markdown() for r in self.rows] + [""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(label: str, count: int, unit: str, fn, *args, sample: bool = True, **kwargs):
    """Run fn once; return its Row (wall and CPU time, peak RSS) and its result. sample=False:
    fn starts no processes, so the peak is read from the kernel alone (PeakRSS)."""
    cpu = cpu_seconds()
    with PeakRSS(sample) as mem, Timer() as t:
        out = fn(*args, **kwargs)
    return Row(label, t.seconds, count, unit, mem.gib, cpu_seconds() - cpu), out


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def parse_sets(pairs: list[str], of: type | None = None, what: str = "ice embed") -> dict:
    """["epochs=30", "flip=true", "encoder=resnet"] -> typed overrides of the fields of `of`
    (Config by default; `what` names it in errors)."""
    from embeddings.config import Config, option_type

    of = of or Config
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in of.__dataclass_fields__:
            raise SystemExit(f"--set {pair}: {key!r} is not a setting of {what}")
        typ = option_type(key, of)
        if typ is bool:
            if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise SystemExit(f"--set {pair}: {key} takes true or false")
            out[key] = value.lower() in ("1", "true", "yes", "on")
            continue
        try:
            out[key] = typ(value)
        except ValueError:
            what = {int: "a whole number", float: "a number"}.get(typ, typ.__name__)
            raise SystemExit(f"--set {pair}: {key} takes {what} (as {key}=VALUE)") from None
    return out


def self_labelled(cfg):
    """A run's Config for the probes that self-label any run's clusters: its own
    self_label_epochs, or the contrastive recipe's (5) where its recipe skips the stage
    (contrastive-small's 0, which self_label refuses)."""
    from embeddings.config import RECIPES

    return cfg.replace(self_label_epochs=cfg.self_label_epochs or RECIPES["contrastive"]["self_label_epochs"])
