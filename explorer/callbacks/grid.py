"""The detail card of one image, with its nearest neighbours ringed on the map. (The grid
itself is assets/review.js, with callbacks/review.py.)"""

from __future__ import annotations

from dash import ALL, ClientsideFunction, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from ice.errors import IceError

from ..components import detail_card
from ..data import RunData
from ..figures import highlight_patch
from ..search import neighbours
from .map import event_image_id, map_key

NEIGHBOURS = 12  # neighbours shown for the focused image


def clicked_index(value_key: str = "index"):
    """The pattern-matching index that a real click triggered, or PreventUpdate.

    New components (a re-rendered card) also trigger callbacks, with n_clicks 0."""
    if not ctx.triggered_id or not ctx.triggered or not ctx.triggered[0]["value"]:
        raise PreventUpdate
    return ctx.triggered_id[value_key]


def register(app, data: RunData) -> None:
    # the detail card opens at the top of the panel: show it
    app.clientside_callback(
        ClientsideFunction("grid", "showDetail"),
        Output("detail", "className"),
        Input("focus", "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("focus", "data"),
        Input({"type": "neighbour", "index": ALL}, "n_clicks"),
        Input({"type": "detail-close", "index": ALL}, "n_clicks"),
        Input("map", "clickData"),
        Input("clustering", "value"),
        Input("drill", "data"),
        prevent_initial_call=True,
    )
    def set_focus(_neighbours, _close, click, clustering, drill):
        if ctx.triggered_id in ("clustering", "drill"):  # the card names the image's cluster in the old one
            return None
        if ctx.triggered_id == "map":
            image_id = event_image_id(data, map_key(clustering, drill), click)
            if image_id is None:
                raise PreventUpdate
            return image_id
        image_id = clicked_index()
        return None if ctx.triggered_id["type"] == "detail-close" else int(image_id)

    @app.callback(
        Output("detail", "children"),
        Output("map", "figure", allow_duplicate=True),
        Output("detail-for", "data"),
        Input("focus", "data"),
        State("clustering", "value"),
        State("detail", "children"),
        State("detail-for", "data"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def show_detail(image_id, clustering, shown, drawn_for, drill=None):
        """The card and its rings; `drawn_for` is the map (clustering or drill-down) the rings
        were put on."""
        clustering = map_key(clustering, drill)
        if image_id is None:
            if not shown:  # nothing to close (Dash also calls this as the page loads)
                raise PreventUpdate
            if drawn_for != clustering:  # closed by a new clustering, whose new map has no rings:
                return [], no_update, None  # a patch by its trace numbers could land on the old map
            return [], highlight_patch(data.clustering(clustering), *data.map_xy(clustering), []), None
        c = data.clustering(clustering)
        (image_id,) = data.check_ids([image_id])
        try:
            near, _scores = neighbours(data, int(image_id), NEIGHBOURS)
        except IceError as e:  # a damaged index: say so where the neighbours would be
            rings = highlight_patch(c, *data.map_xy(clustering), [image_id])
            return html.Div(str(e), className="status"), rings, clustering
        card = detail_card(
            int(image_id),
            str(data.path[image_id]),
            int(c.cluster[image_id]),
            data.names_to_draw(clustering),
            near,
            data.version,
        )
        return card, highlight_patch(c, *data.map_xy(clustering), [image_id, *near]), clustering
