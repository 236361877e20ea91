"""Packaging: the wheel, installed without -e, serves the explorer's CSS and JavaScript."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import pytest
import requests

from benchmarks.load import free_port, make_synthetic_run, server_output, wait_until_up

REPO = Path(__file__).resolve().parent.parent


def source_files() -> list[str]:
    """The checkout's files as a build sees them: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so the files to build from are unknown: {listed.stderr.strip()}")
    return [name for name in listed.stdout.split("\0") if name and os.path.lexists(REPO / name)]


def copy_source(to: Path) -> Path:
    """A copy of the checkout to build from: a build writes build/ and *.egg-info beside the source."""
    for name in source_files():
        src, dst = REPO / name, to / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # explorer/assets, which the build follows to the top-level assets/
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    return to


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel built from the checkout and installed with pip --target into a folder of its own;
    the environment that imports it and not the checkout. Offline: the build uses this
    environment's setuptools."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = copy_source(tmp / "source")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)], check=True, cwd=tmp
    )
    (wheel,) = (tmp / "dist").glob("ice_explorer-*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True, cwd=tmp)
    # -S leaves out this environment's .pth files, among them the editable install's finder, which
    # would import anything the wheel lacks from the checkout; its packages come by PYTHONPATH
    paths = dict.fromkeys([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return {"python": [sys.executable, "-S"], "site": site, "env": env, "cwd": tmp}


def test_the_wheel_is_imported_not_the_checkout(installed):
    check = textwrap.dedent("""
        import sys, explorer.app, explorer.serve
        print(explorer.app.ASSETS)
        for name, module in sys.modules.items():
            if name.split(".")[0] in ("explorer", "embeddings", "ice") and getattr(module, "__file__", None):
                print(module.__file__)
    """)
    out = subprocess.run(
        [*installed["python"], "-c", check],
        env=installed["env"],
        cwd=installed["cwd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    site = installed["site"].resolve()
    assert Path(out[0]) == site / "explorer" / "assets"
    assert len(out) > 5 and all(Path(f).resolve().is_relative_to(site) for f in out)


def test_the_installed_explorer_serves_its_css_and_javascript(installed, tmp_path):
    run_dir = make_synthetic_run(tmp_path / "run", 300, clusters=5)
    port = free_port()
    ice = [*installed["python"], str(installed["site"] / "bin" / "ice")]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [*ice, "explore", str(run_dir), "--port", str(port)],
            env=installed["env"],
            cwd=installed["cwd"],
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        proc.output_files = (out, err)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base + "/_dash-layout", proc)
            page = requests.get(base + "/", timeout=10)
            assert page.status_code == 200
            linked = {
                url.split("?")[0].removeprefix("/assets/"): url
                for url in re.findall(r'(?:href|src)="(/assets/[^"]+)"', page.text)
            }
            assert set(linked) == {p.name for p in (REPO / "assets").iterdir() if p.suffix in (".css", ".js")}
            served = {}
            for name, url in linked.items():
                r = requests.get(base + url, timeout=10)
                assert r.status_code == 200, name
                assert r.content == (REPO / "assets" / name).read_bytes(), name
                served[name] = r.text
            # each clientside callback names a function that a served script defines
            deps = requests.get(base + "/_dash-dependencies", timeout=10).json()
            functions = [d["clientside_function"] for d in deps if d.get("clientside_function")]
            scripts = "\n".join(text for name, text in served.items() if name.endswith(".js"))
            assert {f["namespace"] for f in functions} >= {"grid", "map", "review"}
            assert not [f for f in functions if f["namespace"].startswith("_dashprivate")]  # none inline in Python
            for f in functions:
                assert re.search(rf"\b{f['namespace']}: \{{", scripts), f
                assert re.search(rf"\b{f['function_name']}: function\b", scripts), f
        except BaseException:
            print(*server_output(proc), sep="\n")
            raise
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
