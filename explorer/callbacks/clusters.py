"""The clusters panel: names (saved one row at a time), "Show" a cluster, "Split" one into
sub-clusters on a map of their own (a drill-down, with a breadcrumb back), re-cluster with
another K, and the export link of the clustering on screen. Re-clusterings and drill-downs
run as jobs (explorer.jobs): the page polls their progress and stays usable meanwhile."""

from __future__ import annotations

from urllib.parse import quote

from dash import ALL, MATCH, Input, Output, Patch, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from ice.errors import IceError

from ..clusterings import recluster
from ..components import cluster_cards
from ..data import RunData
from ..drill import DRILL_K, split, warm_up
from ..export import export_filename
from ..figures import cluster_label, legend_label
from ..layout import clustering_label, clustering_options
from ..review import review_list
from .map import map_key

IDLE = {"id": None}  # the job store when no job runs


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


def map_title(data: RunData, clustering: str, drill: dict | None) -> str:
    """How the grid names the map on screen: "K=10 (the job's)", or the breadcrumb's last step."""
    path = (drill or {}).get("path") or []
    return path[-1]["label"] if path else clustering_label(clustering, data.clustering(clustering).k)


def breadcrumb(data: RunData, clustering: str, drill: dict | None) -> list:
    """The map's way back: the clustering, then each drill-down; every step but the last a button."""
    path = (drill or {}).get("path") or []
    if not path:
        return []
    steps = [clustering_label(clustering, data.clustering(clustering).k)] + [p["label"] for p in path]
    crumbs = []
    for i, label in enumerate(steps):
        if i:
            crumbs.append(html.Span("›", className="muted"))
        crumbs.append(
            html.Button(label, id={"type": "crumb", "index": i}, className="crumb", n_clicks=0)
            if i < len(steps) - 1
            else html.Span(label, className="crumb current")
        )
    return crumbs


def start_split(data: RunData, parent: str, ids, k, label: str) -> dict:
    """Start a drill-down job; the job store's value."""
    k = DRILL_K if k is None else k
    job = data.jobs.start(lambda report: split(data, parent, ids, k, report).key, f"Splitting {label}")
    return {"id": job, "kind": "drill", "label": f"{label} (k={k})", "doing": f"Splitting {label} (k={k})"}


