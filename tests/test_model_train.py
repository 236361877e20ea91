import math
import shutil

import numpy as np
import pytest
import torch

from embeddings.config import Config
from embeddings.model import AutoEncoder, ModelArgs, to_input
from embeddings.train import augment, load_model, nt_xent, train
from ice.errors import IceError
from ice.run_dir import CHECKPOINT, MODEL

# every image size is a multiple of 16: powers of two halve down to 4x4, the others to the
# side where halving stops being exact (48 and 96 to 6x6, 80 to 5x5, 112 to 7x7)
BOTTOM = {16: 4, 32: 4, 48: 6, 64: 4, 80: 5, 96: 6, 112: 7, 256: 4}


@pytest.mark.parametrize("size", BOTTOM)
def test_autoencoder_shapes(size):
    model = AutoEncoder(ModelArgs(image_size=size, dim=24, width=8))
    z, recon = model(torch.zeros(3, 3, size, size))
    assert z.shape == (3, 24) and recon.shape == (3, 3, size, size)
    assert model.encoder.convs(torch.zeros(3, 3, size, size)).shape[2:] == (BOTTOM[size],) * 2


@pytest.mark.parametrize("size, pooled", [(16, 4), (32, 4), (48, 6), (64, 4), (80, 5)])  # 64 up: a stride-2 stem
@pytest.mark.parametrize("depth", [1, 2])
def test_resnet_encoder_shapes(size, pooled, depth):
    model = AutoEncoder(ModelArgs(image_size=size, dim=24, width=8, encoder="resnet", depth=depth))
    z, recon = model(torch.zeros(3, 3, size, size))
    assert z.shape == (3, 24) and recon.shape == (3, 3, size, size)
    assert model.head(z).shape == (3, 24)
    assert model.encoder.convs(torch.zeros(3, 3, size, size)).shape[2:] == (pooled, pooled)


def test_power_of_two_models_keep_their_shapes():
    """Checkpoints saved before sizes like 48 worked must still load: the same parameters."""
    model = AutoEncoder(ModelArgs(image_size=32, dim=64, width=16))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["encoder.fc.weight"] == (64, 64 * 16) and shapes["decoder.fc.weight"] == (64 * 16, 64)
    assert len([k for k in shapes if k.startswith("encoder.convs") and k.endswith(".0.weight")]) == 3


def test_to_input_range():
    x = to_input(torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert x.flatten().tolist() == pytest.approx([-1.0, 1.0, 0.0039], abs=1e-3)


def test_augment_keeps_shape_and_range_and_changes_pixels():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    out = augment(x, Config().resolved(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_hue_turn_keeps_grey_and_brightness():
    cfg = Config(crop=1.0, jitter=0.0, hue=0.5).resolved()
    x = torch.rand(8, 3, 16, 16) * 1.6 - 0.8
    x[:, :, :4] = x[:, :1, :4]  # a grey band: equal channels
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, :, :4], x[:, :, :4], atol=1e-5)
    assert not torch.allclose(out[:, :, 8:], x[:, :, 8:], atol=1e-2)
    inside = (out > -1) & (out < 1)  # where nothing was clamped, the channel mean is kept
    same = inside.all(1)
    assert torch.allclose(out.mean(1)[same], x.mean(1)[same], atol=1e-5)


def test_gray_views_have_equal_channels_and_aspect_crops_differ_by_axis():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    grey = augment(x, Config(gray=1.0).resolved(), torch.Generator().manual_seed(0))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    ramp = torch.linspace(-1, 1, 16)
    img = (ramp.view(1, 1, 1, 16) + ramp.view(1, 1, 16, 1)).clamp(-1, 1).expand(64, 3, 16, 16).contiguous()
    out = augment(img, Config(crop=0.5, aspect=2.0, jitter=0.0).resolved(), torch.Generator().manual_seed(1))
    across = out[:, 0, 8, -2] - out[:, 0, 8, 1]  # the ramp's rise seen along x and along y
    down = out[:, 0, -2, 8] - out[:, 0, 1, 8]
    ratio = across / down
    assert ratio.max() > 1.2 and ratio.min() < 1 / 1.2  # wider crops in some views, taller in others


def test_nt_xent_prefers_matching_views():
    a = torch.randn(16, 8)
    assert nt_xent(a, a + 0.01 * torch.randn(16, 8), 0.2) < nt_xent(a, torch.randn(16, 8), 0.2)


def test_nt_xent_is_cross_entropy_against_each_views_partner():
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    p = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sim = p @ p.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    partner = torch.tensor([6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5])
    assert torch.allclose(nt_xent(a, b, 0.5), torch.nn.functional.cross_entropy(sim, partner))


def test_resident_batches_are_the_loaders_epoch_after_epoch(tmp_path):
    """ResidentBatches (on the CPU here; a GPU in training) gives the worker loader's batches,
    in its order, in every epoch that train reseeds the sampler for."""
    from embeddings.train import ResidentBatches, make_loader

    path = _pixels(tmp_path, n=100, size=8)
    cfg = Config(batch_size=32, workers=0).resolved()
    plain = make_loader(path, cfg, torch.device("cpu"), shuffle=True, seed=1)
    resident = make_loader(path, cfg, torch.device("cpu"), shuffle=True, seed=1, resident=True)
    assert isinstance(resident, ResidentBatches) and len(resident) == len(plain) == 3
    epochs = []
    for epoch in range(2):
        for loader in (plain, resident):
            loader.sampler.sampler.generator.manual_seed(1 + epoch)
        a, b = list(plain), list(resident)
        assert len(a) == len(b) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))
        epochs.append(torch.cat(b))
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch


