"""SCAN's clustering step (Van Gansbeke et al., 2020): the encoder, with a softmax head,
learns to give each image the same cluster as its nearest neighbours in the embedding,
while the clusters stay equally used.

A mixture on the embedding can only cut the space the encoder made. SCAN fine-tunes the
encoder too: an image and one of its neighbours, each under its own augmentation, must
agree on their cluster (the dot product of their two softmax outputs is pushed to 1), and
the entropy of the batch's mean prediction keeps every cluster in use. Several heads train
side by side on the same encoder; the one with the lowest loss gives the clusters.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import Config
from .model import AutoEncoder, to_input
from .progress import progress
from .selflabel import batch_pixels, predict
from .train import augment, on_device

HEADS = 5  # SCAN trains 10; the spread between heads is a few points, and each costs little
ENTROPY_WEIGHT = 5.0  # SCAN's weight for CIFAR and STL
LR_SHARE = 0.5  # of the training peak learning rate


def scan_loss(anchor: torch.Tensor, neighbour: torch.Tensor, entropy_weight: float = ENTROPY_WEIGHT
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (h, b, k) of anchors and of one neighbour each -> the loss of every head (h,),
    and its consistency term alone (h,)."""
    pa, pn = anchor.float().softmax(-1), neighbour.float().softmax(-1)
    consistency = -torch.log((pa * pn).sum(-1).clamp_min(1e-7)).mean(-1)
    mean = pa.mean(1)
    entropy = -(mean * torch.log(mean.clamp_min(1e-8))).sum(-1)
    return consistency - entropy_weight * entropy, consistency


class Heads(nn.Module):
    """`heads` linear heads (dim -> k) over one encoder: (b, 3, s, s) -> logits (heads, b, k)."""

    def __init__(self, encoder: nn.Module, dim: int, k: int, heads: int):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.Parameter(torch.randn(heads, dim, k) / dim ** 0.5)
        self.bias = nn.Parameter(torch.zeros(heads, 1, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return torch.einsum("bd,hdk->hbk", z.float(), self.heads) + self.bias


def plan_pairs(neighbours: np.ndarray, batch_size: int, epochs: int, seed: int
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The batches: (ids to load, sorted and unique; the anchors' rows in them; their chosen
    neighbours' rows), `epochs` shuffled passes over the anchors. neighbours (n, m) int64 holds
    each row's nearest rows, -1 where fewer were found; a row with none pairs with itself."""
    rng = np.random.default_rng(seed)
    n, m = neighbours.shape
    valid = neighbours >= 0
    counts = valid.sum(1)
    per_epoch = max(1, n // batch_size)
    plan = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for b in range(per_epoch):
            anchors = order[b * batch_size:(b + 1) * batch_size]
            pick = (rng.random(len(anchors)) * np.maximum(counts[anchors], 1)).astype(np.int64)
            # the pick-th valid neighbour: valid ones come first in a kNN list
            chosen = np.where(counts[anchors] > 0, neighbours[anchors, np.minimum(pick, m - 1)], anchors)
            ids = np.unique(np.concatenate([anchors, chosen]))
            plan.append((ids, np.searchsorted(ids, anchors), np.searchsorted(ids, chosen)))
    return plan


def scan_clusters(model: AutoEncoder, pixels_path: Path, neighbours: np.ndarray, k: int, epochs: int,
                  cfg: Config, device: torch.device, lr: float | None = None
                  ) -> tuple[np.ndarray, float, nn.Module]:
    """Fine-tune a copy of model's encoder with HEADS SCAN heads for `epochs` passes over the
    images; neighbours (n, m) int64 are each image's nearest images (not itself). Returns each
    image's cluster (n,) int64 from the head with the lowest loss, and that loss's consistency
    term (nats: 0 when every image agrees with its neighbours), and the fine-tuned encoder.
    The peak learning rate is `lr`, by default LR_SHARE of training's. `model` is left as it was."""
    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    net = Heads(copy.deepcopy(model.encoder), model.args.dim, k, HEADS).to(device)
    net.encoder.to(memory_format=torch.channels_last)
    plan = plan_pairs(neighbours, min(cfg.batch_size, len(neighbours)), epochs, cfg.seed)
    lr = lr or cfg.lr * LR_SHARE  # the encoder is trained already
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=len(plan), pct_start=0.1)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    use_bf16 = device.type == "cuda"
    totals = torch.zeros(HEADS, device=device)
    consistency = torch.zeros(HEADS, device=device)
    last_epoch = len(plan) - len(plan) // max(epochs, 1)  # the head is picked on the last pass
    net.train()
    with progress(len(plan), "scan", "batch") as bar:
        pairs = zip(on_device([p[1] for p in plan], device), on_device([p[2] for p in plan], device))
        loaded = batch_pixels(pixels_path, [p[0] for p in plan], cfg, device)
        for step, ((a, b), pixels) in enumerate(zip(pairs, loaded)):
            x = to_input(pixels.to(device, non_blocking=True))
            both = torch.cat([augment(x[a], cfg, gen), augment(x[b], cfg, gen)])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = net(both.contiguous(memory_format=torch.channels_last))
            losses, cons = scan_loss(logits[:, :len(a)], logits[:, len(a):])
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            sched.step()
            if step >= last_epoch:
                totals += losses.detach()
                consistency += cons.detach()
            bar.update(1)
    best = int(totals.argmin())
    chosen = nn.Linear(*net.heads.shape[1:]).to(device)
    with torch.no_grad():
        chosen.weight.copy_(net.heads[best].T)
        chosen.bias.copy_(net.bias[best, 0])
    clusters = predict(nn.Sequential(net.encoder, chosen), pixels_path, cfg, device)
    return clusters, float(consistency[best]) / max(1, len(plan) - last_epoch), net.encoder
