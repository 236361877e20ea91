"""The explorer in headless Chromium: what a person sees and does, on a small real run."""

import csv
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from dash.testing.wait import until
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from explorer.app import create_app
from explorer.export import export_csv
from tests.conftest_browser import slow_map_figures, wait_for_map, zooms_keep_the_aspect

pytestmark = pytest.mark.browser

GD = "document.querySelector('#map .js-plotly-plot')"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"


def clusters_in_manifest(run_dir) -> int:
    return json.loads((Path(run_dir) / "manifest.json").read_text())["clusters"]


def open_tab(duo, label: str) -> None:
    duo.driver.find_element(By.XPATH, f"//div[contains(@class,'tab') and normalize-space(.)='{label}']").click()


def lone_point(duo) -> tuple[int, int, int]:
    """(x, y, image_id) of a point that is neither under the legend nor near another point,
    so that the mouse there can only mean that image."""
    return duo.driver.execute_script(f"""
        const gd = {GD}, fl = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const legend = gd.querySelector('.legend').getBoundingClientRect(), pts = [];
        gd._fullData.filter(t => t.meta === 'cluster').forEach(t => {{ for (let i = 0; i < t._length; i++)
            pts.push([r.left + fl.xaxis.d2p(t.x[i]), r.top + fl.yaxis.d2p(t.y[i]), t.customdata[i]]); }});
        return pts.find(([x, y]) => x > r.left + 20 && x < r.right - 20 && y > r.top + 40 && y < r.bottom - 20
            && !(x > legend.left - 10 && x < legend.right + 10 && y > legend.top - 10 && y < legend.bottom + 10)
            && pts.every(([u, v]) => (u === x && v === y) || Math.hypot(u - x, v - y) > 12));
    """)


def drag(duo, start, end) -> None:
    actions = ActionBuilder(duo.driver)
    pointer = actions.pointer_action
    pointer.move_to_location(*start)
    pointer.pointer_down()
    pointer.pause(0.1)
    for f in (0.3, 0.7, 1.0):
        pointer.move_to_location(round(start[0] + f * (end[0] - start[0])), round(start[1] + f * (end[1] - start[1])))
        pointer.pause(0.1)
    pointer.pointer_up()
    actions.perform()


def grid_ids(duo) -> list[int]:
    """The ids of the grid's page (the grid draws only the rows in view)."""
    return duo.driver.execute_script("return window.iceReview.state().ids")


def cluster_name_input(duo, cluster: int):
    return duo.find_element(f"input[placeholder='cluster {cluster}']")


def test_map_has_one_webgl_trace_per_cluster(explorer):
    k = clusters_in_manifest(explorer.run_dir)
    metas = explorer.driver.execute_script(f"return {GD}._fullData.map(t => [t.type, t.meta])")
    assert [m for m in metas if m[1] == "cluster"] == [["scattergl", "cluster"]] * k
    assert len(explorer.find_elements("#map .legend .traces")) == k
    assert explorer.driver.execute_script(f"return {GD}.querySelectorAll('canvas').length") > 0
    plot_right, legend_left, x_scale, y_scale = explorer.driver.execute_script(f"""
        const gd = {GD}, fl = gd._fullLayout;
        return [gd.querySelector('.nsewdrag').getBoundingClientRect().right,
                gd.querySelector('.legend').getBoundingClientRect().left, fl.xaxis._m, fl.yaxis._m];""")
    assert legend_left >= plot_right - 1, "the legend sat over the points, hiding them from hover and clicks"
    assert abs(abs(y_scale) / x_scale - 1) < 0.01, "a unit across as long as a unit up"
    map_bottom, hint_top = explorer.driver.execute_script(
        "return [document.getElementById('map').getBoundingClientRect().bottom,"
        " document.querySelector('.hint').getBoundingClientRect().top]"
    )
    assert map_bottom <= hint_top + 1, "the map's bottom lay under the hint, out of the mouse's reach"
    assert explorer.get_logs() == []


def test_a_zoom_to_a_view_of_another_shape_keeps_a_unit_across_as_long_as_up(explorer):
    """On a small map plotly keeps the aspect (scaleanchor); on a large one assets/map.js does
    (tests/test_browser_large_map.py)."""
    assert explorer.driver.execute_script(f"return {GD}._fullLayout.yaxis.scaleanchor") == "x"
    zooms_keep_the_aspect(explorer)


