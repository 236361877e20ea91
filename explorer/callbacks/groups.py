"""Find more like these, and named groups: list them, open one as a grid (to remove images
from it, or review more into it), rename, merge, see a group's history and undo its last
change, delete. Pages are saved into groups by the review grid (callbacks/review.py)."""

from __future__ import annotations

import numpy as np
from dash import ALL, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from ice import teach_state
from ice.errors import IceError

from ..components import group_rows
from ..data import RunData
from ..review import group_name, review_list
from ..search import rank_like


def kept_ids(selection: dict | None, excluded: list | None) -> list[int]:
    """The images in the grid that were not ticked off, in grid order."""
    off = set(excluded or [])
    return [i for i in (selection or {}).get("ids") or [] if i not in off]


def more_like(data: RunData, selection: dict | None, excluded: list | None, top, group: str | None = None) -> dict:
    """The new list: the `top` images most like the group's images marked in (where the group
    box names a group that has some), else like the grid's images not ticked off; less like
    the images marked out of the group and those ticked off, which are misfits. Images the
    group already has a mark for, and those ticked off, are left out: it brings new ones."""
    # the box sends None when it is empty or holds a number past its bounds
    if top is None or not 1 <= int(top) <= data.n:
        raise IceError(f"top: give a whole number from 1 to {data.n:,}")
    top, group = int(top), group_name(group)
    marked_in, marked_out = data.annotations.marks(group) if group else (np.zeros(0, np.int64),) * 2
    ticked = data.check_ids(excluded or [])
    positives = marked_in if len(marked_in) else kept_ids(selection, excluded)
    negatives = np.union1d(marked_out, ticked)
    skip = set(np.concatenate([marked_in, negatives]).tolist())
    ranked, _scores = rank_like(data, positives, top + len(skip), negatives=negatives)
    ranked = [i for i in ranked.tolist() if i not in skip][:top]
    like = f"the {len(positives):,} in {group!r}" if len(marked_in) else f"the {len(positives):,} picked"
    title = f"Most like {like}" + (f", less the {len(negatives):,} out" if len(negatives) else "")
    return review_list(ranked, title)


def register(app, data: RunData) -> None:
    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("excluded", "data", allow_duplicate=True),
        Output("group-status", "children", allow_duplicate=True),
        Output("tabs", "value", allow_duplicate=True),
        Input("more-like", "n_clicks"),
        Input("more-like-key", "data"),
        State("selection", "data"),
        State("excluded", "data"),
        State("more-top", "value"),
        State("group-name", "value"),
        prevent_initial_call=True,
    )
    def find_more(_clicks, _key, selection, excluded, top, group):
        """The button, or the M key from any tab: the answer is shown in the Images tab."""
        try:
            return more_like(data, selection, excluded, top, group), no_update, "", "images"
        except IceError as e:
            return no_update, no_update, str(e), "images"

    @app.callback(
        Output("group-status", "children", allow_duplicate=True), Input("selection", "data"), prevent_initial_call=True
    )
    def clear_status(_selection):
        return ""  # what it said was about the images shown before

    @app.callback(Output("groups-panel", "children"), Input("groups-changed", "data"))
    def list_groups(_changed):
        try:
            groups = data.annotations.groups()
            return group_rows(groups, {name: data.annotations.history(name) for name in groups}, data.read_only)
        except IceError as e:  # a run rebuilt since the explorer started, a failing database
            return [html.Div(str(e), className="status")]

    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("excluded", "data", allow_duplicate=True),
        Output("tabs", "value", allow_duplicate=True),
        Input({"type": "show-group", "index": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def show_group(_clicks):
        """The group as a grid, its images marked out too (to be put back), reviewed into it."""
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        name = ctx.triggered_id["index"]
        try:
            marked_in, marked_out = data.annotations.marks(name)
            if not len(marked_in) and not len(marked_out):
                raise IceError(f"group {name!r}: no such group")
            selection = review_list(np.concatenate([marked_in, marked_out]), f"Group {name!r}", group=name)
        except IceError as e:  # deleted in another tab, a run rebuilt since the explorer started
            selection = review_list([], str(e))
        return selection, [], "images"

    @app.callback(
        Output("group-name", "value", allow_duplicate=True),
        Output("tabs", "value", allow_duplicate=True),
        Input({"type": "use-group", "index": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def use_group(_clicks):
        """Review the grid's list into this group: "add the current selection"."""
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        return ctx.triggered_id["index"], "images"

    @app.callback(
        Output("groups-changed", "data", allow_duplicate=True),
        Output("groups-status", "children"),
        Input({"type": "delete-group", "index": ALL}, "submit_n_clicks"),
        Input({"type": "rename-group", "index": ALL}, "value"),
        Input({"type": "merge-group", "index": ALL}, "value"),
        Input({"type": "undo-group", "index": ALL}, "n_clicks"),
        State("groups-changed", "data"),
        prevent_initial_call=True,
    )
    def edit_group(_delete, _rename, _merge, _undo, changed):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        name, action, value = ctx.triggered_id["index"], ctx.triggered_id["type"], ctx.triggered[0]["value"]
        notes = data.annotations
        try:
            if action == "delete-group":
                notes.delete_group(name)
                teach_state.forget_group(data.run_dir, name)  # its rounds learned from marks now gone
                text = f"Deleted group {name!r}."
            elif action == "rename-group":
                if group_name(value) == name:
                    raise PreventUpdate
                notes.rename_group(name, value)
                teach_state.move_group(data.run_dir, name, group_name(value))
                text = f"Renamed {name!r} to {group_name(value)!r}."
            elif action == "merge-group":
                result = notes.merge_groups(name, value)
                teach_state.forget_group(data.run_dir, name)
                text = f"Merged {name!r} into {value!r}: {result['size']:,} in, {result['rejected']:,} out."
            else:
                result = notes.undo(name)
                text = (
                    f"Undone change {result['undone']} of {name!r}: {result['size']:,} in, {result['rejected']:,} out."
                )
        except IceError as e:  # a run rebuilt since the explorer started, a locked database, a taken name
            return (changed or 0) + 1, str(e)
        return (changed or 0) + 1, text
