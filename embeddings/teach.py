"""Teach ICE a group: learn from the images a person marked in and out, and score every image.

The learner fine-tunes the run's own encoder (`model.pt`), which has learned the collection
without labels, with a new one-logit head: the images marked in are the positives, those
marked out the negatives, and a random draw of the unmarked images are weak negatives
(most images of a collection are not in the group one looks for, and the few that are
weigh little). Every batch is balanced between the two sides, and every image goes through
the recipe's augmentations, as in training. The network's score of an image is the
probability of the plain view and its mirror image, averaged; an image's score blends it
with a logistic regression of the same marks (TeachSettings.blend, `blended`), which ranks well
from the first marks on: on the run's embeddings and manifold, or also on its pixel features
(embeddings.patches), whichever foretold the marks made after the earlier rounds better.

Each round (`teach_round`, run in its own process in the explorer: `python -m
embeddings.teach RUN_DIR GROUP`) trains on all the marks so far, going on from the last
round's model (TeachSettings.incremental; the first round, and `ice find`, start from the run's
encoder). On MNIST 10k that ranks as well as starting each round from the encoder, and on
CIFAR-10 10k better, every class (BENCHMARKS.md, find_group's "each round going on from the
last round's model").
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import pickle
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ice import likeness
from ice import run_dir as rd
from ice import teach_state as ts
from ice.errors import IceError

from . import patches
from .config import Config, TeachSettings
from .model import ModelArgs, to_input
from .train import augment, load_model, pick_device


class Scorer(nn.Module):
    """An encoder and a one-logit head: images (b, 3, s, s) in [-1, 1] -> logits (b,)."""

    def __init__(self, encoder: nn.Module, args: ModelArgs):
        super().__init__()
        self.args = args  # the encoder's shape, as the run's model.pt gives it
        self.encoder, self.head = encoder, nn.Linear(args.dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).squeeze(1)


def new_scorer(run_dir: Path, device: torch.device, seed: int) -> Scorer:
    """A Scorer on a copy of the run's trained encoder, its head initialised from `seed`."""
    model = load_model(run_dir, device)
    torch.manual_seed(seed)
    return Scorer(copy.deepcopy(model.encoder), model.args).to(device, memory_format=torch.channels_last)


def views_config(run_dir: Path) -> Config:
    """The run's config with its recipe's settings filled in: the augmentations to train with."""
    return Config.from_dict(rd.load_manifest(run_dir)["config"]).resolved()


def fit(
    net: Scorer,
    pixels: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    cfg: Config,
    settings: TeachSettings,
    device: torch.device,
    round_: int = 0,
    on_step=None,
) -> float:
    """Train `net` in place for settings.steps steps; return the last 20 steps' mean loss.

    pixels: (n, s, s, 3) uint8 (a memory map is fine: each step reads its batch). Each step
    draws settings.batch images marked in, as many marked out (if any) and as many unmarked,
    with replacement; the unmarked weigh settings.weak_negative each, and the positives as
    much as all the negatives together. Where settings.average is set, the round ends with the
    moving average of the weights over its steps. `on_step(step, steps)` is called every 10 steps."""
    n = len(pixels)
    if not len(positives):
        raise IceError("no image marked in: mark at least one image as in the group")
    marked = np.zeros(n, bool)
    marked[positives] = marked[negatives] = True
    unmarked = np.flatnonzero(~marked)
    rng = np.random.default_rng([settings.seed, round_])
    gen = torch.Generator(device=device).manual_seed(settings.seed * 1000 + round_)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.15)
    b = settings.batch
    sides = [(positives, 1.0, 1.0), (negatives, 0.0, 1.0), (unmarked, 0.0, settings.weak_negative)]
    sides = [(ids, y, w) for ids, y, w in sides if len(ids) and w > 0]
    negative_weight = sum(w for _, y, w in sides if y == 0) or 1.0
    y = torch.cat([torch.full((b,), y) for _, y, _ in sides]).to(device)
    weight = torch.cat([torch.full((b,), w if y else w / negative_weight) for _, y, w in sides]).to(device)
    # the unmarked side is the last b rows of each batch, where it is drawn
    learn_unmarked = settings.unmarked != "negatives" and sides[-1][0] is unmarked
    if learn_unmarked and settings.unmarked == "consistency":
        weight[-b:] *= 2  # the agreement weighs as much again as the image's weak negative
    net.train()
    average = None
    if settings.average:  # an exponential moving average of the weights, kept in step
        average = torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.average), use_buffers=True
        )
    losses = []
    for step in range(settings.steps):
        ids = np.concatenate([rng.choice(ids, b) for ids, _, _ in sides])
        order = np.argsort(ids, kind="stable")  # a memory map reads sorted rows faster
        batch = torch.empty((len(ids),) + pixels.shape[1:], dtype=torch.uint8)
        batch[torch.from_numpy(order)] = torch.from_numpy(np.ascontiguousarray(pixels[ids[order]]))
        batch = batch.to(device, non_blocking=True)
        target = y if not learn_unmarked else unmarked_targets(net, batch[-b:], y, settings.unmarked, device)
        x = augment(to_input(batch), cfg, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x.contiguous(memory_format=torch.channels_last)).float()
        loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if average is not None:
            average.update_parameters(net)
        if on_step is not None and (step + 1) % 10 == 0:
            on_step(step + 1, settings.steps)
    if average is not None:
        net.load_state_dict(average.module.state_dict())
    return float(np.mean(losses[-20:]))