def test_hover_shows_a_thumbnail_that_loads(explorer):
    x, y, image_id = lone_point(explorer)
    actions = ActionBuilder(explorer.driver)
    actions.pointer_action.move_to_location(round(x), round(y))
    actions.perform()
    img = explorer.wait_for_element("#map-tooltip img.tooltip-img")
    src = img.get_attribute("src")
    assert re.search(rf"/thumb/{image_id}\.png\?v=[0-9a-f]{{12}}$", src), src  # the run's version: no stale cache
    until(
        lambda: explorer.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img), 10
    )
    assert requests.get(src, timeout=10).status_code == 200
    path = pd.read_parquet(explorer.run_dir / "items.parquet")["path"][image_id]
    assert explorer.find_element("#map-tooltip .tooltip-path").text == path
    # a long path widens the box to its limit: it had the box as narrow as the image, 448 px tall
    width, height = explorer.driver.execute_script("""
        document.querySelector('#map-tooltip .tooltip-path').textContent = 'folder/'.repeat(27);
        const r = document.getElementById('map-tooltip').getBoundingClientRect(); return [r.width, r.height];""")
    assert width > 200 and height < 260, (width, height)


@pytest.mark.parametrize("where", ["right edge", "top left", "top right", "bottom left", "bottom right"])
def test_the_thumbnail_of_a_point_near_an_edge_or_a_corner_opens_whole_inside_the_map(explorer, where):
    """It always opened to the right: the map pane cut it off there, or it covered the legend.
    Then it opened away from the nearer edge, but centred on the point: near a corner, the
    pane cut half of it (the image too)."""
    x, y = explorer.driver.execute_script(
        f"""
        const gd = {GD}, fl = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect(), pts = [];
        gd._fullData.filter(t => t.meta === 'cluster').forEach(t => {{ for (let i = 0; i < t._length; i++)
            pts.push([r.left + fl.xaxis.d2p(t.x[i]), r.top + fl.yaxis.d2p(t.y[i])]); }});
        const where = arguments[0];
        if (where === 'right edge') {{
            return pts.filter(([x, y]) => y > r.top + 120 && y < r.bottom - 120)
                      .reduce((a, b) => (b[0] > a[0] ? b : a));
        }}
        const cx = where.endsWith('left') ? r.left : r.right, cy = where.startsWith('top') ? r.top : r.bottom;
        const d = ([x, y]) => Math.hypot(x - cx, y - cy);
        return pts.reduce((a, b) => (d(b) < d(a) ? b : a));""",
        where,
    )
    actions = ActionBuilder(explorer.driver)
    actions.pointer_action.move_to_location(round(x), round(y))
    actions.perform()
    explorer.wait_for_element("#map-tooltip img.tooltip-img")
    until(lambda: explorer.find_element("#map-tooltip .tooltip-path").text != "", 10)
    time.sleep(0.3)  # the box's final place, once its picture and path are in
    pane, tip, arrow = explorer.driver.execute_script("""
        const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        return [box(document.getElementById('map')), box(document.getElementById('map-tooltip')),
                box(document.querySelector('.dash-tooltip .hover'))];""")
    assert tip[0] >= pane[0] - 1 and tip[2] <= pane[2] + 1 and tip[1] >= pane[1] - 1 and tip[3] <= pane[3] + 1, (
        where,
        (x, y),
        pane,
        tip,
    )
    # the box is moved, not its arrow: that still points at the point (it had pointed 60-90 px off)
    assert abs(arrow[0] - x) < 16 and abs(arrow[1] - y) < 16, (where, (x, y), arrow)
    assert not (tip[0] <= x <= tip[2] and tip[1] <= y <= tip[3]), "the box covers the point it shows"


