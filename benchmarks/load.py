"""A bounded load test of `ice explore --workers 2` on loopback.

    python -m benchmarks.load [--sessions 20] [--seconds 60] [--n 100000] [--run RUN_DIR]

Without --run it writes a synthetic run directory (docs/run-format.md; clustered random
embeddings, an exact FAISS IndexFlatIP, random pixels; no model is trained) to a temporary
folder. The server runs as a subprocess, `python -m ice.cli explore ... --workers 2`.

Each simulated session is a thread with its own requests.Session that does what the
browser does, through Dash's /_dash-update-component with the payloads the page sends:
loads the page (layout and the map figure), hovers a point (the tooltip callback, then
GET /thumb/<id>.png), lasso-selects points (select_on_map, then the grid page), opens an
image's nearest neighbours (show_detail: a FAISS search) and renames one of its own
clusters (save_name: one SQLite row). Each session owns distinct clusters, so the last
name it gave each one must be what annotations.sqlite holds at the end. Any non-2xx
answer, or a "database is locked" anywhere in an answer, counts as an error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from benchmarks.common import append_section, clustered_embeddings, machine, today

KINDS = ("page", "hover", "thumb", "select", "grid", "neighbours", "rename")
INTERACTIVE = ("hover", "thumb", "select", "grid", "neighbours", "rename")
THINK_S = 0.05  # pause between one session's actions


# --- a synthetic run --------------------------------------------------------------------


def make_synthetic_run(
    run_dir: Path, n: int, clusters: int = 50, image_size: int = 32, dim: int = 64, seed: int = 0, tiles: bool = True
) -> Path:
    """Write a complete run directory of n images (docs/run-format.md) without training; with
    `tiles`, the map's tiles too, as `ice embed` writes them."""
    import faiss

    from embeddings.config import Config
    from ice import run_dir as rd
    from ice import tiles as map_tiles

    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    emb = clustered_embeddings(n, dim=dim, clusters=clusters, seed=seed)
    centroids = emb[rng.choice(n, clusters, replace=False)].copy()
    search = faiss.IndexFlatIP(dim)
    search.add(centroids)
    _, nearest = search.search(emb, 1)
    cluster = nearest[:, 0].astype(np.int32)
    distance = ((emb - centroids[cluster]) ** 2).sum(axis=1).astype(np.float32)
    spots = rng.uniform(-20, 20, size=(clusters, 2))
    xy = (spots[cluster] + rng.normal(size=(n, 2))).astype(np.float32)
    rd.save_npy(run_dir / rd.EMBEDDINGS, emb)
    rd.save_npy(run_dir / rd.CENTROIDS, centroids)
    index = faiss.IndexFlatIP(dim)
    index.add(emb)
    with rd.atomic_path(run_dir / rd.INDEX) as tmp:
        faiss.write_index(index, str(tmp))
    with rd.atomic_path(run_dir / rd.PIXELS, suffix=".npy") as tmp:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, 3))
        for start in range(0, n, 10_000):
            stop = min(n, start + 10_000)
            pixels[start:stop] = rng.integers(0, 256, size=(stop - start, image_size, image_size, 3), dtype=np.uint8)
        pixels.flush()
        del pixels
    items = pd.DataFrame(
        {
            "image_id": np.arange(n, dtype=np.int64),
            "path": [f"c{c:02d}/img_{i:06d}.png" for i, c in enumerate(cluster)],
            "width": np.full(n, image_size, np.int32),
            "height": np.full(n, image_size, np.int32),
            "cluster": cluster,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "distance": distance,
        }
    )
    with rd.atomic_path(run_dir / rd.ITEMS) as tmp:
        items.to_parquet(tmp, index=False)
    if tiles:
        map_tiles.write(run_dir, xy[:, 0], xy[:, 1])
    cfg = Config(image_size=image_size, dim=dim, clusters=clusters, cluster_space="embeddings")
    rd.write_json(
        run_dir / rd.MANIFEST,
        {  # last: the run is complete only now
            "schema_version": rd.SCHEMA_VERSION,
            "complete": True,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "input_root": str(run_dir / "images"),
            "config": cfg.to_dict(),
            "versions": {"ice": "synthetic", "faiss": faiss.__version__, "numpy": np.__version__},
            "device": "none",
            "counts": {"found": n, "images": n, "skipped": 0},
            "clusters": clusters,
            "cluster_space": "embeddings",
            "stage_seconds": {},
            "train_loss": None,
            "metrics": None,
        },
    )
    return run_dir


# --- the server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 90, auth=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {server_output(proc)[1]}")
        try:
            if requests.get(url, timeout=2, auth=auth).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f} s")


