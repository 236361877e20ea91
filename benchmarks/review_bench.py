"""The review grid, played as a person would: each class of a labelled run gathered into a saved
group with the grid alone, in headless Chromium, and the same with the grid as it was at
76350eb (before it marked in the browser), for today's figures.

    python -m benchmarks.review_bench --run RUN_DIR [--run RUN_DIR ...] [--classes 3 5]
                                      [--no-old | --no-new] [--no-record] [--dry-run] [--trace] [--teach] [--label TEXT]

The runs must have labels (`ice embed --labels-from-folders`, or `ice demo`). The labels are
used only as an oracle: to tick off every misfit the person sees, and to decide what a person
would decide from a card's thumbnails. Each run is copied (without its model, unless --teach) so that its
groups start empty, and served by `ice explore` (Flask's development server, as one person
gets it) in a subprocess.

The person, for each class (the new grid):
  - names the group (the box), then looks at each cluster card's 6 thumbnails (those nearest
    its centre): all 6 of the class, it opens the cluster in the grid; none, it passes; some,
    it splits the cluster (k 6) and does the same with each sub-cluster, one level deeper at
    most (then it opens the mixed one), and goes back by the breadcrumb;
  - reviews each list opened page by page (192 a page, or --page; 64 px tiles, the grid wide,
    scrolled down a page as the person reads it; showing the images not reviewed yet, most like
    the group first: a confirmed page leaves the list, and the rest is ranked again by the
    marks made so far; each page laid out with its look-alikes side by side, since ad74801):
    ticks off the misfits (a run of misfits with a click and a
    Shift-click; or, on a page mostly of misfits, ticks the page (A) and puts the class's
    images back), confirms (Enter), and stops at a page where fewer than 30% are of the
    class, leaving it unreviewed, unless those few can be put back in at most 8 clicks (then
    it takes that page and stops);
  - goes back to the Clusters tab only where a card is left to look at;
  - then asks "More like these" (M; top as many as a page, the group's marks in as
    positives, out as negatives) and reviews what it brings, until a page holds under 50% of
    the class;
  - with --teach, then sets pages of 48 and asks the teach loop: "Find more" starts its first
    round on the marks so far (the page it opens at once is ranked as "More like these" ranks,
    which has just run dry: not reviewed); once the round is done (waited for, in the wall
    time), "Find more" again opens the 48 its learner scores highest, reviewed as above; the
    page size is set back (each setting 2 interactions). The round that learns from that page
    is waited for between classes, outside the wall times, so that it does not slow the next.
The old grid (76350eb): the person opens each cluster whose 6 thumbnails are mostly of the
class (there is no drill-down), ticks off every misfit one click at a time on every page (each
tick a round trip), and saves the group ("Save group" saved the whole selection less the ticks).

It reports, per class: the interactions (clicks and keys; typing a name is one), the images
reviewed (on pages confirmed; for the old grid, on the pages gone through), the browser wall
time, and the group's precision and recall; the draw time of every tick (from the click event
to the next animation frame, p95), the time from Enter to the server's answer for each page,
and the drill-downs' times.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO, append_section, machine, today, verdict
from benchmarks.explorer_bench import CHROMIUM_FLAGS, chromium_missing
from benchmarks.load import free_port, wait_until_up
from explorer.layout import PAGE_SIZES
from explorer.review import FILTERS, SORTS

OLD_COMMIT = "76350eb"  # the grid before this benchmark's grid: ticks one round trip at a time
TARGET_PRECISION, TARGET_RECALL = 0.99, 0.95
TARGET_INTERACTIONS = 40  # per 1,000 images reviewed
TARGET_SECONDS = 15.0  # of browser wall time per 1,000 images reviewed
TARGET_TICK_MS = 50.0  # p95, click to the frame that shows it
TARGET_CONFIRM_S = 1.0  # a page confirmed: Enter to the server's answer
PAGE, TILE = 192, 64
SPLIT_K = 6
STOP_SHARE = 0.3  # a page with less of the class than this ends the list's review
MORE_SHARE = 0.5  # "More like these" is asked again while its page holds at least this
MORE_ROUNDS = 8
TEACH_PAGE = 48  # the page size the person sets for the teach loop's page (2 interactions)
TEACH_WAIT_S = 300  # the longest a teach round is waited for
CHEAP_RUNS = 8  # below STOP_SHARE, a page is still taken when its images of the class come in this few clicks
SORT = "similar"  # the grid's order, chosen once: the images most like the group first
FILTER = "unreviewed"  # and what it shows: a confirmed page leaves the list, the rest is ranked again
REPRESENTATIVES = 6
NOT_COPIED = ("model.pt", "checkpoints", "annotations.sqlite*", "clusterings")

# one tick, in the page: the click event, then the frame that draws it
TICK_JS = """
const [id, shift, done] = arguments;
const grid = document.getElementById('grid');
const find = () => grid.querySelector(`.tile[data-id="${id}"]`);
let frames = 0;
const go = () => {
  const tile = find();
  if (!tile) {  // not drawn yet: scroll its row into view, and look again at the next frame
    if (++frames > 20) { done(null); return; }
    const s = window.iceReview.state(), at = s.ids.indexOf(id);
    const size = Number(document.getElementById('tile-size').value);
    const cols = Math.max(1, Math.floor((grid.clientWidth + 6) / (size + 6)));
    grid.scrollTop = Math.floor(at / cols) * (size + 6);
    grid.dispatchEvent(new Event('scroll'));
    requestAnimationFrame(go);
    return;
  }
  const t0 = performance.now();
  tile.dispatchEvent(new MouseEvent('click', {bubbles: true, shiftKey: shift}));
  requestAnimationFrame(() => done(performance.now() - t0));
};
go();
"""
KEY_JS = "document.dispatchEvent(new KeyboardEvent('keydown', {key: arguments[0], bubbles: true}));"


@dataclass
class ClassResult:
    run: str
    label: str
    workflow: str  # "new" or "old"
    size: int  # images of the class in the run
    interactions: int = 0
    reviewed: int = 0
    seconds: float = 0.0
    precision: float = float("nan")
    recall: float = 0.0

    @property
    def per_1000(self) -> tuple[float, float]:
        per = 1000 / max(self.reviewed, 1)
        return self.interactions * per, self.seconds * per


@dataclass
class Report:
    results: list[ClassResult] = field(default_factory=list)
    tick_ms: list[float] = field(default_factory=list)
    confirm_ms: list[float] = field(default_factory=list)
    drills: list[tuple[int, float]] = field(default_factory=list)  # (images, seconds)
    old_note: str = ""
    stopped: list[str] = field(default_factory=list)  # classes whose play stopped, and why
    lost: int = 0  # the old grid's ticks clicked again
    rounds: list[float] = field(default_factory=list)  # seconds waited for each teach round


# --- the browser and the server ----------------------------------------------------------


def open_browser(tmp: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver"), env={**os.environ, "TMPDIR": tmp})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    return driver


class Server:
    """`ice explore RUN` in a subprocess, from the working tree or from an older tree."""

    def __init__(self, run_dir: Path, tree: Path = REPO):
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        # its request log goes to a file: a pipe nobody reads fills up and stops the server
        self.log = open(run_dir.parent / f"{run_dir.name}.server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ice.cli", "explore", str(run_dir), "--port", str(self.port)],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until_up(self.base + "/_dash-layout", self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


def copy_run(run_dir: Path, to: Path) -> Path:
    """The run without its groups (and without its model, unless the teach loop is played)."""
    skip = [p for p in NOT_COPIED if not (p == "model.pt" and NewPerson.teaching)]
    return Path(shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns(*skip)))


def old_tree(tmp: Path) -> Path:
    """The repository's explorer, assets and batch job as they were at OLD_COMMIT."""
    tree = tmp / f"ice-{OLD_COMMIT}"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", OLD_COMMIT, "explorer", "assets", "embeddings"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


