"""`ice embed --engine ray`: decoding on Ray Data gives the run the local engine gives, on one
local Ray for the session and on a simulated cluster of two worker nodes; and nothing on the
local path imports ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from ice import run_dir as rd
from ice.cli import main
from tests.conftest import make_images
from tests.test_pipeline import TINY_ARGS, hostile_folder

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for these tests, on this machine's cores; shut down after them, so that its
    processes do not stay for the rest of the session."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def embed(folder, out, *extra):
    assert main(["embed", str(folder), "--out", str(out), *TINY_ARGS, "--seed", "0", *extra]) == 0
    return out


def same_run(local, other):
    """Same images, pixels and skipped files, embeddings within 1e-5 and the same clusters; the
    Ray engine's run in version 2 (arrays in parts, the manifest's shard table)."""
    a, b = rd.read_items(local), rd.read_items(other)
    assert a["path"].tolist() == b["path"].tolist()
    assert a[["width", "height"]].equals(b[["width", "height"]])
    assert np.array_equal(rd.open_rows(local, rd.PIXELS), np.asarray(rd.open_rows(other, rd.PIXELS)))
    assert (local / rd.SKIPPED).read_text() == (other / rd.SKIPPED).read_text()
    emb = np.asarray(rd.open_rows(other, rd.EMBEDDINGS))
    assert np.abs(rd.open_rows(local, rd.EMBEDDINGS) - emb).max() <= 1e-5
    assert adjusted_rand_score(a["cluster"], b["cluster"]) >= 0.99
    manifest = rd.load_manifest(other)
    assert manifest["schema_version"] == 2 and not (other / rd.PIXELS).exists() and not (other / rd.ITEMS).exists()
    shards = np.array(manifest["shards"])
    assert shards[0, 0] == 0 and (shards[1:, 0] == np.cumsum(shards[:, 1])[:-1]).all()
    for name, suffix in ((rd.PIXELS, ".npy"), (rd.EMBEDDINGS, ".npy"), (rd.ITEMS, ".parquet")):
        parts = sorted((other / rd.parts_folder(name)).glob("part-*" + suffix))
        assert [p.name for p in parts] == [f"part-{k:05d}{suffix}" for k in range(len(shards))]
    assert [len(np.load(p, mmap_mode="r")) for p in sorted((other / "pixels").glob("*.npy"))] == shards[:, 1].tolist()
    assert not list((other / "pixels").glob(".decoded-*"))


def test_the_ray_engine_makes_the_local_engines_run(local_ray, tmp_path):
    bad = hostile_folder(tmp_path / "in")
    local = embed(tmp_path / "in", tmp_path / "local")
    other = embed(tmp_path / "in", tmp_path / "ray", "--engine", "ray")
    same_run(local, other)
    assert rd.load_manifest(other)["config"]["engine"] == "ray"
    skipped = pd.read_csv(other / rd.SKIPPED)
    assert set(skipped["path"]) == bad and skipped["reason"].str.len().gt(0).all()


def test_fits_applied_on_ray_actors_give_the_local_clusters_and_map(local_ray, tmp_path):
    """--fit-sample 200 of 600 images: the other 400 find their nearest sampled images on Ray
    Data actors (blocks of 64 here), and take the clusters and map positions the local engine
    gives them."""
    from embeddings import ray_engine

    make_images(tmp_path / "in", n=600, size=24, classes=3)
    local = embed(tmp_path / "in", tmp_path / "local", "--fit-sample", "200")
    block, ray_engine.APPLY_BLOCK = ray_engine.APPLY_BLOCK, 64
    try:
        other = embed(tmp_path / "in", tmp_path / "ray", "--fit-sample", "200", "--engine", "ray")
    finally:
        ray_engine.APPLY_BLOCK = block
    same_run(local, other)
    a, b = rd.read_items(local), rd.read_items(other)
    assert (a["cluster"] == b["cluster"]).mean() >= 0.99
    close = np.isclose(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy(), atol=1e-3).all(1)
    assert close.mean() >= 0.99
    assert rd.load_manifest(other)["config"]["fit_sample"] == 200


def test_cpu_stages_run_one_actor_per_node_on_all_its_cpus(local_ray):
    from embeddings.ray_engine import per_node

    def node(cpus, alive=True):
        return {"Alive": alive, "Resources": {"CPU": float(cpus)} if cpus else {}}

    assert per_node(local_ray.nodes()) == (2, 1)  # this session's local Ray: 2 CPUs, one node
    assert per_node([node(0), node(1), node(1)]) == (1, 2)  # a head without CPUs, two workers
    assert per_node([node(4), node(8), node(16, alive=False)]) == (4, 3)
    assert per_node([node(0)]) == (1, 1)


def test_a_shard_decoded_in_forked_processes_equals_one_process(tmp_path):
    """The Decoder's processes forked from it (one per CPU of its node) write the same part and
    record as decoding in the actor itself, skip reasons included."""
    from embeddings.ray_engine import decode_shard, decoded_path

    bad = hostile_folder(tmp_path / "in")
    paths = sorted(str(p.relative_to(tmp_path / "in")) for p in (tmp_path / "in").rglob("*.*g"))  # no readme.txt
    paths = paths * 40  # several chunks of the pool
    batch = {"shard": np.zeros(len(paths), np.int64), "row": np.arange(len(paths)), "path": np.array(paths)}
    parts = {}
    for processes in (1, 2):
        folder = tmp_path / f"out{processes}"
        folder.mkdir()
        done = decode_shard(batch, str(tmp_path / "in"), 24, 10**8, str(folder), processes=processes)
        assert done["files"].tolist() == [len(paths)]
        with np.load(decoded_path(folder, 0)) as z:
            parts[processes] = np.load(folder / "part-00000.npy"), z["wh"], z["error"]
    (one, wh1, err1), (two, wh2, err2) = parts[1], parts[2]
    assert np.array_equal(one, two) and np.array_equal(wh1, wh2) and err1.tolist() == err2.tolist()
    reasons = dict(zip(paths, err1.tolist(), strict=True))
    assert {p for p, e in reasons.items() if e} == bad
    assert len(one) == sum(1 for e in err1 if not e) and one.any()


def test_the_jobs_process_never_imports_ray_and_no_ray_outlives_it(tmp_path):
    """`ice embed --engine ray` with no Ray running drives each stage on Ray from a process forked
    for it (ray_engine.on_ray), which starts a local Ray and ends with the stage: the job's
    process never imports ray, nothing the job started is left running, and the run is the
    local engine's. With another run's encoder the job's process holds no torch while the
    decode and embed actors, which hold their own, run. In a process of its own, as the
    session's local Ray would otherwise be used."""
    import uuid

    make_images(tmp_path / "in", n=600, size=24, classes=3)
    local = embed(tmp_path / "in", tmp_path / "local", "--fit-sample", "200")
    args = ["embed", str(tmp_path / "in"), "--out", str(tmp_path / "ray"), *TINY_ARGS, "--seed", "0"]
    args += ["--fit-sample", "200", "--engine", "ray", "--encoder-from", str(local)]
    code = f"""
import sys
import embeddings.stages as stages
held = []
def noted(stage):
    def run(*args, **kwargs):
        held.append("torch" in sys.modules)
        return stage(*args, **kwargs)
    return run
stages.decode, stages.embed = noted(stages.decode), noted(stages.embed)
from ice.cli import main
code = main({args!r})
print("ray", "ray" in sys.modules, "torch at decode and embed", held)
sys.exit(code)
"""
    tag = uuid.uuid4().hex  # in the environment of every process the job starts, Ray's included
    env = {**os.environ, "ICE_TEST_TAG": tag}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "ray False torch at decode and embed [False, False]" in out.stdout, out.stdout
    same_run(local, tmp_path / "ray")

    for _ in range(50):  # Ray's processes end within a few seconds of their driver
        if not tagged(tag):
            break
        time.sleep(0.2)
    assert not tagged(tag)