@contextmanager
def explorer(run_dir: Path, *options: str, port: int | None = None, auth=None, ready: bool = True):
    """Run `ice explore run_dir *options` on 127.0.0.1; yield (base url, process); stop it."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "ice.cli", "explore", str(run_dir), "--port", str(port), *options]
    # files, not pipes: a pipe nobody reads fills with the request log and stalls the server
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True)
    proc.output_files = (out, err)
    base = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_until_up(base + "/_dash-layout", proc, auth=auth)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
        err.close()


def server_output(proc: subprocess.Popen) -> tuple[str, str]:
    """What a server started by `explorer` has written so far: (stdout, stderr)."""
    texts = []
    for f in proc.output_files:
        f.flush()
        f.seek(0)
        texts.append(f.read())
    return texts[0], texts[1]


# --- Dash callbacks over HTTP -----------------------------------------------------------


def prop_id(component, prop: str) -> str:
    """Dash's name of one property: 'map.figure', or '{"index":3,"type":"x"}.value'."""
    if isinstance(component, dict):
        component = json.dumps(component, sort_keys=True, separators=(",", ":"))
    return f"{component}.{prop}"


class DashCallbacks:
    """The app's callbacks, as /_dash-dependencies lists them, called the way the page does."""

    def __init__(self, dependencies: list[dict]):
        self.deps = dependencies

    def find(self, output: str, trigger: str) -> dict:
        """The callback whose output string contains `output` and that has input `trigger`."""
        for dep in self.deps:
            if output in dep["output"] and any(trigger in prop_id(i["id"], i["property"]) for i in dep["inputs"]):
                return dep
        raise KeyError(f"no callback with output {output!r} and input {trigger!r}")

    @staticmethod
    def payload(dep: dict, outputs: list[tuple], inputs: list[tuple], state: list[tuple]) -> dict:
        """The body of /_dash-update-component: outputs (id, prop); inputs and state (id, prop, value)."""

        def spec(item):
            return {"id": item[0], "property": item[1], **({"value": item[2]} if len(item) > 2 else {})}

        outs = [spec(o) for o in outputs]
        return {
            "output": dep["output"],
            "outputs": outs if dep["output"].startswith("..") else outs[0],
            "inputs": [spec(i) for i in inputs],
            "state": [spec(s) for s in state],
            "changedPropIds": [prop_id(inputs[0][0], inputs[0][1])],
        }


def with_the_rest(given: list[tuple], listed: list[dict]) -> list[tuple]:
    """`given` (id, prop, value) items followed by those of `listed` not among them, with value
    None; a pattern-matching id is matched by its type, as the caller names a concrete one."""

    def key(component, prop):
        if isinstance(component, str) and component.startswith("{"):
            component = json.loads(component)
        return (component.get("type") if isinstance(component, dict) else component, prop)

    have = {key(i[0], i[1]) for i in given}
    return given + [(d["id"], d["property"], None) for d in listed if key(d["id"], d["property"]) not in have]


class Client:
    """One simulated browser tab: requests.Session plus the page's callback calls."""

    def __init__(self, base: str, callbacks: DashCallbacks, auth=None):
        self.base, self.cb = base, callbacks
        self.http = requests.Session()
        self.http.auth = auth

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base + path, timeout=60)

    def call(self, dep: dict, inputs, state=(), outputs=None) -> requests.Response:
        """One callback call; its outputs are read from the dependencies unless given (a
        pattern-matching output names the one component it answers for). Inputs and state
        that the dependencies list and the caller leaves out are sent empty, as a page
        that has not set them yet does, so that a new input does not break the client."""
        outputs = self.outputs(dep) if outputs is None else outputs
        inputs = with_the_rest(list(inputs), dep["inputs"])
        state = with_the_rest(list(state), dep.get("state", []))
        return self.http.post(
            self.base + "/_dash-update-component", timeout=60, json=DashCallbacks.payload(dep, outputs, inputs, state)
        )

    def draw_map(self, clustering="run"):
        dep = self.cb.find("map.figure", "clustering.value")
        return self.call(dep, [("clustering", "value", clustering), ("drill", "data", None)])

    def hover(self, curve: int, point: int, clustering="run"):
        dep = self.cb.find("map-tooltip.show", "hoverData")
        event = {
            "points": [
                {"curveNumber": curve, "pointNumber": point, "bbox": {"x0": 100, "x1": 104, "y0": 100, "y1": 104}}
            ]
        }
        return self.call(
            dep, [("map", "hoverData", event)], [("clustering", "value", clustering), ("drill", "data", None)]
        )

    @staticmethod
    def outputs(dep: dict) -> list[tuple]:
        """(id, prop) of each output of a callback, as the dependencies list them."""
        return [tuple(o.rsplit(".", 1)) for o in dep["output"].strip(".").split("...")]

    def select(self, by_curve: dict, clustering="run"):
        dep = self.cb.find("selection.data", "map-points.data")
        return self.call(
            dep, [("map-points", "data", by_curve)], [("clustering", "value", clustering), ("drill", "data", None)]
        )

    def grid(self, selection: dict, clustering="run"):
        """The review grid's list for a selection (the browser draws its pages)."""
        dep = self.cb.find("review-view.data", "selection.data")
        return self.call(
            dep,
            [
                ("selection", "data", selection),
                ("group-name", "value", None),
                ("review-sort", "value", "list"),
                ("review-filter", "value", "all"),
                ("review-refresh", "data", None),
            ],
            [("clustering", "value", clustering), ("drill", "data", None)],
        )

    def neighbours(self, image_id: int, clustering="run"):
        dep = self.cb.find("detail.children", "focus.data")
        return self.call(
            dep,
            [("focus", "data", image_id)],
            [("clustering", "value", clustering), ("detail", "children", None), ("detail-for", "data", None)],
        )

    def rename(self, cluster: int, name: str, clustering="run"):
        dep = self.cb.find("cluster-saved", "value")
        return self.call(
            dep,
            [({"index": cluster, "type": "cluster-name"}, "value", name)],
            [("clustering", "value", clustering)],
            outputs=[({"index": cluster, "type": "cluster-saved"}, "children")],
        )


