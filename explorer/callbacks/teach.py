"""The teach loop in the page: "Find more" and "Uncertain" open a page of the group's unmarked
images in the review grid (the first "Find more" also starts round 1, whose progress the page
polls until it ends); confirming a page of them trains the next round in the background,
whose progress the page polls, and whose first page opens by itself when it ends; "Undo
round"; and the group's scores on the map."""

from __future__ import annotations

import time

from dash import Input, Output, Patch, State, ctx, no_update
from dash.exceptions import PreventUpdate

from ice.errors import IceError

from .. import teach
from ..data import RunData
from ..figures import overlay_patch
from ..review import group_name, review_list
from .map import map_key

SOURCE = "teach"  # the review list's source for the teach loop's pages
START_S = 60  # a round asked for that has not started training after this long is not waited for


def page_size(value) -> int:
    """The grid's page size ("48", "96" or "all"), as review.js keeps it: how many images a teach
    page holds ("all" is one page of the usual size)."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return teach.PAGE


def status_text(group: str, state: dict) -> str:
    """One line on the group's rounds and the one training now."""
    head = f"{group!r}: {state['marked_in']:,} in, {state['marked_out']:,} out"
    last = state["last"]
    if last:
        head += (
            f" · round {last['round']}: about {last['estimate']:,} in the group (trained on "
            f"{last['marked_in']:,} in, {last['marked_out']:,} out, {last['seconds']:.0f} s"
            + (", with the pixel features" if (last.get("regressions") or {}).get("used") == "pixels" else "")
            + ")"
        )
    training = state["training"]
    if training:
        head += f" · training round {training.get('round', '?')}: {training.get('phase', 'train')}"
    elif state["error"]:
        head += f" · the last round failed: {state['error']}"
    elif not last:
        head += " · no round yet: confirm a page of Find more to train one"
    return head


def page(data: RunData, group: str, kind: str, size: int) -> dict:
    """The review list of a teach page: the best-scoring or the most uncertain unmarked images."""
    state = teach.status(data, group)
    if kind == "uncertain":
        ids = teach.uncertain_page(data, group, size)
        title = f"Teach {group!r}: the {len(ids):,} most uncertain, round {state['rounds']}"
    else:
        ids = teach.best_page(data, group, size)
        how = f"round {state['rounds']}'s best" if state["rounds"] else "most like its images (no round yet)"
        title = f"Teach {group!r}: {len(ids):,} unmarked, {how}"
    return review_list(ids, title, group=group, source=SOURCE)


def overlay_for(data: RunData, group: str, key: str) -> Patch:
    """The map patch that shows the group's scores (nothing before its first round)."""
    ids, scores = teach.overlay(data, group) if group_name(group) else ([], [])
    x, y = data.map_xy(key)
    return overlay_patch(data.clustering(key), x, y, ids, scores)


