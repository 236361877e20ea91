"""ICE batch job: a folder of images becomes a run directory (see docs/run-format.md).

Importing this package must stay light (no torch): `ice.cli` reads the settings in
`embeddings.config` to build its parsers.
"""

import ice  # noqa: F401  sets OMP_WAIT_POLICY and numba's cache folder before torch or faiss load

__version__ = "0.1.0"
