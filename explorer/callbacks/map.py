"""The map: the figure for the chosen clustering, the hover thumbnail, and lasso/box selection."""

from __future__ import annotations

import numpy as np
from dash import Input, Output, Patch, State, html, no_update
from dash.exceptions import PreventUpdate

from ..data import RunData
from ..figures import cluster_label, make_map_figure, point_ids
from ..routes import thumb_url

# Runs in the browser: a lasso around 100k points would otherwise send 100k point
# dicts to the server. This sends {curve: [point numbers]}, which the server turns into ids.
# No points (a lasso taken off the map by clear_lasso, or drawn over nothing) leaves the grid.
SELECTED_POINTS_JS = """
function(selected) {
    if (!selected || !selected.points || !selected.points.length) { return window.dash_clientside.no_update; }
    const byCurve = {};
    for (const p of selected.points) {
        (byCurve[p.curveNumber] = byCurve[p.curveNumber] || []).push(p.pointNumber);
    }
    return byCurve;
}
"""


# Runs in the browser, which alone knows the map's size and the box's: the hover thumbnail
# opens on the side that has room and needs the box moved least, and the box is moved along
# that side to stay whole inside the map (the pane cuts it off). Its arrow stays on the point:
# the box is moved by its own transform, not by the place it points at. It always opened to
# the right; then, near a corner, half of it was cut, the image too.
_PLACE = """
    const p = hover && hover.points && hover.points[0], map = document.getElementById('map');
    const place = () => {  // [side, the box's style]
        const tip = document.getElementById('map-tooltip'), gap = 14, w = map.clientWidth, h = map.clientHeight;
        const W = Math.max((tip && tip.offsetWidth) || 0, 120), H = Math.max((tip && tip.offsetHeight) || 0, 140);
        const x = (p.bbox.x0 + p.bbox.x1) / 2, y = (p.bbox.y0 + p.bbox.y1) / 2;
        const clamp = (v, lo, hi) => Math.max(lo, Math.min(v, Math.max(lo, hi)));
        const dy = clamp(y, H / 2, h - H / 2) - y, dx = clamp(x, W / 2, w - W / 2) - x;
        const sides = [  // [side, fits, how far the box moves], the side facing the map's middle first
            ...(x <= w / 2 ? [['right', x + gap + W <= w, dy], ['left', x - gap - W >= 0, dy]]
                           : [['left', x - gap - W >= 0, dy], ['right', x + gap + W <= w, dy]]),
            ['bottom', y + gap + H <= h, dx], ['top', y - gap - H >= 0, dx]];
        const fit = sides.filter(s => s[1]);
        const [side, , move] = (fit.length ? fit : sides).reduce((a, b) => (Math.abs(b[2]) < Math.abs(a[2]) ? b : a));
        const base = {right: ['0px', '-50%'], left: ['-100%', '-50%'], bottom: ['-50%', '0px'], top: ['-50%', '-100%']}[side];
        const across = side === 'right' || side === 'left';
        const tx = across ? base[0] : `calc(${base[0]} + ${move}px)`, ty = across ? `calc(${base[1]} + ${move}px)` : base[1];
        return [side, {transform: `translate(${tx}, ${ty})`}];
    };
    const no = window.dash_clientside.no_update;
"""
# As the mouse arrives, at the last box's size: the box moves to the new point at once (it had
# waited for the server's thumbnail, and showed the new one at the old point for a moment).
TOOLTIP_PLACE_JS = "function(hover) {" + _PLACE + """
    if (!p || !p.bbox || !map) { return [no, no, no]; }
    const [direction, style] = place();
    return [direction, p.bbox, style];
}"""
# Once the new box is drawn, at its own size (a long path makes it taller than the last).
TOOLTIP_REPLACE_JS = "function(_children, hover) {" + _PLACE + """
    if (p && p.bbox && map) {
        requestAnimationFrame(() => {
            const [direction, style] = place();
            window.dash_clientside.set_props('map-tooltip', {direction, style});
        });
    }
    return no;
}"""


