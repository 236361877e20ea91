"""The review grid in headless Chromium: marking in the browser, confirming pages into a group,
editing groups, drilling into a cluster, and the keyboard (issue 32's numbered items)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from explorer.app import create_app
from explorer.search import like_scores
from tests.conftest_browser import slow_map_figures, wait_for_map

pytestmark = pytest.mark.browser

GD = "document.querySelector('#map .js-plotly-plot')"


def open_tab(duo, label: str) -> None:
    duo.driver.find_element(By.XPATH, f"//div[contains(@class,'tab') and normalize-space(.)='{label}']").click()


def state(duo) -> dict:
    return duo.driver.execute_script("return window.iceReview.state()")


def marks(duo, group: str):
    """The group's (in, out) as stored in the run, read by a separate reader."""
    return create_app(duo.run_dir, read_only=True).ice_data.annotations.marks(group)


def show_cluster(duo, cluster: int = 0) -> None:
    open_tab(duo, "Clusters")
    duo.find_elements("#clusters-panel .cluster-card button")[2 * cluster].click()  # Show, Split per card
    duo.wait_for_contains_text("#selection-title", f"cluster {cluster}")
    until(lambda: len(duo.find_elements("#grid .tile")) > 0, 10)


def page_ids(duo) -> list[int]:
    """The ids of the grid's page, drawn or not (only the rows in view are drawn)."""
    return state(duo)["ids"]


def tiles(duo):
    """The ids of the tiles drawn, in grid order."""
    return duo.driver.execute_script(
        "return [...document.querySelectorAll('#grid .tile')].sort((a, b) => a.dataset.index - b.dataset.index)"
        ".map(t => Number(t.dataset.id))"
    )


def tile(duo, image_id: int):
    """A page's tile, as a person reaches it: the grid draws only the rows in view (and two
    more each way), so one further down is scrolled to first."""
    css = f"#grid .tile[data-id='{image_id}']"
    if not duo.driver.find_elements("css selector", css):
        duo.driver.execute_script(
            "const grid = document.getElementById('grid'), s = window.iceReview.state();"
            "const size = Number(document.getElementById('tile-size').value);"
            "const cols = Math.max(1, Math.floor((grid.clientWidth + 6) / (size + 6)));"
            "grid.scrollTop = Math.floor(s.ids.indexOf(arguments[0]) / cols) * (size + 6);"
            "grid.dispatchEvent(new Event('scroll'));",
            int(image_id),
        )
        until(lambda: duo.driver.find_elements("css selector", css), 5)
    return duo.find_element(css)


def type_group(duo, name: str) -> None:
    box = duo.find_element("#group-name")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(name, Keys.ENTER)  # Enter in the box leaves it, for the keyboard
    until(lambda: state(duo)["group"] == name, 10)


def keys(duo, *sequence) -> None:
    ActionChains(duo.driver).send_keys(*sequence).perform()


def test_a_tick_and_a_shift_click_range_happen_in_the_browser(explorer):
    show_cluster(explorer)
    shown = tiles(explorer)
    assert len(shown) >= 10
    requests_before = explorer.driver.execute_script("return performance.getEntriesByType('resource').length")
    tile(explorer, shown[2]).click()
    ActionChains(explorer.driver).key_down(Keys.SHIFT).click(tile(explorer, shown[6])).key_up(Keys.SHIFT).perform()
    until(lambda: state(explorer)["ticked"] == shown[2:7], 5)
    assert "5 ticked off" in explorer.find_element("#page-info").text
    assert all("excluded" in tile(explorer, i).get_attribute("class") for i in shown[2:7])
    assert "excluded" not in tile(explorer, shown[1]).get_attribute("class")
    calls = explorer.driver.execute_script(
        "return performance.getEntriesByType('resource').slice(arguments[0])"
        ".filter(e => e.name.includes('_dash-update-component')).length",
        requests_before,
    )
    assert calls == 0, "a tick went to the server"
    tile(explorer, shown[4]).click()  # a tick again puts one back
    until(lambda: state(explorer)["ticked"] == [shown[2], shown[3], shown[5], shown[6]], 5)