def tagged(tag: str) -> list[str]:
    """The command lines of the processes with ICE_TEST_TAG=tag in their environment: those a
    test's process started, and those they started."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"ICE_TEST_TAG={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


LEAN_RAY = """
import numpy as np
import pyarrow as pa
from embeddings.ray_engine import blocks, ray_stage

with ray_stage() as ray:
    ds = blocks(ray, [pa.table({"x": np.arange(6)})]).map_batches(lambda b: {"x": b["x"] * 2}, batch_format="numpy")
    print("doubled", sorted(int(v) for b in ds.iter_batches(batch_size=None, batch_format="numpy") for v in b["x"]))
    print("up", flush=True)
    input()
"""


def test_the_local_ray_ice_starts_runs_no_monitors_or_api_server():
    """The local Ray that ray_stage starts runs Ray Data without the autoscaler's monitor, the
    log monitor and the dashboard's API server (start_ray: a Ray of one machine, shut down after
    its stage, needs none of them). In a process of its own, as the session's local Ray would
    otherwise be used."""
    import uuid

    tag = uuid.uuid4().hex
    env = {**os.environ, "ICE_TEST_TAG": tag}
    child = subprocess.Popen(
        [sys.executable, "-c", LEAN_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "doubled [0, 2, 4, 6, 8, 10]"
        assert child.stdout.readline().strip() == "up"
        running = tagged(tag)
    finally:
        child.communicate("\n", timeout=120)
    assert child.returncode == 0
    assert any("gcs_server" in c for c in running) and any("raylet" in c for c in running), running
    assert not [c for c in running if "monitor.py" in c or "dashboard/dashboard.py" in c], running


FORKED_STAGES = """
import os, sys
import numpy as np
from embeddings import ray_engine
from ice.errors import IceError

