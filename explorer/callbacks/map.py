"""The map: the figure for the chosen clustering, the hover thumbnail, and lasso/box selection."""

from __future__ import annotations

import threading

import numpy as np
from dash import ClientsideFunction, Input, Output, Patch, State, html, no_update
from dash.exceptions import PreventUpdate

from .. import atlas, density
from ..data import RUN_CLUSTERING, RunData
from ..figures import cluster_colors, cluster_label, make_map_figure, point_ids
from ..region import ids_in_region
from ..review import review_list
from ..routes import thumb_url


def map_key(clustering: str, drill: dict | None) -> str:
    """The key of the clustering the map shows: the drill-down at the end of the breadcrumb,
    else the clustering chosen."""
    path = (drill or {}).get("path") or []
    return path[-1]["key"] if path else clustering


def event_image_id(data: RunData, clustering: str, event: dict | None) -> int | None:
    """The image under a hover or click event on the map of `clustering` (a map_key), or None."""
    points = (event or {}).get("points") or []
    if not points or "curveNumber" not in points[0]:
        return None
    curve, point = points[0]["curveNumber"], points[0]["pointNumber"]
    c = data.clustering(clustering)
    if c.k + 2 <= curve < 2 * c.k + 2:  # the view's own points (density.detail) carry their ids
        image_id = points[0].get("customdata")
        return int(image_id) if isinstance(image_id, int) and 0 <= image_id < data.n else None
    ids = point_ids(c, curve, [point], density.drawn_mask(data.n))
    return int(ids[0]) if len(ids) else None