def test_box_selection_fills_the_grid(explorer):
    legend_bottom, plot = explorer.driver.execute_script(f"""
        const gd = {GD}; const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [gd.querySelector('.legend').getBoundingClientRect().bottom, [r.left, r.top, r.right, r.bottom]];
    """)
    start = (round(plot[0] + 10), round(max(legend_bottom + 10, (plot[1] + plot[3]) / 2)))
    end = (round(plot[2] - 10), round(plot[3] - 10))
    inside = explorer.driver.execute_script(
        f"""
        const gd = {GD}, fl = gd._fullLayout; const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const [x0, y0, x1, y1] = arguments[0]; const ids = [];
        gd._fullData.filter(t => t.meta === 'cluster').forEach(t => {{ for (let i = 0; i < t._length; i++) {{
            const px = r.left + fl.xaxis.d2p(t.x[i]), py = r.top + fl.yaxis.d2p(t.y[i]);
            if (px > x0 && px < x1 && py > y0 && py < y1) ids.push(t.customdata[i]); }} }});
        return ids;""",
        [*start, *end],
    )
    assert len(inside) > 3, "the box should hold some points"
    explorer.find_element("#map .modebar-btn[data-title='Box Select']").click()
    drag(explorer, start, end)
    explorer.wait_for_contains_text("#selection-title", "Selected on the map")
    title = explorer.find_element("#selection-title").text
    assert f"{len(inside):,} images" in title
    shown = grid_ids(explorer)
    assert shown and set(shown) <= set(inside) and len(shown) == min(len(inside), 48)
    assert explorer.driver.execute_script(f"return ({GD}.layout.selections || []).length") == 1
    open_tab(explorer, "Clusters")  # a grid filled from elsewhere takes the box off the map
    explorer.find_elements("#clusters-panel .cluster-card button")[0].click()
    explorer.wait_for_contains_text("#selection-title", "cluster 0")
    until(
        lambda: explorer.driver.execute_script(
            f"return ({GD}.layout.selections || []).length === 0 && {GD}.data.every(t => t.selectedpoints == null)"
        ),
        10,
    )


def test_a_lasso_is_resolved_on_the_server_without_the_clusters_hidden_in_the_legend(explorer):
    explorer.find_elements("#map .legend .traces")[0].click()  # cluster 0 hidden
    until(lambda: explorer.driver.execute_script(f"return {GD}._fullData[0].visible === 'legendonly'"), 10)
    plot = explorer.driver.execute_script(
        f"const r = {GD}.querySelector('.nsewdrag').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]"
    )
    cx, cy, rx, ry = plot[0] + plot[2] * 0.45, plot[1] + plot[3] * 0.55, plot[2] * 0.4, plot[3] * 0.4
    actions = ActionBuilder(explorer.driver)
    pointer = actions.pointer_action
    pointer.move_to_location(round(cx + rx), round(cy))
    pointer.pointer_down()
    for a in np.linspace(0, 2 * np.pi, 25)[1:]:
        pointer.move_to_location(round(cx + rx * np.cos(a)), round(cy + ry * np.sin(a)))
        pointer.pause(0.02)
    pointer.pointer_up()
    actions.perform()
    explorer.wait_for_contains_text("#selection-title", "Selected on the map")
    # plotly's own test of the drawn points, trace by trace: the hidden cluster has none
    selected = explorer.driver.execute_script(f"""
        return {GD}._fullData.filter(t => t.meta === 'cluster' && t.visible === true)
            .flatMap(t => (t.selectedpoints || []).map(i => t.customdata[i]));""")
    assert len(selected) > 3
    until(lambda: f"{len(selected):,} images" in explorer.find_element("#selection-title").text, 10)
    c = create_app(explorer.run_dir).ice_data.clustering("run")
    shown = grid_ids(explorer)
    assert set(shown) <= set(selected) and 0 not in set(c.cluster[shown].tolist())


def test_rename_survives_reload_and_restart(explorer):
    name = "<script>alert(1)</script>"
    open_tab(explorer, "Clusters")
    cluster_name_input(explorer, 1).send_keys(name, Keys.ENTER)
    explorer.wait_for_contains_text("#clusters-panel", "Saved as")
    until(lambda: any(name in e.text for e in explorer.find_elements("#map .legendtext")), 10)
    explorer.driver.refresh()
    wait_for_map(explorer)
    open_tab(explorer, "Clusters")
    until(lambda: cluster_name_input(explorer, 1).get_attribute("value") == name, 10)
    explorer.server.stop()
    explorer.start_server(create_app(explorer.run_dir))
    wait_for_map(explorer)
    open_tab(explorer, "Clusters")
    until(lambda: cluster_name_input(explorer, 1).get_attribute("value") == name, 10)
    assert any(name in e.text for e in explorer.find_elements("#map .legendtext"))
    with pytest.raises(NoAlertPresentException):
        explorer.driver.switch_to.alert.text