@ray_engine.on_ray
def answer(a, b=0):
    return os.getpid(), a + b, "ray" in sys.modules

@ray_engine.on_ray
def fills(out):
    out[:] = np.arange(out.size).reshape(out.shape)

@ray_engine.on_ray
def refuses():
    raise IceError("no such shard")

@ray_engine.on_ray
def fails():
    {}["missing"]

pid, total, ray = answer(np.ones(3), b=2)
print("own process", pid != os.getpid(), "answer", total.tolist(), "ray", ray)
out = ray_engine._shared((2, 3), np.int64)
fills(out)
print("filled", out.tolist())
try:
    refuses()
except IceError as e:
    print("refused", e)
try:
    fails()
except KeyError as e:
    print("failed", repr(e), "traceback", any("fails" in n for n in e.__notes__))
print("still", ray_engine._STAGE_PROCESS)
"""


def test_a_stage_on_ray_runs_in_a_forked_process_and_its_answers_come_back(tmp_path):
    """on_ray's process: its answer, what it writes into memory shared with the job, and its
    errors (a KeyError with the stage's own traceback) come back to the job's process. In a
    process of its own without Ray, where on_ray forks."""
    out = subprocess.run([sys.executable, "-c", FORKED_STAGES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    lines = out.stdout.splitlines()
    assert lines == [
        "own process True answer [3.0, 3.0, 3.0] ray False",
        "filled [[0, 1, 2], [3, 4, 5]]",
        "refused no such shard",
        "failed KeyError('missing') traceback True",
        "still False",
    ], out.stdout + out.stderr


def embed_on_the_cluster(tmp_path) -> str:
    """The end of a script that started `cluster` and connected ray to it: `ice embed` of
    tmp_path/in into tmp_path/ray on it, its exit code in `code`, then both shut down."""
    return f"""
from ice.cli import main
try:
    code = main(["embed", {str(tmp_path / "in")!r}, "--out", {str(tmp_path / "ray")!r}, *{TINY_ARGS!r},
                 "--seed", "0", "--engine", "ray"])
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_cluster_of_two_worker_nodes_decodes_the_same_images(tmp_path):
    """A head with no CPUs and two worker nodes of one CPU each, so the decoding crosses raylets
    (ray.cluster_utils.Cluster), in a process of its own: the session's local Ray is another."""
    make_images(tmp_path / "in", n=300, size=24, classes=3)
    embed(tmp_path / "in", tmp_path / "local")
    code = (
        """
import sys
from ray.cluster_utils import Cluster
import ray
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
for _ in range(2):
    cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
assert len([n for n in ray.nodes() if n["Alive"]]) == 3
"""
        + embed_on_the_cluster(tmp_path)
        + "sys.exit(code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    same_run(tmp_path / "local", tmp_path / "ray")


def shards_written(run) -> str:
    """Python: the number of shards the Ray decode of `run` has written (their records)."""
    return f"len(list(Path({str(run)!r}, 'pixels').glob('.decoded-*.npz')))"


# `ice embed` killed (SIGKILL, in its own process) once the decode has written 4 shards of 64 files
KILL_AFTER_SHARDS = """
import os, signal, sys, threading, time
from pathlib import Path
from embeddings import ray_engine
ray_engine.SHARD = 64
def kill_after_4():
    while {written} < 4:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
threading.Thread(target=kill_after_4, daemon=True).start()
from ice.cli import main
main(sys.argv[1:])
"""


def settled_records(folder: Path, quiet: float = 2.0, limit: float = 60.0) -> list[Path]:
    """The decode records in `folder` once none has appeared for `quiet` seconds: a decode
    actor of a killed driver may still finish the shard it holds before Ray ends it."""
    seen, since, start = None, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        now = sorted(folder.glob(".decoded-*.npz"))
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.1)
    return seen


def test_a_decode_pool_ends_when_stopped_while_its_processes_start():
    """A Decoder's pool of forked decode processes, ended while they are still starting, with a
    SIGTERM handler in the parent that never returns (as a Ray worker's may hang in a forked
    copy): every pool ends, since its processes hold the signal until their own handlers are
    set, and a pool that raised nothing ends without signals. In a process of its own, whose
    SIGKILL timeout the handler cannot stop."""
    code = """
import os, signal, time
import torch
from embeddings import ray_engine
signal.signal(signal.SIGTERM, lambda *a: time.sleep(3600))
os.register_at_fork(after_in_child=lambda: time.sleep(0.2))  # a slow start: the pool ends meanwhile
for _ in range(3):
    try:
        with ray_engine._decode_pool(2):
            raise KeyError
    except KeyError:
        pass
with ray_engine._decode_pool(2) as pool:
    assert pool.starmap(divmod, [(7, 2), (9, 4)]) == [(3, 1), (2, 1)]
print("ended")
"""
    done = subprocess.run(["timeout", "-s", "KILL", "60", sys.executable, "-c", code], capture_output=True)
    assert done.returncode == 0 and done.stdout.decode().strip() == "ended", done.stderr.decode()[-2000:]


def test_a_ray_run_killed_mid_decode_resumes_with_the_shards_not_written(local_ray, tmp_path):
    """`ice embed --engine ray` killed mid-decode (once 4 shards of 64 files are written), then
    `--resume`: only the shards not written are decoded, and the run is the uninterrupted
    one's."""
    from embeddings import ray_engine

    bad = hostile_folder(tmp_path / "in")
    make_images(tmp_path / "in" / "more", n=400, size=24, classes=3)
    shard, ray_engine.SHARD = ray_engine.SHARD, 64
    try:
        whole = embed(tmp_path / "in", tmp_path / "whole", "--engine", "ray")
        args = ["embed", str(tmp_path / "in"), "--out", str(tmp_path / "killed"), *TINY_ARGS, "--seed", "0"]
        args += ["--engine", "ray"]
        script = KILL_AFTER_SHARDS.format(written=shards_written(tmp_path / "killed"))
        killed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, timeout=600)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
        written = settled_records(tmp_path / "killed" / "pixels")
        assert 4 <= len(written) < len(rd.shards(tmp_path / "whole"))
        before = {p.name: p.stat().st_mtime_ns for p in written}
        files = 0
        for p in written:  # 64 files each, but the last shard's fewer where it was written before the kill
            with np.load(p) as record:
                files += len(record["row"])
        assert main([*args, "--resume"]) == 0
    finally:
        ray_engine.SHARD = shard
    progress = json.loads((tmp_path / "killed" / rd.PROGRESS).read_text())
    assert progress["stages"]["decode"]["resumed_at"] == files
    same_run(whole, tmp_path / "killed")
    assert set(pd.read_csv(tmp_path / "killed" / rd.SKIPPED)["path"]) == bad
    parts = tmp_path / "killed" / "pixels"
    assert all((parts / name.replace(".decoded-", "part-").replace(".npz", ".npy")).exists() for name in before)


