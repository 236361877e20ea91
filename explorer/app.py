"""The explorer: `create_app(run_dir)` builds the Dash app over one run directory."""

from __future__ import annotations

import threading
from importlib import import_module
from importlib.resources import files
from pathlib import Path

import dash

from .callbacks import clusters, grid, groups, map as map_callbacks, review, teach
from .data import load_run
from .layout import make_layout
from .routes import register_routes

# The page's CSS and JavaScript: the top-level assets/ folder, which explorer/assets links to and
# a wheel ships inside the package. Installed unpacked, the package gives a real folder for Dash.
ASSETS = files("explorer") / "assets"


def create_app(run_dir: str | Path, read_only: bool = False) -> dash.Dash:
    """A Dash app over a complete run; IceError if `run_dir` is not one.

    With read_only=True the app changes nothing in the run: no names, groups or
    re-clusterings are saved.
    """
    data = load_run(run_dir, read_only=read_only)
    app = dash.Dash(__name__, assets_folder=str(ASSETS), title=f"ICE · {data.run_dir.name}", update_title=None)
    app.layout = lambda: make_layout(data)  # per page load: shows what is on disk now
    register_routes(app.server, data)
    for module in (map_callbacks, grid, clusters, groups, review, teach):
        module.register(app, data)
    app.ice_data = data  # for tests and tools that need the loaded run
    # "More like these" and the grid's "most like the group" learn with scikit-learn, whose
    # import takes about a second: done now, beside the first page load, not at the first click
    threading.Thread(target=import_module, args=("sklearn.linear_model",), name="ice-warm-up", daemon=True).start()
    return app
