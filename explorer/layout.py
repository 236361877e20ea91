"""The page, from small component functions. Callbacks fill the parts marked below."""

from __future__ import annotations

import contextlib

from dash import dcc, html

from ice.errors import IceError

from .atlas import ATLAS_MAX
from .clusterings import MAX_K, list_clusterings
from .data import RUN_CLUSTERING, RunData
from .drill import DRILL_K, MAX_DRILL_K
from .figures import empty_map_figure
from .review import FILTERS, SORTS

GRID_PAGE = 48  # images per grid page, at first
TEACH_POLL_MS = 1000  # how often the page asks how a teach round is going, while one trains
PAGE_SIZES = (24, 48, 96, 192, "all")
SHORTCUTS = [
    ("← → ↑ ↓", "move"),
    ("Space", "preview the original, large"),
    ("X", "tick off (Shift: the range)"),
    ("A", "tick off the page, or put it all back"),
    ("I", "invert the page's ticks"),
    ("C", "clear the page's ticks"),
    ("Enter", "confirm the page into the group"),
    ("Z", "undo"),
    ("N / P", "next / previous page"),
    ("M", "more like these (from any tab)"),
    ("?", "this help"),
    ("Esc", "close"),
]
JOB_POLL_MS = 500  # how often the page asks how a running job is going
MORE_LIKE_TOP = 200  # how many images "More like these" shows by default
LEGEND_HINT = (
    "Lasso or box-select to fill the grid · click a point to see its neighbours · scroll to zoom · "
    "legend: click a cluster to hide it, double-click to show it alone (again: all)"
)
READ_ONLY = "Read-only: names, groups and re-clusterings cannot be changed here."
GRAPH_CONFIG = {
    "scrollZoom": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["autoScale2d", "toImage"],
    "plotGlPixelRatio": 1,  # WebGL pixels per screen pixel; callbacks.map sets a HiDPI screen's own
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
    return html.Header(
        className="topbar",
        children=[
            html.Div(
                className="brand",
                children=[
                    html.Span("ICE", className="logo"),
                    html.Span(data.run_dir.name, className="run-name", title=str(data.run_dir)),
                    html.Span(f"{data.n:,} images", className="muted"),
                    *(
                        [html.Span("read-only", id="read-only-badge", className="badge", title=READ_ONLY)]
                        if data.read_only
                        else []
                    ),
                    *rebuilt_badge(data),
                ],
            ),
            html.Div(
                className="controls",
                children=[
                    html.Label("Clusters", htmlFor="clustering", className="muted"),
                    dcc.Dropdown(
                        id="clustering",
                        options=clustering_options(data),
                        value=RUN_CLUSTERING,
                        clearable=False,
                        searchable=False,
                        className="clustering-dropdown",
                    ),
                    dcc.Input(
                        id="recluster-k",
                        type="number",
                        min=2,
                        max=min(MAX_K, data.n),
                        step=1,
                        placeholder="K",
                        className="k-input",
                        disabled=data.read_only,
                    ),
                    html.Button(
                        "Re-cluster",
                        id="recluster",
                        className="button",
                        disabled=data.read_only,
                        title="Cluster again with this K, as the job did before self-labelling; "
                        "the map keeps its layout",
                    ),
                    html.Span(id="job-status", className="status"),
                    dcc.Interval(id="job-poll", interval=JOB_POLL_MS, disabled=True),
                    html.A(
                        "Download CSV",
                        id="export-link",
                        className="button primary",
                        href=f"/export.csv?clustering={RUN_CLUSTERING}",
                        download="clusters.csv",
                    ),
                ],
            ),
        ],
    )


def original_viewer() -> html.Div:
    """An image at its own size, from its file, beside the working-size pixels the job kept:
    opened from the detail card, drawn by assets/viewer.js."""
    return html.Div(
        id="original-view",
        className="original-view",
        children=[
            html.Div(
                className="original-pair",
                children=[
                    html.Figure([html.Img(id="original-img", alt="original"), html.Figcaption(id="original-caption")]),
                    html.Figure(
                        [html.Img(id="working-img", alt="working size"), html.Figcaption(id="working-caption")]
                    ),
                ],
            ),
            html.Div("Esc or a click closes", className="muted"),
        ],
    )


def map_pane() -> html.Section:
    return html.Section(
        className="map-pane",
        children=[
            # its own height, not 100%: that overrode .map's 24 px for the hint, and the bottom of the
            # map, legend included, lay under the hint, out of reach of the mouse
            html.Div(id="breadcrumb", className="breadcrumb"),
            dcc.Graph(
                id="map",
                figure=empty_map_figure(),
                config=GRAPH_CONFIG,
                clear_on_unhover=True,
                className="map",
                style={"height": "calc(100% - 24px)"},
            ),
            dcc.Tooltip(id="map-tooltip", direction="right", className="map-tooltip"),
            html.Div(LEGEND_HINT, className="hint", title=LEGEND_HINT),
            html.Div(
                className="atlas-control",
                title="Draw each image on the map instead of its point, once the view holds "
                f"{ATLAS_MAX:,} images or fewer",
                children=[
                    dcc.Checklist(id="atlas", options=[{"label": " pictures", "value": "on"}], value=["on"]),
                    html.Span(id="atlas-note", className="muted"),
                ],
            ),
        ],
    )


def images_tab(data: RunData) -> html.Div:
    """The review grid: its list, the group it is reviewed into, and its controls. The grid's
    tiles, pager and status are drawn by assets/review.js, never by a callback."""
    return html.Div(
        className="tab-body images-body",
        children=[
            html.Div(id="detail"),
            html.Div(
                className="toolbar",
                children=[
                    html.Div(
                        id="selection-title",
                        className="selection-title",
                        children="Select points on the map, or pick a cluster or group.",
                    ),
                    html.Div(
                        className="toolbar-row",
                        children=[
                            html.Button(
                                "More like these",
                                id="more-like",
                                className="button",
                                title="Rank every image by similarity to the group's images marked in (or to "
                                "those shown), less those marked out; the images already reviewed are left out",
                            ),
                            html.Label(
                                title="how many images to show",
                                className="inline-label",
                                children=[
                                    "top ",
                                    dcc.Input(
                                        id="more-top",
                                        type="number",
                                        min=1,
                                        max=data.n,
                                        step=1,
                                        value=min(MORE_LIKE_TOP, data.n),
                                        className="k-input",
                                    ),
                                ],
                            ),
                            html.Button(
                                "Split",
                                id="drill-list",
                                className="button",
                                title="Split the images shown into sub-clusters on their own map",
                            ),
                        ],
                    ),
                    html.Div(
                        className="toolbar-row",
                        children=[
                            dcc.Input(
                                id="group-name",
                                type="text",
                                placeholder="Group name",
                                debounce=True,
                                className="name-input",
                                disabled=data.read_only,
                                maxLength=200,
                            ),
                            html.Button(
                                "Confirm page ⏎",
                                id="confirm-page",
                                className="button primary",
                                disabled=data.read_only,
                                title="Save this page into the group: the images not ticked off in, "
                                "those ticked off out",
                            ),
                            html.Button(
                                "Undo", id="undo", className="button", title="Undo the last tick or confirmed page (Z)"
                            ),
                        ],
                    ),
                    teach_row(data),
                    html.Div(
                        className="toolbar-row",
                        children=[
                            dcc.Dropdown(
                                id="review-sort",
                                options=[{"label": v, "value": k} for k, v in SORTS.items()],
                                value="list",
                                clearable=False,
                                searchable=False,
                                className="review-select",
                            ),
                            dcc.Dropdown(
                                id="review-filter",
                                options=[{"label": v, "value": k} for k, v in FILTERS.items()],
                                value="all",
                                clearable=False,
                                searchable=False,
                                className="review-select",
                            ),
                        ],
                    ),
                    html.Div(
                        className="toolbar-row grid-controls",
                        children=[
                            html.Button(
                                "Tick page",
                                id="tick-page",
                                className="button small",
                                title="Tick off the whole page (A)",
                            ),
                            html.Button(
                                "Invert",
                                id="invert-page",
                                className="button small",
                                title="Invert the page's ticks (I)",
                            ),
                            html.Button(
                                "Clear", id="clear-page", className="button small", title="Clear the page's ticks (C)"
                            ),
                            html.Label(
                                className="inline-label",
                                title="tile size",
                                children=[
                                    "size",
                                    dcc.Input(
                                        id="tile-size",
                                        type="range",
                                        min=64,
                                        max=256,
                                        step=16,
                                        value=96,
                                        className="tile-size",
                                    ),
                                ],
                            ),
                            html.Select(
                                id="page-size",
                                title="images per page",
                                className="page-size",
                                children=[
                                    html.Option(
                                        f"{n} a page" if n != "all" else "all, scrolling",
                                        value=str(n),
                                        selected=n == GRID_PAGE,
                                    )
                                    for n in PAGE_SIZES
                                ],
                            ),
                            html.Button(
                                "⇔", id="wide-grid", className="button small", title="A wider grid, a narrower map"
                            ),
                            html.Button(
                                "?", id="show-shortcuts", className="button small", title="Keyboard shortcuts (?)"
                            ),
                        ],
                    ),
                    html.Div(id="group-status", className="status"),
                    html.Div(id="review-status", className="status"),
                ],
            ),
            html.Div(id="grid", className="grid", **{"data-version": data.version}),
            html.Div(
                className="pager",
                children=[
                    html.Button("‹ Prev", id="page-prev", className="button small"),
                    html.Span(id="page-info", className="muted"),
                    html.Button("Next ›", id="page-next", className="button small"),
                ],
            ),
        ],
    )


def teach_row(data: RunData) -> html.Div:
    """The teach loop's controls (explorer/callbacks/teach.py), for the group in the group box."""
    return html.Div(
        className="teach",
        children=[
            html.Div(
                className="toolbar-row",
                children=[
                    html.Span("Teach", className="label", title="ICE learns the group from the pages you confirm"),
                    html.Button(
                        "Find more",
                        id="teach-find",
                        className="button",
                        disabled=data.read_only,
                        title="The unmarked images the group's learner scores highest. Confirm the page (Enter): "
                        "the next round learns from your marks, and its page opens when it is done",
                    ),
                    html.Button(
                        "Uncertain",
                        id="teach-uncertain",
                        className="button",
                        disabled=data.read_only,
                        title="The unmarked images the learner is least sure of: they teach it most",
                    ),
                    html.Button(
                        "Undo round",
                        id="teach-undo",
                        className="button",
                        disabled=data.read_only,
                        title="Undo the last round: the marks confirmed for it, and what it learned",
                    ),
                    dcc.Checklist(
                        id="teach-overlay",
                        options=[{"label": " scores on the map", "value": "on"}],
                        value=[],
                        inline=True,
                        className="teach-overlay",
                    ),
                ],
            ),
            html.Progress(id="teach-progress", max=1, value=0, className="teach-progress hidden"),
            html.Div(id="teach-status", className="status"),
            dcc.Interval(id="teach-poll", interval=TEACH_POLL_MS, disabled=True),
        ],
    )


def overlays() -> list:
    """The large preview (Space, or a long hover on a tile) and the keyboard's help (?)."""
    return [
        html.Div(
            id="preview", className="preview", children=[html.Img(alt="preview"), html.Div(className="preview-caption")]
        ),
        html.Div(
            id="shortcuts",
            className="shortcuts",
            children=[
                html.Div("Keyboard", className="label"),
                html.Table([html.Tr([html.Td(html.Kbd(k)), html.Td(v)]) for k, v in SHORTCUTS]),
                html.Div(
                    "Click a tile to tick it off, Shift-click to tick the range up to it. Pages "
                    "confirmed go into the group named; pages never confirmed stay not reviewed.",
                    className="muted",
                ),
            ],
        ),
    ]


def side_pane(data: RunData) -> html.Aside:
    return html.Aside(
        className="side",
        children=[
            dcc.Tabs(
                id="tabs",
                value="images",
                className="tabs",
                children=[
                    dcc.Tab(label="Images", value="images", children=images_tab(data)),
                    dcc.Tab(
                        label="Clusters",
                        value="clusters",
                        children=html.Div(
                            className="tab-body",
                            children=[
                                html.Div(
                                    id="rename-status",
                                    className="status",
                                    children=READ_ONLY
                                    if data.read_only
                                    else "Type a name and press Enter; names are saved in the run.",
                                ),
                                html.Label(
                                    className="inline-label",
                                    title="how many sub-clusters Split makes",
                                    children=[
                                        "Split into ",
                                        dcc.Input(
                                            id="drill-k",
                                            type="number",
                                            min=2,
                                            max=MAX_DRILL_K,
                                            step=1,
                                            value=DRILL_K,
                                            className="k-input",
                                        ),
                                        " sub-clusters",
                                    ],
                                ),
                                html.Div(id="clusters-panel"),
                            ],
                        ),
                    ),
                    dcc.Tab(
                        label="Groups",
                        value="groups",
                        children=html.Div(
                            className="tab-body",
                            children=[
                                html.Div(id="groups-status", className="status"),
                                html.Div(id="groups-panel"),
                            ],
                        ),
                    ),
                ],
            ),
        ],
    )


def stores() -> list[dcc.Store]:
    """Client state: image ids only, never embeddings or pixels."""
    return [
        dcc.Store(id="selection", data={"ids": [], "title": ""}),  # the grid's list (review.review_list)
        dcc.Store(id="excluded", data=[]),  # ids ticked off and not yet confirmed (set by review.js)
        dcc.Store(id="review-view", data=None),  # the list as the grid draws it (review.review_view)
        dcc.Store(id="review-confirm", data=None),  # a page to save: {group, in, out, nonce} (review.js)
        dcc.Store(id="review-undo", data=None),  # a confirmed page to undo: {group, change} (review.js)
        dcc.Store(id="review-saved", data=None),  # the server's answer to either
        dcc.Store(id="review-refresh", data=0),  # asks for the group's marks again (review.js)
        dcc.Store(id="more-like-key", data=0),  # the M key: "More like these" (review.js)
        dcc.Store(id="review-drawn", data=None),  # unused: the output of the clientside drawing
        original_viewer(),
        dcc.Store(id="map-view", data=None),  # the map's ranges and size in pixels (assets/map.js)
        dcc.Store(id="map-atlas", data=None),  # the pictures drawn for that view (explorer/atlas.py)
        dcc.Store(id="map-atlas-drawn", data=None),  # the map key whose pictures lie over the map
        dcc.Store(id="map-density", data=None),  # a large run's density image of the view (explorer/density.py)
        dcc.Store(id="map-density-drawn", data=None),  # the map key whose density lies under the points
        dcc.Store(id="map-points", data=None),  # a map selection's outline (or its point numbers)
        dcc.Store(id="focus", data=None),  # the image shown large, with its neighbours
        dcc.Store(id="detail-for", data=None),  # the clustering whose map holds the card's rings
        dcc.Store(id="groups-changed", data=0),  # bumped when a group is saved or deleted
        dcc.Store(id="drill", data={"path": []}),  # the drill-downs the map is in: [{key, label}]
        dcc.Store(id="job", data={"id": None}),  # the re-clustering or drill-down running
        dcc.Store(id="grid-page-size", data=str(GRID_PAGE), storage_type="local"),  # the grid's page size (review.js)
        dcc.Store(id="teach-wait", data=None),  # {group, change, open}: the round that learns from it, and its page
    ]


def make_layout(data: RunData) -> html.Div:
    """The whole page. Built per page load, so it shows the clusterings and the images on disk now."""
    with contextlib.suppress(IceError):  # a rebuilt run: the badge says so
        data.pick_up_additions()
    return html.Div(
        className="app" + (" read-only" if data.read_only else ""),
        children=[
            topbar(data),
            html.Main(className="main", children=[map_pane(), side_pane(data)]),
            *overlays(),
            *stores(),
        ],
    )