def test_a_worker_node_lost_mid_decode_changes_nothing(tmp_path):
    """A simulated cluster (a head with no CPUs, two worker nodes of one CPU each) loses a
    worker node mid-decode, with blocks of 32 files left for both (each node runs one task at a
    time): Ray runs its task again on the other node, and the run is the local engine's. In a
    process of its own, as the cluster test above."""
    make_images(tmp_path / "in", n=1500, size=24, classes=3)
    embed(tmp_path / "in", tmp_path / "local")
    code = f"""
import sys, threading, time
import numpy as np
from ray.cluster_utils import Cluster
import ray
from embeddings import images, ray_engine
ray_engine.SHARD = 32
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0}})
nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
from ice.cli import main
from pathlib import Path
lost = []
def lose_a_node():
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = 32 * {shards_written(tmp_path / "ray")}
        if done >= 160:  # each node has a decode task running while shards are left
            cluster.remove_node(nodes[-1])
            lost.append(done)
            return
        time.sleep(0.02)
threading.Thread(target=lose_a_node, daemon=True).start()
"""
    code += embed_on_the_cluster(tmp_path)
    code += "sys.exit(code if lost and lost[0] <= 1500 - 2 * 32 else 3)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-300:]
    same_run(tmp_path / "local", tmp_path / "ray")


