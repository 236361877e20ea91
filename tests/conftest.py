"""Shared fixtures: generated image folders, and one small real run per session."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.config import Config
from embeddings.demo import write_digits
from embeddings.pipeline import run_embed

pytest_plugins = ["tests.conftest_browser"]


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """`mount OPTIONS TARGET` for the block, unmounted after it (lazily: a mapping left open
    must not leak the mount). Skips the test where this process may not mount; CI and this
    machine run as root, where it can. remount(*options) changes the mount's options."""

    def mount(*args: str) -> None:
        done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount here (mount {' '.join(args)}): {done.stderr.strip()}")

    mount(*options)
    try:
        yield lambda *new: mount("-o", ",".join(("remount",) + new))
    finally:
        subprocess.run(["umount", "--lazy", str(target)], check=True)


# Small, fast settings for runs that tests make: what they check is the plumbing.
TINY = dict(image_size=16, epochs=2, batch_size=64, workers=0, kmeans_restarts=1, neighbors=8)


def need_shared_data(*names: str) -> None:
    """Skip the test, with the reason, unless the shared data sets `names` are there; on CI
    (CI set) fail instead, since CI always has them."""
    from benchmarks.common import SHARED_DATA

    missing = [name for name in names if not (SHARED_DATA / name).exists()]
    if missing:
        message = f"needs {', '.join(missing)} in {SHARED_DATA} (../shared/data, or ICE_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI always has them")
        pytest.skip(message)


def rebuild_manifest(run_dir: Path) -> None:
    """What `ice embed --force` leaves for an explorer started before it: a new manifest,
    written atomically as the job writes it, with another `created`."""
    from ice import run_dir as rd

    rd.write_json(
        run_dir / rd.MANIFEST, {**rd.read_json(run_dir / rd.MANIFEST), "created": "2099-01-01T00:00:00+00:00"}
    )


def make_images(folder: Path, n: int = 24, size: int = 40, seed: int = 0, classes: int = 3) -> list[Path]:
    """Write n PNGs in `classes` subfolders: a bright square on a dark background per class colour."""
    rng = np.random.default_rng(seed)
    colours = [(230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40)]
    paths = []
    for i in range(n):
        c = i % classes
        a = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
        x, y = rng.integers(0, size // 2, size=2)
        a[y : y + size // 2, x : x + size // 2] = colours[c]
        path = folder / f"class{c}" / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    make_images(folder)
    return folder


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """`ice demo --no-serve`: the 1,797 digits with the demo's settings, made once; (its run
    directory, what the command printed)."""
    import io
    from contextlib import redirect_stdout

    from ice.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["demo", "--no-serve", "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A complete run made by the real pipeline on 300 scikit-learn digits (about 20 s)."""
    images = write_digits(tmp_path_factory.mktemp("digits300"), limit=300)
    run_dir = tmp_path_factory.mktemp("runs") / "small"
    cfg = Config(**{**TINY, "epochs": 4, "labels_from_folders": True})
    run_embed(images, run_dir, cfg)
    return run_dir


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on 127.0.0.1 and the AWS settings that point at it (for this process and
    the processes it starts); answers the environment."""
    from moto.server import ThreadedMotoServer

    from ice import storage

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    storage.open_root.cache_clear()
    yield {**os.environ, **settings}
    storage.open_root.cache_clear()
    server.stop()
