"""Fixtures and hooks for the explorer's tests, loaded by tests/conftest.py as a plugin.

Browser tests (marked `browser`) drive Debian's headless chromium through dash[testing]'s
`dash_duo`. Without chromium they skip, unless ICE_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

VIEWPORT = (1280, 800)  # the page must work at this size without horizontal scrolling
# Files of a run the explorer never reads; left out of the per-test copies.
NOT_COPIED = ("model.pt", "checkpoints", "annotations.sqlite*", "clusterings")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


_CHROMIUM_TMP: list[str] = []  # the TMPDIR given to chromedriver and Chromium, removed at the end


def pytest_runtest_setup(item):
    if item.get_closest_marker("browser") is None:
        return
    missing = browser_missing()
    if missing and os.environ.get("ICE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ICE_REQUIRE_BROWSER=1 but {missing}", pytrace=False)
    if missing:
        pytest.skip(missing)
    # Chromium leaves a folder in TMPDIR per start (org.chromium.Chromium.*, some of 13 MB)
    # that quitting does not remove; each test's browser starts after this hook, so it
    # inherits a TMPDIR that the session removes. Python's own tempdir is already fixed.
    if not _CHROMIUM_TMP:
        tempfile.gettempdir()
        _CHROMIUM_TMP.append(tempfile.mkdtemp(prefix="ice-chromium-"))
        os.environ["TMPDIR"] = _CHROMIUM_TMP[0]


def pytest_sessionfinish(session):
    for folder in _CHROMIUM_TMP:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)  # the hook is dash[testing]'s; absent where dash is not installed as a plugin
def pytest_setup_options():
    """Chrome options for dash_duo: headless, no sandbox (CI runs as root), no network
    chatter, and software WebGL for the Scattergl map."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--enable-unsafe-swiftshader",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
    ):
        options.add_argument(arg)
    return options


@pytest.fixture
def explorer_run(small_run, tmp_path) -> Path:
    """A private copy of the session's small run, so tests can write names and groups."""
    return Path(shutil.copytree(small_run, tmp_path / "run", ignore=shutil.ignore_patterns(*NOT_COPIED)))


def start_explorer(dash_duo, run_dir: Path, timeout: float = 20):
    """dash_duo showing the app over `run_dir`, at 1280x800, map drawn."""
    from explorer.app import create_app

    dash_duo.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
    )
    dash_duo.start_server(create_app(run_dir))
    wait_for_map(dash_duo, timeout)
    dash_duo.run_dir = run_dir
    return dash_duo


@pytest.fixture
def explorer(dash_duo, explorer_run):
    """dash_duo showing the app over a fresh copy of the small run, at 1280x800, map drawn."""
    return start_explorer(dash_duo, explorer_run)


def wait_for_map(dash_duo, timeout: float = 20) -> None:
    """Wait until plotly has drawn the map's WebGL traces."""
    from dash.testing.wait import until

    until(
        lambda: dash_duo.driver.execute_script(
            "const gd = document.querySelector('#map .js-plotly-plot');"
            "return !!(gd && gd._fullData && gd._fullData.length > 1"
            " && gd.querySelector('canvas'));"
        ),
        timeout=timeout,
    )


def slow_map_figures(monkeypatch, seconds: float = 1.0) -> None:
    """Makes the server's new map figures arrive after the lighter callbacks that follow a
    change of map, the order in which a patch meant for the new map landed on the old one."""
    import explorer.callbacks.map as map_callbacks

    make = map_callbacks.make_map_figure

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return make(*args, **kwargs)

    monkeypatch.setattr(map_callbacks, "make_map_figure", slow)


MAP_SCALES_JS = (
    "const fl = document.querySelector('#map .js-plotly-plot')._fullLayout;"
    "return [fl.xaxis._m, fl.yaxis._m, fl.xaxis.range, fl.yaxis.range]"
)


def zooms_keep_the_aspect(duo) -> None:
    """Zooms the map to views of other shapes than its own, then back to the whole map: each
    is drawn with one unit as long across as up, the view asked for widened along one axis,
    never cut."""
    from dash.testing.wait import until

    def square() -> bool:
        x_scale, y_scale, _, _ = duo.driver.execute_script(MAP_SCALES_JS)
        return abs(abs(y_scale) / x_scale - 1) < 0.01

    _, _, xr, yr = duo.driver.execute_script(MAP_SCALES_JS)
    cx, cy, w, h = (xr[0] + xr[1]) / 2, (yr[0] + yr[1]) / 2, abs(xr[1] - xr[0]), abs(yr[1] - yr[0])
    for want_x, want_y in (([cx - w / 8, cx + w / 8], [cy - h / 3, cy + h / 3]), ([cx - w / 3, cx], [cy, cy + h / 20])):
        duo.driver.execute_script(
            "Plotly.relayout(document.querySelector('#map .js-plotly-plot'),"
            " {'xaxis.range': arguments[0], 'yaxis.range': arguments[1]})",
            want_x,
            want_y,
        )
        until(square, 5)
        _, _, got_x, got_y = duo.driver.execute_script(MAP_SCALES_JS)
        assert min(got_x) <= want_x[0] + 1e-9 and max(got_x) >= want_x[1] - 1e-9
        assert min(got_y) <= want_y[0] + 1e-9 and max(got_y) >= want_y[1] - 1e-9
        assert abs(sorted(got_x)[0] - want_x[0]) < 1e-9 or abs(sorted(got_y)[0] - want_y[0]) < 1e-9
    duo.driver.execute_script(
        "Plotly.relayout(document.querySelector('#map .js-plotly-plot'),"
        " {'xaxis.autorange': true, 'yaxis.autorange': true})"
    )
    until(square, 5)
    assert duo.get_logs() == []
