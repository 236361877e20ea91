"""Self-labelling, the last step of SCAN: the encoder, with a linear head, learns to predict
each image's cluster from augmented views, and every image then takes the cluster that the
fine-tuned encoder gives its plain view.

The clusters of the mixture are right for most images but follow the autoencoder's
embedding, which puts some 4s beside 9s. A classifier trained on all of them, under crops
and jitter and with smoothed targets, learns what the majority of each cluster shares, and
the minority it misplaced moves. Training only on each cluster's most confident half, or a
second round on the first round's confident predictions, did no better (BENCHMARKS.md
history, 2026-11-27).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ice.run_dir import read_in_order

from .config import Config
from .model import AutoEncoder, to_input
from .progress import progress
from .train import PixelBatches, ResidentBatches, augment, fits_on_device, on_device

LABEL_SMOOTHING = 0.1  # the clusters hold some wrong labels: never ask for certainty
MIN_STEPS = 150  # small sets get more epochs: on the digits, 5 epochs (35 steps) lost NMI
# large sets see fewer epochs: on MNIST 250k images seen did about as well as 350k, and at a
# 100k fit sample five epochs took most of the fitting stages' time (BENCHMARKS.md)
MAX_IMAGES = 250_000


def batch_pixels(pixels_path: Path, batches: list[np.ndarray], cfg: Config, device: torch.device):
    """Pixels (b, s, s, 3) uint8 for each batch of sorted image ids in `batches`, in that order
    (train.make_loader's batches do not say which images they hold, and the targets need
    that): cut from a copy of every image on the GPU where they fit, else read by workers."""
    if fits_on_device(pixels_path, device):
        return ResidentBatches(pixels_path, batches, device)
    return torch.utils.data.DataLoader(
        PixelBatches(pixels_path),
        sampler=batches,
        batch_size=None,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )


def plan_batches(n: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The training batches of image ids (sorted within each batch): `epochs` shuffled passes
    over n images, whole passes up to at least MIN_STEPS batches, cut at MAX_IMAGES images."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    passes = max(epochs, -(-MIN_STEPS // per_epoch))
    steps = min(passes * per_epoch, MAX_IMAGES // batch_size)
    batches = []
    while len(batches) < steps:
        batches += list(np.sort(rng.permutation(n)[: per_epoch * batch_size].reshape(-1, batch_size), axis=1))
    return batches[:steps]


def self_label(
    model: AutoEncoder,
    pixels_path: Path,
    clusters: np.ndarray,
    cfg: Config,
    device: torch.device,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Fine-tune a copy of model's encoder to predict `clusters` (n,) for cfg.self_label_epochs
    epochs (at least MIN_STEPS batches, at most MAX_IMAGES images) over the images `rows`
    (sorted ids; default: all); return every image's predicted cluster (n,) int64. `model` is
    left as it was. 0 epochs is refused rather than read as the floor of MIN_STEPS batches: the
    stage skips self-labelling then."""
    cfg = cfg.resolved()
    if cfg.self_label_epochs < 1:
        raise ValueError(f"self_label_epochs={cfg.self_label_epochs}: self_label needs at least 1")
    torch.manual_seed(cfg.seed)
    k = int(clusters.max()) + 1
    net = nn.Sequential(copy.deepcopy(model.encoder), nn.Linear(model.args.dim, k)).to(
        device, memory_format=torch.channels_last
    )
    targets = torch.from_numpy(np.asarray(clusters, dtype=np.int64)).to(device)
    pool = np.arange(len(clusters)) if rows is None else np.asarray(rows)
    batches = [
        pool[b] for b in plan_batches(len(pool), min(cfg.batch_size, len(pool)), cfg.self_label_epochs, cfg.seed)
    ]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=len(batches), pct_start=0.15)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    use_bf16 = device.type == "cuda"
    net.train()
    with progress(len(batches), "self-label", "batch") as bar:
        for ids, pixels in zip(on_device(batches, device), batch_pixels(pixels_path, batches, cfg, device)):
            x = augment(to_input(pixels.to(device, non_blocking=True)), cfg, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = net(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), targets[ids], label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    return predict(net, pixels_path, device)


def predict(net: nn.Module, pixels_path: Path, device: torch.device) -> np.ndarray:
    """Each image's cluster (n,) int64: the argmax of net's logits (n, k) on its plain view.
    The pixels are read in order by this process, not mapped by loader workers: those would
    be forked from it as it stands at the job's end, and would keep every page they read
    mapped, which made this pass the job's peak (BENCHMARKS.md, ray_bench)."""
    net.eval()
    out = []
    with torch.no_grad():
        for pixels in read_in_order(pixels_path, 1024):
            x = to_input(torch.from_numpy(pixels).to(device)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out.append(net(x).argmax(1).cpu().numpy())
    return np.concatenate(out)
