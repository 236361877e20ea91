"""The image grid: pages of the selection, ticking images off, and the detail card of
one image with its nearest neighbours ringed on the map."""

from __future__ import annotations

import math

from dash import ALL, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from embeddings.errors import IceError

from ..components import detail_card, grid_tile
from ..data import RunData
from ..figures import highlight_patch
from ..layout import GRID_PAGE
from ..search import neighbours
from .map import event_image_id

NEIGHBOURS = 12  # neighbours shown for the focused image


def page_count(n_ids: int) -> int:
    return max(1, math.ceil(n_ids / GRID_PAGE))


def render_grid(data: RunData, selection: dict, page: int, excluded: list) -> tuple:
    """(tiles, page text, title, on the first page, on the last page) for one page of the
    selection; the last two disable the pager's buttons."""
    ids = (selection or {}).get("ids") or []
    if not ids:
        return [], "", "Select points on the map, or pick a cluster or group.", True, True
    pages = page_count(len(ids))
    page = min(max(page or 0, 0), pages - 1)
    shown = data.check_ids(ids[page * GRID_PAGE:(page + 1) * GRID_PAGE])
    off = set(excluded or [])
    tiles = [grid_tile(int(i), str(data.path[i]), int(i) in off, data.version) for i in shown]
    kept = len(ids) - len(off.intersection(ids))
    title = f"{selection.get('title') or 'Selection'} · {len(ids):,} images"
    if kept != len(ids):
        title += f" ({len(ids) - kept:,} ticked off)"
    return tiles, f"Page {page + 1} of {pages}", title, page == 0, page == pages - 1


def clicked_index(value_key: str = "index"):
    """The pattern-matching index that a real click triggered, or PreventUpdate.

    New components (a re-rendered grid) also trigger callbacks, with n_clicks 0."""
    if not ctx.triggered_id or not ctx.triggered or not ctx.triggered[0]["value"]:
        raise PreventUpdate
    return ctx.triggered_id[value_key]


def register(app, data: RunData) -> None:
    @app.callback(Output("grid", "children"), Output("page-info", "children"),
                  Output("selection-title", "children"),
                  Output("page-prev", "disabled"), Output("page-next", "disabled"),
                  Input("selection", "data"), Input("page", "data"), Input("excluded", "data"))
    def show_grid(selection, page, excluded):
        return render_grid(data, selection, page, excluded)

    # the detail card opens at the top of the panel, and a new page starts there: show it
    app.clientside_callback("""
        function(focus, page) {
            const body = document.getElementById('detail');
            const panel = body && body.closest('.tab-body');
            if (panel) { panel.scrollTop = 0; }
            return window.dash_clientside.no_update;
        }""", Output("detail", "className"), Input("focus", "data"), Input("page", "data"),
        prevent_initial_call=True)

    @app.callback(Output("page", "data"),
                  Input("page-prev", "n_clicks"), Input("page-next", "n_clicks"),
                  Input("selection", "data"), State("page", "data"), prevent_initial_call=True)
    def turn_page(_prev, _next, selection, page):
        if ctx.triggered_id == "selection":
            return 0
        last = page_count(len((selection or {}).get("ids") or [])) - 1
        step = 1 if ctx.triggered_id == "page-next" else -1
        return min(max((page or 0) + step, 0), last)

    @app.callback(Output("excluded", "data"),
                  Input({"type": "exclude", "index": ALL}, "n_clicks"), State("excluded", "data"),
                  prevent_initial_call=True)
    def tick_off(_clicks, excluded):
        image_id = clicked_index()
        excluded = list(excluded or [])
        return [i for i in excluded if i != image_id] if image_id in excluded else excluded + [image_id]

    @app.callback(Output("focus", "data"),
                  Input({"type": "tile", "index": ALL}, "n_clicks"),
                  Input({"type": "neighbour", "index": ALL}, "n_clicks"),
                  Input({"type": "detail-close", "index": ALL}, "n_clicks"),
                  Input("map", "clickData"), Input("clustering", "value"),
                  prevent_initial_call=True)
    def set_focus(_tiles, _neighbours, _close, click, clustering):
        if ctx.triggered_id == "clustering":  # the card names the image's cluster in the old one
            return None
        if ctx.triggered_id == "map":
            image_id = event_image_id(data, clustering, click)
            if image_id is None:
                raise PreventUpdate
            return image_id
        image_id = clicked_index()
        return None if ctx.triggered_id["type"] == "detail-close" else int(image_id)

    @app.callback(Output("detail", "children"), Output("map", "figure", allow_duplicate=True),
                  Output("detail-for", "data"),
                  Input("focus", "data"), State("clustering", "value"), State("detail", "children"),
                  State("detail-for", "data"), prevent_initial_call=True)
    def show_detail(image_id, clustering, shown, drawn_for):
        """The card and its rings; `drawn_for` is the clustering the rings were put on."""
        if image_id is None:
            if not shown:  # nothing to close (Dash also calls this as the page loads)
                raise PreventUpdate
            if drawn_for != clustering:  # closed by a new clustering, whose new map has no rings:
                return [], no_update, None  # a patch by its trace numbers could land on the old map
            return [], highlight_patch(data.clustering(clustering), data.x, data.y, []), None
        c = data.clustering(clustering)
        (image_id,) = data.check_ids([image_id])
        try:
            near, _scores = neighbours(data, int(image_id), NEIGHBOURS)
        except IceError as e:  # a damaged index: say so where the neighbours would be
            return html.Div(str(e), className="status"), highlight_patch(c, data.x, data.y, [image_id]), clustering
        card = detail_card(int(image_id), str(data.path[image_id]), int(c.cluster[image_id]),
                           data.names_to_draw(clustering), near, data.version)
        return card, highlight_patch(c, data.x, data.y, [image_id, *near]), clustering
