"""The app's callbacks, called directly (no browser) on an app over a copy of the small run."""

import json
import shutil
import subprocess
import sys
from contextvars import copy_context

import numpy as np
import pytest
from dash import no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.exceptions import PreventUpdate

from explorer.annotations import Annotations
from explorer.app import create_app
from explorer.clusterings import save_clustering
from explorer.data import Clustering
from explorer.layout import GRID_PAGE, clustering_options
from explorer.search import rank_like
from tests.conftest import rebuild_manifest


def callback(app, name):
    """The function behind one of the app's callbacks, by its Python name."""
    for spec in app.callback_map.values():
        fn = getattr(spec.get("callback"), "__wrapped__", None)
        if fn is not None and fn.__name__ == name:
            return fn
    raise KeyError(name)


def call(app, name, *args, triggered=()):
    """Run a callback as Dash would, with `triggered` = [(component id, prop, value)]."""
    inputs = [{"prop_id": f"{json.dumps(i, separators=(',', ':'), sort_keys=True) if isinstance(i, dict) else i}.{prop}",
               "value": value} for i, prop, value in triggered]

    def run():
        context_value.set(AttributeDict(triggered_inputs=inputs))
        return callback(app, name)(*args)

    return copy_context().run(run)


@pytest.fixture
def app(explorer_run):
    return create_app(explorer_run)


def props(component, prop="src"):
    """Every value of `prop` in a component tree."""
    out = []
    if isinstance(component, (list, tuple)):
        for c in component:
            out += props(c, prop)
    elif hasattr(component, "to_plotly_json"):
        if getattr(component, prop, None) is not None:
            out.append(getattr(component, prop))
        out += props(getattr(component, "children", None), prop)
    return out