def register(app, data: RunData) -> None:
    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("excluded", "data", allow_duplicate=True),
        Output("tabs", "value", allow_duplicate=True),
        Output("teach-status", "children", allow_duplicate=True),
        Output("teach-poll", "disabled", allow_duplicate=True),
        Output("teach-wait", "data", allow_duplicate=True),
        Input("teach-find", "n_clicks"),
        Input("teach-uncertain", "n_clicks"),
        State("group-name", "value"),
        State("grid-page-size", "data"),
        prevent_initial_call=True,
    )
    def open_page(_find, _uncertain, group, size):
        if not ctx.triggered[0]["value"]:
            raise PreventUpdate
        group = group_name(group)
        wait = no_update
        try:
            if not group:
                raise IceError("name the group to teach in the group box first")
            selection = page(
                data, group, "uncertain" if ctx.triggered_id == "teach-uncertain" else "best", page_size(size)
            )
            state = teach.status(data, group)
            started = ""
            if not state["rounds"] and not state["training"] and not data.read_only:
                teach.start(data, group)  # the first round learns from the marks so far meanwhile
                started = " · round 1 is training on your marks"
                # polled until it ends, without opening its page over the one being reviewed
                wait = {
                    "group": group,
                    "change": data.annotations.last_change(group),
                    "time": time.time(),
                    "open": False,
                }
        except IceError as e:
            return no_update, no_update, no_update, str(e), no_update, no_update
        return selection, [], "images", status_text(group, teach.status(data, group)) + started, False, wait

    @app.callback(
        Output("teach-wait", "data"),
        Output("teach-poll", "disabled", allow_duplicate=True),
        Output("teach-status", "children", allow_duplicate=True),
        Input("review-saved", "data"),
        State("selection", "data"),
        prevent_initial_call=True,
    )
    def train_after_confirm(saved, selection):
        """A confirmed page of the teach loop trains the next round; its first page opens when a
        round that learned from that page ends."""
        selection = selection or {}
        if not saved or saved.get("error") or saved.get("change") is None or selection.get("source") != SOURCE:
            raise PreventUpdate
        group = group_name(selection.get("group"))
        try:
            how = teach.start(data, group)
        except IceError as e:
            return None, no_update, str(e)
        note = "next round training" if how == "started" else "a round is training: one more will follow"
        return {"group": group, "change": saved["change"], "time": time.time()}, False, f"{group!r}: {note}…"

    @app.callback(
        Output("teach-status", "children"),
        Output("teach-progress", "value"),
        Output("teach-progress", "className"),
        Output("teach-poll", "disabled"),
        Output("selection", "data", allow_duplicate=True),
        Output("excluded", "data", allow_duplicate=True),
        Output("teach-wait", "data", allow_duplicate=True),
        Output("map", "figure", allow_duplicate=True),
        Input("teach-poll", "n_intervals"),
        Input("group-name", "value"),
        State("teach-wait", "data"),
        State("grid-page-size", "data"),
        State("teach-overlay", "value"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def poll(_n, group, wait, size, overlay_on, clustering, drill):
        group = group_name(group)
        if not group:
            return "", 0, "teach-progress hidden", True, no_update, no_update, no_update, no_update
        try:
            state = teach.status(data, group)
        except IceError as e:
            return str(e), 0, "teach-progress hidden", True, no_update, no_update, no_update, no_update
        training = state["training"]
        value = (training.get("step", 0) / max(training.get("steps", 1), 1)) if training else 0
        bar = "teach-progress" if training else "teach-progress hidden"
        selection = excluded = figure = no_update
        last = state["last"]
        pending = bool(wait) and wait.get("group") == group
        if pending and last and last["change"] >= wait["change"] and not training:
            try:  # the round that learned from the confirmed page is done: its first page
                if wait.get("open", True):
                    selection, excluded = page(data, group, "best", page_size(size)), []
            except IceError:
                pass
            if overlay_on:
                figure = overlay_for(data, group, map_key(clustering, drill))
            pending = False
        elif pending and (state["error"] or (not training and time.time() - wait.get("time", 0) > START_S)):
            pending = False  # the round failed, or its process never started
        new_wait = no_update if pending or not wait else None
        waiting = bool(training) or pending  # a round asked for may not have started yet
        return (status_text(group, state), value, bar, not waiting, selection, excluded, new_wait, figure)

    @app.callback(
        Output("teach-status", "children", allow_duplicate=True),
        Output("review-refresh", "data", allow_duplicate=True),
        Output("groups-changed", "data", allow_duplicate=True),
        Output("map", "figure", allow_duplicate=True),
        Input("teach-undo", "n_clicks"),
        State("group-name", "value"),
        State("review-refresh", "data"),
        State("groups-changed", "data"),
        State("teach-overlay", "value"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def undo_round(_clicks, group, refresh, changed, overlay_on, clustering, drill):
        group = group_name(group)
        try:
            result = teach.undo_round(data, group)
        except IceError as e:
            return str(e), no_update, no_update, no_update
        marks = f"and {result['changes']} change(s) of its marks" if result["changes"] else "(no marks to undo)"
        figure = overlay_for(data, group, map_key(clustering, drill)) if overlay_on else no_update
        return (
            f"Undid round {result['round']} {marks}. " + status_text(group, teach.status(data, group)),
            (refresh or 0) + 1,
            (changed or 0) + 1,
            figure,
        )

    @app.callback(
        Output("map", "figure", allow_duplicate=True),
        Output("teach-status", "children", allow_duplicate=True),
        Output("teach-overlay", "value"),
        Input("teach-overlay", "value"),
        Input("clustering", "value"),
        Input("drill", "data"),
        State("group-name", "value"),
        prevent_initial_call=True,
    )
    def show_scores(overlay_on, clustering, drill, group):
        """The box draws or takes off the scores. Another clustering or a drill-down draws a
        new map without them, so the box is cleared and the map left alone: a patch sent now
        could land on the old map before the new one and break it."""
        if ctx.triggered_id in ("clustering", "drill"):
            return no_update, no_update, []
        key = map_key(clustering, drill)
        try:
            if overlay_on and not teach.status(data, group_name(group))["rounds"]:
                return (
                    overlay_for(data, "", key),
                    "no scores yet: the overlay shows once a round has trained",
                    no_update,
                )
            return overlay_for(data, group if overlay_on else "", key), no_update, no_update
        except IceError as e:
            return no_update, str(e), no_update
