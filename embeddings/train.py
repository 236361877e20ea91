"""Train the autoencoder on the cached pixels: reconstruction of a denoised augmented view,
plus an NT-Xent term that pulls two augmented views of one image together."""

from __future__ import annotations

import functools
import io
import math
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ice.errors import IceError
from ice.run_dir import CHECKPOINT, MODEL, atomic_path, load_rows

from .config import Config
from .model import AutoEncoder, ModelArgs, to_input
from .progress import progress


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class PixelBatches(torch.utils.data.Dataset):
    """Whole batches from the pixel memmap: one fancy-indexed read per batch."""

    def __init__(self, pixels_path: Path):
        self.pixels_path = pixels_path
        self.pixels = None  # opened lazily, once per worker process
        self.n = len(load_rows(pixels_path))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        if self.pixels is None:
            self.pixels = load_rows(self.pixels_path)
        idx = np.sort(np.asarray(idx))
        return torch.from_numpy(np.ascontiguousarray(self.pixels[idx]))


RESIDENT_MAX = 4 * 2**30  # bytes of pixels that training on a GPU copies there whole (CIFAR-10: 184 MB),
# and at most a quarter of the GPU's memory


class ResidentBatches:
    """The loader's batches (same sampler, same order), cut from a copy of every image on the
    device: no worker processes and no copy per step. On CIFAR-10 the workers held training
    at about 31,000 images/s where the training step alone ran 38,900 (H200).

    The epoch's indices go to the device in one copy as the epoch starts (on_device).
    """

    def __init__(self, pixels_path: Path, sampler: torch.utils.data.BatchSampler, device: torch.device):
        self.pixels = torch.from_numpy(np.array(load_rows(pixels_path))).to(device)
        self.sampler = sampler
        self.dataset = range(len(self.pixels))

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for idx in on_device([np.sort(np.asarray(idx)) for idx in self.sampler], self.pixels.device):
            yield self.pixels[idx]


