"""Pieces of the page that callbacks build from data: grid tiles, the detail card,
cluster cards and group rows. Every name is passed as text, never as HTML."""

from __future__ import annotations

from dash import dcc, html

from .figures import cluster_colors, cluster_label
from .routes import image_url, thumb_url

REPRESENTATIVES = 6  # thumbnails per cluster card: those nearest the centroid


def thumb(image_id: int, version: str, title: str = "", class_name: str = "thumb") -> html.Img:
    return html.Img(src=thumb_url(image_id, version), alt=f"image {image_id}", title=title,
                    className=class_name)


def grid_tile(image_id: int, path: str, excluded: bool, version: str) -> html.Div:
    """One image of the grid: click the picture to see it large, the mark to tick it off."""
    return html.Div(className="tile" + (" excluded" if excluded else ""), children=[
        html.Div(thumb(image_id, version, title=path), id={"type": "tile", "index": image_id},
                 className="tile-img", n_clicks=0),
        html.Button("✕" if not excluded else "↺", id={"type": "exclude", "index": image_id},
                    className="tile-mark", n_clicks=0,
                    title="put back" if excluded else "tick off: does not belong"),
    ])


def detail_card(image_id: int, path: str, cluster: int, names: dict[int, str],
                neighbour_ids, version: str) -> html.Div:
    """The focused image, large, with its path, cluster and nearest neighbours."""
    return html.Div(className="detail", children=[
        html.Img(src=image_url(image_id, version), alt=f"image {image_id}", className="detail-img"),
        html.Div(className="detail-info", children=[
            html.Div(path, className="detail-path"),
            html.Div(f"image {image_id} · {cluster_label(cluster, names)}", className="muted"),
            html.Div("Nearest neighbours (ringed on the map)", className="label"),
            html.Div(className="neighbours", children=[
                html.Div(thumb(i, version, class_name="thumb small"), id={"type": "neighbour", "index": int(i)},
                         n_clicks=0, className="neighbour") for i in neighbour_ids]),
            html.Button("Close", id={"type": "detail-close", "index": 0}, className="button small", n_clicks=0),
        ]),
    ])


def cluster_card(cluster: int, name: str, size: int, color: str, representatives,
                 read_only: bool, version: str) -> html.Div:
    return html.Div(className="cluster-card", children=[
        html.Div(className="cluster-head", children=[
            html.Span(className="swatch", style={"background": color}),
            html.Span(str(cluster), className="cluster-number"),
            dcc.Input(id={"type": "cluster-name", "index": cluster}, value=name, type="text",
                      placeholder=f"cluster {cluster}", debounce=True, className="name-input",
                      disabled=read_only, maxLength=200, n_blur=0, n_submit=0),
            html.Span(f"{size:,}", className="muted size", title="images in this cluster"),
            html.Button("Show", id={"type": "show-cluster", "index": cluster},
                        className="button small", n_clicks=0, title="show this cluster in the grid"),
        ]),
        html.Div(id={"type": "cluster-saved", "index": cluster}, className="status"),
        html.Div([thumb(i, version, class_name="thumb small") for i in representatives],
                 className="representatives"),
    ])


def cluster_cards(clustering, names: dict[int, str], read_only: bool, version: str) -> list[html.Div]:
    colors = cluster_colors(clustering.k)
    return [cluster_card(c, names.get(c, ""), int(clustering.sizes[c]), colors[c],
                         clustering.members(c)[:REPRESENTATIVES], read_only, version)
            for c in range(clustering.k)]


def group_rows(groups: dict[str, int], read_only: bool) -> list:
    if not groups:
        return [html.Div("No groups yet. Select images, tick off those that do not belong, "
                         "name the group and save it.", className="muted empty")]
    return [html.Div(className="group-row", children=[
        html.Span(name, className="group-name", title=name),
        html.Span(f"{count:,}", className="muted size"),
        html.Button("Show", id={"type": "show-group", "index": name}, className="button small",
                    n_clicks=0),
        # the browser asks first: a group is a person's work, and there is no undo
        dcc.ConfirmDialogProvider(
            html.Button("Delete", className="button small danger", disabled=read_only),
            id={"type": "delete-group", "index": name},
            message=f"Delete the group {name!r} ({count:,} images)? The images stay in the run."),
    ]) for name, count in groups.items()]
