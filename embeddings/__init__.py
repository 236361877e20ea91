"""ICE batch job: a folder of images becomes a run directory (see docs/run-format.md).

Importing this package must stay light (no torch): the explorer imports
`embeddings.errors` and `embeddings.run_dir`.
"""

import os

# OpenMP threads (torch, faiss) spin while they wait for work by default. On a machine with
# other busy processes the spinning starves everyone: measured on 2 cores under load, faiss
# k-means ran 9x and a training step 4-7x faster with passive waiting. Set before torch or
# faiss is first imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