def on_device(parts: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Each of `parts` (1-D integer arrays) as a tensor on `device`, cut from one copy of them
    all. A copy from pageable memory makes the host wait until the GPU has run everything
    queued: one a training step (the batch's image ids) kept the host from queueing the next
    step while the GPU ran this one."""
    if not parts:
        return []
    whole = torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False)).to(device)
    return list(whole.split([len(p) for p in parts]))


def fits_on_device(pixels_path: Path, device: torch.device) -> bool:
    """Whether training on `device` keeps a copy of every image there (ResidentBatches): a GPU,
    and at most RESIDENT_MAX bytes and a quarter of its memory (the rest is training's)."""
    return device.type == "cuda" and load_rows(pixels_path).nbytes <= min(
        RESIDENT_MAX, torch.cuda.get_device_properties(device).total_memory // 4
    )


class ShareOfBatches(torch.utils.data.BatchSampler):
    """One process's share of each batch when `world` processes train together: every world-th
    image of it from `rank` on. Every process draws the same shuffled batches (the same seed),
    so the shares are disjoint and make up the batch; a batch is cut to a multiple of `world`,
    since the processes gather equal parts of it (nt_xent)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool, rank: int, world: int):
        super().__init__(sampler, batch_size, drop_last)
        self.rank, self.world = rank, world

    def __iter__(self):
        for batch in super().__iter__():
            yield batch[: len(batch) - len(batch) % self.world][self.rank :: self.world]


def make_loader(
    pixels_path: Path,
    cfg: Config,
    device: torch.device,
    shuffle: bool,
    seed: int = 0,
    resident: bool = False,
    rank: int = 0,
    world: int = 1,
):
    """Batches of uint8 pixels (b, s, s, 3), shuffled (the last partial batch dropped) or in order;
    `resident`: from a copy of all pixels on `device` (ResidentBatches) instead of workers. Of
    `world` processes training together, process `rank` gets its share of each (ShareOfBatches)."""
    data = PixelBatches(pixels_path)
    base = (
        torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(seed))
        if shuffle
        else torch.utils.data.SequentialSampler(data)
    )
    drop = shuffle and len(data) > cfg.batch_size
    batches = (
        ShareOfBatches(base, cfg.batch_size, drop, rank, world)
        if world > 1
        else torch.utils.data.BatchSampler(base, cfg.batch_size, drop_last=drop)
    )
    if resident:
        return ResidentBatches(pixels_path, batches, device)
    return torch.utils.data.DataLoader(
        data,
        sampler=batches,
        batch_size=None,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )


def augment(x: torch.Tensor, cfg: Config, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zoom, shift and aspect), flip, colour jitter and greyscale, batched; x is
    (b, 3, s, s) in [-1, 1]."""
    b, dev = x.shape[0], x.device

    def rand(lo, hi):
        return torch.rand(b, generator=gen, device=dev) * (hi - lo) + lo

    scale = rand(cfg.crop, 1.0)
    ratio = torch.exp(rand(-math.log(cfg.aspect), math.log(cfg.aspect)) / 2) if cfg.aspect > 1 else 1.0
    sx, sy = (scale * ratio).clamp(max=1.0), (scale / ratio).clamp(max=1.0)
    tx, ty = rand(-1, 1) * (1 - sx), rand(-1, 1) * (1 - sy)
    flip = torch.where(rand(0, 1) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=dev)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.jitter > 0:
        j = cfg.jitter
        gray = x.mean(1, keepdim=True)
        x = gray + (x - gray) * rand(1 - j, 1 + j).view(b, 1, 1, 1)  # saturation
        mean = x.mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * rand(1 - j, 1 + j).view(b, 1, 1, 1)  # contrast
        x = x + rand(-j, j).view(b, 1, 1, 1)  # brightness
    if cfg.hue > 0:  # turn the colours about the grey axis: a hue shift without going through HSV
        x = torch.einsum("bij,bjhw->bihw", _hue_rotation(rand(-cfg.hue, cfg.hue) * 2 * math.pi), x)
    if cfg.gray > 0:
        x = torch.where((rand(0, 1) < cfg.gray).view(b, 1, 1, 1), x.mean(1, keepdim=True).expand_as(x), x)
    return x.clamp(-1, 1)


def _hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """(b,) radians -> (b, 3, 3) RGB matrices rotating about the (1, 1, 1) axis (Rodrigues)."""
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    eye, cross, outer = _grey_axis(angle.device)
    return eye * c + cross * s + (1 - c) * outer


@functools.lru_cache(maxsize=None)
def _grey_axis(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The identity, the cross-product matrix of the unit grey axis and its outer product, on
    `device`: made once, since a tensor built from Python numbers is copied to a GPU, and such a
    copy waits for everything queued there (it was two waits a training step)."""
    cross = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    return torch.eye(3).to(device), cross.to(device), torch.full((3, 3), 1 / 3).to(device)


def nt_xent(p1: torch.Tensor, p2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner out of the other 2b - 2 views.

    Under torch.distributed (DDP, one batch of b per process, the same b on each), the views of
    every process are gathered with their gradients, so each view picks its partner out of
    all 2B - 2 of the global batch; a process's loss is the mean over its own 2b views. DDP's
    mean of the processes' gradients is then the gradient of this loss on the whole batch in
    one process (tests/test_ddp.py)."""
    world, rank = distributed_rank()
    if world == 1:
        p = F.normalize(torch.cat([p1, p2]).float(), dim=1)
        sim = p @ p.T / temperature
        sim.fill_diagonal_(float("-inf"))
        b = p1.shape[0]
        target = (torch.arange(2 * b, device=p.device) + b) % (2 * b)  # made there: no copy to wait for
        return F.cross_entropy(sim, target)
    from torch.distributed.nn.functional import all_gather  # the gradients flow back to each process

    g1, g2 = torch.cat(all_gather(p1.contiguous())), torch.cat(all_gather(p2.contiguous()))
    p = F.normalize(torch.cat([g1, g2]).float(), dim=1)
    b, big = p1.shape[0], g1.shape[0]
    mine = torch.arange(rank * b, (rank + 1) * b, device=p.device)
    rows = torch.cat([mine, mine + big])  # this process's views among the 2B
    sim = p[rows] @ p.T / temperature
    sim[torch.arange(2 * b, device=p.device), rows] = float("-inf")
    return F.cross_entropy(sim, (rows + big) % (2 * big))


def distributed_rank() -> tuple[int, int]:
    """(world size, rank) of torch.distributed, or (1, 0) where it is not in use."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def average_gradients(model: torch.nn.Module, world: int) -> None:
    """Each parameter's gradient, averaged over the `world` processes training together, in one
    all-reduce: what DDP does, here without its wrapper, since step_loss calls the encoder, head
    and decoder on their own (tests/test_ddp.py checks it against one process)."""
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers(model: torch.nn.Module, world: int) -> None:
    """Batch norm's running statistics averaged over the processes, which each saw only their
    share of the images, so that the saved model's are those of all of them."""
    import torch.distributed as dist

    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


def compiled_parts(model: AutoEncoder) -> types.SimpleNamespace:
    """The model's encoder, head and decoder, each through torch.compile, for step_loss. The
    model itself is left as it is: its state_dict's keys, evaluation and embedding unchanged.
    augment stays eager: it draws from an explicit generator, which resumed runs restore."""

    def wrap(part):
        return None if part is None else torch.compile(part)

    return types.SimpleNamespace(encoder=wrap(model.encoder), head=wrap(model.head), decoder=wrap(model.decoder))


def step_loss(
    model: AutoEncoder | types.SimpleNamespace, batch: torch.Tensor, cfg: Config, gen: torch.Generator
) -> torch.Tensor:
    """Reconstruct the first view from its noisy copy; pull the two views' heads together.
    `model` is the AutoEncoder or its compiled_parts.

    Only the first view goes through the decoder: the second is there for the contrastive
    term, and decoding it too would cost a third more compute for little gain. The two views
    go through the encoder as one batch.
    """
    x = to_input(batch)
    view = augment(x, cfg, gen)
    noisy = view + cfg.noise * torch.randn(view.shape, generator=gen, device=view.device) if cfg.noise else view
    loss = torch.zeros((), device=x.device)
    if cfg.contrastive > 0:
        both = torch.cat([noisy, augment(x, cfg, gen)]).contiguous(memory_format=torch.channels_last)
        zz = model.encoder(both)
        z = zz[: len(x)]
        p1, p2 = model.head(zz).chunk(2)
        loss = loss + cfg.contrastive * nt_xent(p1, p2, cfg.temperature)
    else:
        z = model.encoder(noisy.contiguous(memory_format=torch.channels_last))
    if cfg.reconstruction > 0:
        loss = loss + cfg.reconstruction * F.mse_loss(model.decoder(z).float(), view)
    return loss


def train(
    run_dir: Path,
    pixels_path: Path,
    cfg: Config,
    device: torch.device,
    resume: bool = False,
    on_epoch: Callable[[int, AutoEncoder], None] | None = None,
) -> tuple[AutoEncoder, float]:
    """Train for cfg.epochs, checkpointing after every epoch; returns the model and final loss.
    `on_epoch(epoch, model)`, if given, runs after each epoch's checkpoint (benchmarks use it).

    Under torch.distributed (Ray Train's workers, embeddings/ray_engine.py) each process trains
    on its share of every batch, the gradients averaged over all of them, and the first process
    writes the checkpoints and the model; on_epoch runs in every process."""
    cfg = cfg.resolved()
    world, rank = distributed_rank()
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the batch shape never changes (the last is dropped)
    model = AutoEncoder(model_args(cfg)).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    loader = make_loader(
        pixels_path,
        cfg,
        device,
        shuffle=True,
        seed=cfg.seed,
        resident=fits_on_device(pixels_path, device),
        rank=rank,
        world=world,
    )
    steps = len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + rank)  # each process its own augmentations
    start, loss_avg = 0, math.nan
    ckpt_path = run_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        states = ckpt.get("generators") or [ckpt["generator"]]  # every process's, or one process's
        state = states[rank] if rank < len(states) else states[0]
        gen.set_state(state.cpu() if device.type == "cpu" else state)
        start, loss_avg = ckpt["epoch"], ckpt["loss"]
    use_bf16 = device.type == "cuda"
    parts = compiled_parts(model) if cfg.compile else model
    bar = progress(cfg.epochs * steps, "train", "batch", start * steps, disable=rank > 0)
    with bar:  # closed on an error too
        for epoch in range(start, cfg.epochs):
            model.train()
            total, seen, t0 = torch.zeros((), device=device), 0, time.perf_counter()
            loader.sampler.sampler.generator.manual_seed(cfg.seed + epoch)
            for i, batch in enumerate(loader):
                batch = batch.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    try:
                        loss = step_loss(parts, batch, cfg, gen)
                    except Exception as e:  # torch.compile's own failures (no C++ compiler, no Triton):
                        if parts is model:  # the step again, eagerly; an eager failure is raised
                            raise
                        reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                        print(
                            f"ice: --compile: torch.compile failed ({reason[:300]}); training without it",
                            file=sys.stderr,
                        )
                        parts = model
                        loss = step_loss(parts, batch, cfg, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    average_gradients(model, world)
                opt.step()
                sched.step()
                total += loss.detach() * len(batch)  # no .item() here: it would wait for the GPU every step
                seen += len(batch)
                bar.update(1)
                if bar.n % 20 == 0 or i + 1 == steps:  # and at each epoch's end: small sets have few batches
                    bar.set_postfix(
                        epoch=epoch + 1,
                        loss=f"{total.item() / seen:.4f}",
                        img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                    )
            if world > 1:  # the loss over every process's images, the same in each
                import torch.distributed as dist

                sums = torch.stack([total.float(), torch.tensor(float(seen), device=device)])
                dist.all_reduce(sums)
                total, seen = sums[0], int(sums[1].item())
                average_buffers(model, world)
            loss_avg = total.item() / max(seen, 1)
            if not math.isfinite(loss_avg):  # before the checkpoint: a resume starts from the last good epoch
                raise IceError(
                    f"training diverged in epoch {epoch + 1} (loss {loss_avg}); "
                    f"start again (--force) with a lower --lr than {cfg.lr:g}"
                )
            generators = gathered(gen.get_state(), world)
            if rank == 0:
                save_checkpoint(
                    ckpt_path,
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "generator": gen.get_state(),
                        **({"generators": generators} if world > 1 else {}),
                        "epoch": epoch + 1,
                        "loss": loss_avg,
                        "config": cfg.to_dict(),
                    },
                )
            if on_epoch is not None:
                on_epoch(epoch + 1, model)  # the next epoch starts with model.train()
    if rank == 0:
        save_checkpoint(
            run_dir / MODEL,
            {
                "model": model.state_dict(),
                "model_args": model.checkpoint_args(),
                "config": cfg.to_dict(),
                "epoch": cfg.epochs,
                "loss": loss_avg,
            },
        )
    return model, loss_avg


def gathered(state: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every process's `state` (a generator's), in rank order; [state] in one process."""
    if world == 1:
        return [state]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, state.cpu())
    return out


def model_args(cfg: Config) -> ModelArgs:
    return ModelArgs(cfg.image_size, cfg.dim, cfg.width, cfg.encoder, cfg.depth, decoder=cfg.reconstruction > 0)


def save_checkpoint(path: Path, obj: dict) -> None:
    """torch.save(obj) to `path`, atomically. Through memory (a checkpoint is megabytes):
    torch's own file writer reports a full disk as "RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos"; atomic_path names the file instead."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def load_model(run_dir: Path, device: torch.device) -> AutoEncoder:
    ckpt = torch.load(run_dir / MODEL, map_location=device, weights_only=False)
    model = AutoEncoder(ModelArgs(**ckpt["model_args"])).to(device, memory_format=torch.channels_last)
    model.load_state_dict(ckpt["model"])
    return model
