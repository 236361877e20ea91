"""The explorer benchmark: its map positions and lasso, and its dry run end to end."""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks import explorer_bench
from benchmarks.explorer_bench import MapPoints
from benchmarks.load import make_synthetic_run
from explorer.data import load_run
from explorer.figures import point_ids
from explorer.region import ids_in_region
from tests.conftest_browser import browser_missing


def test_map_points_and_lasso_name_the_images_the_server_resolves(tmp_path):
    run_dir = make_synthetic_run(tmp_path / "run", 600, clusters=7)
    points = MapPoints.of_run(run_dir)
    clustering = load_run(run_dir, read_only=True).clustering("run")
    ids = np.concatenate([point_ids(clustering, c, points.point[points.curve == c]) for c in range(7)])
    assert sorted(ids) == list(range(600))  # every image, each once
    assert all(point_ids(clustering, points.curve[i], [points.point[i]])[0] == i for i in range(0, 600, 37))

    lasso, least, most = points.lasso(150, np.random.default_rng(1))
    chosen = ids_in_region(points.x, points.y, clustering.cluster, lasso)
    assert least <= len(chosen) <= most and 140 <= least <= 150 <= most <= 151
    d2 = (points.x - points.x[chosen].mean()) ** 2 + (points.y - points.y[chosen].mean()) ** 2
    assert d2[chosen].mean() < d2.mean()  # one patch of the map, not scattered points


def test_dry_run_measures_every_figure_and_records_nothing(tmp_path, monkeypatch, capsys):
    """2,000 points, the server and (where installed) Chromium: about 10 s on 2 cores."""
    monkeypatch.setattr(explorer_bench, "DATA_CACHE", tmp_path)
    monkeypatch.setattr(explorer_bench, "append_section", lambda *a, **k: pytest.fail("recorded a dry run"))
    report = explorer_bench.main(["--dry-run"])
    out = capsys.readouterr().out

    assert report.n == 2000 and (tmp_path / "explorer-bench-2000" / "manifest.json").exists()
    assert len(report.first_map) == 2
    assert all(a["bytes"] > 1000 and 0 < a["gzip"] < a["bytes"] and a["ms"] > 0 for a in report.first_map.values())
    assert report.first_map["map figure callback"]["bytes"] > 2000 * 8  # x, y as float32 at least
    for kind in ("hover", "thumb"):
        assert len(report.hover[kind]) == 30 and min(report.hover[kind]) > 0
    assert report.lasso_points == 1000 and len(report.lasso["select"]) == len(report.lasso["grid"]) == 3
    assert min(report.lasso["select"] + report.lasso["grid"]) > 0 and report.lasso_bytes["select answer"] > 1000

    assert "### Explorer: first map, hover and lasso at 2,000 points" in out
    assert "| GET /thumb/ID.png | 30 |" in out and "p95 <= 50 ms" in out
    missing = browser_missing()
    if missing and os.environ.get("ICE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ICE_REQUIRE_BROWSER=1 but {missing}")
    if missing:
        assert report.loads is None and "skipped: chromium not found" in out
    else:
        assert len(report.loads) == 2
        assert all(0 < load["loaded"] < load["drawn"] < 60 and load["received"] > 0 for load in report.loads)
        assert "| map drawn in Chromium, from driver.get | 2 |" in out
        pixels, width, ratio = report.loads[-1]["canvas"]  # drawn at the screen's pixel ratio, not plotly's 2
        assert pixels == round(width * ratio) and width > 100


def test_speed_map_stage_times_the_first_map_alone(tmp_path, monkeypatch, capsys):
    """`python -m benchmarks.speed --stage map --dry-run`: 2,000 points, no target below 1M."""
    from benchmarks import speed

    monkeypatch.setattr(explorer_bench, "DATA_CACHE", tmp_path)
    [sec] = speed.main(["--stage", "map", "--dry-run"])
    assert sec.title.startswith("Speed: the explorer's first map at 2,000 points") and sec.targets == []
    assert "layout + map figure:" in sec.body() and "| run |" not in sec.body()  # notes only, no empty table
    if browser_missing():
        assert "skipped: chromium not found" in sec.body()
    else:
        assert "map drawn in headless Chromium, 2 loads" in sec.body()
        assert "the target (<= 5 s) is set at 1,000,000 points" in sec.body()
