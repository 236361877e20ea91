"""Thumbnails, originals and the CSV by HTTP: ids only, everything else is a 404."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from explorer.app import create_app
from tests.conftest import rebuild_manifest


@pytest.fixture(scope="module")
def client(small_run):
    return create_app(small_run, read_only=True).server.test_client()


def test_thumbnail_is_the_runs_pixels(client, small_run):
    r = client.get("/thumb/12.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    pixels = np.load(small_run / "pixels.npy", mmap_mode="r")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), pixels[12])
    assert "max-age" in r.headers["Cache-Control"]
    again = client.get("/thumb/12.png", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "url",
    [
        "/thumb/300.png",
        "/thumb/-1.png",
        "/thumb/abc.png",
        "/thumb/1.5.png",
        "/thumb/../manifest.json",
        "/thumb/..%2Fmanifest.json",
        "/thumb/..%2F..%2F..%2Fetc%2Fpasswd",
        "/thumb/%2Fetc%2Fpasswd",
        "/image/300",
        "/image/-1",
        "/image/..%2Fmanifest.json",
        "/image/0/../../manifest.json",
    ],
)
def test_unknown_ids_and_paths_are_404(client, url):
    assert client.get(url).status_code == 404


def test_original_image_by_id(client, small_run):
    import pandas as pd
    import json

    root = json.loads((small_run / "manifest.json").read_text())["input_root"]
    path = pd.read_parquet(small_run / "items.parquet")["path"][4]
    r = client.get("/image/4")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.data == open(f"{root}/{path}", "rb").read()
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_a_path_climbing_out_of_the_input_is_never_served(explorer_run, tmp_path):
    """An items path that climbs out of input_root gets the thumbnail, not the file."""
    import pandas as pd

    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), "red").save(secret)
    items = pd.read_parquet(explorer_run / "items.parquet")
    items.loc[0, "path"] = "../" * 30 + str(secret).lstrip("/")
    items.to_parquet(explorer_run / "items.parquet", index=False)
    r = create_app(explorer_run).server.test_client().get("/image/0")
    assert r.status_code == 200 and r.data != secret.read_bytes()
    assert np.asarray(Image.open(io.BytesIO(r.data))).shape == np.load(explorer_run / "pixels.npy")[0].shape


def test_export_route(client):
    r = client.get("/export.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    assert len(r.data.decode().strip().splitlines()) == 301
    assert client.get("/export.csv?clustering=k99").status_code == 404
    assert client.get("/export.csv?clustering=../../x").status_code == 404


def first_image_from(run_dir, root, path: str):
    """The run made over `root`, its image 0 stored as `path`; the app's GET /image/0."""
    import json

    import pandas as pd

    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "input_root": str(root)}))
    items = pd.read_parquet(run_dir / "items.parquet")
    items.loc[0, "path"] = path
    items.to_parquet(run_dir / "items.parquet", index=False)
    return create_app(run_dir).server.test_client().get("/image/0")


def test_original_whose_name_is_not_utf8(explorer_run, tmp_path):
    """The job writes such names as \\xNN; the file is still found and served."""
    root = tmp_path / "input"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9.png"
    Image.new("RGB", (5, 5), "blue").save(os.fsdecode(raw))
    r = first_image_from(explorer_run, root, "caf\\xe9.png")
    assert r.status_code == 200 and r.data == open(raw, "rb").read()


def test_an_utf8_name_holding_a_typed_escape_is_served_as_named(explorer_run, tmp_path):
    """A name that is UTF-8 is stored as it is, so "a\\x41.png" is that file, not "aA.png"."""
    root = tmp_path / "input"
    root.mkdir()
    Image.new("RGB", (5, 5), "black").save(root / "a\\x41.png")
    Image.new("RGB", (5, 5), "white").save(root / "aA.png")
    r = first_image_from(explorer_run, root, "a\\x41.png")
    assert r.status_code == 200 and r.data == (root / "a\\x41.png").read_bytes()


def test_image_addresses_change_with_each_build_of_a_run(explorer_run):
    """Browsers keep images an hour: a URL shared by two runs on one port (or by a run and
    its --force rebuild) would show the other run's pictures."""
    from explorer.routes import image_url, thumb_url

    first = create_app(explorer_run).ice_data.version
    rebuild_manifest(explorer_run)
    app = create_app(explorer_run)
    again = app.ice_data.version
    assert len(first) == len(again) == 12 and first != again
    client = app.server.test_client()
    for url in (thumb_url(3, again), image_url(3, again)):
        assert url.endswith(f"3.png?v={again}" if "thumb" in url else f"3?v={again}")
        assert client.get(url).status_code == 200