def _pixels(tmp_path, n=40, size=16):
    rng = np.random.default_rng(0)
    path = tmp_path / "pixels.npy"
    np.save(path, rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8))
    return path


def test_the_progress_bar_ends_on_the_last_epoch(tmp_path, capsys):
    """One batch an epoch: the bar's epoch was set every 20 batches only, so 30 epochs ended
    showing epoch=20."""
    cfg = Config(image_size=16, dim=8, width=8, epochs=23, batch_size=32, workers=0)
    train(tmp_path, _pixels(tmp_path), cfg, torch.device("cpu"))
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "23/23" in last and "epoch=23" in last, last


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
    assert saved["epoch"] == 2 and saved["model_args"] == {
        "image_size": 16,
        "dim": 8,
        "width": 8,
        "encoder": "convnet",
        "depth": 1,
        "decoder": True,
    }
    assert load_model(tmp_path, torch.device("cpu")).encoder(torch.zeros(1, 3, 16, 16)).shape == (1, 8)


def test_training_lowers_the_loss(tmp_path):
    cfg = Config(image_size=16, dim=8, width=8, batch_size=20, workers=0, contrastive=0, lr=5e-3)
    pixels = _pixels(tmp_path, n=60)
    _, first = train(tmp_path / "a", pixels, cfg.replace(epochs=1), torch.device("cpu"))
    _, later = train(tmp_path / "b", pixels, cfg.replace(epochs=8), torch.device("cpu"))
    assert later < first


def test_contrastive_resnet_trains_without_decoding(tmp_path):
    cfg = Config(
        image_size=16,
        dim=8,
        width=8,
        batch_size=20,
        workers=0,
        encoder="resnet",
        contrastive=1.0,
        reconstruction=0.0,
        flip=True,
        hue=0.1,
        gray=0.2,
        aspect=1.33,
        noise=0.0,
        lr=5e-3,
    )
    pixels = _pixels(tmp_path, n=60)
    seen = []
    model, loss = train(
        tmp_path, pixels, cfg.replace(epochs=3), torch.device("cpu"), on_epoch=lambda epoch, m: seen.append(epoch)
    )
    assert seen == [1, 2, 3]
    assert np.isfinite(loss) and loss > 0
    assert model.decoder is None  # reconstruction 0: nothing to decode with, nothing saved
    reloaded = load_model(tmp_path, torch.device("cpu")).eval()
    x = torch.zeros(2, 3, 16, 16)
    assert torch.allclose(reloaded.encoder(x), model.eval().encoder(x), atol=1e-5)


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (g++); .ci/run installs one",
)
def test_compiled_training_keeps_the_models_weights_and_its_losses(tmp_path):
    """--compile trains through torch.compile's kernels (inductor's C++ ones here): the same
    steps, so about the same loss epoch by epoch, and a model.pt that loads and embeds as
    the eager run's does."""
    cfg = Config(image_size=16, dim=8, width=8, epochs=2, batch_size=20, workers=0, contrastive=1.0, lr=5e-3)
    pixels = _pixels(tmp_path, n=60)
    losses = {}
    torch._dynamo.reset()
    for compiled in (False, True):
        torch._dynamo.utils.counters.clear()
        seen = []
        run = tmp_path / str(compiled)
        model, loss = train(
            run,
            pixels,
            cfg.replace(compile=compiled),
            torch.device("cpu"),
            on_epoch=lambda epoch, m: seen.append(epoch),
        )
        losses[compiled] = loss
        assert seen == [1, 2]
        # the encoder, the head and the decoder each became a graph, or nothing was compiled
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == (3 if compiled else 0)
        reloaded = load_model(run, torch.device("cpu")).eval()
        x = torch.rand(4, 3, 16, 16) * 2 - 1
        assert torch.allclose(reloaded.encoder(x), model.eval().encoder(x), atol=1e-5)
        assert torch.load(run / MODEL, weights_only=False)["config"]["compile"] is compiled
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_compile_that_fails_trains_without_it_and_says_so(tmp_path, monkeypatch, capsys):
    """Where torch.compile cannot work (here: no C++ compiler for inductor; on a GPU machine,
    no Triton), --compile trains eagerly after one line that says why, rather than dying."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/g++",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)  # a cached kernel would need no compiler
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    cfg = Config(image_size=16, dim=8, width=4, epochs=2, batch_size=20, workers=0, contrastive=1.0, compile=True)
    _, loss = train(tmp_path / "run", _pixels(tmp_path, n=60), cfg, torch.device("cpu"))
    warned = [line for line in capsys.readouterr().err.splitlines() if "--compile" in line]
    assert np.isfinite(loss) and (tmp_path / "run" / MODEL).exists()
    assert len(warned) == 1 and "No working C++ compiler" in warned[0] and "training without it" in warned[0], warned


@pytest.mark.parametrize("name", ["lr", "noise", "jitter", "temperature", "weight_decay"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_number_that_is_not_finite_is_refused(name, value):
    """inf passed every bound (inf >= 0) and the job trained on NaN until UMAP's traceback."""
    with pytest.raises(IceError, match=f"--{name.replace('_', '-')} {value!r}: must be a finite number"):
        Config(**{name: value}).validate()


