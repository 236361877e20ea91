"""GPU paths (CUDA training, SCAN and self-labelling with bf16 autocast and channels_last); run by
benchmarks/gpu_check.sh.

CI has no GPU: these skip there, and the same code paths run on the CPU in the other tests.
"""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from embeddings.config import Config
from embeddings.model import AutoEncoder, ModelArgs, to_input
from embeddings.pipeline import run_embed
from ice import run_dir as rd
from tests.conftest import TINY, make_images

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_pipeline_on_cuda(tmp_path):
    make_images(tmp_path / "in", n=300, size=32)
    manifest = run_embed(tmp_path / "in", tmp_path / "run", Config(**{**TINY, "device": "cuda", "epochs": 3}))
    assert manifest["device"].startswith("cuda")
    assert manifest["config"]["recipe"] == "contrastive"  # colour images on a GPU: SimCLR on the ResNet
    assert manifest["config"]["parallel_layout"] is True  # and UMAP on every core, unseeded
    emb = np.load(tmp_path / "run" / rd.EMBEDDINGS)
    assert emb.shape == (300, 128) and np.isfinite(emb).all()


def test_resident_batches_on_cuda_are_the_loaders(tmp_path):
    from embeddings.train import make_loader

    path = tmp_path / "pixels.npy"
    np.save(path, np.random.default_rng(0).integers(0, 255, (100, 8, 8, 3), dtype=np.uint8))
    cfg = Config(batch_size=32, workers=0).resolved()
    cpu = list(make_loader(path, cfg, torch.device("cpu"), shuffle=True, seed=1))
    gpu = list(make_loader(path, cfg, torch.device("cuda"), shuffle=True, seed=1, resident=True))
    assert len(gpu) == len(cpu) == 3 and all(b.is_cuda for b in gpu)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu))


def test_training_steps_never_make_the_host_wait_for_the_gpu(tmp_path):
    """A training step (resident batch, two augmented views, the ResNet, NT-Xent, backward)
    queues its work without a host-device sync: a copy from pageable memory waits for
    everything queued, so one a step stalled the host (the batch's indices, the hue matrix,
    NT-Xent's targets did). The epoch's one copy of indices and the first step's constants
    happen before the check starts."""
    from embeddings.train import make_loader, model_args, step_loss

    path = tmp_path / "pixels.npy"
    np.save(path, np.random.default_rng(0).integers(0, 255, (256, 32, 32, 3), dtype=np.uint8))
    cfg = Config(recipe="contrastive", image_size=32, batch_size=64, workers=0).resolved()
    device = torch.device("cuda")
    model = AutoEncoder(model_args(cfg)).to(device, memory_format=torch.channels_last)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = iter(make_loader(path, cfg, device, shuffle=True, resident=True))
    first = next(batches)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        step_loss(model, first, cfg, gen).backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_loss(model, batch, cfg, gen)
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()


def test_compiled_training_on_cuda_matches_eager(tmp_path):
    """--compile on the GPU (inductor's Triton kernels, bf16 autocast): the ResNet recipe
    trains to about the eager run's loss, and the saved model is the plain one."""
    from embeddings.train import load_model, train

    path = tmp_path / "pixels.npy"
    np.save(path, np.random.default_rng(0).integers(0, 255, (512, 32, 32, 3), dtype=np.uint8))
    cfg = Config(recipe="contrastive", image_size=32, batch_size=128, epochs=2, workers=0)
    torch._dynamo.reset()
    losses = {}
    for compiled in (False, True):
        torch._dynamo.utils.counters.clear()
        _, losses[compiled] = train(tmp_path / str(compiled), path, cfg.replace(compile=compiled), torch.device("cuda"))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == (2 if compiled else 0)  # encoder, head
    assert losses[True] == pytest.approx(losses[False], rel=0.05)  # bf16, and cudnn picks kernels by timing
    load_model(tmp_path / "True", torch.device("cuda"))


def test_bf16_encoder_agrees_with_fp32_on_cpu():
    torch.manual_seed(0)
    model = AutoEncoder(ModelArgs(32, 64, 32)).eval()
    pixels = torch.randint(0, 255, (64, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        ref = F.normalize(model.encoder(to_input(pixels)), dim=1)
        gpu = model.cuda().to(memory_format=torch.channels_last)
        x = to_input(pixels.cuda()).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = F.normalize(gpu.encoder(x).float(), dim=1).cpu()
    cos = (ref * out).sum(1)
    assert cos.min() > 0.99, cos.min()


def test_self_label_on_cuda_moves_planted_wrong_clusters(tmp_path):
    from embeddings.selflabel import self_label
    from tests.test_selflabel import planted

    pixels, truth, clusters, _ = planted(tmp_path)
    torch.manual_seed(0)
    cfg = Config(image_size=16, dim=8, width=8, batch_size=64, workers=0, self_label_epochs=5)
    out = self_label(AutoEncoder(ModelArgs(16, 8, 8)), pixels, clusters, cfg, torch.device("cuda"))
    assert (out == truth).mean() >= 0.97, "bf16 autocast on CUDA should learn the bars as the CPU does"


def test_ice_add_embeds_on_cuda_as_on_the_cpu(tmp_path):
    """`ice add` embeds the new images with the run's encoder on the GPU (bf16 autocast): the
    clusters it gives them agree with those of an add on the CPU."""
    import shutil

    import pandas as pd

    from embeddings.add import add_images

    make_images(tmp_path / "in", n=200, size=32)
    make_images(tmp_path / "new", n=60, size=32, seed=5)
    run_embed(tmp_path / "in", tmp_path / "run", Config(**{**TINY, "device": "cpu", "epochs": 3}))
    shutil.copytree(tmp_path / "run", tmp_path / "run-cpu")
    add_images(tmp_path / "run", [tmp_path / "new"], workers=0, device="cuda")
    add_images(tmp_path / "run-cpu", [tmp_path / "new"], workers=0, device="cpu")
    gpu, cpu = (pd.read_parquet(tmp_path / r / rd.ITEMS).iloc[200:] for r in ("run", "run-cpu"))
    assert len(gpu) == 60 and (gpu["cluster"].to_numpy() == cpu["cluster"].to_numpy()).mean() >= 0.9
