"""ICE from Python: read a run directory as pandas and numpy, or build one.

    import ice

    run = ice.load_run("runs/demo")
    run.items  # one row per image: path, cluster, its name, groups, map position

Importing `ice` loads no torch; `ice.embed` loads it when it runs the job. docs/python-api.md
shows the rest.
"""

from . import environment  # noqa: F401  first: before anything loads torch, faiss or numba
from .errors import IceError
from .run import Run, add, embed, load_run

__all__ = ["IceError", "Run", "add", "embed", "load_run"]
