import numpy as np
import pytest
import torch

from embeddings.config import Config
from embeddings.model import AutoEncoder, ModelArgs, to_input
from embeddings.run_dir import CHECKPOINT, MODEL
from embeddings.train import augment, load_model, nt_xent, train


@pytest.mark.parametrize("size", [16, 32, 64])
def test_autoencoder_shapes(size):
    model = AutoEncoder(ModelArgs(image_size=size, dim=24, width=8))
    z, recon = model(torch.zeros(3, 3, size, size))
    assert z.shape == (3, 24) and recon.shape == (3, 3, size, size)


def test_to_input_range():
    x = to_input(torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert x.flatten().tolist() == pytest.approx([-1.0, 1.0, 0.0039], abs=1e-3)


def test_augment_keeps_shape_and_range_and_changes_pixels():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    out = augment(x, Config(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_nt_xent_prefers_matching_views():
    a = torch.randn(16, 8)
    assert nt_xent(a, a + 0.01 * torch.randn(16, 8), 0.2) < nt_xent(a, torch.randn(16, 8), 0.2)


def _pixels(tmp_path, n=40, size=16):
    rng = np.random.default_rng(0)
    path = tmp_path / "pixels.npy"
    np.save(path, rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8))
    return path


def test_train_checkpoints_every_epoch_and_resumes(tmp_path):
    cfg = Config(image_size=16, dim=8, width=8, epochs=2, batch_size=16, workers=0)
    pixels = _pixels(tmp_path)
    model, loss = train(tmp_path, pixels, cfg.replace(epochs=1), torch.device("cpu"))
    # a run that was meant to have 2 epochs but stopped after 1 leaves checkpoint epoch 1
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["epoch"] == 1 and np.isfinite(loss)
    ckpt["scheduler"]["total_steps"] = 2 * 2  # what the 2-epoch schedule has (40 images / 16, last dropped)
    torch.save(ckpt, tmp_path / CHECKPOINT)
    _, loss2 = train(tmp_path, pixels, cfg, torch.device("cpu"), resume=True)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["epoch"] == 2
    saved = torch.load(tmp_path / MODEL, weights_only=False)
    assert saved["epoch"] == 2 and saved["model_args"] == {"image_size": 16, "dim": 8, "width": 8}
    assert load_model(tmp_path, torch.device("cpu")).encoder(torch.zeros(1, 3, 16, 16)).shape == (1, 8)


def test_training_lowers_the_loss(tmp_path):
    cfg = Config(image_size=16, dim=8, width=8, batch_size=20, workers=0, contrastive=0, lr=5e-3)
    pixels = _pixels(tmp_path, n=60)
    _, first = train(tmp_path / "a", pixels, cfg.replace(epochs=1), torch.device("cpu"))
    _, later = train(tmp_path / "b", pixels, cfg.replace(epochs=8), torch.device("cpu"))
    assert later < first
