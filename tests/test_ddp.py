"""Training across processes (torch.distributed, gloo on this CPU) gives what one process gives
on the whole batch: the contrastive loss gathered across processes (embeddings.train.nt_xent),
and DDP's parameters after 5 steps."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embeddings.train import nt_xent

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


def train(net, x, noise) -> torch.Tensor:
    """STEPS steps of SGD on nt_xent of two views of x; the loss of each step."""
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        loss = nt_xent(net(x[step]), net(x[step] + noise[step]), 0.2)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        net = torch.nn.parallel.DistributedDataParallel(make_model())
        x, noise = make_data()
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        losses = train(net, x[:, mine], noise[:, mine])
        dist.all_reduce(losses)  # the processes' mean loss: the loss of the whole batch
        if rank == 0:
            torch.save({"params": [p.detach() for p in net.module.parameters()], "losses": losses / WORLD}, out)
        dist.barrier()  # neither process tears gloo down while the other still uses it (an abort)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_as_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
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