def test_a_diverging_training_stops_with_one_line_and_keeps_no_bad_epoch(tmp_path):
    cfg = Config(image_size=16, dim=8, width=4, epochs=2, batch_size=20, workers=0, lr=1e30)
    with pytest.raises(IceError, match=r"training diverged in epoch 1 \(loss (nan|inf)\); .* lower --lr than 1e\+30"):
        train(tmp_path / "run", _pixels(tmp_path, n=60), cfg, torch.device("cpu"))
    assert not (tmp_path / "run" / MODEL).exists() and not list((tmp_path / "run").rglob("last.pt"))


def test_nothing_to_learn_is_refused():
    with pytest.raises(IceError, match="nothing would be learned"):
        Config(contrastive=0.0, reconstruction=0.0).validate()
    with pytest.raises(IceError, match="nothing would be learned"):  # the recipe's value counts
        Config(recipe="contrastive", contrastive=0.0).validate()
    with pytest.raises(IceError, match="nothing would be learned"):  # known only once "auto" is settled
        Config(reconstruction=0.0).resolved("autoencoder")
    assert Config(reconstruction=0.0).validate().resolved("contrastive").contrastive == 1.0


def test_resident_batches_are_the_loaders_batches(tmp_path):
    from embeddings.train import make_loader

    pixels = _pixels(tmp_path, n=50)
    cfg = Config(batch_size=16, workers=0).resolved()
    for seed in (0, 3):
        workers = [b.clone() for b in make_loader(pixels, cfg, torch.device("cpu"), shuffle=True, seed=seed)]
        resident = make_loader(pixels, cfg, torch.device("cpu"), shuffle=True, seed=seed, resident=True)
        assert len(resident) == len(workers) == 3  # 50 // 16, the partial batch dropped
        assert all(torch.equal(a, b) for a, b in zip(resident, workers))


def test_recipes_fill_only_what_is_unset():
    from embeddings.config import RECIPES, pick_recipe

    auto = Config(width=32)
    assert pick_recipe(auto, gpu=True, colour=True) == "contrastive"
    assert pick_recipe(auto, gpu=False, colour=True) == "contrastive-small"
    assert pick_recipe(auto, gpu=True, colour=False) == "autoencoder"
    assert pick_recipe(auto, gpu=False, colour=False) == "autoencoder"
    assert pick_recipe(Config(recipe="contrastive"), gpu=False, colour=False) == "contrastive"
    photo = auto.resolved("contrastive")
    assert photo.recipe == "contrastive" and photo.width == 32  # given: kept
    assert {k: getattr(photo, k) for k in RECIPES["contrastive"] if k != "width"} == {
        k: v for k, v in RECIPES["contrastive"].items() if k != "width"
    }
    assert auto.resolved().encoder == "convnet" and auto.resolved().recipe == "autoencoder"
    assert photo.resolved() == photo  # resolving twice changes nothing
    small = Config().resolved("contrastive-small")  # SimCLR's loss and views on the small encoder
    assert (small.encoder, small.width, small.contrastive, small.reconstruction) == ("convnet", 16, 1.0, 0.0)
    views = ("crop", "flip", "jitter", "aspect", "hue", "gray", "noise")
    assert {k: getattr(small, k) for k in views} == {k: RECIPES["contrastive"][k] for k in views}
    with pytest.raises(IceError, match="must be auto, autoencoder, contrastive or contrastive-small"):
        Config(recipe="simclr").validate()
