"""A map of 300,000 generated images in headless Chromium: a sample drawn as points over the
density image of all of them, zoomed in to points and pictures, hovered and box-selected."""

import numpy as np
import pandas as pd
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.actions.action_builder import ActionBuilder

from benchmarks.load import make_synthetic_run
from explorer import density
from tests.conftest_browser import start_explorer, zooms_keep_the_aspect
from tests.test_browser_explorer import GD, drag

pytestmark = pytest.mark.browser

N = 300_000


@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    return make_synthetic_run(tmp_path_factory.mktemp("large") / "run", N, clusters=12, image_size=8)


@pytest.fixture
def large(dash_duo, large_run):
    return start_explorer(dash_duo, large_run, timeout=60)


def layer_shown(duo, frame_id: str) -> bool:
    return duo.driver.execute_script(
        f"const f = document.getElementById('{frame_id}');"
        "return !!f && f.style.display !== 'none' && f.firstChild.src.startsWith('data:image/webp')"
    )


def zoom_to(duo, xr, yr) -> None:
    duo.driver.execute_script(
        f"Plotly.relayout({GD}, {{'xaxis.range': arguments[0], 'yaxis.range': arguments[1]}})", xr, yr
    )


def hover_shows(duo, x: float, y: float, image_id: int) -> None:
    """Move the mouse to map position (x, y); the tooltip shows image_id's thumbnail."""
    px, py = duo.driver.execute_script(
        f"""const gd = {GD}, fl = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [r.left + fl.xaxis.d2p(arguments[0]), r.top + fl.yaxis.d2p(arguments[1])];""",
        x,
        y,
    )
    actions = ActionBuilder(duo.driver)
    actions.pointer_action.move_to_location(round(px), round(py))
    actions.perform()
    until(lambda: duo.find_elements("#map-tooltip img.tooltip-img"), 10)
    assert f"/thumb/{image_id}.png" in duo.find_element("#map-tooltip img.tooltip-img").get_attribute("src")