def test_confirm_saves_the_page_and_leaves_unreviewed_pages_out(explorer):
    show_cluster(explorer)
    explorer.find_element("#page-size").send_keys("24")  # pick "24 a page"
    until(lambda: len(state(explorer)["ids"]) == 24, 5)
    assert state(explorer)["pages"] >= 2, "the test needs a cluster of more than one page"
    page = page_ids(explorer)
    type_group(explorer, "fours")
    tile(explorer, page[0]).click()
    tile(explorer, page[5]).click()
    explorer.find_element("#confirm-page").click()
    explorer.wait_for_contains_text("#review-status", "Confirmed 22 in and 2 out of group 'fours'")
    marked_in, marked_out = marks(explorer, "fours")
    assert sorted(marked_in) == sorted(set(page) - {page[0], page[5]})
    assert sorted(marked_out) == sorted([page[0], page[5]])
    assert state(explorer)["page"] == 1  # on to the next page; it, and the rest, stay unreviewed
    explorer.driver.refresh()  # the review state comes back from the run, on another page load
    wait_for_map(explorer)
    show_cluster(explorer)
    type_group(explorer, "fours")
    explorer.wait_for_contains_text("#selection-title", "'fours': 22 in, 2 out")
    total = int(explorer.find_element("#selection-title").text.split(" · ")[1].split()[0])
    assert f"{total - 24} not reviewed" in explorer.find_element("#selection-title").text


def choose(duo, css: str, label: str) -> None:
    """Pick an option of a dropdown, as a person does: open it, click the option."""
    duo.find_element(css).click()
    option = f"//*[normalize-space(text())='{label}']"
    until(lambda: duo.driver.find_elements(By.XPATH, option), 5)
    duo.driver.find_element(By.XPATH, option).click()
    duo.wait_for_contains_text(css, label)


def test_not_reviewed_most_like_the_group_first_ranks_the_rest_after_each_page(explorer, monkeypatch):
    import explorer.review as review

    rank = review.like_scores
    monkeypatch.setattr(review, "like_scores", lambda *a, **k: time.sleep(1.5) or rank(*a, **k))
    show_cluster(explorer)
    explorer.find_element("#page-size").send_keys("24")
    until(lambda: len(state(explorer)["ids"]) == 24, 5)
    choose(explorer, "#review-sort", "most like the group first")
    choose(explorer, "#review-filter", "not reviewed yet")
    type_group(explorer, "fours")
    data = create_app(explorer.run_dir, read_only=True).ice_data
    members = data.clustering("run").members(0)
    explorer.wait_for_contains_text("#selection-title", f"{len(members)} not reviewed yet")
    before, page = state(explorer)["key"], page_ids(explorer)
    tile(explorer, page[0]).click()
    keys(explorer, Keys.ENTER)
    # until the list comes back, the confirmed page stays, dimmed, and takes no marks
    until(lambda: state(explorer)["pending"] == 0, 10)
    now = state(explorer)
    assert now["awaiting"] and now["key"] == before and now["ids"] == page and now["ticked"] == page[:1]
    assert "awaiting" in explorer.find_element("#grid").get_attribute("class")
    keys(explorer, "a")
    assert state(explorer)["ticked"] == page[:1]
    # the page leaves the list; the grid shows the first page of the rest, ranked by the marks
    explorer.wait_for_contains_text("#selection-title", f"{len(members) - 24} not reviewed yet")
    until(lambda: state(explorer)["key"] != before and state(explorer)["pending"] == 0, 10)
    rest = np.setdiff1d(members, page)
    ranked = rest[np.argsort(-like_scores(data, page[1:], page[:1], rest), kind="stable")]
    laid = review.side_by_side(data.embeddings, ranked, 24)  # each page's look-alikes side by side
    assert state(explorer)["page"] == 0 and page_ids(explorer) == laid[:24].tolist()
    assert not state(explorer)["awaiting"]
    assert "awaiting" not in explorer.find_element("#grid").get_attribute("class")
    keys(explorer, "z")  # undone, the page is not reviewed again: back in the list
    explorer.wait_for_contains_text("#selection-title", f"{len(members)} not reviewed yet")
    assert [len(m) for m in marks(explorer, "fours")] == [0, 0]