def test_two_tabs_keep_each_others_names(explorer):
    driver = explorer.driver
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(explorer.server_url)
    wait_for_map(explorer)
    second = driver.current_window_handle
    for handle, cluster, name in ((first, 0, "from tab one"), (second, 1, "from tab two")):
        driver.switch_to.window(handle)
        open_tab(explorer, "Clusters")
        cluster_name_input(explorer, cluster).send_keys(name, Keys.ENTER)
        explorer.wait_for_contains_text("#clusters-panel", f"Saved as '{name}'")
    driver.switch_to.window(first)  # this tab never saw the other's name; renaming again keeps it
    box = cluster_name_input(explorer, 0)
    box.click()  # the tab just came back to the front: focus first, then type a key at a time,
    until(lambda: driver.execute_script("return document.activeElement") == box, 10)
    box.send_keys(Keys.END)
    for key in " again":  # so that a busy page renders each key before the next comes
        box.send_keys(key)
        time.sleep(0.03)
    box.send_keys(Keys.ENTER)
    explorer.wait_for_contains_text("#clusters-panel", "again")
    names = create_app(explorer.run_dir, read_only=True).ice_data.annotations.cluster_names("run")
    assert names == {0: "from tab one again", 1: "from tab two"}


def test_more_like_these_then_save_a_group_then_export(explorer, tmp_path):
    open_tab(explorer, "Clusters")
    explorer.find_elements("#clusters-panel .cluster-card button")[0].click()
    explorer.wait_for_contains_text("#selection-title", "cluster 0")
    explorer.find_element("#group-name").send_keys("sevens", Keys.ENTER)
    top = explorer.find_element("#more-top")
    top.send_keys(Keys.CONTROL, "a")
    top.send_keys("20")
    explorer.find_element("#more-like").click()
    explorer.wait_for_contains_text("#selection-title", "Most like")
    until(lambda: len(grid_ids(explorer)) == 20, 10)
    ranked = grid_ids(explorer)
    for n, image_id in enumerate(ranked[18:], start=1):
        explorer.driver.execute_script(
            "arguments[0].scrollIntoView()", explorer.find_element(f"#grid .tile[data-id='{image_id}']")
        )
        explorer.find_element(f"#grid .tile[data-id='{image_id}']").click()
        explorer.wait_for_contains_text("#page-info", f"{n} ticked off")
    explorer.find_element("#confirm-page").click()
    explorer.wait_for_contains_text("#review-status", "Confirmed 18 in and 2 out of group 'sevens'")
    open_tab(explorer, "Groups")
    until(
        lambda: (
            [e.get_attribute("value") for e in explorer.find_elements("#groups-panel .group-row input")] == ["sevens"]
        ),
        10,
    )
    out = tmp_path / "sevens.csv"
    assert export_csv(explorer.run_dir, out, group="sevens") == 18
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["image_id"]) for r in rows) == sorted(ranked[:18])
    assert all(r["groups"] == "sevens" for r in rows)
    delete = explorer.find_element("#groups-panel .button.danger")  # the browser asks first
    delete.click()
    until(lambda: "Delete the group 'sevens' (18 images)?" in explorer.driver.switch_to.alert.text, 10)
    explorer.driver.switch_to.alert.dismiss()
    assert create_app(explorer.run_dir, read_only=True).ice_data.annotations.groups() == {"sevens": 18}
    explorer.find_element("#groups-panel .button.danger").click()
    until(lambda: explorer.driver.switch_to.alert, 10).accept()
    explorer.wait_for_contains_text("#groups-status", "Deleted group 'sevens'")
    assert create_app(explorer.run_dir, read_only=True).ice_data.annotations.groups() == {}


def test_download_gives_the_runs_rows(explorer):
    explorer.find_element("#export-link").click()
    target = Path(explorer.download_path) / "clusters.csv"
    until(lambda: target.exists() and target.stat().st_size > 0, 15)
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f))
    items = pd.read_parquet(explorer.run_dir / "items.parquet")
    assert len(rows) == len(items)
    assert [int(r["image_id"]) for r in rows] == items["image_id"].tolist()
    assert [r["path"] for r in rows] == items["path"].tolist()
    assert [int(r["cluster"]) for r in rows] == items["cluster"].tolist()


