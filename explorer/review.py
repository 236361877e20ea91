"""The review grid's server side: which list of images it shows, in what order, with a group's
marks, and saving a page of marks into a group.

The grid itself lives in the browser (assets/review.js): it holds the list's image ids and
the person's ticks, and asks the server only to order the list and to save a page. Any part
of the app opens a new list by writing `review_list(...)` to the `selection` store; a page is
saved with `confirm_page`, whose rule is: an image not ticked is in, one ticked off is out.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ice.errors import IceError
from ice.run_dir import take_rows

from .data import RunData
from .search import like_scores

# how the grid may order and filter its list: value -> the text the page shows
SORTS = {
    "list": "as listed",
    "similar": "most like the group first",
    "centre": "nearest the centre first",
    "edge": "from the edge inward",
}
FILTERS = {
    "all": "all images",
    "unreviewed": "not reviewed yet",
    "in": "marked in",
    "out": "marked out",
    "ungrouped": "in no group",
}


def review_list(ids, title: str, group: str | None = None, source: str = "", clustering: str | None = None) -> dict:
    """What the `selection` store holds: the grid's list of image ids, its title, the group to
    review it into (None keeps the group the page has), where it came from ("map" for a lasso:
    the map keeps its lasso drawn) and the clustering whose centres "distance to the centre"
    means (None: the map's)."""
    return {"ids": [int(i) for i in ids], "title": title, "group": group, "source": source, "clustering": clustering}


def group_name(name: str | None) -> str:
    return (name or "").strip()


# "most like the group first" lays out the look-alikes of each page side by side over the
# list's first ARRANGED images; past them (a list seldom reviewed that far) the ranking stands
ARRANGED = 20_000


def order_ids(
    data: RunData,
    ids: np.ndarray,
    sort: str,
    clustering: str,
    marked_in: np.ndarray,
    marked_out: np.ndarray,
    page: int = 0,
) -> np.ndarray:
    """ids in the order `sort` names (SORTS). "similar" ranks as "More like these" does
    (search.like_scores): like the group's images marked in (the list's where none are), unlike
    those marked out; cut into pages of `page` images (0: not cut), each page starts from its
    best-ranked image and puts look-alikes side by side (`side_by_side`);
    "centre" and "edge" by the squared distance to the image's cluster centre in `clustering`
    (a drill-down's own centres there); images outside it go last."""
    if sort == "list" or len(ids) < 2:
        return ids
    if sort == "similar":
        positives = marked_in if len(marked_in) else ids
        ranked = ids[np.argsort(-like_scores(data, positives, marked_out, ids), kind="stable")]
        return side_by_side(data.embeddings, ranked, page) if page > 1 else ranked
    if sort in ("centre", "edge"):
        distance = data.clustering(clustering).distance[ids].astype(np.float64)
        outside = ~np.isfinite(distance)
        key = np.where(outside, np.inf, distance if sort == "centre" else -distance)
        return ids[np.argsort(key, kind="stable")]
    raise IceError(f"sort {sort!r}: expected one of {', '.join(SORTS)}")


def side_by_side(embeddings, ranked: np.ndarray, page: int, limit: int = ARRANGED) -> np.ndarray:
    """`ranked` with each page of `page` images (over its first `limit`) laid out as a chain:
    from the page's first image, each next the nearest of the page's images left, by cosine of
    the (unit-length) embeddings. Each page keeps its images; misfits that look alike then sit
    together, where one click and a Shift-click tick them all."""
    out = ranked.copy()
    for start in range(0, min(len(ranked), limit), page):
        block = ranked[start : start + page]
        if len(block) < 3:
            continue
        x = take_rows(embeddings, block)
        similar = x @ x.T
        order = np.empty(len(block), np.int64)
        at = 0
        for step in range(len(block)):
            order[step] = at
            similar[:, at] = -np.inf  # laid out: no image's next any more
            at = int(similar[at].argmax())
        out[start : start + len(block)] = block[order]
    return out


def review_view(
    data: RunData,
    selection: dict | None,
    group: str | None,
    sort: str = "list",
    shown: str = "all",
    clustering: str = "run",
    page: int = 0,
) -> dict:
    """What the grid draws: the list's ids sorted (under "similar", laid out in pages of `page`:
    order_ids) and filtered (None where that is the
    selection's own order, which the browser has), the group's marks among them ("in", "out"),
    a title with the counts, the filter (`shown`), and `key`, which changes when the list, its
    order or the images it shows do (the grid then goes back to its first page)."""
    selection = selection or {}
    ids = data.check_ids(selection.get("ids") or [])
    group = group_name(group)
    marked_in, marked_out = data.annotations.marks(group) if group else (np.zeros(0, np.int64),) * 2
    in_list, out_list = marked_in[np.isin(marked_in, ids)], marked_out[np.isin(marked_out, ids)]
    if shown not in FILTERS:
        raise IceError(f"filter {shown!r}: expected one of {', '.join(FILTERS)}")
    if shown == "unreviewed":
        ids = ids[~np.isin(ids, in_list) & ~np.isin(ids, out_list)]
    elif shown in ("in", "out"):
        ids = ids[np.isin(ids, in_list if shown == "in" else out_list)]
    elif shown == "ungrouped":
        ids = ids[~np.isin(ids, data.annotations.grouped_ids())]
    ids = order_ids(data, ids, sort, selection.get("clustering") or clustering, marked_in, marked_out, page)
    total = len(selection.get("ids") or [])
    title = f"{selection.get('title') or 'Selection'} · {total:,} images"
    if shown != "all":
        title += f", {len(ids):,} {FILTERS[shown]}"
    if group:
        unreviewed = total - len(in_list) - len(out_list)
        title += f" · {group!r}: {len(in_list):,} in, {len(out_list):,} out, {unreviewed:,} not reviewed"
    key = hashlib.sha1(f"{selection.get('title')}|{group}|".encode() + ids.astype(np.int64).tobytes()).hexdigest()[:12]
    # in the list's own order the browser has the ids already (the selection store): not sent twice
    same = sort == "list" and shown == "all"
    return {
        "ids": None if same else ids.tolist(),
        "in": in_list.tolist(),
        "out": out_list.tolist(),
        "title": title,
        "group": group,
        "shown": shown,
        "key": key,
        "empty": not total,
    }


def confirm_page(data: RunData, group: str | None, marked_in, marked_out, note: str = "") -> dict:
    """Save one reviewed page into a group at once, as one change of its history: the images
    not ticked off in, those ticked off out (the teach loop and "More like these" learn from
    them). Returns Annotations.mark's {"change", "size", "rejected"}."""
    group = group_name(group)
    if not group:
        raise IceError("no group name: type one to review into a group")
    marked_in, marked_out = data.check_ids(marked_in or []), data.check_ids(marked_out or [])
    if not len(marked_in) and not len(marked_out):
        raise IceError("nothing to confirm: the page is empty")
    return data.annotations.mark(group, marked_in=marked_in, marked_out=marked_out, action="confirm", note=note)


def confirm_status(group: str, result: dict, marked_in: int, marked_out: int) -> str:
    return (
        f"Confirmed {marked_in:,} in and {marked_out:,} out of group {group_name(group)!r} "
        f"({result['size']:,} in it now, {result['rejected']:,} out)."
    )