def event_image_id(data: RunData, clustering: str, event: dict | None) -> int | None:
    """The image under a hover or click event, or None."""
    points = (event or {}).get("points") or []
    if not points or "curveNumber" not in points[0]:
        return None
    ids = point_ids(data.clustering(clustering), points[0]["curveNumber"], [points[0]["pointNumber"]])
    return int(ids[0]) if len(ids) else None


def selection_from_points(data: RunData, clustering: str, by_curve: dict) -> dict:
    """The grid selection from {curve: [point numbers]} of a lasso or box selection."""
    c = data.clustering(clustering)
    parts = [point_ids(c, int(curve), points) for curve, points in (by_curve or {}).items()]
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return {"ids": ids.tolist(), "title": "Selected on the map", "source": "map"}


def unselected_patch(k: int) -> Patch:
    """A Patch that removes a lasso or box selection from the map: its outline and the
    dimming of the points outside it (on the k cluster traces)."""
    patch = Patch()
    patch["layout"]["selections"] = []
    for c in range(k):
        patch["data"][c]["selectedpoints"] = None
    return patch


def tooltip_children(data: RunData, image_id: int, clustering: str) -> list:
    c = data.clustering(clustering)
    names = data.names_to_draw(clustering)
    return [
        html.Img(src=thumb_url(image_id, data.version), alt=f"image {image_id}", className="tooltip-img"),
        html.Div(str(data.path[image_id]), className="tooltip-path"),
        html.Div(cluster_label(int(c.cluster[image_id]), names), className="tooltip-cluster"),
    ]


def register(app, data: RunData) -> None:
    @app.callback(Output("map", "figure"), Input("clustering", "value"))
    def draw_map(clustering: str):
        c = data.clustering(clustering)
        return make_map_figure(data.x, data.y, c, data.names_to_draw(clustering))

    @app.callback(Output("map-tooltip", "show"), Output("map-tooltip", "children"),
                  Input("map", "hoverData"), State("clustering", "value"))
    def show_tooltip(hover, clustering: str):
        image_id = event_image_id(data, clustering, hover)
        if image_id is None or "bbox" not in hover["points"][0]:
            return False, no_update
        return True, tooltip_children(data, image_id, clustering)  # placed by TOOLTIP_PLACE_JS

    app.clientside_callback(SELECTED_POINTS_JS, Output("map-points", "data"),
                            Input("map", "selectedData"), prevent_initial_call=True)
    app.clientside_callback(TOOLTIP_PLACE_JS, Output("map-tooltip", "direction"), Output("map-tooltip", "bbox"),
                            Output("map-tooltip", "style"), Input("map", "hoverData"), prevent_initial_call=True)
    app.clientside_callback(TOOLTIP_REPLACE_JS, Output("map-tooltip", "style", allow_duplicate=True),
                            Input("map-tooltip", "children"), State("map", "hoverData"), prevent_initial_call=True)

    @app.callback(Output("map", "figure", allow_duplicate=True),
                  Input("selection", "data"), State("clustering", "value"), prevent_initial_call=True)
    def clear_lasso(selection, clustering):
        """A grid filled from elsewhere (a cluster, a group, more like these) takes the map's
        lasso and dimming away: they showed a selection the grid no longer holds."""
        if (selection or {}).get("source") == "map":
            raise PreventUpdate
        return unselected_patch(data.clustering(clustering).k)

    @app.callback(Output("selection", "data", allow_duplicate=True),
                  Output("excluded", "data", allow_duplicate=True),
                  Output("tabs", "value", allow_duplicate=True),
                  Input("map-points", "data"), State("clustering", "value"),
                  prevent_initial_call=True)
    def select_on_map(by_curve, clustering):
        if by_curve is None:
            raise PreventUpdate
        return selection_from_points(data, clustering, by_curve), [], "images"
