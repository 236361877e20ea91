"""The page, from small component functions. Callbacks fill the parts marked below."""

from __future__ import annotations

from dash import dcc, html

from embeddings.errors import IceError

from .clusterings import MAX_K, list_clusterings
from .data import RUN_CLUSTERING, RunData

GRID_PAGE = 48  # images per grid page
MORE_LIKE_TOP = 200  # how many images "More like these" shows by default
READ_ONLY = "Read-only: names, groups and re-clusterings cannot be changed here."
GRAPH_CONFIG = {
    "scrollZoom": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["autoScale2d", "toImage"],
}


def clustering_options(data: RunData) -> list[dict]:
    """The clusterings to choose from. One that cannot be read is listed, greyed out, with
    the reason on hover, rather than keeping the page from loading."""
    options = []
    for key in list_clusterings(data.run_dir):
        try:
            k = data.clustering(key).k
        except IceError as e:
            options.append({"label": f"{key} (unreadable)", "value": key, "disabled": True, "title": str(e)})
            continue
        options.append({"label": clustering_label(key, k), "value": key})
    return options


def clustering_label(key: str, k: int) -> str:
    """How the page names a clustering: "K=10 (the job's)", "K=12", "K=8 (asked 59)"."""
    if key == RUN_CLUSTERING:
        return f"K={k} (the job's)"
    # the mixture may leave components empty: K=59 asked, 8 clusters
    return f"K={k}" if key == f"k{k}" else f"K={k} (asked {key[1:]})"


def rebuilt_badge(data: RunData) -> list:
    """A badge when `ice embed --force` rebuilt the run since the explorer started (the page
    shows the old run, and saving is refused), else nothing."""
    try:
        data.check_unchanged()
    except IceError as e:
        return [html.Span("run rebuilt: restart ice explore", id="rebuilt-badge", className="badge", title=str(e))]
    return []


def topbar(data: RunData) -> html.Header:
    return html.Header(className="topbar", children=[
        html.Div(className="brand", children=[
            html.Span("ICE", className="logo"),
            html.Span(data.run_dir.name, className="run-name", title=str(data.run_dir)),
            html.Span(f"{data.n:,} images", className="muted"),
            *([html.Span("read-only", id="read-only-badge", className="badge", title=READ_ONLY)]
              if data.read_only else []),
            *rebuilt_badge(data),
        ]),
        html.Div(className="controls", children=[
            html.Label("Clusters", htmlFor="clustering", className="muted"),
            dcc.Dropdown(id="clustering", options=clustering_options(data), value=RUN_CLUSTERING,
                         clearable=False, searchable=False, className="clustering-dropdown"),
            dcc.Input(id="recluster-k", type="number", min=2, max=min(MAX_K, data.n), step=1,
                      placeholder="K", className="k-input", disabled=data.read_only),
            html.Button("Re-cluster", id="recluster", className="button",
                        disabled=data.read_only,
                        title="Cluster again with this K, as the job did before self-labelling; the map keeps its layout"),
            html.Span(id="recluster-status", className="status"),
            html.A("Download CSV", id="export-link", className="button primary",
                   href=f"/export.csv?clustering={RUN_CLUSTERING}", download="clusters.csv"),
        ]),
    ])


def map_pane() -> html.Section:
    return html.Section(className="map-pane", children=[
        # its own height, not 100%: that overrode .map's 24 px for the hint, and the bottom of the
        # map, legend included, lay under the hint, out of reach of the mouse
        dcc.Graph(id="map", config=GRAPH_CONFIG, clear_on_unhover=True, className="map",
                  style={"height": "calc(100% - 24px)"}),
        dcc.Tooltip(id="map-tooltip", direction="right", className="map-tooltip"),
        html.Div("Lasso or box-select to fill the grid · click a point to see its neighbours · "
                 "scroll to zoom · click the legend to hide a cluster", className="hint"),
    ])


def images_tab(data: RunData) -> html.Div:
    return html.Div(className="tab-body", children=[
        html.Div(id="detail"),
        html.Div(className="toolbar", children=[
            html.Div(id="selection-title", className="selection-title",
                     children="Select points on the map, or pick a cluster or group."),
            html.Div(className="toolbar-row", children=[
                html.Button("More like these", id="more-like", className="button",
                            title="Rank every image by similarity to the images shown "
                                  "(those you ticked off are left out)"),
                html.Label(title="how many images to show", className="inline-label", children=[
                    "top ", dcc.Input(id="more-top", type="number", min=1, max=data.n, step=1,
                                      value=min(MORE_LIKE_TOP, data.n), className="k-input")]),
            ]),
            html.Div(className="toolbar-row", children=[
                dcc.Input(id="group-name", type="text", placeholder="Group name",
                          debounce=False, className="name-input", disabled=data.read_only,
                          maxLength=200),
                html.Button("Save group", id="save-group", className="button primary",
                            disabled=data.read_only,
                            title="Save the images shown, except those ticked off"),
            ]),
            html.Div(id="group-status", className="status"),
        ]),
        html.Div(id="grid", className="grid"),
        html.Div(className="pager", children=[
            html.Button("‹ Prev", id="page-prev", className="button small"),
            html.Span(id="page-info", className="muted"),
            html.Button("Next ›", id="page-next", className="button small"),
        ]),
    ])


def side_pane(data: RunData) -> html.Aside:
    return html.Aside(className="side", children=[
        dcc.Tabs(id="tabs", value="images", className="tabs", children=[
            dcc.Tab(label="Images", value="images", children=images_tab(data)),
            dcc.Tab(label="Clusters", value="clusters", children=html.Div(className="tab-body", children=[
                html.Div(id="rename-status", className="status",
                         children=READ_ONLY if data.read_only else
                         "Type a name and press Enter; names are saved in the run."),
                html.Div(id="clusters-panel"),
            ])),
            dcc.Tab(label="Groups", value="groups", children=html.Div(className="tab-body", children=[
                html.Div(id="groups-status", className="status"),
                html.Div(id="groups-panel"),
            ])),
        ]),
    ])


def stores() -> list[dcc.Store]:
    """Client state: image ids only, never embeddings or pixels."""
    return [
        dcc.Store(id="selection", data={"ids": [], "title": ""}),  # the images in the grid
        dcc.Store(id="excluded", data=[]),  # ids ticked off in the grid
        dcc.Store(id="page", data=0),
        dcc.Store(id="map-points", data=None),  # {trace: [point numbers]} of a map selection
        dcc.Store(id="focus", data=None),  # the image shown large, with its neighbours
        dcc.Store(id="detail-for", data=None),  # the clustering whose map holds the card's rings
        dcc.Store(id="groups-changed", data=0),  # bumped when a group is saved or deleted
    ]


def make_layout(data: RunData) -> html.Div:
    """The whole page. Built per page load, so it shows the clusterings on disk now."""
    return html.Div(className="app" + (" read-only" if data.read_only else ""), children=[
        topbar(data),
        html.Main(className="main", children=[map_pane(), side_pane(data)]),
        *stores(),
    ])