def test_keyboard_moves_ticks_a_page_confirms_and_undoes(explorer):
    show_cluster(explorer)
    type_group(explorer, "keys")
    page = page_ids(explorer)
    keys(explorer, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, "x")  # the third tile
    until(lambda: state(explorer)["ticked"] == [page[2]], 5)
    keys(explorer, " ")  # Space: the original, large
    until(lambda: explorer.find_element("#preview").is_displayed(), 5)
    assert f"/image/{page[2]}?" in explorer.find_element("#preview img").get_attribute("src")
    keys(explorer, Keys.ESCAPE)
    keys(explorer, "a")  # the whole page, then invert: only the third is in
    until(lambda: state(explorer)["ticked"] == page, 5)
    keys(explorer, "i")
    until(lambda: state(explorer)["ticked"] == [], 5)
    keys(explorer, "z")  # undo the invert
    until(lambda: state(explorer)["ticked"] == page, 5)
    keys(explorer, "z", "z")  # and the page, and the tick
    until(lambda: state(explorer)["ticked"] == [], 5)
    keys(explorer, "x", Keys.ENTER)
    explorer.wait_for_contains_text("#review-status", "Confirmed")
    assert page[2] in marks(explorer, "keys")[1]
    keys(explorer, "z")  # undo the confirmed page: the group is as before it
    explorer.wait_for_contains_text("#review-status", "Undone")
    until(lambda: [len(m) for m in marks(explorer, "keys")] == [0, 0], 10)
    assert state(explorer)["page"] == 0 and state(explorer)["ticked"] == [page[2]]
    keys(explorer, "?")
    until(lambda: explorer.find_element("#shortcuts").is_displayed(), 5)
    assert "confirm the page" in explorer.find_element("#shortcuts").text


def test_unconfirmed_ticks_warn_before_leaving_and_survive_a_reload(explorer):
    show_cluster(explorer)
    type_group(explorer, "kept")
    page = tiles(explorer)
    tile(explorer, page[1]).click()
    until(lambda: state(explorer)["ticked"] == [page[1]], 5)
    warned = explorer.driver.execute_script(
        "const e = new Event('beforeunload', {cancelable: true}); window.dispatchEvent(e); return e.defaultPrevented"
    )
    assert warned, "leaving with a tick not confirmed must warn"
    explorer.driver.execute_script("window.onbeforeunload = null")
    explorer.driver.get(explorer.server_url)  # the browser's own prompt would stop the reload
    wait_for_map(explorer)
    show_cluster(explorer)
    type_group(explorer, "kept")
    until(lambda: state(explorer)["ticked"] == [page[1]], 10)
    keys(explorer, Keys.ENTER)
    explorer.wait_for_contains_text("#review-status", "Confirmed")
    assert not explorer.driver.execute_script(
        "const e = new Event('beforeunload', {cancelable: true}); window.dispatchEvent(e); return e.defaultPrevented"
    )


def test_two_tabs_marking_one_group_lose_no_mark(explorer):
    driver = explorer.driver
    first = driver.current_window_handle
    show_cluster(explorer, 0)
    type_group(explorer, "shared")
    one = page_ids(explorer)
    driver.switch_to.new_window("tab")
    driver.get(explorer.server_url)
    wait_for_map(explorer)
    show_cluster(explorer, 1)
    type_group(explorer, "shared")
    two = page_ids(explorer)
    tile(explorer, two[0]).click()
    driver.switch_to.window(first)
    tile(explorer, one[3]).click()
    keys(explorer, Keys.ENTER)  # the first tab confirms while the second has a tick pending
    explorer.wait_for_contains_text("#review-status", "Confirmed")
    driver.switch_to.window(driver.window_handles[1])
    keys(explorer, Keys.ENTER)
    explorer.wait_for_contains_text("#review-status", "Confirmed")
    marked_in, marked_out = marks(explorer, "shared")
    assert set(marked_in) == (set(one) | set(two)) - {one[3], two[0]}
    assert set(marked_out) == {one[3], two[0]}