# --- the person ----------------------------------------------------------------------------


class Person:
    """One person at one browser tab, counting what they click and press."""

    def __init__(self, driver, labels: np.ndarray, report: Report):
        self.driver, self.labels, self.report = driver, labels, report
        self.interactions = 0
        self.trace: list[str] = []  # what each interaction was, for --trace

    def count(self, what: str) -> None:
        self.interactions += 1
        self.trace.append(what)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def click(self, element) -> None:
        self.count("click")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'}); arguments[0].click()", element)

    def key(self, key: str) -> None:
        self.count(key)
        self.js(KEY_JS, key)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition, timeout: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except Exception:  # an element redrawn under us: look again
                pass
            time.sleep(0.02)
        raise RuntimeError(f"waited {timeout:.0f} s for {what() if callable(what) else what}")

    def text(self, css: str) -> str:
        found = self.find(css)
        return found[0].text if found else ""

    def open_tab(self, label: str) -> None:
        from selenium.webdriver.common.by import By

        tab = self.driver.find_element(By.XPATH, f"//div[contains(@class,'tab') and normalize-space(.)='{label}']")
        self.count(f"tab {label}")
        self.js("arguments[0].scrollIntoView({block: 'nearest'}); arguments[0].click()", tab)

    def type_into(self, css: str, text: str, enter: bool = True) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.find(css)[0]
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(text, *([Keys.ENTER] if enter else []))
        self.count("type " + text)

    def cards(self) -> list[dict]:
        """What the Clusters tab shows: per card, its 6 thumbnails' ids and its size."""
        return self.js("""return [...document.querySelectorAll('#clusters-panel .cluster-card')].map(card => ({
            reps: [...card.querySelectorAll('.representatives img')]
                .map(i => Number(i.src.split('/thumb/')[1].split('.')[0])),
            size: Number(card.querySelector('.size').textContent.replace(/,/g, ''))}))""")