def test_fits_1280x800_and_screenshot(explorer, tmp_path):
    """No horizontal scrolling at 1280x800. ICE_UPDATE_SCREENSHOT=1 refreshes the README's picture."""
    items = pd.read_parquet(explorer.run_dir / "items.parquet")
    notes = create_app(explorer.run_dir).ice_data.annotations
    for cluster, labels in items.groupby("cluster")["label"]:  # name clusters as a person would
        notes.set_cluster_name("run", int(cluster), f"mostly {labels.mode()[0]}s")
    explorer.driver.refresh()
    wait_for_map(explorer)
    open_tab(explorer, "Clusters")
    explorer.find_elements("#clusters-panel .cluster-card button")[2].click()  # Show, Split: cluster 1's Show
    explorer.wait_for_contains_text("#selection-title", "(1)")
    until(lambda: explorer.find_elements("#grid .tile"), 10)
    explorer.driver.execute_script("document.querySelector('#grid .tile .tile-info').click()")
    explorer.wait_for_element("#detail .neighbours img")
    time.sleep(0.5)  # let the thumbnails and the ring on the map paint
    width = explorer.driver.execute_script(
        "return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert width[2] == 1280 and max(width[:2]) <= 1280
    assert explorer.driver.execute_script(
        "return [...document.querySelectorAll('.app *')].every(e => e.getBoundingClientRect().right <= 1281"
        " || e.closest('.map-pane') || getComputedStyle(e).position === 'fixed')"
    )
    target = SCREENSHOT if os.environ.get("ICE_UPDATE_SCREENSHOT") == "1" else tmp_path / "screenshot.png"
    assert explorer.driver.save_screenshot(str(target))
    assert target.stat().st_size > 10_000


def test_recluster_runs_as_a_job_the_map_answers_meanwhile_then_it_recolours_the_map(explorer, monkeypatch):
    from explorer.callbacks import clusters

    real = clusters.recluster

    def slow(data, k):  # as on a million points, where the mixture takes about 10 s
        time.sleep(4)
        return real(data, k)

    monkeypatch.setattr(clusters, "recluster", slow)
    explorer.find_element("#recluster-k").send_keys("4")
    button = explorer.find_element("#recluster")
    button.click()
    until(lambda: button.get_attribute("disabled") is not None, timeout=2)
    explorer.wait_for_contains_text("#job-status", "Re-clustering with K=4: fitting…", timeout=5)  # its progress
    x, y, image_id = lone_point(explorer)  # the map answers meanwhile
    actions = ActionBuilder(explorer.driver)
    actions.pointer_action.move_to_location(round(x), round(y))
    actions.perform()
    explorer.wait_for_element("#map-tooltip img.tooltip-img")
    assert "ready" not in explorer.find_element("#job-status").text
    explorer.wait_for_contains_text("#job-status", "ready", timeout=30)
    until(lambda: button.get_attribute("disabled") is None, timeout=5)
    k = int(explorer.find_element("#job-status").text.split("=")[1].split()[0])
    assert 2 <= k <= 4
    until(
        lambda: explorer.driver.execute_script(f"return {GD}._fullData.filter(t => t.meta === 'cluster').length") == k,
        timeout=10,
    )


def test_a_new_clustering_with_more_clusters_redraws_the_map_with_a_card_open(explorer, monkeypatch):
    """Closing the card patched the rings by the new clustering's trace number onto the old
    map: plotly failed ("Cannot read properties of undefined") and the old clusters stayed.
    Clearing the score overlay did the same when the new figure came after it."""
    slow_map_figures(monkeypatch)
    x, y, image_id = lone_point(explorer)
    actions = ActionBuilder(explorer.driver)
    actions.pointer_action.move_to_location(round(x), round(y)).click()
    actions.perform()
    explorer.wait_for_element("#detail .detail-img")
    k_before = clusters_in_manifest(explorer.run_dir)
    explorer.find_element("#recluster-k").send_keys(str(k_before + 6))
    explorer.find_element("#recluster").click()
    explorer.wait_for_contains_text("#job-status", "ready", timeout=60)
    k = int(explorer.find_element("#job-status").text.split("=")[1].split()[0])
    assert k > k_before
    until(
        lambda: explorer.driver.execute_script(f"return {GD}._fullData.filter(t => t.meta === 'cluster').length") == k,
        timeout=10,
    )
    until(lambda: explorer.find_elements("#detail .detail-img") == [], timeout=10)
    assert [e for e in explorer.get_logs() if e["level"] == "SEVERE"] == []
