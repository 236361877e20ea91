"""Find more like these, and named groups: save the images shown (less those ticked off),
list, show and delete groups."""

from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from embeddings.errors import IceError

from ..components import group_rows
from ..data import RunData
from ..search import rank_like


def kept_ids(selection: dict | None, excluded: list | None) -> list[int]:
    """The images in the grid that were not ticked off, in grid order."""
    off = set(excluded or [])
    return [i for i in (selection or {}).get("ids") or [] if i not in off]


def more_like(data: RunData, selection: dict | None, excluded: list | None, top) -> dict:
    """The new selection: the `top` images most like the kept ones, best first. The ones
    ticked off are misfits: they are left out, not brought back (they came back ticked off)."""
    ids = kept_ids(selection, excluded)
    # the box sends None when it is empty or holds a number past its bounds
    if top is None or not 1 <= int(top) <= data.n:
        raise IceError(f"top: give a whole number from 1 to {data.n:,}")
    top = int(top)
    off = set(excluded or []).intersection((selection or {}).get("ids") or [])
    ranked, _scores = rank_like(data, ids, top + len(off))
    ranked = [i for i in ranked.tolist() if i not in off][:top]
    title = f"Most like the {len(ids):,} picked" + (f", less the {len(off):,} ticked off" if off else "")
    return {"ids": ranked, "title": title}


def save_group(data: RunData, name: str | None, selection: dict | None, excluded: list | None) -> str:
    """Save the kept images as (or into) a group; return the status line."""
    ids = kept_ids(selection, excluded)
    if not ids:
        raise IceError("nothing to save: the grid is empty or everything is ticked off")
    size = data.annotations.save_group(name or "", data.check_ids(ids))
    return f"Saved {len(ids):,} images to group {(name or '').strip()!r} ({size:,} in it now)."


def register(app, data: RunData) -> None:
    @app.callback(Output("selection", "data", allow_duplicate=True),
                  Output("excluded", "data", allow_duplicate=True),
                  Output("group-status", "children", allow_duplicate=True),
                  Input("more-like", "n_clicks"),
                  State("selection", "data"), State("excluded", "data"), State("more-top", "value"),
                  prevent_initial_call=True)
    def find_more(_clicks, selection, excluded, top):
        try:
            return more_like(data, selection, excluded, top), [], ""
        except IceError as e:
            return no_update, no_update, str(e)

    @app.callback(Output("group-status", "children", allow_duplicate=True),
                  Output("groups-changed", "data", allow_duplicate=True),
                  Input("save-group", "n_clicks"), Input("group-name", "n_submit"),
                  State("group-name", "value"), State("selection", "data"),
                  State("excluded", "data"), State("groups-changed", "data"),
                  prevent_initial_call=True)
    def save(_clicks, _submit, name, selection, excluded, changed):
        if not ctx.triggered[0]["value"]:
            raise PreventUpdate
        try:
            return save_group(data, name, selection, excluded), (changed or 0) + 1
        except IceError as e:
            return str(e), no_update

    @app.callback(Output("group-status", "children", allow_duplicate=True),
                  Input("selection", "data"), prevent_initial_call=True)
    def clear_status(_selection):
        return ""  # what it said was about the images shown before

    @app.callback(Output("groups-panel", "children"), Input("groups-changed", "data"))
    def list_groups(_changed):
        try:
            return group_rows(data.annotations.groups(), data.read_only)
        except IceError as e:  # a run rebuilt since the explorer started, a failing database
            return [html.Div(str(e), className="status")]

    @app.callback(Output("selection", "data", allow_duplicate=True),
                  Output("excluded", "data", allow_duplicate=True),
                  Output("tabs", "value", allow_duplicate=True),
                  Input({"type": "show-group", "index": ALL}, "n_clicks"), prevent_initial_call=True)
    def show_group(_clicks):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        name = ctx.triggered_id["index"]
        try:
            selection = {"ids": data.annotations.group_members(name).tolist(), "title": f"Group {name!r}"}
        except IceError as e:  # deleted in another tab, a run rebuilt since the explorer started
            selection = {"ids": [], "title": str(e)}
        return selection, [], "images"

    @app.callback(Output("groups-changed", "data", allow_duplicate=True),
                  Output("groups-status", "children"),
                  Input({"type": "delete-group", "index": ALL}, "submit_n_clicks"),
                  State("groups-changed", "data"), prevent_initial_call=True)
    def delete(_clicks, changed):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        name = ctx.triggered_id["index"]
        try:
            data.annotations.delete_group(name)
        except IceError as e:  # a run rebuilt since the explorer started, a locked database
            return no_update, str(e)
        return (changed or 0) + 1, f"Deleted group {name!r}."