class NewPerson(Person):
    """The review grid of today."""

    teaching = False  # ends with a round of the teach loop (--teach)

    def set_up(self) -> None:
        self.js(
            "document.querySelector('.app').classList.add('wide');"
            "const s = document.getElementById('tile-size'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input', {bubbles: true}));"
            "const p = document.getElementById('page-size'); p.value = String(arguments[1]);"
            "p.dispatchEvent(new Event('change', {bubbles: true}));",
            TILE,
            PAGE,
        )
        self.type_into("#more-top", str(PAGE))
        self.choose("#review-sort", SORTS[SORT])
        self.choose("#review-filter", FILTERS[FILTER])
        # the width, the tile size, the page size, the grid's order and "More like these"'s
        # top: set once for the run, as a person settles in, so not counted in any class

    def choose(self, css: str, label: str) -> None:
        """Pick the option `label` of the dropdown `css`."""
        from selenium.webdriver.common.by import By

        self.find(css)[0].click()
        self.wait(
            lambda: self.driver.find_element(By.XPATH, f"//*[normalize-space(text())='{label}']").is_displayed(),
            timeout=10,
            what=f"the option {label!r}",
        )
        self.driver.find_element(By.XPATH, f"//*[normalize-space(text())='{label}']").click()
        self.wait(lambda: label in self.text(css), timeout=10, what=f"{css} showing {label!r}")

    def state(self) -> dict:
        return self.js("return window.iceReview.state()")

    def tick(self, image_id: int, shift: bool = False) -> None:
        self.count("shift-tick" if shift else "tick")
        ms = self.driver.execute_async_script(TICK_JS, int(image_id), shift)
        if ms is None:
            raise RuntimeError(f"image {image_id} is not in the grid's page: {self.state()}")
        self.report.tick_ms.append(ms)

    def tick_runs(self, page: list[int], chosen: set[int]) -> None:
        """Tick the chosen images of a page: a run of two or more with a click and a Shift-click."""
        i = 0
        while i < len(page):
            if page[i] not in chosen:
                i += 1
                continue
            j = i
            while j + 1 < len(page) and page[j + 1] in chosen:
                j += 1
            self.tick(page[i])
            if j > i:
                self.tick(page[j], shift=True)
            i = j + 1

    def runs(self, page: list[int], chosen: set[int]) -> int:
        flags = [i in chosen for i in page]
        starts = sum(1 for k, f in enumerate(flags) if f and (k == 0 or not flags[k - 1]))
        singles = sum(
            1
            for k, f in enumerate(flags)
            if f and (k == 0 or not flags[k - 1]) and (k == len(flags) - 1 or not flags[k + 1])
        )
        return 2 * starts - singles

    def review(self, label: str, stop_share: float = STOP_SHARE) -> tuple[int, float]:
        """Review the grid's list page by page; returns (images confirmed, the class's share of
        the last page looked at)."""
        confirmed, share = 0, 1.0
        while True:
            state = self.state()
            page = state["ids"]
            if not page:
                return confirmed, 0.0
            ours = {i for i in page if self.labels[i] == label}
            share = len(ours) / len(page)
            last_one = share < stop_share
            if last_one and not (ours and self.runs(page, ours) <= CHEAP_RUNS):
                self.trace.append(f"(stops: {len(ours)} of {len(page)})")  # for --trace, not counted
                return confirmed, share
            # below the share, the class's images left sit together (most like the group
            # first): the page is ticked (A), they are put back, and the list ends there
            misfits = set(page) - ours
            if self.runs(page, ours) + 1 < self.runs(page, misfits):
                self.key("a")
                self.tick_runs(page, ours)
            else:
                self.tick_runs(page, misfits)
            assert set(self.state()["ticked"]) == misfits, "the grid's ticks are not the misfits"
            last = state["page"] >= state["pages"] - 1
            self.key("Enter")
            confirmed += len(page)
            self.wait(lambda: self.state()["pending"] == 0, what="the page's confirmation")
            if FILTER != "all":  # the list without the page, ranked again: its first page
                self.wait(lambda: self.state()["key"] != state["key"], what="the list without the page confirmed")
            if last or last_one:
                return confirmed, share

    def click_until(self, script: str, done, what, *args, name: str = "click") -> None:
        """One click, by `script` finding its button afresh: a panel is drawn again as its tab is
        shown, and a click on the one drawn before is lost (then it clicks again, uncounted)."""
        self.count(name)
        for _ in range(5):
            self.js(script, *args)
            try:
                self.wait(done, timeout=5, what=what)
                return
            except RuntimeError:
                continue
        self.wait(done, timeout=120, what=what)

    def click_card(self, index: int, button: int, done, what: str) -> None:
        """A card's button: 0 Show, 1 Split."""
        self.click_until(
            "document.querySelectorAll('#clusters-panel .cluster-card')[arguments[0]]"
            ".querySelectorAll('button')[arguments[1]].click()",
            done,
            what,
            index,
            button,
            name=("show", "split")[button],
        )

    def show_card(self, index: int) -> None:
        key = self.state()["key"]
        self.click_card(
            index,
            0,
            lambda: self.state()["key"] != key,
            lambda: (
                f"the grid of card {index}: title {self.text('#selection-title')!r}, tab "
                f"{self.text('.tab--selected')!r}, {self.text('#clusters-panel')[:300]!r}, {self.state()}"
            ),
        )

    def consider(self, label: str, depth: int = 0) -> int:
        """The Clusters tab's cards, as the person sees them; returns the images confirmed."""
        confirmed = 0
        cards = self.cards()
        wanted = [i for i, card in enumerate(cards) if any(self.labels[j] == label for j in card["reps"])]
        for index in wanted:
            card = cards[index]
            seen = sum(self.labels[i] == label for i in card["reps"])
            if seen == len(card["reps"]) or depth >= 1 or card["size"] < 4 * SPLIT_K:
                self.show_card(index)
                confirmed += self.review(label)[0]
                if depth or index != wanted[-1]:  # the cards again, where there is more to do there
                    self.open_tab("Clusters")
                continue
            before = self.text("#breadcrumb")
            self.click_card(index, 1, lambda: self.text("#job-status").startswith("Split"), "the drill-down")
            self.wait(lambda: self.text("#breadcrumb") not in ("", before), what="the breadcrumb")
            seconds = float(re.search(r"in ([0-9.]+) s", self.text("#job-status")).group(1))
            self.report.drills.append((card["size"], seconds))
            # the sub-clusters' cards drawn (a level of SPLIT_K cards can stand there before them)
            self.wait(lambda: len(now := self.cards()) == SPLIT_K and now != cards, what="the sub-clusters' cards")
            confirmed += self.consider(label, depth + 1)
            self.click_until(
                "[...document.querySelectorAll('#breadcrumb button.crumb')].pop().click()",
                lambda: self.text("#breadcrumb") == before,
                "the way back",
                name="back",
            )
            self.wait(lambda: self.cards() == cards, what="the cards back")
        return confirmed

    def gather(self, label: str) -> int:
        self.type_into("#group-name", f"class {label}")
        self.wait(lambda: self.state()["group"] == f"class {label}", what="the group box")
        self.open_tab("Clusters")
        confirmed = self.consider(label)
        for _ in range(MORE_ROUNDS):
            key = self.state()["key"]
            self.key("m")  # "More like these", from the Clusters tab too
            self.wait(lambda: self.state()["key"] != key and self.find("#grid .tile"), what="more like these")
            done, share = self.review(label, stop_share=MORE_SHARE)
            confirmed += done
            if share < MORE_SHARE or not done:
                break
        if self.teaching:
            confirmed += self.teach(label)
        return confirmed

    def set_page_size(self, size: int) -> None:
        """The page-size select: a click on it and one on the option."""
        self.count("page size")
        self.count(f"page size {size}")
        self.js(
            "const p = document.getElementById('page-size'); p.value = String(arguments[0]);"
            "p.dispatchEvent(new Event('change', {bubbles: true}));",
            size,
        )

    def find_more(self) -> None:
        key = self.state()["key"]
        self.click_until(
            "document.getElementById('teach-find').click()",
            lambda: self.state()["key"] != key,
            "the teach loop's page",
            name="find more",
        )

    def teach(self, label: str) -> int:
        """The teach loop, once the lists run dry: "Find more" starts its first round on the
        marks so far (the page it opens at once is ranked as "More like these" ranks, which has
        just run dry: not reviewed); when the round is done, "Find more" again opens the page its
        learner scores highest, reviewed as the others are. Returns the images confirmed."""
        self.set_page_size(TEACH_PAGE)
        self.find_more()
        t0 = time.perf_counter()
        self.wait(
            lambda: (
                re.search(r"round \d+: about", self.text("#teach-status"))
                and "training" not in self.text("#teach-status")
            ),
            timeout=TEACH_WAIT_S,
            what=lambda: f"the first round: {self.text('#teach-status')!r}",
        )
        self.report.rounds.append(time.perf_counter() - t0)
        self.trace.append(f"(waits {time.perf_counter() - t0:.1f} s: {self.text('#teach-status')})")
        self.find_more()
        confirmed = self.review(label, stop_share=MORE_SHARE)[0]
        self.set_page_size(PAGE)  # back, for the next class
        return confirmed