def callbacks_of(base: str, auth=None) -> DashCallbacks:
    return DashCallbacks(requests.get(base + "/_dash-dependencies", timeout=30, auth=auth).json())


# --- the sessions -----------------------------------------------------------------------


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)  # kind -> seconds
        self.errors = defaultdict(int)  # kind -> count
        self.samples: list[str] = []  # a few error texts, for the report
        self.last_name: dict[int, str] = {}  # cluster -> the last name its owner gave it

    def record(self, kind: str, seconds: float, response: requests.Response, expect: str = "") -> bool:
        ok = 200 <= response.status_code < 300 and "database is locked" not in response.text and expect in response.text
        with self.lock:
            self.latency[kind].append(seconds)
            if not ok:
                self.errors[kind] += 1
                if len(self.samples) < 5:
                    self.samples.append(f"{kind}: {response.status_code} {response.text[:200]!r}")
        return ok


def timed(results: Results, kind: str, fn, *args, expect: str = "") -> requests.Response | None:
    """Call fn(*args), record its latency; an error unless 2xx and holding `expect`."""
    t0 = time.perf_counter()
    try:
        response = fn(*args)
    except requests.RequestException as e:
        with results.lock:
            results.latency[kind].append(time.perf_counter() - t0)
            results.errors[kind] += 1
            results.samples.append(f"{kind}: {e}")
        return None
    results.record(kind, time.perf_counter() - t0, response, expect)
    return response


def run_session(
    number: int,
    client: Client,
    members: list[np.ndarray],
    own: list[int],
    deadline: float,
    results: Results,
    think: float,
) -> None:
    """One user until the deadline: page load, then hover, select, neighbours, rename."""
    rng = random.Random(number)
    timed(results, "page", client.get, "/")
    timed(results, "page", client.get, "/_dash-layout")
    timed(results, "page", client.draw_map)
    step = 0
    while time.monotonic() < deadline:
        curve = rng.randrange(len(members))
        point = rng.randrange(len(members[curve]))
        image_id = int(members[curve][point])
        timed(results, "hover", client.hover, curve, point)
        timed(results, "thumb", client.get, f"/thumb/{image_id}.png")
        time.sleep(think)
        points = rng.sample(range(len(members[curve])), min(200, len(members[curve])))
        r = timed(results, "select", client.select, {str(curve): points})
        if r is not None and r.ok:
            selection = r.json()["response"]["selection"]["data"]
            timed(results, "grid", client.grid, selection)
        time.sleep(think)
        timed(results, "neighbours", client.neighbours, image_id)
        time.sleep(think)
        cluster = own[step % len(own)]
        name = f"session {number} name {step}"
        r = timed(results, "rename", client.rename, cluster, name, expect="Saved as")
        if r is not None:
            with results.lock:  # the client's last write, answered or not
                results.last_name[cluster] = name
        step += 1
        time.sleep(think)


def stored_names(run_dir: Path) -> dict[int, str]:
    with sqlite3.connect(run_dir / "annotations.sqlite") as conn:
        rows = conn.execute("SELECT cluster, name FROM cluster_names WHERE clustering = 'run'").fetchall()
    return {int(c): n for c, n in rows}


