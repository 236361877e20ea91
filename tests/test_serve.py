"""Serving the explorer: basic auth, the exposure warning, gunicorn workers, read-only over
HTTP, bad options, and a short version of the load test. Real servers on 127.0.0.1."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import requests

from benchmarks.load import Client, callbacks_of, explorer, load_test, make_synthetic_run, server_output, stored_names
from ice.cli import main
from tests.conftest import mounted

USER, PASSWORD = "ada", "s3cret:with colon"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A complete synthetic run of 2,000 images (50 clusters), made in a fraction of a second."""
    return make_synthetic_run(tmp_path_factory.mktemp("serve") / "run", 2000)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ice: warning:")]


def stop_and_read(proc) -> tuple[str, str]:
    """Stop a server started by `explorer`; its (stdout, stderr)."""
    proc.terminate()
    proc.wait(timeout=15)
    return server_output(proc)


def test_auth_is_required_on_every_route(run_dir):
    with explorer(run_dir, "--auth", f"{USER}:{PASSWORD}", auth=(USER, PASSWORD)) as (base, _):
        for path in ("/", "/_dash-layout", "/_dash-dependencies", "/thumb/0.png", "/export.csv", "/nothing"):
            r = requests.get(base + path, timeout=10)
            assert r.status_code == 401, path
            assert r.headers["WWW-Authenticate"].startswith("Basic ")
            assert requests.get(base + path, auth=(USER, "wrong"), timeout=10).status_code == 401
        assert requests.get(base + "/", auth=(USER, PASSWORD), timeout=10).status_code == 200
        thumb = requests.get(base + "/thumb/0.png", auth=(USER, PASSWORD), timeout=10)
        assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
        callbacks = callbacks_of(base, auth=(USER, PASSWORD))
        assert Client(base, callbacks, auth=(USER, PASSWORD)).hover(0, 0).status_code == 200
        assert Client(base, callbacks).hover(0, 0).status_code == 401


def test_other_address_without_auth_warns(run_dir):
    with explorer(run_dir, "--host", "0.0.0.0") as (base, proc):
        assert requests.get(base + "/", timeout=10).status_code == 200
        _, stderr = stop_and_read(proc)
    (line,) = warning_lines(stderr)
    assert "0.0.0.0" in line and "--auth" in line


def test_other_address_with_auth_file_does_not_warn(run_dir, tmp_path):
    secret = tmp_path / "auth"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    with explorer(run_dir, "--host", "0.0.0.0", "--auth-file", str(secret), auth=(USER, PASSWORD)) as (base, proc):
        assert requests.get(base + "/", auth=(USER, PASSWORD), timeout=10).status_code == 200
        _, stderr = stop_and_read(proc)
    assert warning_lines(stderr) == []


def test_gunicorn_workers_serve_page_and_thumbnail(run_dir):
    with explorer(run_dir, "--workers", "2") as (base, proc):
        page = requests.get(base + "/", timeout=10)
        thumb = requests.get(base + "/thumb/1999.png", timeout=10)
        assert requests.get(base + "/thumb/2000.png", timeout=10).status_code == 404
        stdout, stderr = stop_and_read(proc)
    assert "gunicorn, 2 workers" in stdout
    assert page.status_code == 200 and "ICE" in page.text
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
    assert warning_lines(stderr) == []  # 127.0.0.1 is never a warning


def test_read_only_server_refuses_a_rename(run_dir):
    before = stored_names(run_dir) if (run_dir / "annotations.sqlite").exists() else {}
    with explorer(run_dir, "--read-only") as (base, _):
        r = Client(base, callbacks_of(base)).rename(3, "not saved")
    assert r.status_code == 200  # the page shows the refusal next to the name
    assert "read-only" in r.text and "Saved as" not in r.text
    after = stored_names(run_dir) if (run_dir / "annotations.sqlite").exists() else {}
    assert after == before and after.get(3) != "not saved"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--auth", "nocolon"], "--auth: expected USER:PASSWORD"),
        (["--auth", "bob:"], "--auth: expected USER:PASSWORD, both not empty"),  # was served with no password
        (["--host", "10.255.255.1"], "--host 10.255.255.1: cannot listen there (Cannot assign requested address)"),
        (["--auth-file", "/no/such/file"], "--auth-file /no/such/file: cannot read"),
        (["--workers", "0"], "--workers 0: must be at least 1"),
        (["--port", "70000"], "--port 70000: must be 1..65535"),
    ],
)
def test_bad_option_is_one_line(run_dir, capsys, options, message):
    assert main(["explore", str(run_dir), *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_port_in_use_is_one_line_before_any_banner(run_dir, capsys):
    """The banner announced an address that another program held, then the server's own
    lines followed (gunicorn: eleven of them over five seconds)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ([], ["--workers", "1"]):
            assert main(["explore", str(run_dir), "--port", str(port), *workers]) == 1
            out, err = capsys.readouterr()
            assert (
                out == ""
                and err
                == f"ice: error: port {port} on 127.0.0.1 is in use: stop what serves "
                "there, or pick another with --port\n"
            ), err


def test_the_address_printed_is_one_to_open():
    import socket

    from explorer.serve import address_url

    assert address_url("::1", 8050) == "http://[::1]:8050/"
    assert address_url("127.0.0.1", 80) == "http://127.0.0.1:80/"
    assert address_url("0.0.0.0", 8050) == f"http://{socket.gethostname()}:8050/"


def test_short_load_keeps_every_rename(run_dir):
    result = load_test(run_dir, sessions=4, seconds=5)
    assert result["errors"] == 0, result["samples"]
    assert result["renames_checked"] > 0 and result["renames_lost"] == {}
    assert all(result["kinds"][kind]["count"] > 0 for kind in ("hover", "thumb", "select", "neighbours", "rename"))


@pytest.fixture
def read_only_run(run_dir, tmp_path):
    """A copy of the run with one cluster named, seen through a read-only bind mount: a
    file system the explorer cannot write to, whoever runs it (root ignores file modes)."""
    import shutil

    from ice.annotations import Annotations

    copy = shutil.copytree(run_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("annotations.sqlite*"))
    Annotations(copy / "annotations.sqlite").set_cluster_name("run", 0, "named before")
    view = tmp_path / "view"
    view.mkdir()
    with mounted(view, "--bind", str(copy)) as remount:
        remount("bind", "ro")
        yield view


@pytest.mark.parametrize("annotations", ["kept", "none yet"])
def test_a_run_on_a_read_only_file_system_opens_read_only(read_only_run, annotations):
    """Browsing a run one cannot write to (a colleague's, a read-only share): the explorer
    says so in one line and serves it read-only, instead of a traceback or failed saves."""
    if annotations == "none yet":
        # The bind mount shows the copy's files: remove the database under it.
        (read_only_run.parent / "copy" / "annotations.sqlite").unlink()
    with explorer(read_only_run) as (base, proc):
        client = Client(base, callbacks_of(base))
        r = client.rename(3, "not saved")
        page = requests.get(base + "/export.csv", timeout=10)
        stdout, stderr = stop_and_read(proc)
    (line,) = warning_lines(stderr)
    assert str(read_only_run) in line and "read-only file system" in line and "read-only" in stdout
    assert "read-only" in r.text and "Saved as" not in r.text
    rows = pd.read_csv(io.StringIO(page.text), keep_default_na=False)
    expected = "" if annotations == "none yet" else "named before"
    assert (rows.loc[rows.cluster == 0, "cluster_name"] == expected).all()
    assert (rows.loc[rows.cluster != 0, "cluster_name"] == "").all()