PSEUDO_CONFIDENCE = 0.95  # "pseudo": an unmarked image this sure on its plain view counts as in


@torch.no_grad()
def unmarked_targets(
    net: Scorer, unmarked: torch.Tensor, y: torch.Tensor, how: str, device: torch.device
) -> torch.Tensor:
    """The batch's targets `y` with those of its unmarked rows (the last len(unmarked)) set from
    the network's probability p of their plain view, taken in eval mode: "pseudo", 1 where
    p >= PSEUDO_CONFIDENCE and 0 elsewhere; "consistency", p / 2, which with the doubled weight
    is the weak negative's loss plus an equal loss for the augmented view to agree with p."""
    net.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        p = torch.sigmoid(net(to_input(unmarked).contiguous(memory_format=torch.channels_last)).float())
    net.train()
    target = y.clone()
    target[-len(unmarked) :] = (p >= PSEUDO_CONFIDENCE).float() if how == "pseudo" else p / 2
    return target


@torch.no_grad()
def score(net: Scorer, pixels: np.ndarray, cfg: Config, device: torch.device, batch: int = 1024) -> np.ndarray:
    """(n,) float32 in [0, 1]: each image's probability of being in the group, from its
    plain view and (where the recipe flips) its mirror image."""
    net.eval()
    out = []
    for start in range(0, len(pixels), batch):
        x = to_input(torch.from_numpy(np.array(pixels[start : start + batch])).to(device))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x).float()
            if cfg.flip:
                logits = (logits + net(x.flip(3)).float()) / 2
        out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


# the teach round's regressions; a tie (the first round) goes to the first, "More like these"'s:
# with the pixels' first, round 1 on MNIST 10k ranked 0.788 against 0.874 (BENCHMARKS.md)
REGRESSIONS = ("embeddings", "pixels")


def blended(
    run_dir: Path,
    network: np.ndarray,
    positives,
    negatives,
    settings: TeachSettings,
    on_step=None,
    last: dict | None = None,
    seen=(),
) -> tuple[np.ndarray, dict | None]:
    """The network's scores, with settings.blend of each from a logistic regression of the same
    marks (ice.likeness): (scores, the regressions' record, to keep with the round; None where
    blend is 0). The network learns the pixels; the regression the space the run's clusters
    were found in, where a group is often nearly one side of a plane, and from the first marks on.

    Two regressions are fitted: "embeddings", on the run's embeddings and manifold, and with
    settings.pixel_features "pixels", on its pixel features too (embeddings.patches; made the
    first time, `on_step(done, todo)` as they are). They help different collections (on
    CIFAR-10 the pixels, on MNIST the embeddings alone, BENCHMARKS.md), so the round uses the
    one whose earlier models foretold the person's later marks best: `last` is the last
    round's record of them, `seen` the images marked since that round, and each regression's
    log-loss on those marks adds to its sum over the rounds ("loss")."""
    if not settings.blend:
        return network, None
    n = len(network)
    embeddings = rd.open_rows(run_dir, rd.EMBEDDINGS, n)
    manifold = likeness.read_manifold(run_dir, n)
    features = None
    if settings.pixel_features and n >= patches.MIN_IMAGES:
        features = patches.ensure(run_dir, n, on_step)
    names = [name for name in REGRESSIONS if name != "pixels" or features is not None]
    last = last or {}
    loss = {name: float(last.get("loss", {}).get(name, 0.0)) for name in names}
    seen = np.asarray(seen, dtype=np.int64)
    if len(seen):
        truth = np.isin(seen, np.asarray(positives, dtype=np.int64)).astype(np.float64)
        for name, model in last.get("models", {}).items():
            if name in loss and model is not None and (not model.get("patches") or features is not None):
                p = np.clip(likeness.apply(model, embeddings, manifold, seen, patches=features), 1e-4, 1 - 1e-4)
                loss[name] += float(-(truth * np.log(p) + (1 - truth) * np.log(1 - p)).sum())
    models = {
        name: likeness.fit(
            embeddings,
            manifold,
            positives,
            negatives,
            settings.seed,
            likeness.PATCH_C if name == "pixels" else likeness.C,
            features if name == "pixels" else None,
        )
        for name in names
    }
    used = min(names, key=lambda name: (loss[name], names.index(name)))
    odds = likeness.apply(models[used], embeddings, manifold, patches=features)
    return mix(network, odds, settings.blend), {"used": used, "loss": loss, "models": models}