def clear_names(run_dir: Path) -> None:
    path = run_dir / "annotations.sqlite"
    if path.exists():
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM cluster_names WHERE clustering = 'run'")


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def load_test(run_dir: Path, sessions: int, seconds: float, workers: int = 2, think: float = THINK_S) -> dict:
    """Serve run_dir, run the sessions, stop; return latencies (ms), errors and the rename check."""
    items = pd.read_parquet(run_dir / "items.parquet", columns=["cluster", "distance"])
    k = int(items["cluster"].max()) + 1
    if k < sessions:
        raise SystemExit(f"{run_dir}: {k} clusters, fewer than {sessions} sessions to give one each")
    order = np.lexsort((items["distance"].to_numpy(), items["cluster"].to_numpy()))
    starts = np.searchsorted(items["cluster"].to_numpy()[order], np.arange(k + 1))
    members = [order[starts[c] : starts[c + 1]] for c in range(k)]  # the map's point order
    clear_names(run_dir)
    results = Results()
    with explorer(run_dir, "--workers", str(workers)) as (base, _proc):
        callbacks = callbacks_of(base)
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(
                target=run_session,
                daemon=True,
                args=(i, Client(base, callbacks), members, list(range(i, k, sessions)), deadline, results, think),
            )
            for i in range(sessions)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    stored = stored_names(run_dir)
    lost = {c: (name, stored.get(c)) for c, name in results.last_name.items() if stored.get(c) != name}
    kinds = {
        kind: {
            "count": len(results.latency[kind]),
            "p50": percentile(results.latency[kind], 50),
            "p95": percentile(results.latency[kind], 95),
            "p99": percentile(results.latency[kind], 99),
            "errors": results.errors[kind],
        }
        for kind in KINDS
    }
    interactive = [s for kind in INTERACTIVE for s in results.latency[kind]]
    return {
        "n": len(items),
        "sessions": sessions,
        "seconds": seconds,
        "wall": wall,
        "workers": workers,
        "think": think,
        "kinds": kinds,
        "errors": sum(results.errors.values()),
        "interactive": {
            "count": len(interactive),
            "p50": percentile(interactive, 50),
            "p95": percentile(interactive, 95),
            "p99": percentile(interactive, 99),
        },
        "renames_checked": len(results.last_name),
        "renames_lost": lost,
        "samples": results.samples,
    }


def report(r: dict, command: str) -> str:
    lines = [
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {today()}",
        f"- {r['n']:,} images (synthetic run), {r['sessions']} sessions for {r['wall']:.0f} s, "
        f"gunicorn {r['workers']} workers, {THINK_S * 1000:.0f} ms pause between a session's actions",
        "",
        "| request | count | p50 ms | p95 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, k in r["kinds"].items():
        lines.append(f"| {kind} | {k['count']} | {k['p50']:.0f} | {k['p95']:.0f} | {k['p99']:.0f} | {k['errors']} |")
    i = r["interactive"]
    lines.append(
        f"| all but page | {i['count']} | {i['p50']:.0f} | {i['p95']:.0f} | {i['p99']:.0f} | "
        f"{r['errors'] - r['kinds']['page']['errors']} |"
    )
    ok_p95 = i["p95"] <= 200
    lines += [
        "",
        f"- target p95 <= 200 ms (interactive requests): {'**met**' if ok_p95 else '**missed**'}",
        f'- errors (non-2xx or "database is locked"): {r["errors"]}',
        f"- renames: {r['renames_checked']} clusters, last write of each client kept for "
        f"{r['renames_checked'] - len(r['renames_lost'])}; lost {len(r['renames_lost'])}",
    ]
    lines += [f"- error sample: {s}" for s in r["samples"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--n", type=int, default=100_000, help="images in the synthetic run (without --run)")
    p.add_argument("--run", type=Path, help="an existing complete run directory instead")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    if not 0 < args.seconds <= 60:
        p.error("--seconds must be in (0, 60]")
    with tempfile.TemporaryDirectory(prefix="ice-load-") as tmp:
        run_dir = args.run
        if run_dir is None:
            t0 = time.perf_counter()
            run_dir = make_synthetic_run(Path(tmp) / "run", args.n)
            print(f"synthetic run of {args.n:,} images in {time.perf_counter() - t0:.1f} s: {run_dir}", flush=True)
        result = load_test(run_dir, args.sessions, args.seconds, workers=args.workers)
    command = "python -m benchmarks.load " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(result, command.strip())
    print(text)
    if args.record:
        append_section(f"Load: {args.sessions} sessions on {result['n']:,} images, {today()}", text)
    return 0 if result["errors"] == 0 and not result["renames_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