def test_the_app_never_imports_torch(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    code = ("import sys; from explorer.app import create_app; from explorer.clusterings import recluster; "
            "app = create_app(sys.argv[1]); recluster(app.ice_data, 3); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(run)], check=True)


def test_map_has_one_trace_per_cluster(app):
    fig = call(app, "draw_map", "run")
    k = app.ice_data.clustering("run").k
    assert sum(t.meta == "cluster" for t in fig.data) == k


def test_hover_shows_thumbnail_path_and_cluster(app):
    data = app.ice_data
    c = data.clustering("run")
    image_id = int(c.members(1)[3])
    hover = {"points": [{"curveNumber": 1, "pointNumber": 3, "bbox": {"x0": 1, "x1": 2, "y0": 3, "y1": 4}}]}
    show, children = call(app, "show_tooltip", hover, "run")
    assert show is True
    assert props(children) == [f"/thumb/{image_id}.png?v={data.version}"]
    assert children[1].children == data.path[image_id]
    assert call(app, "show_tooltip", None, "run")[0] is False


def test_box_selection_fills_the_grid(app):
    c = app.ice_data.clustering("run")
    selection, excluded, tab = call(app, "select_on_map", {"0": [0, 1], "2": [5]}, "run",
                                    triggered=[("map-points", "data", 1)])
    assert selection["ids"] == [int(c.members(0)[0]), int(c.members(0)[1]), int(c.members(2)[5])]
    assert excluded == [] and tab == "images"
    tiles, page_text, title, no_prev, no_next = call(app, "show_grid", selection, 0, [selection["ids"][1]])
    assert props(tiles) == [f"/thumb/{i}.png?v={app.ice_data.version}" for i in selection["ids"]]
    assert "excluded" in tiles[1].className and "excluded" not in tiles[0].className
    assert page_text == "Page 1 of 1" and "3 images" in title and "1 ticked off" in title
    assert no_prev and no_next  # one page: nowhere to turn
    with pytest.raises(PreventUpdate):  # the lasso is what the grid shows
        call(app, "clear_lasso", selection, "run")


def test_a_grid_filled_from_elsewhere_takes_the_lasso_off_the_map(app):
    k = app.ice_data.clustering("run").k
    ops = call(app, "clear_lasso", {"ids": [1, 2], "title": "Group 'g'"}, "run").to_plotly_json()["operations"]
    assigned = {tuple(op["location"]): op["params"]["value"] for op in ops}
    assert assigned == {("layout", "selections"): [], **{("data", c, "selectedpoints"): None for c in range(k)}}


def test_another_clustering_closes_the_detail_card_without_touching_the_map(app):
    """The rings' trace number is the new clustering's K: sent to the old map, the patch broke
    it (a plotly error, old clusters left drawn) when the new clustering had more clusters."""
    assert call(app, "set_focus", [], [], [], None, "k4", triggered=[("clustering", "value", "k4")]) is None
    card, _, _ = call(app, "show_detail", 5, "run", None, None, triggered=[("focus", "data", 5)])
    assert call(app, "show_detail", None, "k4", card, "run", triggered=[("focus", "data", None)]) == ([], no_update, None)
    closed, patch, _ = call(app, "show_detail", None, "run", card, "run", triggered=[("focus", "data", None)])
    assert closed == [] and patch is not no_update  # the Close button: the rings go


def test_pages(app):
    selection = {"ids": list(range(120)), "title": "t"}
    tiles, page_text, _, no_prev, no_next = call(app, "show_grid", selection, 2, [])
    assert page_text == "Page 3 of 3" and len(tiles) == 120 - 2 * GRID_PAGE and (no_prev, no_next) == (False, True)
    assert call(app, "show_grid", selection, 0, [])[3:] == (True, False)
    assert call(app, "show_grid", {"ids": [], "title": ""}, 0, [])[3:] == (True, True)
    assert call(app, "turn_page", 1, 1, selection, 2, triggered=[("page-next", "n_clicks", 1)]) == 2
    assert call(app, "turn_page", 1, 1, selection, 2, triggered=[("page-prev", "n_clicks", 1)]) == 1
    assert call(app, "turn_page", 1, 1, selection, 2, triggered=[("selection", "data", selection)]) == 0


def test_tick_off_toggles_and_ignores_new_tiles(app):
    tile = {"type": "exclude", "index": 7}
    assert call(app, "tick_off", [1], [3], triggered=[(tile, "n_clicks", 1)]) == [3, 7]
    assert call(app, "tick_off", [2], [3, 7], triggered=[(tile, "n_clicks", 2)]) == [3]
    with pytest.raises(PreventUpdate):  # a re-rendered grid: new buttons, no click
        call(app, "tick_off", [0], [3], triggered=[(tile, "n_clicks", 0)])


def test_a_page_loaded_after_the_run_was_rebuilt_says_so(explorer_run):
    app = create_app(explorer_run)
    ids = {getattr(c, "id", None) for c in app.layout()._traverse()}
    assert "rebuilt-badge" not in ids
    rebuild_manifest(explorer_run)
    (badge,) = [c for c in app.layout()._traverse() if getattr(c, "id", None) == "rebuilt-badge"]
    assert "restart" in badge.children and "was rebuilt since this explorer started" in badge.title


def test_detail_says_so_when_the_index_is_damaged(explorer_run):
    """A damaged index (read on the first search) is a message where the neighbours go,
    not a failed callback that leaves the page as it was."""
    path = explorer_run / "index.faiss"
    path.write_bytes(path.read_bytes()[:100])
    card, _patch, _ = call(create_app(explorer_run), "show_detail", 5, "run", None, None,
                           triggered=[("focus", "data", 5)])
    assert "index.faiss: cannot read the search index" in card.children


def test_detail_shows_neighbours_and_rings_them(app):
    card, patch, drawn_for = call(app, "show_detail", 5, "run", None, None, triggered=[("focus", "data", 5)])
    assert drawn_for == "run"
    srcs = props(card)
    assert srcs[0] == f"/image/5?v={app.ice_data.version}" and len(srcs) == 1 + 12
    ops = patch.to_plotly_json()["operations"]
    k = app.ice_data.clustering("run").k
    ringed = [op["params"]["value"] for op in ops if op["location"] == ["data", k, "customdata"]][0]
    assert ringed[0] == 5 and sorted(ringed[1:]) == sorted(int(s.split("/")[-1].split(".")[0]) for s in srcs[1:])


def test_rename_writes_one_row(app):
    data = app.ice_data
    data.annotations.set_cluster_name("run", 0, "kept")  # as if another tab named it
    status = call(app, "save_name", "zeros", "run",
                  triggered=[({"type": "cluster-name", "index": 1}, "value", "zeros")])
    assert "zeros" in status
    assert data.annotations.cluster_names("run") == {0: "kept", 1: "zeros"}
    patch = call(app, "update_legend", ["Saved", None], "run",
                 triggered=[({"type": "cluster-saved", "index": 1}, "children", "Saved")])
    assert patch.to_plotly_json()["operations"][0]["location"] == ["data", 1, "name"]


def test_more_like_these_then_save_group(app):
    data = app.ice_data
    like = rank_like(data, [10, 11], 26)[0].tolist()
    misfit = next(i for i in like if i not in (10, 11))  # one that the ranking brings, ticked off
    selection = {"ids": [10, 11, misfit], "title": "t"}
    ranked, excluded, status = call(app, "find_more", 1, selection, [misfit], 25)
    assert len(ranked["ids"]) == 25 and status == "" and excluded == []
    # ranked by the kept two; the misfit is left out, not brought back (ticked off, as it was)
    assert ranked["ids"] == [i for i in like if i != misfit][:25]
    assert ranked["title"] == "Most like the 2 picked, less the 1 ticked off"
    status, changed = call(app, "save", 1, None, "sevens", ranked, ranked["ids"][20:],
                           0, triggered=[("save-group", "n_clicks", 1)])
    assert changed == 1 and "20 images" in status
    assert data.annotations.group_members("sevens").tolist() == sorted(ranked["ids"][:20])
    rows = call(app, "list_groups", 1)
    assert "sevens" in str(rows[0].children[0].children)
    status, changed = call(app, "save", 1, None, "", ranked, [], 1,
                           triggered=[("save-group", "n_clicks", 2)])
    assert "give the group a name" in status


def test_show_cluster_and_group(app):
    c = app.ice_data.clustering("run")
    selection, excluded, tab = call(app, "show_cluster", [1], "run",
                                    triggered=[({"type": "show-cluster", "index": 2}, "n_clicks", 1)])
    assert selection["ids"] == c.members(2).tolist() and tab == "images"
    # the grid keeps its images when the map switches clustering: the title says whose cluster 2
    assert selection["title"] == f"cluster 2 of K={c.k} (the job's)"
    app.ice_data.annotations.save_group("g", [4, 2])
    selection, _, _ = call(app, "show_group", [1],
                           triggered=[({"type": "show-group", "index": "g"}, "n_clicks", 1)])
    assert selection["ids"] == [2, 4]


def test_delete_a_group_says_so_and_a_refusal_is_shown(app, explorer_run):
    notes = app.ice_data.annotations
    notes.save_group("a", [1])
    notes.save_group("b", [2])
    changed, status = call(app, "delete", [1], 3,
                           triggered=[({"type": "delete-group", "index": "a"}, "submit_n_clicks", 1)])
    assert changed == 4 and status == "Deleted group 'a'." and notes.groups() == {"b": 1}
    rebuild_manifest(explorer_run)  # ice embed --force rebuilt the run since the app started
    changed, status = call(app, "delete", [1], 4,
                           triggered=[({"type": "delete-group", "index": "b"}, "submit_n_clicks", 1)])
    assert "was rebuilt" in status and Annotations(notes.path).groups() == {"b": 1}


def test_recluster_adds_an_option_and_the_export_follows(app, explorer_run):
    options, value, status, title = call(app, "run_recluster", 1, 4)
    assert title == status  # the whole line on hover: the slot cuts it
    assert value == "k4" and [o["value"] for o in options] == ["run", "k4"]
    assert (explorer_run / "clusterings" / "k4.npz").exists()
    fig = call(app, "draw_map", "k4")
    assert sum(t.meta == "cluster" for t in fig.data) == 4
    assert call(app, "point_export", "k4") == ("/export.csv?clustering=k4", "clusters-k4.csv")
    _, _, status, _ = call(app, "run_recluster", 2, 1)
    assert "K 1" in status


def test_read_only_app_disables_editing(small_run, app):
    editable = {getattr(c, "id", None) for c in app.layout()._traverse()}  # over a copy: it writes
    app = create_app(small_run, read_only=True)
    layout = app.layout()
    disabled = {c.id: c.disabled for c in layout._traverse() if getattr(c, "id", None) in
                ("recluster", "save-group", "group-name", "recluster-k")}
    assert disabled and all(disabled.values())
    said = {c.id: c.children for c in layout._traverse()
            if getattr(c, "id", None) in ("read-only-badge", "rename-status")}
    assert said["read-only-badge"] == "read-only" and said["rename-status"].startswith("Read-only:")
    assert "read-only-badge" not in editable
    cards = call(app, "show_clusters", "run")
    name_inputs = [c for card in cards for c in card._traverse() if getattr(c, "placeholder", None)]
    assert len(name_inputs) == len(cards) and all(i.disabled for i in name_inputs)


def test_a_rebuilt_run_still_draws_but_reads_no_names_or_groups(app, explorer_run):
    """annotations.sqlite then holds the new run's image ids: the open page draws its map
    unnamed and shows why it refuses the groups and the export."""
    notes = app.ice_data.annotations
    notes.set_cluster_name("run", 0, "planes")
    notes.save_group("g", [1, 2])
    assert any("planes" in (t.name or "") for t in call(app, "draw_map", "run").data)
    rebuild_manifest(explorer_run)
    assert not any("planes" in (t.name or "") for t in call(app, "draw_map", "run").data)
    (panel,) = call(app, "list_groups", 1)
    assert "was rebuilt" in panel.children
    selection, _, _ = call(app, "show_group", [1], triggered=[({"type": "show-group", "index": "g"}, "n_clicks", 1)])
    assert selection["ids"] == [] and "was rebuilt" in selection["title"]
    r = app.server.test_client().get("/export.csv")
    assert r.status_code == 404 and b"was rebuilt" in r.data


@pytest.mark.parametrize("top", [None, 0, 301])
def test_more_like_these_asks_for_a_number_in_range(app, top):
    """The box sends None when it is empty or past its bounds: that was read as 1 image."""
    ranked, excluded, status = call(app, "find_more", 1, {"ids": [3, 4], "title": "x"}, [], top)
    assert ranked is no_update and excluded is no_update and status == "top: give a whole number from 1 to 300"


def test_an_unreadable_reclustering_is_greyed_out_and_the_page_loads(app, explorer_run):
    (explorer_run / "clusterings").mkdir(exist_ok=True)
    (explorer_run / "clusterings" / "k9.npz").write_text("garbage")
    cluster = np.arange(300, dtype=np.int32) % 3  # K=59 asked, and the mixture left 3 clusters
    save_clustering(explorer_run, Clustering("k59", 3, cluster, np.zeros(300, np.float32)), np.zeros((3, 2)))
    run, k9, k59 = clustering_options(app.ice_data)
    assert k9["disabled"] and k9["label"] == "k9 (unreadable)" and "k9.npz" in k9["title"]
    assert k59 == {"label": "K=3 (asked 59)", "value": "k59"} and not run.get("disabled")
    assert any(getattr(c, "id", None) == "clustering" for c in app.layout()._traverse())
