"""The app's callbacks, called directly (no browser) on an app over a copy of the small run."""

import json
import shutil
import subprocess
import sys
import threading
from contextvars import copy_context

import numpy as np
import pytest
from dash import no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.exceptions import PreventUpdate

from explorer.app import create_app
from explorer.clusterings import save_clustering
from explorer.data import Clustering
from explorer.search import like_scores
from explorer.layout import clustering_options
from explorer.review import review_list, side_by_side
from explorer.search import rank_like
from ice.annotations import Annotations
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
    inputs = [
        {
            "prop_id": f"{json.dumps(i, separators=(',', ':'), sort_keys=True) if isinstance(i, dict) else i}.{prop}",
            "value": value,
        }
        for i, prop, value in triggered
    ]

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
    code = (
        "import sys; from explorer.app import create_app; from explorer.clusterings import recluster; "
        "app = create_app(sys.argv[1]); recluster(app.ice_data, 3); "
        "import threading; [t.join() for t in threading.enumerate() if t.name == 'ice-warm-up']; "
        "assert 'sklearn.linear_model' in sys.modules and 'torch' not in sys.modules, 'torch imported'"
    )
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


def test_hover_on_a_views_own_points_reads_the_image_id_they_carry(app):
    """A large map's traces k + 2 .. 2k + 1 (one a cluster) carry image ids as customdata."""
    data = app.ice_data
    k = data.clustering("run").k
    for curve in (k + 2, 2 * k + 1):
        hover = {
            "points": [
                {"curveNumber": curve, "pointNumber": 0, "customdata": 7, "bbox": {"x0": 1, "x1": 2, "y0": 3, "y1": 4}}
            ]
        }
        show, children = call(app, "show_tooltip", hover, "run")
        assert show is True and children[1].children == data.path[7]
    past = {
        "points": [
            {"curveNumber": 2 * k + 2, "pointNumber": 0, "customdata": 7, "bbox": {"x0": 1, "x1": 2, "y0": 3, "y1": 4}}
        ]
    }
    assert call(app, "show_tooltip", past, "run")[0] is False


def test_box_selection_fills_the_grid(app):
    c = app.ice_data.clustering("run")
    selection, excluded, tab = call(
        app, "select_on_map", {"0": [0, 1], "2": [5]}, "run", triggered=[("map-points", "data", 1)]
    )
    assert selection["ids"] == [int(c.members(0)[0]), int(c.members(0)[1]), int(c.members(2)[5])]
    assert excluded == [] and tab == "images"
    view, title = call(app, "show_list", selection, None, "list", "all", 0, 0, None, "run", None)
    assert view["ids"] is None and title == "Selected on the map · 3 images"  # the selection's, in the browser
    with pytest.raises(PreventUpdate):  # the lasso is what the grid shows
        call(app, "clear_lasso", selection, "run")


def test_a_lasso_outline_selects_every_image_inside_it_but_hidden_clusters(app):
    data = app.ice_data
    x, y = data.map_xy("run")
    c = data.clustering("run")
    cx, cy, r = float(np.median(x)), float(np.median(y)), float(np.std(x))
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    lasso = {"x": (cx + r * np.cos(angle)).tolist(), "y": (cy + r * np.sin(angle)).tolist()}
    inside = np.flatnonzero(np.hypot(x - cx, y - cy) < 0.98 * r)  # well inside the 40-gon
    selection, _excluded, _tab = call(
        app, "select_on_map", {"lasso": lasso, "hidden": []}, "run", triggered=[("map-points", "data", 1)]
    )
    assert set(inside.tolist()) <= set(selection["ids"]) and len(selection["ids"]) < data.n
    assert all(np.hypot(x[i] - cx, y[i] - cy) <= r for i in selection["ids"])
    hidden = int(c.cluster[inside[0]])
    selection, *_ = call(
        app, "select_on_map", {"lasso": lasso, "hidden": [hidden]}, "run", triggered=[("map-points", "data", 1)]
    )
    assert selection["ids"] and hidden not in set(c.cluster[selection["ids"]].tolist())
    with pytest.raises(PreventUpdate):  # drawn over nothing: the grid keeps its list
        far = {"x": [1e6, 1e6 + 1, 1e6], "y": [1e6, 1e6, 1e6 + 1]}
        call(app, "select_on_map", {"lasso": far, "hidden": []}, "run", triggered=[("map-points", "data", 1)])


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
    assert call(app, "show_detail", None, "k4", card, "run", triggered=[("focus", "data", None)]) == (
        [],
        no_update,
        None,
    )
    closed, patch, _ = call(app, "show_detail", None, "run", card, "run", triggered=[("focus", "data", None)])
    assert closed == [] and patch is not no_update  # the Close button: the rings go


