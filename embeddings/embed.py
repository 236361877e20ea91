"""Run the trained encoder over every image, without augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ice.run_dir import atomic_path, new_memmap

from .config import Config
from .model import AutoEncoder, to_input
from .progress import progress
from .train import make_loader


@torch.no_grad()
def embed(model: AutoEncoder, pixels_path: Path, out_path: Path, cfg: Config, device: torch.device) -> np.ndarray:
    """Write `out_path`, (n, dim) float32 L2-normalised rows in image_id order; return it memory-mapped."""
    cfg = cfg.resolved()
    model.eval()
    loader = make_loader(pixels_path, cfg.replace(batch_size=max(cfg.batch_size, 512)), device, shuffle=False)
    n = len(loader.dataset)
    with atomic_path(out_path, suffix=".npy") as tmp:
        out = new_memmap(tmp, np.float32, (n, cfg.dim))
        row = 0
        with progress(n, "embed") as bar:
            for batch in loader:
                z = encode(model, batch.to(device, non_blocking=True), device)
                out[row : row + len(z)] = z
                row += len(z)
                bar.update(len(z))
        out.flush()
        del out
    return np.load(out_path, mmap_mode="r")


def encode(model: AutoEncoder, batch: torch.Tensor, device: torch.device) -> np.ndarray:
    """(b, dim) float32 L2-normalised embeddings of a batch of uint8 pixels already on `device`."""
    x = to_input(batch).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        z = model.encoder(x)
    return F.normalize(z.float(), dim=1).cpu().numpy()
