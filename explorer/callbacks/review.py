"""The review grid's callbacks: the list as the grid draws it, and saving or undoing a page.
The drawing and the marking are in the browser (assets/review.js)."""

from __future__ import annotations

from dash import ClientsideFunction, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from ice.errors import IceError

from ..data import RunData
from ..review import confirm_page, confirm_status, review_view
from .map import map_key


def register(app, data: RunData) -> None:
    @app.callback(
        Output("review-view", "data"),
        Output("selection-title", "children"),
        Input("selection", "data"),
        Input("group-name", "value"),
        Input("review-sort", "value"),
        Input("review-filter", "value"),
        Input("review-refresh", "data"),
        Input("groups-changed", "data"),
        Input("grid-page-size", "data"),
        State("clustering", "value"),
        State("drill", "data"),
    )
    def show_list(selection, group, sort, shown, _refresh, _changed, page_size, clustering, drill):
        # The marks changed (a confirm, an undo, a merge): an unfiltered list stays as it is; one
        # filtered by them ("not reviewed yet", ...) is drawn again without the pages confirmed,
        # its rest ranked again by the new marks under "most like the group".
        if ctx.triggered_id == "groups-changed" and (shown or "all") == "all":
            raise PreventUpdate
        try:
            page = int(page_size) if str(page_size or "").isdigit() else 0
            view = review_view(data, selection, group, sort or "list", shown or "all", map_key(clustering, drill), page)
        except IceError as e:  # a run rebuilt since the explorer started, an id not in the run
            view = review_view(data, None, None)
            return view, str(e)
        if view["empty"]:
            return view, "Select points on the map, or pick a cluster or group."
        return view, view["title"]

    @app.callback(Output("group-name", "value"), Input("selection", "data"), prevent_initial_call=True)
    def open_group(selection):
        """A list opened for a group (a group's own grid) names it in the group box."""
        if not selection or selection.get("group") is None:
            raise PreventUpdate
        return selection["group"]

    @app.callback(
        Output("review-saved", "data"),
        Output("groups-changed", "data", allow_duplicate=True),
        Input("review-confirm", "data"),
        State("groups-changed", "data"),
        prevent_initial_call=True,
    )
    def confirm(page, changed):
        if not page:
            raise PreventUpdate
        try:
            result = confirm_page(data, page.get("group"), page.get("in"), page.get("out"))
        except IceError as e:
            return {"nonce": page.get("nonce"), "error": True, "status": str(e)}, no_update
        status = confirm_status(page["group"], result, len(page.get("in") or []), len(page.get("out") or []))
        return {"nonce": page.get("nonce"), "change": result["change"], "status": status}, (changed or 0) + 1

    @app.callback(
        Output("review-saved", "data", allow_duplicate=True),
        Output("groups-changed", "data", allow_duplicate=True),
        Input("review-undo", "data"),
        State("groups-changed", "data"),
        prevent_initial_call=True,
    )
    def undo(request, changed):
        if not request:
            raise PreventUpdate
        if request.get("change") is None:  # the page had changed no mark: nothing was logged
            return {"status": "Undone: the page had changed no mark."}, no_update
        try:
            result = data.annotations.undo(request["group"], int(request["change"]))
        except IceError as e:
            return {"status": str(e)}, no_update
        return (
            {"status": f"Undone: group {request['group']!r} has {result['size']:,} in, {result['rejected']:,} out."},
            (changed or 0) + 1,
        )

    app.clientside_callback(
        ClientsideFunction("review", "show"),
        Output("review-drawn", "data"),
        Input("review-view", "data"),
        State("selection", "data"),
    )
    app.clientside_callback(
        ClientsideFunction("review", "redraw"),
        Output("review-drawn", "data", allow_duplicate=True),
        Input("tabs", "value"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("review", "saved"),
        Output("review-drawn", "data", allow_duplicate=True),
        Input("review-saved", "data"),
        prevent_initial_call=True,
    )