def register(app, data: RunData) -> None:
    @app.callback(Output("job", "data", allow_duplicate=True), Input("tabs", "value"), prevent_initial_call=True)
    def warm_drill(tab):
        if tab == "clusters":
            warm_up()
        raise PreventUpdate

    @app.callback(Output("clusters-panel", "children"), Input("clustering", "value"), Input("drill", "data"))
    def show_clusters(clustering, drill=None):
        key = map_key(clustering, drill)
        c = data.clustering(key)
        return cluster_cards(c, data.names_to_draw(key), data.read_only, data.version, data.embeddings)

    @app.callback(
        Output({"type": "cluster-saved", "index": MATCH}, "children"),
        Input({"type": "cluster-name", "index": MATCH}, "value"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def save_name(name, clustering, drill=None):
        # One cluster's input, one row: another tab's names are never overwritten. The
        # input and this output are rendered together, so rendering does not call this.
        try:
            return rename(data, map_key(clustering, drill), int(ctx.triggered_id["index"]), name)
        except IceError as e:
            return str(e)

    @app.callback(
        Output("map", "figure", allow_duplicate=True),
        Input({"type": "cluster-saved", "index": ALL}, "children"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def update_legend(_saved, clustering, drill=None):
        # Read-only: relabels the legend entries of the clusters just renamed. A freshly
        # rendered panel triggers this with empty statuses, which change nothing.
        renamed = [ctx.triggered_prop_ids[t["prop_id"]]["index"] for t in ctx.triggered if t["value"]]
        if not renamed:
            raise PreventUpdate
        return legend_patch(data, map_key(clustering, drill), renamed)

    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("excluded", "data", allow_duplicate=True),
        Output("tabs", "value", allow_duplicate=True),
        Input({"type": "show-cluster", "index": ALL}, "n_clicks"),
        State("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def show_cluster(_clicks, clustering, drill=None):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        cluster = int(ctx.triggered_id["index"])
        key = map_key(clustering, drill)
        c = data.clustering(key)
        # which clustering: the grid keeps these images when the map switches to another
        title = f"{cluster_label(cluster, data.names_to_draw(key))} of {map_title(data, clustering, drill)}"
        return review_list(c.members(cluster), title, clustering=key), [], "images"

    @app.callback(Output("breadcrumb", "children"), Input("drill", "data"), State("clustering", "value"))
    def show_breadcrumb(drill, clustering):
        return breadcrumb(data, clustering, drill)

    @app.callback(
        Output("drill", "data", allow_duplicate=True),
        Input({"type": "crumb", "index": ALL}, "n_clicks"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def go_back(_clicks, drill):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        path = (drill or {}).get("path") or []
        return {"path": path[: int(ctx.triggered_id["index"])]}

    @app.callback(
        Output("drill", "data", allow_duplicate=True),
        Input("clustering", "value"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def leave_drill(_clustering, drill):
        if not (drill or {}).get("path"):
            raise PreventUpdate  # the map draws once
        return {"path": []}

    @app.callback(
        Output("job", "data", allow_duplicate=True),
        Output("job-status", "children", allow_duplicate=True),
        Input({"type": "split-cluster", "index": ALL}, "n_clicks"),
        Input("drill-list", "n_clicks"),
        State("drill-k", "value"),
        State("clustering", "value"),
        State("drill", "data"),
        State("selection", "data"),
        State("job", "data"),
        prevent_initial_call=True,
    )
    def drill_down(_cards, _list, k, clustering, drill, selection, job):
        if not ctx.triggered or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        if (job or {}).get("id"):
            return no_update, "Wait: another job is running."
        key = map_key(clustering, drill)
        try:
            if ctx.triggered_id == "drill-list":
                ids, label = (selection or {}).get("ids") or [], (selection or {}).get("title") or "the selection"
                label = label.split(" · ")[0]
            else:
                cluster = int(ctx.triggered_id["index"])
                ids = data.clustering(key).members(cluster)
                label = cluster_label(cluster, data.names_to_draw(key))
            job = start_split(data, key, ids, k, label)
            return job, f"{job['doing']}…"
        except IceError as e:
            return no_update, str(e)

    @app.callback(
        Output("job", "data", allow_duplicate=True),
        Output("job-status", "children", allow_duplicate=True),
        Input("recluster", "n_clicks"),
        State("recluster-k", "value"),
        State("job", "data"),
        prevent_initial_call=True,
    )
    def run_recluster(_clicks, k, job):
        if (job or {}).get("id"):
            return no_update, "Wait: another job is running."
        job_id = data.jobs.start(lambda report: _recluster(data, k, report), f"Re-clustering with K={k}")
        doing = f"Re-clustering with K={k}"
        return {"id": job_id, "kind": "recluster", "doing": doing, "k": k}, f"{doing}…"

    @app.callback(Output("job-poll", "disabled"), Output("recluster", "disabled"), Input("job", "data"))
    def watch_job(job):
        running = bool((job or {}).get("id"))
        return not running, running or data.read_only

    @app.callback(
        Output("job-status", "children"),
        Output("job-status", "title"),
        Output("job", "data"),
        Output("drill", "data"),
        Output("clustering", "options"),
        Output("clustering", "value"),
        Input("job-poll", "n_intervals"),
        State("job", "data"),
        State("drill", "data"),
        prevent_initial_call=True,
    )
    def poll_job(_n, job, drill):
        if not (job or {}).get("id"):
            raise PreventUpdate
        status = data.jobs.status(job["id"])
        if status is None:  # another server process runs it
            return "Working…", "", no_update, no_update, no_update, no_update
        if not status["done"]:
            text = f"{job['doing']}: {status['stage']}… {status['seconds']:.0f} s"
            return text, text, no_update, no_update, no_update, no_update
        if status["error"]:
            return status["error"], status["error"], IDLE, no_update, no_update, no_update
        if job["kind"] == "drill":
            path = [*((drill or {}).get("path") or []), {"key": status["result"], "label": job["label"]}]
            text = f"Split {job['label']} in {status['seconds']:.1f} s"
            return text, text, IDLE, {"path": path}, no_update, no_update
        c, k = status["result"], job["k"]
        text = f"K={c.k} ready in {status['seconds']:.1f} s" + (
            f" (asked {k}: the mixture left {k - c.k} of its components without images)" if c.k < k else ""
        )
        return text, text, IDLE, no_update, clustering_options(data), c.key

    @app.callback(Output("export-link", "href"), Output("export-link", "download"), Input("clustering", "value"))
    def point_export(clustering):
        return export_href(clustering)


def _recluster(data: RunData, k, report):
    report("fitting")
    return recluster(data, k)
