"""ICE batch job: a folder of images becomes a run directory (see docs/run-format.md).

Importing this package must stay light (no torch): the explorer imports
`embeddings.errors` and `embeddings.run_dir`.
"""

__version__ = "0.1.0"
