"""The teach loop in headless Chromium: find, tick off, confirm, a round trains in the
background, its page opens by itself, undo the round, and the scores on the map."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.keys import Keys

from explorer.app import create_app
from ice import run_dir as rd
from ice import teach_state as ts
from tests.conftest_browser import NOT_COPIED, VIEWPORT, wait_for_map
from tests.test_browser_review import GD, keys, marks, page_ids, state, tile, type_group

pytestmark = pytest.mark.browser


@pytest.fixture
def teacher(dash_duo, small_run, tmp_path):
    """The explorer over a copy of the small run that keeps its model (the learner starts from it)."""
    run = tmp_path / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns(*(p for p in NOT_COPIED if p != "model.pt")))
    dash_duo.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
    )
    dash_duo.start_server(create_app(run))
    wait_for_map(dash_duo)
    dash_duo.run_dir = run
    dash_duo.labels = pd.read_parquet(run / rd.ITEMS, columns=["label"])["label"].to_numpy()
    return dash_duo


def review_page(duo, wanted: str) -> tuple[list[int], list[int]]:
    """Tick off the page's images that are not `wanted` (the labels are the oracle), then
    confirm with Enter; returns (in, out)."""
    ids = page_ids(duo)
    out = [i for i in ids if duo.labels[i] != wanted]
    for i in out:
        tile(duo, i).click()
    until(lambda: sorted(state(duo)["ticked"]) == sorted(out), 5)
    keys(duo, Keys.ENTER)
    duo.wait_for_contains_text("#review-status", "Confirmed")
    return [i for i in ids if i not in out], out


def test_find_tick_off_confirm_train_next_page_and_undo(teacher):
    duo = teacher
    type_group(duo, "threes")
    duo.find_element("#teach-find").click()
    duo.wait_for_contains_text("#teach-status", "mark some images in the group first")
    threes = np.flatnonzero(duo.labels == "3")
    create_app(duo.run_dir).ice_data.annotations.mark("threes", marked_in=threes[:5], action="confirm")

    duo.find_element("#teach-find").click()  # round 1 learns from the 5; the page is by likeness meanwhile
    duo.wait_for_contains_text("#selection-title", "Teach 'threes'")
    first = page_ids(duo)
    assert first and not set(first) & set(threes[:5].tolist())
    until(lambda: len(ts.read_state(duo.run_dir, "threes")["rounds"]) == 1, 120)  # before the confirm below
    # the page says round 1 is done, and leaves the page being reviewed where it is
    duo.wait_for_contains_text("#teach-status", "round 1: about", timeout=30)
    assert page_ids(duo) == first

    marked_in, marked_out = review_page(duo, "3")
    # the next round learns from this page; the page of the round after it opens by itself
    until(lambda: "round 2's best" in duo.find_element("#selection-title").text, 120)
    second = page_ids(duo)
    now_in, now_out = marks(duo, "threes")
    assert set(marked_in) <= set(now_in) and set(marked_out) <= set(now_out)
    assert not set(second) & (set(now_in) | set(now_out))  # only images not yet reviewed
    record = ts.read_state(duo.run_dir, "threes")["rounds"][-1]
    assert record["marked_in"] == len(now_in) and record["marked_out"] == len(now_out)
    duo.wait_for_contains_text("#teach-status", "round 2: about")

    duo.find_element("#teach-overlay input").click()  # the scores on the map
    until(lambda: duo.driver.execute_script(f"return {GD}.data.find(t => t.meta === 'scores').x.length") > 0, 10)

    duo.find_element("#teach-undo").click()
    duo.wait_for_contains_text("#teach-status", "Undid round 2 and 1 change(s) of its marks")
    back_in, back_out = marks(duo, "threes")
    assert sorted(back_in) == sorted(threes[:5].tolist()) and len(back_out) == 0
    assert len(ts.read_state(duo.run_dir, "threes")["rounds"]) == 1


def test_two_sessions_confirming_teach_pages_at_once_lose_no_mark(teacher):
    """Two tabs confirm pages of one taught group while a round trains: every mark is kept, and
    a round learns from both pages."""
    duo = teacher
    driver = duo.driver
    threes = np.flatnonzero(duo.labels == "3")
    create_app(duo.run_dir).ice_data.annotations.mark("threes", marked_in=threes[:5], action="confirm")
    first = driver.current_window_handle
    type_group(duo, "threes")
    duo.find_element("#teach-uncertain").click()  # no round yet: says so, and starts nothing
    duo.wait_for_contains_text("#teach-status", "no round has trained yet")
    duo.find_element("#page-size").send_keys("24")
    duo.find_element("#teach-find").click()
    duo.wait_for_contains_text("#selection-title", "Teach 'threes'")
    until(lambda: len(ts.read_state(duo.run_dir, "threes")["rounds"]) == 1, 120)
    driver.switch_to.new_window("tab")
    driver.get(duo.server_url)
    wait_for_map(duo)
    type_group(duo, "threes")
    duo.find_element("#page-size").send_keys("48")
    duo.find_element("#teach-find").click()  # the same round's best 48: the first tab's 24 and 24 more
    duo.wait_for_contains_text("#selection-title", "Teach 'threes': 48")
    second_page = page_ids(duo)
    driver.switch_to.window(first)
    one_in, one_out = review_page(duo, "3")
    driver.switch_to.window(driver.window_handles[1])
    rest = [i for i in second_page if i not in one_in + one_out]
    for i in rest:
        if duo.labels[i] != "3":
            tile(duo, i).click()
    keys(duo, Keys.ENTER)
    duo.wait_for_contains_text("#review-status", "Confirmed")
    marked_in, marked_out = marks(duo, "threes")
    assert set(one_in) <= set(marked_in) and set(one_out) <= set(marked_out)
    assert set(second_page) <= set(marked_in) | set(marked_out)
    assert not set(marked_in) & set(marked_out)
    # a round that learned from both pages ends (the second confirm ran one, or queued one more)
    until(lambda: ts.read_state(duo.run_dir, "threes")["rounds"][-1]["marked_in"] == len(marked_in), 180)