class OldPerson(Person):
    """The grid at OLD_COMMIT: server-drawn pages of 48, a round trip per tick. Its buttons are
    found and clicked in one script, once the page has drawn the answer to the last click (the
    grid is drawn again by each answer, and a click on the one drawn before is lost)."""

    lost = 0  # ticks clicked again after 3 s without an answer (counted as interactions)

    def press(self, css: str, index: int = 0) -> None:
        self.count("press " + css)
        self.wait(lambda: not self.find("[data-dash-is-loading='true']"), what="the page to settle")
        self.js("document.querySelectorAll(arguments[0])[arguments[1]].click()", css, index)

    def grid_ids(self) -> list[int]:
        return [
            int(s.split("/thumb/")[1].split(".")[0])
            for s in self.js("return [...document.querySelectorAll('#grid .tile img')].map(i => i.src)")
        ]

    def gather(self, label: str) -> int:
        self.open_tab("Clusters")
        self.wait(lambda: self.cards(), what="the cards")
        cards = self.cards()
        reviewed = 0
        for index, card in enumerate(cards):
            if sum(self.labels[i] == label for i in card["reps"]) * 2 < len(card["reps"]):
                continue  # mostly another class: ticking off most of it one by one is not done
            self.wait(lambda: self.find("#clusters-panel .cluster-card button"), what="the cards")
            self.press("#clusters-panel .cluster-card button", index)
            self.wait(lambda: f"cluster {index} of" in self.text("#selection-title"), what="the grid")
            ticked = 0
            while True:
                page = self.grid_ids()
                for tile_index, image_id in enumerate(page):
                    if self.labels[image_id] != label:
                        ticked += 1
                        for attempt in range(10):
                            if attempt:
                                self.lost += 1
                            self.press("#grid .tile-mark", tile_index)
                            try:
                                self.wait(
                                    lambda: f"({ticked:,} ticked off)" in self.text("#selection-title"),
                                    timeout=3,
                                    what="the tick's round trip",
                                )
                                break
                            except RuntimeError:
                                continue
                reviewed += len(page)
                info = self.text("#page-info")
                if self.js("return document.getElementById('page-next').disabled"):
                    break
                self.press("#page-next")
                self.wait(lambda: self.text("#page-info") != info, what="the next page")
            if self.find("#group-name")[0].get_attribute("value") != f"class {label}":
                self.type_into("#group-name", f"class {label}", enter=False)  # Enter there saved
            status = self.text("#group-status")
            self.press("#save-group")
            self.wait(
                lambda: self.text("#group-status") != status and "Saved" in self.text("#group-status"), what="the save"
            )
            self.open_tab("Clusters")
        return reviewed