def ice_in_a_process(*args: str, env: dict) -> subprocess.CompletedProcess:
    """`ice embed ARGS` with the tiny settings on the Ray engine, in a process of its own whose
    local Ray (and so its workers) starts with `env`."""
    code = "import sys; from ice.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, *args, *TINY_ARGS, "--seed", "0", "--engine", "ray"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_images_on_s3_make_the_local_folders_run(s3, tmp_path):
    """`ice embed s3://bucket/prefix --engine ray`: the images listed and read from S3 (moto's
    server) give the run that the same files in a folder give, in a process of its own, whose
    Ray workers start with the AWS settings."""
    import pyarrow.fs as pafs

    bad = hostile_folder(tmp_path / "in")
    make_images(tmp_path / "in" / "more", n=60, size=24, classes=3)
    local = embed(tmp_path / "in", tmp_path / "local")
    fs, _ = pafs.FileSystem.from_uri("s3://photos?allow_bucket_creation=true")
    fs.create_dir("photos")
    pafs.copy_files(str(tmp_path / "in"), "photos/in", destination_filesystem=fs)
    out = ice_in_a_process("embed", "s3://photos/in/", "--out", str(tmp_path / "s3"), env=s3)
    assert out.returncode == 0, out.stderr[-3000:]
    same_run(local, tmp_path / "s3")
    assert rd.load_manifest(tmp_path / "s3")["input_root"] == "s3://photos/in"
    assert set(pd.read_csv(tmp_path / "s3" / rd.SKIPPED)["path"]) == bad
    # --input-list: the objects it names, without listing the prefix; one named is not there
    listed = sorted(p.relative_to(tmp_path / "in").as_posix() for p in (tmp_path / "in" / "more").rglob("*.png"))
    (tmp_path / "list.txt").write_text("\n".join(listed[:30] + ["more/gone.png"]) + "\n")
    listing, out_dir = str(tmp_path / "list.txt"), str(tmp_path / "s3-list")
    out = ice_in_a_process("embed", "s3://photos/in", "--input-list", listing, "--out", out_dir, env=s3)
    assert out.returncode == 0, out.stderr[-3000:]
    assert rd.read_items(tmp_path / "s3-list")["path"].tolist() == listed[:30]
    skipped = pd.read_csv(tmp_path / "s3-list" / rd.SKIPPED)
    assert skipped.values.tolist() == [["more/gone.png", "file not found (gone since it was listed)"]]
    from explorer.app import create_app

    client = create_app(tmp_path / "s3").server.test_client()  # the original, read from S3
    items = rd.read_items(tmp_path / "s3")
    for image_id, path in items.loc[items["path"].str.endswith((".png", ".jpg")), ["image_id", "path"]].values[:3]:
        got = client.get(f"/image/{image_id}")
        assert got.status_code == 200 and got.data == (tmp_path / "in" / path).read_bytes()


