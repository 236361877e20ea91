"""Pieces of the page that callbacks build from data: grid tiles, the detail card,
cluster cards and group rows. Every name is passed as text, never as HTML."""

from __future__ import annotations

from dash import dcc, html

from .figures import cluster_colors, cluster_label
from .routes import image_url, thumb_url

REPRESENTATIVES = 6  # thumbnails per cluster card: one per part of the cluster (Clustering.representatives)


def thumb(image_id: int, version: str, title: str = "", class_name: str = "thumb") -> html.Img:
    return html.Img(src=thumb_url(image_id, version), alt=f"image {image_id}", title=title, className=class_name)


def detail_card(image_id: int, path: str, cluster: int, names: dict[int, str], neighbour_ids, version: str) -> html.Div:
    """The focused image, large, with its path, cluster and nearest neighbours."""
    return html.Div(
        className="detail",
        children=[
            html.Img(  # a click shows it at its own size beside the working-size pixels (assets/viewer.js)
                src=image_url(image_id, version),
                alt=f"image {image_id}",
                className="detail-img",
                title="Click: the original at its own size, beside the pixels ICE works on",
                **{"data-working": thumb_url(image_id, version)},
            ),
            html.Div(
                className="detail-info",
                children=[
                    html.Div(path, className="detail-path"),
                    html.Div(f"image {image_id} · {cluster_label(cluster, names)}", className="muted"),
                    html.Div("Nearest neighbours (ringed on the map)", className="label"),
                    html.Div(
                        className="neighbours",
                        children=[
                            html.Div(
                                thumb(i, version, class_name="thumb small"),
                                id={"type": "neighbour", "index": int(i)},
                                n_clicks=0,
                                className="neighbour",
                            )
                            for i in neighbour_ids
                        ],
                    ),
                    html.Button("Close", id={"type": "detail-close", "index": 0}, className="button small", n_clicks=0),
                ],
            ),
        ],
    )


def cluster_card(
    cluster: int, name: str, size: int, color: str, representatives, read_only: bool, version: str
) -> html.Div:
    return html.Div(
        className="cluster-card",
        children=[
            html.Div(
                className="cluster-head",
                children=[
                    html.Span(className="swatch", style={"background": color}),
                    html.Span(str(cluster), className="cluster-number"),
                    dcc.Input(
                        id={"type": "cluster-name", "index": cluster},
                        value=name,
                        type="text",
                        placeholder=f"cluster {cluster}",
                        debounce=True,
                        className="name-input",
                        disabled=read_only,
                        maxLength=200,
                        n_blur=0,
                        n_submit=0,
                    ),
                    html.Span(f"{size:,}", className="muted size", title="images in this cluster"),
                    html.Button(
                        "Show",
                        id={"type": "show-cluster", "index": cluster},
                        className="button small",
                        n_clicks=0,
                        title="show this cluster in the grid",
                    ),
                    html.Button(
                        "Split",
                        id={"type": "split-cluster", "index": cluster},
                        className="button small",
                        n_clicks=0,
                        title="split this cluster into sub-clusters on a map of their own",
                    ),
                ],
            ),
            html.Div(id={"type": "cluster-saved", "index": cluster}, className="status"),
            html.Div(
                [thumb(i, version, class_name="thumb small") for i in representatives], className="representatives"
            ),
        ],
    )


def cluster_cards(clustering, names: dict[int, str], read_only: bool, version: str, embeddings) -> list[html.Div]:
    colors = cluster_colors(clustering.k)
    return [
        cluster_card(
            c,
            names.get(c, ""),
            int(clustering.sizes[c]),
            colors[c],
            clustering.representatives(c, embeddings, REPRESENTATIVES),
            read_only,
            version,
        )
        for c in range(clustering.k)
    ]


HISTORY_SHOWN = 20  # changes listed per group


def group_rows(groups: dict[str, int], histories: dict[str, list[dict]], read_only: bool) -> list:
    """One row per group: its name (type a new one to rename it), size, Show (as a grid, to
    edit), Use (review the grid's list into it), merge into another, undo, delete, and its
    history of changes."""
    if not groups:
        return [
            html.Div(
                "No groups yet. Select images, type a group name, tick off those that "
                "do not belong and confirm each page.",
                className="muted empty",
            )
        ]
    return [
        html.Div(
            className="group",
            children=[
                html.Div(
                    className="group-row",
                    children=[
                        dcc.Input(
                            id={"type": "rename-group", "index": name},
                            value=name,
                            type="text",
                            debounce=True,
                            className="name-input group-name",
                            disabled=read_only,
                            maxLength=200,
                        ),
                        html.Span(f"{count:,}", className="muted size", title="images marked in"),
                        html.Button(
                            "Show",
                            id={"type": "show-group", "index": name},
                            className="button small",
                            n_clicks=0,
                            title="open the group as a grid: tick images off and confirm to remove them",
                        ),
                        html.Button(
                            "Use",
                            id={"type": "use-group", "index": name},
                            className="button small",
                            n_clicks=0,
                            disabled=read_only,
                            title="review the grid's images into this group",
                        ),
                        html.Button(
                            "Undo",
                            id={"type": "undo-group", "index": name},
                            className="button small",
                            n_clicks=0,
                            disabled=read_only or not histories.get(name),
                            title="undo the group's last change",
                        ),
                        # the browser asks first: a group is a person's work
                        dcc.ConfirmDialogProvider(
                            html.Button("Delete", className="button small danger", disabled=read_only),
                            id={"type": "delete-group", "index": name},
                            message=f"Delete the group {name!r} ({count:,} images)? The images stay in the run.",
                        ),
                    ],
                ),
                html.Details(
                    className="group-more",
                    children=[
                        html.Summary("History and merging"),
                        dcc.Dropdown(
                            id={"type": "merge-group", "index": name},
                            placeholder="Merge into…",
                            options=[{"label": other, "value": other} for other in groups if other != name],
                            disabled=read_only,
                            className="merge-select",
                            searchable=False,
                        ),
                        html.Ul(
                            className="history",
                            children=[history_line(h) for h in histories.get(name, [])[:HISTORY_SHOWN]],
                        ),
                    ],
                ),
            ],
        )
        for name, count in groups.items()
    ]


def history_line(change: dict) -> html.Li:
    counts = ", ".join(
        f"{change[k]:,} {word}"
        for k, word in (("marked_in", "in"), ("marked_out", "out"), ("cleared", "cleared"))
        if change[k]
    )
    text = f"{change['time'][:16].replace('T', ' ')} · {change['action']}"
    text += f" ({counts})" if counts else ""
    text += f" · {change['note']}" if change["note"] else ""
    text += f" · undone by {change['undone_by']}" if change["undone_by"] else ""
    return html.Li(text, className="muted" if change["undone_by"] else "")