def test_a_sample_is_drawn_over_the_density_of_every_image(large):
    drawn, legend = large.driver.execute_script(f"""
        const t = {GD}._fullData.filter(t => t.meta === 'cluster');
        return [t.reduce((s, t) => s + t._length, 0), t.map(t => Number(t.name.split('· ')[1].replace(/,/g, '')))];""")
    assert drawn == density.SAMPLE and sum(legend) == N  # the legend counts every image
    until(lambda: layer_shown(large, "map-density-frame"), 30)
    # under the points: before plotly's WebGL layer in the page
    assert large.driver.execute_script(
        "const f = document.getElementById('map-density-frame'), gl = f.parentNode.querySelector('.gl-container');"
        "return !!(f.compareDocumentPosition(gl) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert "in view: zoom in" in large.find_element("#atlas-note").text  # too many for pictures


def test_zoomed_in_a_drawn_point_hovers_to_its_own_image_and_the_pictures_show(large):
    image_id, x, y = large.driver.execute_script(
        f"const t = {GD}._fullData.find(t => t.meta === 'cluster'); return [t.customdata[7], t.x[7], t.y[7]]"
    )
    zoom_to(large, [x - 0.05, x + 0.05], [y - 0.05, y + 0.05])
    until(lambda: layer_shown(large, "map-atlas-frame"), 30)  # few enough: the pictures of all, drawn or not
    hover_shows(large, x, y, image_id)


def test_a_box_over_the_density_selects_every_image_inside_not_only_the_drawn(large):
    plot = large.driver.execute_script(
        f"const r = {GD}.querySelector('.nsewdrag').getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]"
    )
    large.find_element("#map .modebar-btn[data-title='Box Select']").click()
    w, h = plot[2] - plot[0], plot[3] - plot[1]
    drag(
        large,
        (round(plot[0] + 0.3 * w), round(plot[1] + 0.4 * h)),
        (round(plot[0] + 0.5 * w), round(plot[1] + 0.7 * h)),
    )
    large.wait_for_contains_text("#selection-title", "Selected on the map", timeout=20)
    box = large.driver.execute_script(f"return {GD}.layout.selections[0]")
    items = pd.read_parquet(large.run_dir / "items.parquet", columns=["x", "y"])
    x0, x1, y0, y1 = (
        min(box["x0"], box["x1"]),
        max(box["x0"], box["x1"]),
        min(box["y0"], box["y1"]),
        max(box["y0"], box["y1"]),
    )
    inside = ((items.x >= x0) & (items.x <= x1) & (items.y >= y0) & (items.y <= y1)).to_numpy()
    drawn = density.drawn_mask(N)
    assert inside.sum() > 1000 and (inside & drawn).sum() < 0.5 * inside.sum()
    until(lambda: f"{int(inside.sum()):,} images" in large.find_element("#selection-title").text, 10)


def detail_points(duo):
    """The view's own points the map draws beyond the sample: [[image_id, x, y], ...]."""
    return duo.driver.execute_script(
        f"return {GD}._fullData.filter(t => t.meta === 'detail' && t.customdata)"
        ".flatMap(t => Array.from(t.customdata, (id, i) => [id, t.x[i], t.y[i]]))"
    )


def test_zoomed_in_the_view_gets_every_image_in_it_and_its_own_points_hover(large):
    items = pd.read_parquet(large.run_dir / "items.parquet", columns=["x", "y"])
    drawn = density.drawn_mask(N)
    # a view round an image the sample does not draw
    image_id = int(np.flatnonzero(~drawn)[1234])
    x, y = float(items.x[image_id]), float(items.y[image_id])
    zoom_to(large, [x - 0.1, x + 0.1], [y - 0.1, y + 0.1])
    until(lambda: any(p[0] == image_id for p in detail_points(large)), 30)
    xr, yr = large.driver.execute_script(f"const l = {GD}._fullLayout; return [l.xaxis.range, l.yaxis.range]")
    inside = ((items.x >= min(xr)) & (items.x <= max(xr)) & (items.y >= min(yr)) & (items.y <= max(yr))).to_numpy()
    got = detail_points(large)
    # with the sample, every image of the view, each once, at its own place
    assert sorted(p[0] for p in got) == np.flatnonzero(inside & ~drawn).tolist()
    assert all(abs(p[1] - items.x[p[0]]) < 1e-4 and abs(p[2] - items.y[p[0]]) < 1e-4 for p in got[:50])
    # zoomed out a little: a larger view, still its own points, at most DETAIL of them
    zoom_to(large, [x - 2, x + 2], [y - 2, y + 2])
    until(lambda: len(detail_points(large)) > len(got), 30)
    assert len(detail_points(large)) <= density.DETAIL
    zoom_to(large, [x - 0.1, x + 0.1], [y - 0.1, y + 0.1])
    until(lambda: any(p[0] == image_id for p in detail_points(large)), 30)
    large.find_element("#atlas input").click()  # pictures off: the points take the hover
    hover_shows(large, x, y, image_id)


def test_a_zoom_to_a_view_of_another_shape_keeps_a_unit_across_as_long_as_up(large):
    """A large map has no scaleanchor (it made every pan compute every trace again):
    assets/map.js keeps its aspect."""
    assert large.driver.execute_script(f"return {GD}._fullLayout.yaxis.scaleanchor") is None
    zooms_keep_the_aspect(large)


def test_a_pan_draws_the_map_once_and_its_figure_keeps_the_view(large):
    """dcc.Graph copies a pan's ranges into its figure prop, and a new figure prop plots every
    point again (Plotly.react), a second redraw per pan; assets/map.js copies them first, so
    there is nothing left to copy, and the figure still holds the view."""
    large.driver.execute_script(
        "window.__reacts = 0; const react = Plotly.react;"
        "Plotly.react = function () { window.__reacts += 1; return react.apply(this, arguments); };"
    )
    for xr, yr in (([-3, 3], [-3, 3]), ([-2, 4], [-3, 3]), ([-1, 1], [0, 2])):
        seq = large.driver.execute_script("return window.iceMap.densitySeq")
        zoom_to(large, xr, yr)
        until(
            lambda: large.driver.execute_script(
                "const A = window.iceMap; return A.densitySeq > arguments[0] && A.detailSeq === A.densitySeq", seq
            ),
            30,
        )
        figure, drawn = large.driver.execute_script(
            f"const l = window.dash_component_api.getLayout('map').props.figure.layout, d = {GD}.layout;"
            "return [[l.xaxis.range, l.yaxis.range], [d.xaxis.range, d.yaxis.range]]"
        )
        assert figure == drawn and drawn[0] == xr  # y follows x: the map keeps its aspect
    assert large.driver.execute_script("return window.__reacts") == 0
