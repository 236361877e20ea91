"""Serving the explorer: the address, HTTP basic auth, and the server that runs it.

Flask's development server is for one person on this machine. `workers` serves with
gunicorn (a production WSGI server): that many processes, each with THREADS threads, all
forked from one preloaded app, for several people or an address beyond localhost.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import ipaddress
import socket
import sys
from pathlib import Path

from ice.errors import IceError

THREADS = 4  # threads per gunicorn worker: a page load fires several callbacks at once
REALM = "ICE"


def parse_auth(value: str) -> tuple[str, str]:
    """'user:password' -> (user, password); IceError without a colon, a user or a password."""
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise IceError("--auth: expected USER:PASSWORD, both not empty")
    return user, password


def read_auth_file(path: str | Path) -> tuple[str, str]:
    """(user, password) from the first line of a file holding `user:password`."""
    try:
        line = next(iter(Path(path).read_text().splitlines()), "")
    except OSError as e:
        raise IceError(f"--auth-file {path}: cannot read ({e.strerror})") from None
    try:
        return parse_auth(line.strip())
    except IceError:
        raise IceError(f"--auth-file {path}: expected one line USER:PASSWORD") from None


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise IceError(f"--port {port}: must be 1..65535")
    return port


def check_workers(workers: int | None) -> int | None:
    if workers is not None and workers < 1:
        raise IceError(f"--workers {workers}: must be at least 1")
    return workers


def check_address(host: str, port: int) -> None:
    """IceError, in one line, where no server could listen on host:port: the port is taken,
    or the host is not an address of this machine. Checked before the app is built and its
    address printed; the servers themselves said so after the banner, in several lines."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise IceError(f"--host {host}: {e.strerror}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as both servers bind
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise IceError(
                    f"port {port} on {host} is in use: stop what serves there, or pick another with --port"
                ) from None
            raise IceError(f"--host {host}: cannot listen there ({e.strerror})") from None


def address_url(host: str, port: int) -> str:
    """The address to open: IPv6 in brackets; this machine's name for "every address"."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, auth) -> str | None:
    """The one-line warning for an address others can reach with no password, else None."""
    if is_loopback(host) or auth:
        return None
    return (
        f"ice: warning: serving on {host} without --auth: anyone who can reach it "
        "can see the images and change the annotations"
    )


class BasicAuth:
    """WSGI middleware: every request (pages, Dash's routes, thumbnails) needs the
    one user and password, or gets 401 with a WWW-Authenticate challenge."""

    def __init__(self, app, user: str, password: str):
        self.app = app
        self._expected = f"{user}:{password}".encode()

    def authorised(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)

    def __call__(self, environ, start_response):
        if self.authorised(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b"401: this explorer needs a user name and password\n"]


def make_wsgi(run_dir, read_only: bool = False, auth: tuple[str, str] | None = None):
    """The Dash app over `run_dir` and the Flask server to hand a WSGI server (with auth)."""
    from .app import create_app

    app = create_app(run_dir, read_only=read_only)
    if auth:
        app.server.wsgi_app = BasicAuth(app.server.wsgi_app, *auth)
    return app, app.server


def run_gunicorn(wsgi, host: str, port: int, workers: int) -> None:
    """Serve `wsgi` with gunicorn until stopped: `workers` forked processes, THREADS each."""
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise IceError("--workers needs gunicorn: pip install gunicorn (the [serve] extra of pyproject.toml)") from None

    class Server(BaseApplication):
        def load_config(self):
            options = {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": workers,
                "threads": THREADS,
                "worker_class": "gthread",
                "preload_app": True,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "warning",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return wsgi

    Server().run()


def serve(
    run_dir,
    host: str = "127.0.0.1",
    port: int = 8050,
    read_only: bool = False,
    auth: tuple[str, str] | None = None,
    workers: int | None = None,
) -> None:
    """Build the app, print its address and serve it until interrupted."""
    from .data import write_blocker

    check_port(port)
    check_workers(workers)
    check_address(host, port)
    blocker = None if read_only else write_blocker(run_dir)
    if blocker:
        print(
            f"ice: warning: {blocker}: serving read-only, so names, groups and re-clusterings cannot be saved",
            file=sys.stderr,
            flush=True,
        )
    app, wsgi = make_wsgi(run_dir, read_only=read_only or bool(blocker), auth=auth)
    warning = exposure_warning(host, auth)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    server = (
        f"gunicorn, {workers} worker{'s' if workers > 1 else ''} x {THREADS} threads"
        if workers
        else "development server"
    )
    print(
        f"ICE explorer for {app.ice_data.run_dir} ({app.ice_data.n:,} images, {server}"
        f"{', read-only' if app.ice_data.read_only else ''}): {address_url(host, port)}",
        flush=True,
    )
    if workers:
        run_gunicorn(wsgi, host, port, workers)
    else:
        wsgi.run(host=host, port=port, debug=False)