# --- one run ---------------------------------------------------------------------------------


def reload(driver) -> None:
    """Load the page again, leaving ticks not confirmed (the page asks first: accepted)."""
    from selenium.common.exceptions import NoAlertPresentException

    driver.execute_script("setTimeout(() => location.reload(), 0)")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            driver.switch_to.alert.accept()
            return
        except NoAlertPresentException:
            time.sleep(0.1)


def settle(run_dir: Path, group: str) -> None:
    """Between classes, out of both: wait until the teach loop's round that learns from the
    class's last confirmed page has trained, so that it does not slow the next class."""
    from ice import teach_state as ts
    from ice.annotations import Annotations

    last = Annotations(run_dir / "annotations.sqlite", read_only=True).last_change(group)
    deadline = time.monotonic() + TEACH_WAIT_S
    while time.monotonic() < deadline:
        rounds = ts.read_state(run_dir, group)["rounds"]
        if rounds and rounds[-1]["change"] >= last and not ts.is_training(run_dir, group):
            return
        time.sleep(0.2)


def squeeze(trace: list[str]) -> str:
    """The interactions in order, a repeated one written once with its count: "Enter x3"."""
    runs: list[list] = []
    for what in trace:
        if runs and runs[-1][0] == what:
            runs[-1][1] += 1
        else:
            runs.append([what, 1])
    return ", ".join(what if n == 1 else f"{what} x{n}" for what, n in runs)


