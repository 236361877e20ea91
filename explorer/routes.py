"""Plain HTTP routes beside the Dash app: thumbnails, original images and the CSV export.

Images are addressed by integer image_id only, so no request can name a file: an id
that is not in the run, or anything that is not an id, is a 404.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from functools import lru_cache
from pathlib import Path

import flask
import numpy as np
from PIL import Image

from ice import storage
from ice.errors import IceError, ImageError

from .data import RUN_CLUSTERING, RunData
from .export import export_filename, export_frame, to_csv_text

THUMB_CACHE = 4096  # encoded thumbnails kept in memory
MAX_AGE = 3600  # seconds a browser may reuse an image without asking again
# Originals the browser can show and that cannot carry script (so no SVG).
BROWSER_IMAGES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


def thumb_url(image_id: int, version: str) -> str:
    """The thumbnail's address; `version` is RunData.version (browsers keep images an hour)."""
    return f"/thumb/{int(image_id)}.png?v={version}"


def image_url(image_id: int, version: str) -> str:
    return f"/image/{int(image_id)}?v={version}"


def encode_png(pixels: np.ndarray) -> bytes:
    """(s, s, 3) uint8 RGB -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def file_names(display: str) -> list[str]:
    """The OS names an items.parquet path may stand for: the job writes bytes that are not
    UTF-8 as \\xNN, and a name that is UTF-8 as it is, even one holding a typed "\\x41".
    The name as written comes first, so such a file is never taken for "A"."""
    if "\\x" not in display:
        return [display]
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), display.encode("utf-8"))
    return [display, os.fsdecode(raw)]


def original_path(data: RunData, image_id: int) -> Path | None:
    """The original file of an image if it is still there, inside input_root (or, for an image
    `ice add` took from outside it, at its absolute path), and a type a browser shows; else None."""
    root = data.input_root.resolve()
    for name in file_names(str(data.path[image_id])):
        path = (root / name).resolve()
        if (path.is_relative_to(root) or name.startswith("/")) and path.is_file():
            return path if path.suffix.lower() in BROWSER_IMAGES else None
    return None


def _cached(response: flask.Response, etag: str) -> flask.Response:
    response.cache_control.public = True
    response.cache_control.max_age = MAX_AGE
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.set_etag(etag)
    return response.make_conditional(flask.request)


def register_routes(server: flask.Flask, data: RunData) -> None:
    """Add /thumb/<id>.png, /image/<id> and /export.csv to the app's Flask server."""
    version = data.version

    @lru_cache(maxsize=THUMB_CACHE)
    def thumbnail(image_id: int) -> bytes:
        return encode_png(data.pixels[image_id])

    def known(image_id: int) -> bool:
        if image_id >= data.n:  # an addition that another server process showed first
            with contextlib.suppress(IceError):
                data.pick_up_additions()
        return 0 <= image_id < data.n

    def thumb_response(image_id: int) -> flask.Response:
        if not known(image_id):
            flask.abort(404)
        response = flask.Response(thumbnail(image_id), mimetype="image/png")
        return _cached(response, f"t{image_id}-{version}")

    @server.route("/thumb/<int:image_id>.png")
    def thumb(image_id: int):
        return thumb_response(image_id)

    def remote_original(image_id: int) -> flask.Response:
        """The original object of an image whose input is on an object store (S3), read
        through this server's AWS settings; the thumbnail where it cannot be."""
        name = str(data.path[image_id])
        kind = BROWSER_IMAGES.get(os.path.splitext(name)[1].lower())
        if kind is None:  # a type browsers do not show
            return thumb_response(image_id)
        try:
            body = storage.read_bytes(data.manifest["input_root"], name)
        except (ImageError, IceError):
            return thumb_response(image_id)
        return _cached(flask.Response(body, mimetype=kind), f"o{image_id}-{version}")

    @server.route("/image/<int:image_id>")
    def image(image_id: int):
        """The original file; the thumbnail when the original has moved away."""
        if not known(image_id):
            flask.abort(404)
        if storage.is_remote(data.manifest["input_root"]) and not str(data.path[image_id]).startswith("/"):
            return remote_original(image_id)
        path = original_path(data, image_id)
        if path is None:
            return thumb_response(image_id)
        # A file object, not the path: Flask would put the name, which may not be
        # UTF-8, into headers.
        stat = path.stat()
        response = flask.send_file(
            path.open("rb"),
            mimetype=BROWSER_IMAGES[path.suffix.lower()],
            max_age=MAX_AGE,
            etag=f"o{image_id}-{stat.st_mtime_ns}-{stat.st_size}",
            last_modified=stat.st_mtime,
            conditional=True,
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @server.before_request
    def only_ids():
        # Anything else under these prefixes is not an image id; without this Dash
        # would answer it with the app's page.
        rule = flask.request.url_rule
        if flask.request.path.startswith(("/thumb/", "/image/")) and (
            rule is None or rule.endpoint not in ("thumb", "image")
        ):
            flask.abort(404)

    @server.route("/export.csv")
    def export():
        clustering = flask.request.args.get("clustering", RUN_CLUSTERING)
        try:
            frame = export_frame(data, clustering=clustering)
        except IceError as e:
            return flask.Response(str(e) + "\n", status=404, mimetype="text/plain")
        return flask.Response(
            to_csv_text(frame),
            mimetype="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{export_filename(clustering)}"',
                "Cache-Control": "no-store",
            },
        )
