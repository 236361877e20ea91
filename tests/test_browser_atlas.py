"""The pictures in headless Chromium: the atlas on the map, zoomed into and under the mouse, and an
image at its own size."""

import base64
import io

import numpy as np
import pytest
from dash.testing.wait import until
from PIL import Image
from selenium.webdriver.common.actions.action_builder import ActionBuilder

import explorer.atlas as explorer_atlas
from explorer.app import create_app
from explorer.figures import cluster_colors
from tests.conftest_browser import start_explorer
from tests.test_browser_explorer import GD, lone_point

pytestmark = pytest.mark.browser

FRAME = "document.getElementById('map-atlas-frame')"


def atlas_state(duo) -> dict | None:
    """The atlas as the page shows it: its source, its box and the plot area's, or None when hidden."""
    return duo.driver.execute_script(f"""
        const f = {FRAME};
        if (!f || f.style.display === 'none' || !f.firstChild.src) return null;
        const img = f.firstChild.getBoundingClientRect();
        const area = {GD}.querySelector('.nsewdrag').getBoundingClientRect();
        return {{src: f.firstChild.src, img: [img.left, img.top, img.width, img.height],
                 area: [area.left, area.top, area.width, area.height]}};""")


def atlas_pixels(state) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(state["src"].split(",", 1)[1]))).convert("RGBA"))


def test_the_pictures_lie_where_their_points_are_and_the_mouse_still_finds_the_points(explorer):
    until(lambda: atlas_state(explorer), 15)
    state = atlas_state(explorer)
    assert state["src"].startswith("data:image/webp;base64,")
    assert np.allclose(state["img"], state["area"], atol=2), state  # the view's picture covers the plot
    # the picture is the server's drawing of the view the map shows
    view = explorer.driver.execute_script(f"""
        const fl = {GD}._fullLayout;
        return {{x: fl.xaxis.range, y: fl.yaxis.range, w: Math.round(fl._size.w), h: Math.round(fl._size.h)}};""")
    data = create_app(explorer.run_dir).ice_data
    c = data.clustering("run")
    expected, count = explorer_atlas.render(*data.map_xy("run"), data.pixels, c.cluster, cluster_colors(c.k), view)
    assert count == data.n
    picture = atlas_pixels(state)
    assert picture.shape == expected.shape
    opaque = expected[..., 3] == 255
    assert (picture[..., 3] > 128).mean() > 0.1 and ((picture[..., 3] > 128) == opaque).mean() > 0.99
    assert np.abs(picture[opaque][:, :3].astype(int) - expected[opaque][:, :3]).mean() < 8
    x, y, image_id = lone_point(explorer)
    actions = ActionBuilder(explorer.driver)  # the pictures take no mouse events: the point's hover
    actions.pointer_action.move_to_location(round(x), round(y))
    actions.perform()
    img = explorer.wait_for_element("#map-tooltip img.tooltip-img")
    assert f"/thumb/{image_id}.png" in img.get_attribute("src")
    explorer.find_element("#atlas input").click()  # switched off: the points alone
    until(lambda: atlas_state(explorer) is None, 10)
    explorer.find_element("#atlas input").click()
    until(lambda: atlas_state(explorer), 10)


def test_a_view_with_too_many_images_shows_points_until_zoomed_in(dash_duo, explorer_run, monkeypatch):
    monkeypatch.setattr(explorer_atlas, "ATLAS_MAX", 40)
    start_explorer(dash_duo, explorer_run)
    dash_duo.wait_for_contains_text("#atlas-note", "in view: zoom in", timeout=15)
    assert atlas_state(dash_duo) is None
    x, y, image_id = lone_point(dash_duo)
    xr, yr = dash_duo.driver.execute_script(
        f"""
        const gd = {GD}, fl = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const cx = fl.xaxis.p2d(arguments[0] - r.left), cy = fl.yaxis.p2d(arguments[1] - r.top);
        const dx = (fl.xaxis.range[1] - fl.xaxis.range[0]) / 40, dy = (fl.yaxis.range[1] - fl.yaxis.range[0]) / 40;
        const xr = [cx - dx, cx + dx], yr = [cy - dy, cy + dy];
        Plotly.relayout(gd, {{'xaxis.range': xr, 'yaxis.range': yr}});
        return [xr, yr];""",
        x,
        y,
    )
    until(lambda: atlas_state(dash_duo), 15)
    assert dash_duo.find_element("#atlas-note").text == ""
    view = dash_duo.driver.execute_script(f"return {GD}._fullLayout.xaxis.range.concat({GD}._fullLayout.yaxis.range)")
    drawn = dash_duo.driver.execute_script(f"return {GD}.layout.meta")
    assert drawn["key"] == "run"
    # the scale anchor may widen one range to keep the map's proportions; the point stays inside
    assert view[0] <= xr[0] + 1e-6 and view[1] >= xr[1] - 1e-6 or view[2] <= yr[0] + 1e-6
    state = atlas_state(dash_duo)
    assert np.allclose(state["img"], state["area"], atol=2), state


def test_the_detail_cards_image_opens_at_its_own_size_beside_its_working_pixels(explorer):
    x, y, image_id = lone_point(explorer)
    actions = ActionBuilder(explorer.driver)
    actions.pointer_action.move_to_location(round(x), round(y)).click()
    actions.perform()
    explorer.wait_for_element("#detail .detail-img").click()
    explorer.wait_for_element("#original-view.open")
    until(lambda: "original" in explorer.find_element("#original-caption").text, 10)
    until(lambda: "working size" in explorer.find_element("#working-caption").text, 10)
    data = create_app(explorer.run_dir).ice_data
    with Image.open(data.input_root / data.path[image_id]) as file:
        width, height = file.size
    shown = explorer.driver.execute_script("""
        const o = document.getElementById('original-img'), w = document.getElementById('working-img');
        return [o.naturalWidth, o.naturalHeight, o.getBoundingClientRect().width, w.naturalWidth,
                w.getBoundingClientRect().height, o.getBoundingClientRect().height];""")
    s = data.pixels.shape[1]
    times = 256 // max(width, height) if max(width, height) < 256 else 1  # a tiny file is magnified
    assert shown[:3] == [width, height, width * times]  # from the file
    assert shown[3] == s and shown[4] == max(shown[5], 64)  # the working pixels, as tall
    own = f"shown {times}× larger" if times > 1 else "its own size"
    assert explorer.find_element("#original-caption").text == f"original {width}×{height} px ({own})"
    assert explorer.find_element("#working-caption").text == f"working size {s}×{s} px"
    explorer.driver.find_element("css selector", "body").send_keys("\ue00c")  # Escape
    until(lambda: not explorer.find_elements("#original-view.open"), 5)