def merged_panel(duo) -> bool:
    """Whether the Groups panel shows one group whose history has the merge in it."""
    try:
        shown = duo.find_elements("#groups-panel .group")
        return len(shown) == 1 and "merge" in shown[0].get_attribute("innerHTML")
    except StaleElementReferenceException:  # drawn again while it was read
        return False


def test_a_group_opens_as_a_grid_where_an_image_is_removed_then_renamed_merged_and_undone(explorer):
    notes = create_app(explorer.run_dir).ice_data.annotations
    notes.mark("cats", marked_in=[1, 2, 3, 4, 5])
    notes.mark("kittens", marked_in=[5, 6], marked_out=[7])
    explorer.driver.refresh()
    wait_for_map(explorer)
    open_tab(explorer, "Groups")
    explorer.wait_for_contains_text("#groups-panel", "Show")
    explorer.find_elements("#groups-panel .group")[0].find_element(By.XPATH, ".//button[text()='Show']").click()
    explorer.wait_for_contains_text("#selection-title", "Group 'cats'")
    until(lambda: sorted(tiles(explorer)) == [1, 2, 3, 4, 5] and state(explorer)["group"] == "cats", 10)
    tile(explorer, 3).click()  # tick it off and confirm: it is out of the group
    keys(explorer, Keys.ENTER)
    explorer.wait_for_contains_text("#review-status", "Confirmed 4 in and 1 out")
    assert [m.tolist() for m in marks(explorer, "cats")] == [[1, 2, 4, 5], [3]]
    open_tab(explorer, "Groups")
    rename = explorer.find_elements("#groups-panel .group-name input, #groups-panel input.group-name")[0]
    rename.send_keys(Keys.CONTROL, "a")
    rename.send_keys("tabby", Keys.ENTER)
    explorer.wait_for_contains_text("#groups-status", "Renamed 'cats' to 'tabby'")
    assert set(notes.groups()) == {"tabby", "kittens"}
    kittens = [g for g in explorer.find_elements("#groups-panel .group") if "kittens" in g.get_attribute("innerHTML")][
        0
    ]
    kittens.find_element(By.TAG_NAME, "summary").click()
    kittens.find_element(By.CSS_SELECTOR, ".merge-select").click()
    explorer.driver.find_element(By.XPATH, "//div[contains(@class,'option') and normalize-space(.)='tabby']").click()
    explorer.wait_for_contains_text("#groups-status", "Merged 'kittens' into 'tabby'")
    assert [m.tolist() for m in notes.marks("tabby")] == [[1, 2, 4, 5, 6], [3, 7]]
    # the status comes first, the panel is drawn again after it: wait for the merged panel
    until(lambda: merged_panel(explorer), 10)
    tabby = explorer.find_elements("#groups-panel .group")[0]
    tabby.find_element(By.TAG_NAME, "summary").click()
    assert "merge" in tabby.text and "confirm" in tabby.text and "rename" in tabby.text
    tabby.find_element(By.XPATH, ".//button[text()='Undo']").click()
    explorer.wait_for_contains_text("#groups-status", "Undone change")
    assert [m.tolist() for m in notes.marks("tabby")] == [[1, 2, 4, 5], [3]]