def test_the_grid_gets_its_list_sorted_and_filtered_with_the_groups_marks(app):
    data = app.ice_data
    c = data.clustering("run")
    members = c.members(0)
    selection = review_list(np.sort(members), "cluster 0")
    view, title = call(app, "show_list", selection, None, "list", "all", 0, 0, None, "run", None)
    assert view["ids"] is None and title == f"cluster 0 · {len(members)} images"
    assert (
        call(app, "show_list", selection, None, "centre", "all", 0, 0, None, "run", None)[0]["ids"] == members.tolist()
    )
    edge = call(app, "show_list", selection, None, "edge", "all", 0, 0, None, "run", None)[0]
    assert edge["ids"] == members[np.argsort(-c.distance[members], kind="stable")].tolist()
    assert edge["key"] != view["key"]  # another order: the grid starts again at its first page
    data.annotations.mark("g", marked_in=members[:3], marked_out=members[3:5])
    view, title = call(app, "show_list", selection, " g ", "list", "all", 0, 0, None, "run", None)
    assert sorted(view["in"]) == sorted(members[:3].tolist()) and sorted(view["out"]) == sorted(members[3:5].tolist())
    assert f"'g': 3 in, 2 out, {len(members) - 5} not reviewed" in title
    left = call(app, "show_list", selection, "g", "list", "unreviewed", 0, 0, None, "run", None)[0]
    assert set(left["ids"]) == set(members[5:].tolist())
    assert call(app, "show_list", selection, "g", "list", "out", 0, 0, None, "run", None)[0]["ids"] == sorted(
        members[3:5].tolist()
    )
    assert set(call(app, "show_list", selection, "g", "list", "ungrouped", 0, 0, None, "run", None)[0]["ids"]) == set(
        members[3:].tolist()
    )
    similar = call(app, "show_list", selection, "g", "similar", "all", 0, 0, None, "run", None)[0]["ids"]
    assert sorted(similar) == sorted(members.tolist())
    # most like the marks first: by the direction "More like these" learns from those in and
    # out, which ranks the images marked in above those marked out on average
    score = like_scores(data, members[:3], members[3:5])
    assert (np.diff(score[similar]) <= 1e-6).all()
    assert score[members[:3]].mean() > score[members[3:5]].mean()