def play(
    run_dir: Path,
    workflow: str,
    classes: list[str] | None,
    report: Report,
    tmp: Path,
    tree: Path = REPO,
    trace: bool = False,
) -> None:
    from selenium.common.exceptions import WebDriverException

    from ice.annotations import Annotations

    labels = pd.read_parquet(run_dir / "items.parquet", columns=["label"])["label"].astype(str).to_numpy()
    copy = copy_run(run_dir, tmp / f"{run_dir.name}-{workflow}")
    server = Server(copy, tree)
    browser_tmp = tempfile.mkdtemp(prefix="ice-chromium-", dir=tmp)
    driver = open_browser(browser_tmp)
    try:
        driver.get(server.base)
        person = (NewPerson if workflow == "new" else OldPerson)(driver, labels, report)
        person.wait(
            lambda: person.js(
                "const gd = document.querySelector('#map .js-plotly-plot');"
                "return !!(gd && gd._fullData && gd.querySelector('canvas'))"
            ),
            what="the map",
        )
        if workflow == "new":
            person.set_up()
        for label in classes or sorted(set(labels), key=lambda v: (len(v), v)):
            person.interactions, person.trace = 0, []
            t0 = time.perf_counter()
            try:
                reviewed = person.gather(label)
            except (RuntimeError, WebDriverException) as e:  # the page stopped answering as expected: say so, go on
                report.stopped.append(f"{run_dir.name} {workflow} class {label}: {e}")
                print(f"stopped: {report.stopped[-1]}", flush=True)
                reviewed = 0
                reload(driver)
                person.wait(lambda: person.find("#map canvas"), what="the map")
                if workflow == "new":
                    person.set_up()
            seconds = time.perf_counter() - t0
            members = Annotations(copy / "annotations.sqlite", read_only=True).groups()
            found = (
                Annotations(copy / "annotations.sqlite", read_only=True).group_members(f"class {label}")
                if f"class {label}" in members
                else np.zeros(0, np.int64)
            )
            right = int(np.sum(labels[found] == label))
            size = int(np.sum(labels == label))
            result = ClassResult(
                run_dir.name,
                label,
                workflow,
                size,
                person.interactions,
                reviewed,
                seconds,
                right / len(found) if len(found) else float("nan"),
                right / size,
            )
            report.results.append(result)
            print(
                f"{run_dir.name} {workflow} class {label}: {result.interactions} interactions, {reviewed:,} reviewed, "
                f"{seconds:.1f} s, precision {result.precision:.3f}, recall {result.recall:.3f}",
                flush=True,
            )
            if trace:
                print(f"  {squeeze(person.trace)}", flush=True)
            if workflow == "new" and person.teaching:
                settle(copy, f"class {label}")
        if workflow == "new":
            report.confirm_ms += person.js("return window.iceReview.state().confirmMs")
        else:
            report.lost += person.lost
    finally:
        driver.quit()
        server.stop()