def test_more_like_these_leaves_the_marked_out(explorer):
    notes = create_app(explorer.run_dir).ice_data.annotations
    data = create_app(explorer.run_dir, read_only=True).ice_data
    members = data.clustering("run").members(0)
    notes.mark("zeros", marked_in=members[:10], marked_out=members[10:13])
    show_cluster(explorer)
    type_group(explorer, "zeros")
    explorer.find_element("#more-like").click()
    explorer.wait_for_contains_text("#selection-title", "Most like the 10 in 'zeros', less the 3 out")
    shown = page_ids(explorer)
    assert shown and not set(shown) & set(members[:13].tolist())
    # the M key, from another tab: the same list, shown in the Images tab
    show_cluster(explorer, 1)
    open_tab(explorer, "Clusters")
    keys(explorer, "m")
    explorer.wait_for_contains_text("#selection-title", "Most like the 10 in 'zeros', less the 3 out")
    until(lambda: explorer.find_elements("#grid .tile") and page_ids(explorer) == shown, 10)


def test_drill_into_a_cluster_and_back_by_the_breadcrumb(explorer, monkeypatch):
    slow_map_figures(monkeypatch)  # no patch for the new map may land on the old one
    k = explorer.driver.execute_script(f"return {GD}._fullData.filter(t => t.meta === 'cluster').length")
    open_tab(explorer, "Clusters")
    box = explorer.find_element("#drill-k")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("3")
    explorer.find_elements("#clusters-panel .cluster-card button")[1].click()  # Split cluster 0
    explorer.wait_for_contains_text("#job-status", "Split cluster 0", timeout=90)
    until(
        lambda: explorer.driver.execute_script(f"return {GD}._fullData.filter(t => t.meta === 'cluster').length") == 3,
        10,
    )
    size = create_app(explorer.run_dir, read_only=True).ice_data.clustering("run").sizes[0]
    drawn = explorer.driver.execute_script(
        f"return {GD}._fullData.filter(t => t.meta === 'cluster').reduce((n, t) => n + t._length, 0)"
    )
    assert drawn == size, "the sub-map holds the cluster's images, and only them"
    explorer.wait_for_contains_text("#breadcrumb", "cluster 0 (k=3)")
    until(lambda: len(explorer.find_elements("#clusters-panel .cluster-card")) == 3, 10)
    explorer.find_elements("#clusters-panel .cluster-card button")[0].click()  # Show sub-cluster 0
    explorer.wait_for_contains_text("#selection-title", "cluster 0 of cluster 0 (k=3)")
    explorer.find_element("#breadcrumb button.crumb").click()
    until(
        lambda: explorer.driver.execute_script(f"return {GD}._fullData.filter(t => t.meta === 'cluster').length") == k,
        10,
    )
    until(lambda: explorer.find_element("#breadcrumb").text == "", 5)


def test_tile_size_and_a_scrolling_view_of_a_whole_list(explorer):
    data = create_app(explorer.run_dir, read_only=True).ice_data
    explorer.driver.execute_script("document.querySelector('.app').classList.add('wide')")
    open_tab(explorer, "Clusters")
    explorer.find_elements("#clusters-panel .cluster-card button")[0].click()
    until(lambda: len(explorer.find_elements("#grid .tile")) > 0, 10)
    explorer.find_element("#page-size").send_keys("all")
    size = int(data.clustering("run").sizes[0])
    until(lambda: state(explorer)["pages"] == 1 and len(state(explorer)["ids"]) == size, 5)
    drawn = len(explorer.find_elements("#grid .tile"))
    assert drawn < size, "a whole list draws only the rows in view"
    slider = explorer.find_element("#tile-size")
    explorer.driver.execute_script(
        "arguments[0].value = 256; arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", slider
    )
    until(lambda: explorer.find_element("#grid .tile").size["width"] == 256, 5)
    explorer.driver.execute_script("document.getElementById('grid').scrollTop = 1e6")
    until(lambda: max(state(explorer)["ids"].index(i) for i in tiles(explorer)) == size - 1, 5)


def test_the_map_uses_a_palette_that_tells_30_clusters_apart(explorer):
    from explorer.figures import cluster_colors

    colours = cluster_colors(30)
    assert len(set(colours)) == 30
    assert "double-click" in explorer.find_element(".hint").get_attribute("title")