def selection_from_points(data: RunData, clustering: str, by_curve: dict) -> dict:
    """The grid selection from a lasso or box selection: its outline ({"lasso" or "box": ...,
    "hidden": [clusters]}, resolved against every image of the map), or {curve: [point
    numbers]} of the points plotly found in it."""
    c = data.clustering(clustering)
    if "lasso" in by_curve or "box" in by_curve:
        ids = ids_in_region(*data.map_xy(clustering), c.cluster, by_curve, by_curve.get("hidden") or [])
    else:
        drawn = density.drawn_mask(data.n)
        parts = [point_ids(c, int(curve), points, drawn) for curve, points in (by_curve or {}).items()]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return review_list(ids, "Selected on the map", source="map", clustering=clustering)


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
    @app.callback(Output("map", "figure"), Input("clustering", "value"), Input("drill", "data"))
    def draw_map(clustering: str, drill=None):
        key = map_key(clustering, drill)
        drawn = density.drawn_mask(data.n)
        fig = make_map_figure(*data.map_xy(key), data.clustering(key), data.names_to_draw(key), drawn)
        fig.update_layout(meta={"key": key})  # which map the browser's view and pictures are of
        return fig

    frames = {}  # (map key, hidden clusters) -> (the density's points_frame, images kept); the last only
    frames_lock = threading.Lock()

    def frame_of(key: str, hidden: tuple[int, ...]):
        """The density's points_frame of a map with some clusters hidden, and the images kept."""
        with frames_lock:
            frame, keep = frames.get((key, hidden), (None, None))
            if frame is None:
                c = data.clustering(key)
                frame = density.points_frame(*data.map_xy(key), c.cluster, cluster_colors(c.k), hidden)
                keep = ~np.isin(c.cluster, np.asarray(hidden, np.int32)) if hidden else None
                frames.clear()
                frames[(key, hidden)] = frame, keep
            return frame, keep

    if density.drawn_mask(data.n) is not None:
        density.warm_up(data.n)
        # the first map's frame, while the page loads (a second at 10M images)
        threading.Thread(target=frame_of, args=(RUN_CLUSTERING, ()), name="ice-density-frame", daemon=True).start()

    @app.callback(
        Output("map-density", "data"),
        Input("map-view", "data"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def draw_density(view, clustering, drill=None):
        """A large run's map draws a sample of its points: the density image of all of them, for
        the map's view, lies under them (assets/map.js)."""
        key = map_key(clustering, drill)
        if density.drawn_mask(data.n) is None:
            return None
        if not view or view.get("key") != key:
            raise PreventUpdate
        hidden = tuple(sorted(int(h) for h in view.get("hidden") or []))
        c = data.clustering(key)
        frame, keep = frame_of(key, hidden)
        image = density.render(frame, view)
        answer = {"key": key, "src": atlas.to_data_uri(image), "x": sorted(view["x"]), "y": sorted(view["y"])}
        tiles = data.tiles
        # the run's map (a drill-down has its own), zoomed in
        if tiles is not None and data.map_xy(key)[0] is data.x and density.zoomed(tiles, view):
            answer["points"] = density.detail(tiles, view, data.n, c.cluster, c.k, keep)
        return answer

    @app.callback(
        Output("map-atlas", "data"),
        Output("atlas-note", "children"),
        Input("map-view", "data"),
        Input("atlas", "value"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def draw_atlas(view, on, clustering, drill=None):
        """The pictures of the images in the map's view (assets/map.js lays them over it), or
        none, with the count, when the view holds too many. A view of a map no longer shown is
        left alone."""
        key = map_key(clustering, drill)
        if not on:
            return None, ""
        if not view or view.get("key") != key:
            raise PreventUpdate
        x, y = data.map_xy(key)
        c = data.clustering(key)
        image, count = atlas.render(
            x,
            y,
            data.pixels,
            c.cluster,
            cluster_colors(c.k),
            view,
            hidden=view.get("hidden") or [],
            ringed=view.get("ringed") or [],
            limit=atlas.ATLAS_MAX,
        )
        if image is None:
            return None, f"({count:,} in view: zoom in)"
        return {"key": key, "src": atlas.to_data_uri(image), "x": sorted(view["x"]), "y": sorted(view["y"])}, ""

    @app.callback(
        Output("map-tooltip", "show"),
        Output("map-tooltip", "children"),
        Input("map", "hoverData"),
        State("clustering", "value"),
        State("drill", "data"),
    )
    def show_tooltip(hover, clustering: str, drill=None):
        clustering = map_key(clustering, drill)
        image_id = event_image_id(data, clustering, hover)
        if image_id is None or "bbox" not in hover["points"][0]:
            return False, no_update
        return True, tooltip_children(data, image_id, clustering)  # placed by map.placeTooltip (assets/map.js)

    # in the browser (assets/map.js): the pixel ratio, the lasso's points, the tooltip's place
    app.clientside_callback(
        ClientsideFunction("map", "pixelRatio"), Output("map", "config"), Input("map", "id"), State("map", "config")
    )
    app.clientside_callback(ClientsideFunction("map", "watchView"), Output("map-view", "data"), Input("map", "figure"))
    app.clientside_callback(
        ClientsideFunction("map", "showDensity"), Output("map-density-drawn", "data"), Input("map-density", "data")
    )
    app.clientside_callback(
        ClientsideFunction("map", "showAtlas"),
        Output("map-atlas-drawn", "data"),
        Input("map-atlas", "data"),
    )
    app.clientside_callback(
        ClientsideFunction("map", "selectedPoints"),
        Output("map-points", "data"),
        Input("map", "selectedData"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("map", "placeTooltip"),
        Output("map-tooltip", "direction"),
        Output("map-tooltip", "bbox"),
        Output("map-tooltip", "style"),
        Input("map", "hoverData"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("map", "replaceTooltip"),
        Output("map-tooltip", "style", allow_duplicate=True),
        Input("map-tooltip", "children"),
        State("map", "hoverData"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("map", "figure", allow_duplicate=True),
        Input("selection", "data"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def clear_lasso(selection, clustering, drill=None):
        """A grid filled from elsewhere (a cluster, a group, more like these) takes the map's
        lasso and dimming away: they showed a selection the grid no longer holds."""
        if (selection or {}).get("source") == "map":
            raise PreventUpdate
        return unselected_patch(data.clustering(map_key(clustering, drill)).k)

    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("excluded", "data", allow_duplicate=True),
        Output("tabs", "value", allow_duplicate=True),
        Input("map-points", "data"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def select_on_map(by_curve, clustering, drill=None):
        if by_curve is None:
            raise PreventUpdate
        selection = selection_from_points(data, map_key(clustering, drill), by_curve)
        if not selection["ids"]:  # drawn over nothing: the grid keeps what it shows
            raise PreventUpdate
        return selection, [], "images"
