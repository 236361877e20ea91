"""The clusters panel: names (saved one row at a time), "Show" a cluster, re-cluster with
another K, and the export link of the clustering on screen."""

from __future__ import annotations

from urllib.parse import quote

from dash import ALL, MATCH, Input, Output, Patch, State, ctx, no_update
from dash.exceptions import PreventUpdate

from embeddings.errors import IceError

from ..clusterings import recluster
from ..components import cluster_cards
from ..data import RunData
from ..export import export_filename
from ..figures import cluster_label, legend_label
from ..layout import clustering_label, clustering_options


def rename(data: RunData, clustering: str, cluster: int, name: str | None) -> str:
    """Store one cluster's name; return the status text."""
    c = data.clustering(clustering)
    if not 0 <= cluster < c.k:
        raise IceError(f"cluster {cluster}: this clustering has clusters 0..{c.k - 1}")
    stored = data.annotations.set_cluster_name(clustering, cluster, name)
    return f"Saved as {stored!r}." if stored else "Name removed."


def legend_patch(data: RunData, clustering: str, clusters) -> Patch:
    """A Patch that relabels the given clusters' legend entries with their stored names."""
    c = data.clustering(clustering)
    names = data.names_to_draw(clustering)
    patch = Patch()
    for cluster in clusters:
        patch["data"][int(cluster)]["name"] = legend_label(int(cluster), names, int(c.sizes[cluster]))
    return patch


def export_href(clustering: str) -> tuple[str, str]:
    return f"/export.csv?clustering={quote(clustering)}", export_filename(clustering)


def register(app, data: RunData) -> None:
    @app.callback(Output("clusters-panel", "children"), Input("clustering", "value"))
    def show_clusters(clustering):
        c = data.clustering(clustering)
        return cluster_cards(c, data.names_to_draw(clustering), data.read_only, data.version)

    @app.callback(Output({"type": "cluster-saved", "index": MATCH}, "children"),
                  Input({"type": "cluster-name", "index": MATCH}, "value"),
                  State("clustering", "value"), prevent_initial_call=True)
    def save_name(name, clustering):
        # One cluster's input, one row: another tab's names are never overwritten. The
        # input and this output are rendered together, so rendering does not call this.
        try:
            return rename(data, clustering, int(ctx.triggered_id["index"]), name)
        except IceError as e:
            return str(e)

    @app.callback(Output("map", "figure", allow_duplicate=True),
                  Input({"type": "cluster-saved", "index": ALL}, "children"),
                  State("clustering", "value"), prevent_initial_call=True)
    def update_legend(_saved, clustering):
        # Read-only: relabels the legend entries of the clusters just renamed. A freshly
        # rendered panel triggers this with empty statuses, which change nothing.
        renamed = [ctx.triggered_prop_ids[t["prop_id"]]["index"] for t in ctx.triggered if t["value"]]
        if not renamed:
            raise PreventUpdate
        return legend_patch(data, clustering, renamed)

    @app.callback(Output("selection", "data", allow_duplicate=True),
                  Output("excluded", "data", allow_duplicate=True),
                  Output("tabs", "value", allow_duplicate=True),
                  Input({"type": "show-cluster", "index": ALL}, "n_clicks"),
                  State("clustering", "value"), prevent_initial_call=True)
    def show_cluster(_clicks, clustering):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        cluster = int(ctx.triggered_id["index"])
        c = data.clustering(clustering)
        # which clustering: the grid keeps these images when the map switches to another
        title = f"{cluster_label(cluster, data.names_to_draw(clustering))} of {clustering_label(clustering, c.k)}"
        return {"ids": c.members(cluster).tolist(), "title": title}, [], "images"

    @app.callback(Output("clustering", "options"), Output("clustering", "value"),
                  Output("recluster-status", "children"), Output("recluster-status", "title"),
                  Input("recluster", "n_clicks"), State("recluster-k", "value"),
                  running=[(Output("recluster", "disabled"), True, data.read_only)],  # 1M points: ~10 s
                  prevent_initial_call=True)
    def run_recluster(_clicks, k):
        try:
            c = recluster(data, k)
        except IceError as e:
            return no_update, no_update, str(e), str(e)  # the title: the whole line, which may be cut
        status = f"K={c.k} ready" + (f" (asked {k}: the mixture left {k - c.k} of its components without "
                                     "images)" if c.k < k else "")
        return clustering_options(data), c.key, status, status

    @app.callback(Output("export-link", "href"), Output("export-link", "download"),
                  Input("clustering", "value"))
    def point_export(clustering):
        return export_href(clustering)