# --- the report ------------------------------------------------------------------------------


def met_every_target(r: ClassResult) -> bool:
    interactions, seconds = r.per_1000
    return (
        r.precision >= TARGET_PRECISION
        and r.recall >= TARGET_RECALL
        and interactions <= TARGET_INTERACTIONS
        and seconds <= TARGET_SECONDS
    )


def table(results: list[ClassResult]) -> list[str]:
    lines = [
        "| run | class | grid | interactions | reviewed | per 1,000 reviewed | wall s | s per 1,000 | "
        "precision | recall | met |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        per, secs = r.per_1000
        ok = met_every_target(r)
        lines.append(
            f"| {r.run} | {r.label} | {'today' if r.workflow == 'new' else OLD_COMMIT} | {r.interactions} | "
            f"{r.reviewed:,} | {per:.0f} | {r.seconds:.1f} | {secs:.1f} | {r.precision:.3f} | "
            f"{r.recall:.3f} | {'yes' if ok else 'no'} |"
        )
    return lines


def figures(report: Report, label: str) -> list[dict]:
    """BENCHMARKS.md's rows: the classes that met every target (today's grid), the tick's and
    the confirm's p95."""
    new = [r for r in report.results if r.workflow == "new"]
    rows = []
    if new:
        met = sum(met_every_target(r) for r in new)
        rows.append(
            {
                "figure": f"review grid: classes gathered at precision >= {TARGET_PRECISION}, recall >= "
                f"{TARGET_RECALL}, <= {TARGET_INTERACTIONS} interactions and <= {TARGET_SECONDS:.0f} s per "
                f"1,000 reviewed ({label})",
                "value": f"{met} of {len(new)}",
                "target": f"{len(new)} of {len(new)}",
                "met": met == len(new),
            }
        )
    if report.tick_ms:
        p95 = float(np.percentile(report.tick_ms, 95))
        rows.append(
            {
                "figure": "review grid: a tick drawn, p95",
                "value": f"{p95:.1f} ms",
                "target": f"<= {TARGET_TICK_MS:.0f} ms",
                "met": p95 <= TARGET_TICK_MS,
            }
        )
    if report.confirm_ms:
        p95 = float(np.percentile(report.confirm_ms, 95)) / 1000
        rows.append(
            {
                "figure": "review grid: a page confirmed (Enter to the answer), p95",
                "value": f"{p95:.2f} s",
                "target": f"<= {TARGET_CONFIRM_S:.0f} s",
                "met": p95 <= TARGET_CONFIRM_S,
            }
        )
    for order, row in enumerate(rows, start=5):
        row.update(group="teach", order=order)
    return rows


def render(report: Report, command: str) -> str:
    new = [r for r in report.results if r.workflow == "new"]
    lines = [
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {today()}",
        f"- targets per class: precision >= {TARGET_PRECISION}, recall >= {TARGET_RECALL}, "
        f"<= {TARGET_INTERACTIONS} interactions and <= {TARGET_SECONDS:.0f} s per 1,000 images reviewed",
        "",
    ]
    lines += table(report.results)
    if new:
        met = sum(met_every_target(r) for r in new)
        lines += ["", f"- today's grid met every target for {met} of {len(new)} classes"]

    def percentile(values, q):
        return float(np.percentile(values, q))

    if report.tick_ms:
        p95 = percentile(report.tick_ms, 95)
        lines.append(
            f"- a tick drawn (click event to the next frame): p95 {p95:.1f} ms over {len(report.tick_ms):,} "
            f"ticks, median {percentile(report.tick_ms, 50):.1f} ms; target <= {TARGET_TICK_MS:.0f} ms: "
            f"{verdict(p95 <= TARGET_TICK_MS)}"
        )
    if report.confirm_ms:
        p95 = percentile(report.confirm_ms, 95) / 1000
        lines.append(
            f"- a page of {PAGE} confirmed (Enter to the server's answer): p95 {p95:.2f} s over "
            f"{len(report.confirm_ms):,} pages, median {percentile(report.confirm_ms, 50) / 1000:.2f} s; "
            f"target <= {TARGET_CONFIRM_S:.0f} s: {verdict(p95 <= TARGET_CONFIRM_S)}"
        )
    if report.rounds:
        lines.append(
            f"- the teach loop's first round, waited for: median {percentile(report.rounds, 50):.1f} s, "
            f"longest {max(report.rounds):.1f} s over {len(report.rounds)} classes"
        )
    if report.drills:
        sizes = ", ".join(f"{n:,} images in {s:.1f} s" for n, s in sorted(report.drills, reverse=True)[:6])
        lines.append(f"- drill-downs ({len(report.drills)}; largest first): {sizes}")
    if report.old_note:
        lines.append(f"- {report.old_note}")
    for line in report.stopped:
        lines.append(f"- stopped: {line} (the group as saved until then is counted)")
    return "\n".join(lines)


def main(argv=None) -> Report:
    global PAGE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", type=Path, required=True, help="a labelled run directory")
    parser.add_argument("--classes", nargs="*", help="only these labels (default: every one)")
    parser.add_argument("--no-old", action="store_true", help=f"skip the grid as it was at {OLD_COMMIT}")
    parser.add_argument("--no-new", action="store_true", help="play only the grid as it was at " + OLD_COMMIT)
    parser.add_argument("--no-record", action="store_true", help="print, do not append to BENCHMARKS.md")
    parser.add_argument("--dry-run", action="store_true", help="one class, nothing recorded")
    parser.add_argument("--trace", action="store_true", help="print each class's interactions in order")
    parser.add_argument("--teach", action="store_true", help="end each class with a round of the teach loop")
    parser.add_argument(
        "--page",
        type=int,
        default=PAGE,
        choices=[n for n in PAGE_SIZES if n != "all"],
        help=f"images a page, one the grid offers, set once (default {PAGE})",
    )
    parser.add_argument("--label", help="what to call the runs in BENCHMARKS.md (default: their folders' names)")
    args = parser.parse_args(argv)
    PAGE = args.page
    NewPerson.teaching = args.teach
    if chromium_missing():
        raise SystemExit("review_bench: needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    for run in args.run:
        if not (run / "manifest.json").exists():
            raise SystemExit(f"review_bench: {run} is not a complete run")
        if "label" not in pd.read_parquet(run / "items.parquet").columns:
            raise SystemExit(f"review_bench: {run} has no labels (ice embed --labels-from-folders)")
    classes = args.classes or (["1"] if args.dry_run else None)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="ice-review-bench-") as tmp:
        tmp = Path(tmp)
        tree = None if args.no_old else old_tree(tmp)
        for run in args.run:
            if not args.no_new:
                play(run.resolve(), "new", classes, report, tmp, trace=args.trace)
            if tree is not None:
                play(run.resolve(), "old", classes, report, tmp, tree, trace=args.trace)
    if args.no_old:
        report.old_note = f"the grid as it was at {OLD_COMMIT} was not played (--no-old)"
    else:
        report.old_note = (
            f"{OLD_COMMIT}'s grid: the person opens only the clusters whose thumbnails are mostly "
            "of the class (it has no drill-down, and ticking off most of a cluster one round trip "
            "at a time is not done), and ticks every misfit on every page of them; "
            f"{report.lost} of its ticks showed nothing within 3 s and were clicked again "
            "(counted as interactions)"
        )
    command = "python -m benchmarks.review_bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    title = f"Review grid: a person gathers each class, {today()}"
    text = render(report, command)
    print(f"\n### {title}\n\n{text}")
    if not (args.no_record or args.dry_run):
        label = args.label or " and ".join(run.name for run in args.run)
        append_section(title, text, figures=figures(report, label))
    return report


if __name__ == "__main__":
    main()