def test_s3_input_errors_are_one_line(s3, tmp_path, capsys):
    import pyarrow.fs as pafs

    pafs.FileSystem.from_uri("s3://photos?allow_bucket_creation=true")[0].create_dir("photos")
    assert main(["embed", "s3://photos/in", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input on an object store needs --engine ray" in err
    # listed before Ray starts: no bucket
    assert main(["embed", "s3://nowhere/in", "--out", str(tmp_path / "b"), "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3://nowhere/in: cannot list" in err and "NO_SUCH_BUCKET" in err
    assert main(["embed", "s3://photos/nothing", "--out", str(tmp_path / "c"), "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3://photos/nothing: nothing there" in err


def test_a_decode_larger_than_the_object_store_gives_the_local_pixels(tmp_path):
    """2,000 images decoded at 128 px (98 MB of pixels) on a Ray whose object store holds 80 MB:
    the run completes with the local engine's pixels and skipped files (the tasks write the
    pixels into the scratch file themselves; only sizes and reasons go through the store). In
    a process of its own, for a Ray with that store."""
    from embeddings.images import decode_all, find_images

    make_images(tmp_path / "in", n=2000, size=24, classes=3)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    paths = find_images(tmp_path / "in")
    common = dict(size=128, max_pixels=10**8)
    local = decode_all(
        tmp_path / "in",
        paths,
        workers=0,
        pixels_path=tmp_path / "local.npy",
        skipped_path=tmp_path / "local.csv",
        **common,
    )
    code = f"""
import ray
from pathlib import Path
from embeddings.images import find_images
from embeddings.ray_engine import decode_all_ray
ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False,
         configure_logging=False)
root = Path({str(tmp_path / "in")!r})
got = decode_all_ray(root, find_images(root), size=128, max_pixels=10**8,
                     pixels_path=Path({str(tmp_path / "ray")!r}), skipped_path=Path({str(tmp_path / "ray.csv")!r}))
print("kept", len(got.keep))
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    pixels = rd.load_rows(tmp_path / "ray")
    assert pixels.nbytes > 80 * 1024**2 and f"kept {len(local.keep)}" in out.stdout
    assert np.array_equal(np.asarray(pixels), np.load(tmp_path / "local.npy", mmap_mode="r"))
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()


def test_ray_train_workers_train_the_encoder_and_a_lost_worker_changes_nothing(local_ray, tmp_path):
    """--train-workers 2: two Ray Train workers train one encoder (each its share of every
    batch). A worker killed mid-training makes Ray Train start the group again from the run's
    last checkpoint, and the run ends with the model of the uninterrupted one."""
    import threading

    import torch

    make_images(tmp_path / "in", n=600, size=24, classes=3)
    args = ["--epochs", "6", "--engine", "ray", "--train-workers", "2", "--labels-from-folders"]
    whole = embed(tmp_path / "in", tmp_path / "whole", *args)
    manifest = rd.load_manifest(whole)
    assert manifest["config"]["train_workers"] == 2

    def alive_workers() -> list[int]:
        """The pids of the Ray Train workers (Ray titles their processes ray::RayTrainWorker...)."""
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and b"RayTrainWorker" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
        return sorted(pids)

    done = {}
    thread = threading.Thread(target=lambda: done.update(run=embed(tmp_path / "in", tmp_path / "killed", *args)))
    thread.start()
    checkpoint, killed = tmp_path / "killed" / rd.CHECKPOINT, None
    deadline = time.monotonic() + 300
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if checkpoint.exists() and (pids := alive_workers()):
            epoch = torch.load(checkpoint, weights_only=False)["epoch"]
            os.kill(pids[-1], signal.SIGKILL)
            killed = (pids[-1], epoch)
        time.sleep(0.05)
    thread.join(600)
    assert killed is not None and killed[1] < 6, "no worker was killed while it trained"
    assert done.get("run") is not None
    a = torch.load(whole / rd.MODEL, weights_only=False)["model"]
    b = torch.load(tmp_path / "killed" / rd.MODEL, weights_only=False)["model"]
    for key, value in a.items():
        assert torch.allclose(value.float(), b[key].float(), atol=1e-6), key
    assert killed[0] not in alive_workers()


def test_train_workers_need_the_ray_engine(tmp_path, capsys):
    make_images(tmp_path / "in", n=4)
    assert main(["embed", str(tmp_path / "in"), "--out", str(tmp_path / "run"), "--train-workers", "2"]) != 0
    assert "--train-workers 2: needs --engine ray" in capsys.readouterr().err


def test_the_local_path_never_imports_ray():
    code = (
        "import sys, ice, ice.cli, embeddings.pipeline, embeddings.stages, embeddings.add, explorer.app; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_bad_engine_is_one_line(tmp_path, capsys):
    make_images(tmp_path / "in", n=4)
    assert main(["embed", str(tmp_path / "in"), "--out", str(tmp_path / "run"), "--engine", "spark"]) != 0
    assert "--engine 'spark': must be local or ray" in capsys.readouterr().err