def regressions(record: dict) -> dict | None:
    """A stored round's record of its regressions, as `blended` gives it (None before any)."""
    choice = record.get("regressions")
    if not choice:
        return None
    return {**choice, "models": {**choice.get("others", {}), choice["used"]: record.get("likeness")}}


def mix(network: np.ndarray, odds: np.ndarray, share: float) -> np.ndarray:
    """A round's scores: `share` of each from the regression's `odds`, the rest from the network."""
    return ((1 - share) * network + share * odds).astype(np.float32)


def estimate_members(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> int:
    """How many images the group holds, by the scores: those marked in, and the unmarked
    ones the learner gives more than even odds."""
    unmarked = np.ones(len(scores), bool)
    unmarked[positives] = unmarked[negatives] = False
    return int(len(positives) + (scores[unmarked] > 0.5).sum())


def find(
    run_dir: str | Path, positives, negatives=(), *, settings: TeachSettings = TeachSettings(), device: str = "auto"
) -> np.ndarray:
    """Score every image of a run for the group that `positives` are in and `negatives` are
    not (image ids), training from the run's encoder: (n,) float32 in [0, 1]. The same ids,
    run and settings give the same scores on a CPU."""
    run_dir = Path(run_dir)
    settings = settings.validate()
    dev = pick_device(device)
    pixels = rd.open_rows(run_dir, rd.PIXELS)
    positives, negatives = _ids(positives, len(pixels)), _ids(negatives, len(pixels))
    cfg = views_config(run_dir)
    net = new_scorer(run_dir, dev, settings.seed)
    fit(net, pixels, positives, negatives, cfg, settings, dev)
    # one round: no marks come after it to tell whether the pixel features' regression ranks
    # better, and a first round uses the embeddings' (`blended`), so they are not made
    settings = dataclasses.replace(settings, pixel_features=False)
    return blended(run_dir, score(net, pixels, cfg, dev), positives, negatives, settings)[0]


def _ids(ids, n: int) -> np.ndarray:
    arr = np.unique(np.asarray(list(ids), dtype=np.int64))
    if len(arr) and (arr[0] < 0 or arr[-1] >= n):
        raise IceError(f"image_id {int(arr[0] if arr[0] < 0 else arr[-1])}: the run has image ids 0..{n - 1}")
    return arr


GROUP_PREFIX = "group:"  # `ice find --like group:NAME`: a saved group instead of a file of paths


def read_image_list(
    spec: str, paths: np.ndarray, notes, what: str, input_root: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The image ids that `spec` names, and (for a group) those marked out of it: (ids, out).

    spec: a file with one image path per line, as in items.parquet's `path` column (blank
    lines are skipped; an absolute path inside the run's input folder also works), or
    "group:NAME" for a saved group. `paths` is items.parquet's `path` column (n,). IceError,
    naming the line, for a path that is not in the run, an empty list or an unreadable file."""
    if spec.startswith(GROUP_PREFIX):
        name = spec[len(GROUP_PREFIX) :]
        marked_in, marked_out = notes.marks(name)
        if not len(marked_in) and not len(marked_out):
            raise IceError(
                f"{what} {spec}: no such group (saved groups: {', '.join(repr(g) for g in notes.groups()) or 'none'})"
            )
        if not len(marked_in):
            raise IceError(f"{what} {spec}: the group has no image marked in")
        return marked_in, marked_out
    try:
        text = Path(spec).read_bytes()
    except OSError as e:
        raise IceError(f"{what} {spec}: cannot read ({e.strerror})") from None
    index = {p: i for i, p in enumerate(paths)}
    ids = []
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise IceError(f"{what} {spec} line {number}: not UTF-8 text") from None
        if not line:
            continue
        image_id = index.get(line)
        if image_id is None and input_root and line.startswith("/"):
            relative = os.path.relpath(line, input_root)
            image_id = index.get(relative) if not relative.startswith("..") else None
        if image_id is None:
            raise IceError(
                f"{what} {spec} line {number}: {line!r} is not an image of the run (give paths "
                f"as in items.parquet's path column, relative to the input folder)"
            )
        ids.append(image_id)
    if not ids:
        raise IceError(f"{what} {spec}: no image paths in it (one per line, as in items.parquet's path column)")
    return np.unique(np.array(ids, dtype=np.int64)), np.zeros(0, np.int64)


def teach_round(
    run_dir: str | Path, group: str, *, settings: TeachSettings = TeachSettings(), device: str = "auto"
) -> dict:
    """Train a group's next round on its marks now, from its last round's model (or the run's
    encoder: the first round, or with settings.incremental off), score every image and store the round
    (teach_state.save_round). Returns the round's record. The caller holds the group's lock
    (teach_state.lock_group)."""
    from ice.annotations import Annotations

    run_dir = Path(run_dir)
    settings = settings.validate()
    t0 = time.perf_counter()
    notes = Annotations(run_dir / rd.ANNOTATIONS, read_only=True)
    change = notes.last_change(group)
    positives, negatives = notes.marks(group)
    dev = pick_device(device)
    pixels = rd.open_rows(run_dir, rd.PIXELS)
    cfg = views_config(run_dir)
    state = ts.read_state(run_dir, group)
    round_ = (state["rounds"][-1]["round"] if state["rounds"] else 0) + 1
    net = new_scorer(run_dir, dev, settings.seed)
    if state["rounds"] and settings.incremental:
        last = ts.round_path(ts.group_dir(run_dir, group), state["rounds"][-1]["round"], ".pt")
        try:
            net.load_state_dict(torch.load(last, map_location=dev, weights_only=True))
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):
            net = new_scorer(run_dir, dev, settings.seed)  # gone, or of another encoder: start afresh

    def on_step(step, steps):
        ts.write_progress(run_dir, group, round=round_, step=step, steps=steps + 1, phase="train")

    ts.write_progress(run_dir, group, round=round_, step=0, steps=settings.steps + 1, phase="train")
    loss = fit(net, pixels, positives, negatives, cfg, settings, dev, round_, on_step)
    ts.write_progress(run_dir, group, round=round_, step=settings.steps, steps=settings.steps + 1, phase="score")
    network = score(net, pixels, cfg, dev)

    def on_features(done, todo):  # the first round only: the run's pixel features are made
        ts.write_progress(run_dir, group, round=round_, step=done, steps=todo, phase="pixel features")

    last, seen = None, ()
    if state["rounds"]:  # the marks since the last round tell which of its regressions foretold them
        last = regressions(state["rounds"][-1])
        seen = notes.changed_since(group, state["rounds"][-1]["change"])
        marked = np.union1d(positives, negatives)
        seen = seen[np.isin(seen, marked)]
    scores, choice = blended(run_dir, network, positives, negatives, settings, on_features, last, seen)
    model = None if choice is None else choice["models"][choice["used"]]

    def write_model(path: Path) -> None:
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        with rd.atomic_path(path) as tmp:
            tmp.write_bytes(buf.getbuffer())

    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "change": int(change),
        "marked_in": int(len(positives)),
        "marked_out": int(len(negatives)),
        "estimate": estimate_members(scores, positives, negatives),
        "loss": round(loss, 4),
        "seconds": round(time.perf_counter() - t0, 2),
        "device": dev.type,
        "settings": asdict(settings),
        "likeness": model,  # the regression the scores blend in: applied to images added later
        "regressions": None
        if choice is None
        else {
            "used": choice["used"],
            "loss": {name: round(value, 4) for name, value in choice["loss"].items()},
            "others": {name: m for name, m in choice["models"].items() if name != choice["used"]},
        },
    }
    record = ts.save_round(run_dir, group, record, scores, write_model)
    ts.clear_progress(run_dir, group)
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m embeddings.teach RUN_DIR GROUP [--steps N] [--device D]`: train the group's
    rounds until no more are asked for (teach_state.start_round starts it in the background)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m embeddings.teach")
    p.add_argument("run_dir", type=Path)
    p.add_argument("group")
    p.add_argument("--steps", type=int, default=TeachSettings.steps)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    run_dir, group = args.run_dir, args.group
    fd = ts.lock_group(run_dir, group)
    if fd is None:  # another process trains this group: it will run one more
        ts.ask_again(run_dir, group)
        return 0
    try:
        ts.remove_leftovers(run_dir, group)
        ts.take_again(run_dir, group)
        while True:
            teach_round(run_dir, group, settings=TeachSettings(steps=args.steps), device=args.device)
            if not ts.take_again(run_dir, group):
                break
        ts.clear_progress(run_dir, group)
    except Exception as e:  # shown to the person who asked for the round
        message = str(e) if isinstance(e, IceError) else f"{type(e).__name__}: {e}"
        ts.write_progress(run_dir, group, error=message)
        print(f"ice: teach {group!r}: {message}", file=sys.stderr)
        return 1
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
