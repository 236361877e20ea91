"""The embedded default: scikit-learn's 1,797 handwritten digits, written out as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ice.run_dir import atomic_path

# The digits are 8x8 (so the working size comes out at 16); 15 epochs keep the demo under a
# minute on 2 cores.
DEMO_CONFIG = dict(epochs=15, crop=0.8, labels_from_folders=True)


def write_digits(folder: Path, limit: int | None = None) -> Path:
    """Write `<folder>/<digit>/<n>.png` for each digit image (once); return the folder."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    n = len(images) if limit is None else min(limit, len(images))
    for i in range(n):
        path = folder / str(digits.target[i]) / f"{i:04d}.png"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(images[i], "L").save(tmp)
    return folder