def test_each_page_of_the_most_like_order_puts_look_alikes_side_by_side():
    """Two kinds of image ranked in turn: each page keeps its images and its first one, and
    lays them out as two runs, so that the misfits of a page take one click and a Shift-click."""
    rng = np.random.default_rng(0)
    kinds = np.eye(8, dtype=np.float32)[[0, 1] * 12]
    x = kinds + rng.normal(0, 0.05, kinds.shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ranked = rng.permutation(24)
    kind = kinds.argmax(1)
    laid = side_by_side(x, ranked, 8)
    for start in (0, 8, 16):
        page, before = laid[start : start + 8], ranked[start : start + 8]
        assert sorted(page) == sorted(before) and page[0] == before[0]
        assert (np.diff(kind[page]) != 0).sum() <= 1  # two runs, not interleaved
    assert (side_by_side(x, ranked, 8, limit=8)[8:] == ranked[8:]).all()  # past the limit, ranked


def test_the_grid_lays_out_the_most_like_order_in_its_page_size(app):
    data = app.ice_data
    members = np.sort(data.clustering("run").members(0))
    selection = review_list(members, "cluster 0")
    data.annotations.mark("g", marked_in=members[:3], marked_out=members[3:5])
    ranked = call(app, "show_list", selection, "g", "similar", "all", 0, 0, None, "run", None)[0]["ids"]
    for size in ("4", "all"):
        laid = call(app, "show_list", selection, "g", "similar", "all", 0, 0, size, "run", None)[0]["ids"]
        if size == "all":  # one page: the ranking as it is
            assert laid == ranked
            continue
        assert laid == side_by_side(data.embeddings, np.array(ranked), 4).tolist()
        for start in range(0, len(ranked), 4):
            assert sorted(laid[start : start + 4]) == sorted(ranked[start : start + 4])
            assert laid[start] == ranked[start]
    assert (
        call(app, "show_list", selection, "g", "centre", "all", 0, 0, "4", "run", None)[0]["ids"]
        == members[np.argsort(data.clustering("run").distance[members], kind="stable")].tolist()
    )  # other orders are not laid out


def test_confirm_saves_a_page_into_a_group_and_undo_takes_it_back(app):
    notes = app.ice_data.annotations
    page = {"group": "sevens", "in": [1, 2, 3], "out": [4], "nonce": "n1"}
    ack, changed = call(app, "confirm", page, 5)
    assert ack["nonce"] == "n1" and changed == 6
    assert ack["status"] == "Confirmed 3 in and 1 out of group 'sevens' (3 in it now, 1 out)."
    assert [m.tolist() for m in notes.marks("sevens")] == [[1, 2, 3], [4]]
    assert notes.history("sevens")[0]["action"] == "confirm"
    ack, changed = call(app, "confirm", {"group": "", "in": [5], "out": [], "nonce": "n2"}, 6)
    assert ack["error"] and "no group name" in ack["status"] and changed is no_update
    ack, _ = call(app, "confirm", {"group": "sevens", "in": [10**6], "out": [], "nonce": "n3"}, 6)
    assert ack["error"] and "image_id 1000000" in ack["status"]
    ack, changed = call(app, "undo", {"group": "sevens", "change": 1}, 6)
    assert changed == 7 and "0 in, 0 out" in ack["status"]
    assert [len(m) for m in notes.marks("sevens")] == [0, 0]


def test_a_list_filtered_by_the_marks_is_drawn_again_when_they_change(app):
    """A confirm or an undo bumps groups-changed. Under "not reviewed yet" the list comes back
    without the confirmed page, the rest ranked again by the new marks; an unfiltered list stays."""
    data = app.ice_data
    members = np.sort(data.clustering("run").members(0))
    selection = review_list(members, "cluster 0")
    before = call(app, "show_list", selection, "g", "similar", "unreviewed", 0, 0, None, "run", None)[0]
    page = before["ids"][:4]
    ack, changed = call(app, "confirm", {"group": "g", "in": page[:3], "out": page[3:], "nonce": "n"}, 0)

    def show(shown, changed):
        triggered = [("groups-changed", "data", changed)]
        return call(
            app, "show_list", selection, "g", "similar", shown, 0, changed, None, "run", None, triggered=triggered
        )

    with pytest.raises(PreventUpdate):
        show("all", changed)
    after = show("unreviewed", changed)[0]
    assert sorted(after["ids"]) == sorted(set(members.tolist()) - set(page)) and after["key"] != before["key"]
    score = like_scores(data, page[:3], page[3:], np.array(after["ids"]))
    assert (np.diff(score) <= 1e-6).all()  # ranked by the marks just made
    _, changed = call(app, "undo", {"group": "g", "change": ack["change"]}, changed)
    back = show("unreviewed", changed)[0]
    assert sorted(back["ids"]) == members.tolist()


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
    card, _patch, _ = call(
        create_app(explorer_run), "show_detail", 5, "run", None, None, triggered=[("focus", "data", 5)]
    )
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
    status = call(
        app, "save_name", "zeros", "run", triggered=[({"type": "cluster-name", "index": 1}, "value", "zeros")]
    )
    assert "zeros" in status
    assert data.annotations.cluster_names("run") == {0: "kept", 1: "zeros"}
    patch = call(
        app,
        "update_legend",
        ["Saved", None],
        "run",
        triggered=[({"type": "cluster-saved", "index": 1}, "children", "Saved")],
    )
    assert patch.to_plotly_json()["operations"][0]["location"] == ["data", 1, "name"]


def test_more_like_these_uses_the_marks_out_as_negatives_and_brings_only_new_images(app):
    data = app.ice_data
    selection = {"ids": [10, 11, 12], "title": "t"}
    ranked, _, status, tab = call(app, "find_more", 1, None, selection, [12], 25, "")
    assert len(ranked["ids"]) == 25 and status == "" and 12 not in ranked["ids"] and tab == "images"
    # ranked by the kept two, less like the one ticked off
    like = rank_like(data, [10, 11], 26, negatives=[12])[0].tolist()
    assert ranked["ids"] == [i for i in like if i != 12][:25]
    assert ranked["title"] == "Most like the 2 picked, less the 1 out"
    data.annotations.mark("sevens", marked_in=[10, 11, 13], marked_out=[14])
    ranked, _, _, _ = call(app, "find_more", None, 1, selection, [], 25, "sevens")  # the M key
    assert not {10, 11, 13, 14} & set(ranked["ids"]), "images already reviewed come back"
    like = rank_like(data, [10, 11, 13], 30, negatives=[14])[0].tolist()
    assert ranked["ids"] == [i for i in like if i not in (10, 11, 13, 14)][:25]
    assert ranked["title"] == "Most like the 3 in 'sevens', less the 1 out"
    rows = call(app, "list_groups", 1)
    assert rows[0].children[0].children[0].value == "sevens"


def test_show_cluster_and_group(app):
    c = app.ice_data.clustering("run")
    selection, excluded, tab = call(
        app, "show_cluster", [1], "run", triggered=[({"type": "show-cluster", "index": 2}, "n_clicks", 1)]
    )
    assert selection["ids"] == c.members(2).tolist() and tab == "images"
    # the grid keeps its images when the map switches clustering: the title says whose cluster 2
    assert selection["title"] == f"cluster 2 of K={c.k} (the job's)" and selection["clustering"] == "run"
    app.ice_data.annotations.mark("g", marked_in=[4, 2], marked_out=[9])
    selection, _, _ = call(app, "show_group", [1], triggered=[({"type": "show-group", "index": "g"}, "n_clicks", 1)])
    assert selection["ids"] == [2, 4, 9] and selection["group"] == "g"  # its marks out too, to put back
    assert call(app, "open_group", selection) == "g"


def test_delete_a_group_says_so_and_a_refusal_is_shown(app, explorer_run):
    notes = app.ice_data.annotations
    notes.save_group("a", [1])
    notes.save_group("b", [2])
    changed, status = call(
        app,
        "edit_group",
        [1],
        [],
        [],
        [],
        3,
        triggered=[({"type": "delete-group", "index": "a"}, "submit_n_clicks", 1)],
    )
    assert changed == 4 and status == "Deleted group 'a'." and notes.groups() == {"b": 1}
    with pytest.raises(PreventUpdate):  # the box, drawn with the name it has: no rename
        call(
            app, "edit_group", [], ["b"], [], [], 4, triggered=[({"type": "rename-group", "index": "b"}, "value", "b")]
        )
    notes.save_group("c", [3])
    changed, status = call(
        app, "edit_group", [], ["c"], [], [], 4, triggered=[({"type": "rename-group", "index": "b"}, "value", "c")]
    )
    assert "a group of that name exists" in status and notes.groups() == {"b": 1, "c": 1}
    rebuild_manifest(explorer_run)  # ice embed --force rebuilt the run since the app started
    changed, status = call(
        app,
        "edit_group",
        [1],
        [],
        [],
        [],
        4,
        triggered=[({"type": "delete-group", "index": "b"}, "submit_n_clicks", 1)],
    )
    assert "was rebuilt" in status and Annotations(notes.path).groups() == {"b": 1, "c": 1}


def finish(app, job: dict) -> tuple:
    """poll_job's answer once the job is done (it runs in a thread)."""
    thread = [t for t in threading.enumerate() if t.name == f"ice-job-{job['id']}"]
    for t in thread:
        t.join(60)
    return call(app, "poll_job", 1, job, None)


def test_recluster_runs_as_a_job_adds_an_option_and_the_export_follows(app, explorer_run):
    job, status = call(app, "run_recluster", 1, 4, {"id": None})
    assert job["kind"] == "recluster" and status == "Re-clustering with K=4…"
    assert call(app, "run_recluster", 1, 5, job)[1] == "Wait: another job is running."
    assert call(app, "watch_job", job) == (False, True)  # polled; the button is off meanwhile
    status, title, idle, _, options, value = finish(app, job)
    assert title == status and status.startswith("K=4 ready in") and idle == {"id": None}
    assert value == "k4" and [o["value"] for o in options] == ["run", "k4"]
    assert call(app, "watch_job", idle) == (True, False)
    assert (explorer_run / "clusterings" / "k4.npz").exists()
    fig = call(app, "draw_map", "k4")
    assert sum(t.meta == "cluster" for t in fig.data) == 4
    assert call(app, "point_export", "k4") == ("/export.csv?clustering=k4", "clusters-k4.csv")
    job, _ = call(app, "run_recluster", 2, 1, {"id": None})
    status, _, idle, *_ = finish(app, job)
    assert "K 1" in status and idle == {"id": None}


def test_read_only_app_disables_editing(small_run, app):
    editable = {getattr(c, "id", None) for c in app.layout()._traverse()}  # over a copy: it writes
    app = create_app(small_run, read_only=True)
    layout = app.layout()
    disabled = {
        c.id: c.disabled
        for c in layout._traverse()
        if getattr(c, "id", None) in ("recluster", "confirm-page", "group-name", "recluster-k")
    }
    assert disabled and all(disabled.values())
    said = {
        c.id: c.children for c in layout._traverse() if getattr(c, "id", None) in ("read-only-badge", "rename-status")
    }
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
    ranked, excluded, status, _ = call(app, "find_more", 1, None, {"ids": [3, 4], "title": "x"}, [], top, None)
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
