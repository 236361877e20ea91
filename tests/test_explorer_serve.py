"""Serving: HTTP basic auth on every route, the warning for an open address, gunicorn."""

import base64
import socket
import subprocess
import sys
import time

import pytest
import requests

from embeddings.errors import IceError
from explorer.serve import (check_port, check_workers, exposure_warning, make_wsgi, parse_auth,
                            read_auth_file)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_parse_auth():
    assert parse_auth("ann:s3cr:et") == ("ann", "s3cr:et")
    for bad in ("ann", ":pw", ""):
        with pytest.raises(IceError, match="USER:PASSWORD"):
            parse_auth(bad)


def test_read_auth_file(tmp_path):
    path = tmp_path / "auth"
    path.write_text("ann:pw\nignored\n")
    assert read_auth_file(path) == ("ann", "pw")
    path.write_text("\n")
    with pytest.raises(IceError, match="expected one line"):
        read_auth_file(path)
    with pytest.raises(IceError, match="cannot read"):
        read_auth_file(tmp_path / "missing")


def test_every_route_needs_the_password(small_run):
    _, wsgi = make_wsgi(small_run, read_only=True, auth=("ann", "pw"))
    client = wsgi.test_client()
    for url in ("/", "/thumb/0.png", "/export.csv", "/_dash-layout"):
        r = client.get(url)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get(url, headers=basic("ann", "wrong")).status_code == 401
        assert client.get(url, headers=basic("ann", "pw")).status_code == 200
    assert client.get("/", headers={"Authorization": "Basic !!notbase64"}).status_code == 401


def test_warning_for_an_open_address():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("0.0.0.0", ("a", "b")) is None
    assert "without --auth" in exposure_warning("0.0.0.0", None)


def test_bad_port_and_workers():
    with pytest.raises(IceError, match="--port 0"):
        check_port(0)
    with pytest.raises(IceError, match="--workers 0"):
        check_workers(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_workers_serve_the_app(small_run):
    port = free_port()
    code = ("import sys; from explorer.serve import serve; "
            "serve(sys.argv[1], port=int(sys.argv[2]), read_only=True, auth=('ann', 'pw'), workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(small_run), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/thumb/3.png", headers=basic("ann", "pw"), timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.time() < deadline, "gunicorn did not start"
                time.sleep(0.3)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out and "gunicorn, 2 workers" in out
