"""Training across processes (torch.distributed, gloo on this CPU) gives what one process gives
on the whole batch: the contrastive loss gathered across processes (embeddings.train.nt_xent),
and the parameters after 5 steps, with DDP and with the gradient averaging embeddings.train.train
uses. embeddings.train.train itself in two processes: the same model in each, and a resume from
its checkpoint ends where an uninterrupted run does."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embeddings.train import ShareOfBatches, average_gradients, nt_xent

pytestmark = pytest.mark.ddp

WORLD, BATCH, STEPS = 2, 8, 5  # processes, images per process, steps


def make_model() -> torch.nn.Module:
    """A small projection without batch norm, whose statistics would be per process."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.GELU(), torch.nn.Linear(16, 6))


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    """(steps, WORLD * BATCH, 12) inputs and the noise that makes their second views."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, WORLD * BATCH, 12, generator=g), 0.3 * torch.randn(STEPS, WORLD * BATCH, 12, generator=g)


def train(net, x, noise, after_backward=None) -> torch.Tensor:
    """STEPS steps of SGD on nt_xent of two views of x; the loss of each step."""
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        loss = nt_xent(net(x[step]), net(x[step] + noise[step]), 0.2)
        loss.backward()
        if after_backward is not None:
            after_backward(net)
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def worker(rank: int, init: str, out: str, how: str = "ddp") -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        x, noise = make_data()
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        if how == "ddp":
            ddp = torch.nn.parallel.DistributedDataParallel(make_model())
            losses = train(ddp, x[:, mine], noise[:, mine])
            net = ddp.module
        else:  # embeddings.train.train's way: the gradients averaged after each backward
            net = make_model()
            losses = train(net, x[:, mine], noise[:, mine], lambda m: average_gradients(m, WORLD))
        dist.all_reduce(losses)  # the processes' mean loss: the loss of the whole batch
        if rank == 0:
            torch.save({"params": [p.detach() for p in net.parameters()], "losses": losses / WORLD}, out)
        dist.barrier()  # neither process tears gloo down while the other still uses it (an abort)
    finally:
        dist.destroy_process_group()
    leave()


def leave() -> None:
    """End a worker process that did its work: at once, without the interpreter's teardown, in
    which gloo's threads now and then abort the process ("terminate called without an active
    exception", about one run in ten here) after everything was done and saved."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.parametrize("how", ["ddp", "average_gradients"])
def test_two_gloo_processes_train_as_one_process_on_the_whole_batch(tmp_path, how):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(f"file://{tmp_path / 'rendezvous'}", str(out), how), nprocs=WORLD, join=True)
    got = torch.load(out)
    one = make_model()
    losses = train(one, *make_data())
    assert torch.allclose(got["losses"], losses, atol=1e-6)  # the gathered loss is the one-process loss
    for a, b in zip(got["params"], one.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # each process alone on its half, without the other's views, would have learned otherwise
    half = make_model()
    x, noise = make_data()
    train(half, x[:, :BATCH], noise[:, :BATCH])
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got["params"], half.parameters(), strict=True))


def test_the_processes_shares_of_a_batch_are_disjoint_and_make_it_up():
    base = torch.utils.data.RandomSampler(range(103), generator=torch.Generator().manual_seed(3))
    whole = list(torch.utils.data.BatchSampler(base, 10, drop_last=True))
    shares = []
    for rank in range(3):
        base.generator.manual_seed(3)
        shares.append(list(ShareOfBatches(base, 10, True, rank, 3)))
    assert all(len(s) == len(whole) == 10 for s in shares)
    for i, batch in enumerate(whole):
        parts = [s[i] for s in shares]
        assert all(len(p) == 3 for p in parts)  # 10 cut to 9: equal parts to gather
        assert sorted(sum(parts, [])) == sorted(batch[:9])


class Stopped(Exception):
    """Raised by train_worker's processes after an epoch, as if they were stopped there."""


def train_worker(rank: int, init: str, run_dir: str, cfg, resume: bool, stop_after: int) -> None:
    """embeddings.train.train as one of WORLD processes; each saves its final parameters. With
    stop_after, every process stops after that epoch, its checkpoint written."""
    from pathlib import Path

    from embeddings.train import train as train_encoder

    def on_epoch(epoch, _model):
        if epoch == stop_after:
            raise Stopped(f"stopped after epoch {epoch}")

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        folder = Path(run_dir)
        model, loss = train_encoder(folder, folder / "pixels.npy", cfg, torch.device("cpu"), resume, on_epoch)
        torch.save({"state": model.state_dict(), "loss": loss}, folder / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    leave()


def test_the_encoders_training_in_two_processes_keeps_one_model_and_resumes_exactly(tmp_path):
    import numpy as np

    from embeddings.config import Config
    from ice import run_dir as rd

    pixels = np.random.default_rng(0).integers(0, 256, size=(96, 16, 16, 3), dtype=np.uint8)
    cfg = Config(image_size=16, epochs=3, batch_size=32, workers=0, recipe="contrastive-small", seed=1)

    def run(folder, resume=False, stop_after=0, attempt=0):
        folder.mkdir(exist_ok=True)
        np.save(folder / "pixels.npy", pixels)
        rendezvous = f"file://{folder / f'rendezvous-{attempt}'}"
        mp.spawn(train_worker, args=(rendezvous, str(folder), cfg, resume, stop_after), nprocs=WORLD, join=True)
        return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]

    whole = run(tmp_path / "whole")
    # one model: the same parameters and batch-norm statistics in both processes, the first's saved
    for key, value in whole[0]["state"].items():
        assert torch.equal(value, whole[1]["state"][key]), key
    saved = torch.load(tmp_path / "whole" / rd.MODEL, weights_only=False)
    assert all(torch.equal(v, whole[0]["state"][k]) for k, v in saved["model"].items())
    checkpoint = torch.load(tmp_path / "whole" / rd.CHECKPOINT, weights_only=False)
    assert checkpoint["epoch"] == 3 and len(checkpoint["generators"]) == WORLD
    # stopped after the first epoch, then resumed from its checkpoint: the uninterrupted model
    with pytest.raises(Exception, match="stopped after epoch 1"):
        run(tmp_path / "part", stop_after=1)
    assert torch.load(tmp_path / "part" / rd.CHECKPOINT, weights_only=False)["epoch"] == 1
    resumed = run(tmp_path / "part", resume=True, attempt=1)
    for key, value in whole[0]["state"].items():
        assert torch.allclose(value.float(), resumed[0]["state"][key].float(), atol=1e-6), key
    assert resumed[0]["loss"] == pytest.approx(whole[0]["loss"], rel=1e-6)
