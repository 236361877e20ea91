"""Every setting of the batch job, with its default. Saved into the run's manifest.

Each field maps one-to-one to an `ice embed` option (underscores become dashes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from ice.errors import IceError


# The training recipes (docs/pipeline.md). "autoencoder" suits greyscale images;
# "contrastive" is SimCLR's recipe on a CIFAR-style ResNet, with no decoding, since a
# reconstruction term added nothing there; "contrastive-small" is the same loss on the
# autoencoder's encoder, sized for a CPU. Each recipe's cluster settings (mixture_pick,
# graph_rounds, self_label_epochs) are those that measured best on its own embeddings
# (BENCHMARKS.md, history of 2026-11-29 and 2026-11-30).
_SIMCLR_VIEWS = dict(
    contrastive=1.0, reconstruction=0.0, noise=0.0, crop=0.3, flip=True, jitter=0.4, aspect=1.33, hue=0.1, gray=0.2
)
RECIPES = {
    "autoencoder": dict(
        encoder="convnet",
        dim=64,
        width=16,
        epochs=20,
        batch_size=256,
        contrastive=0.0,
        reconstruction=1.0,
        noise=0.1,
        crop=0.6,
        flip=False,
        jitter=0.3,
        aspect=1.0,
        hue=0.0,
        gray=0.0,
        mixture_pick="likelihood",
        graph_rounds=0,
        self_label_epochs=5,
    ),
    "contrastive": dict(
        encoder="resnet",
        dim=128,
        width=64,
        epochs=84,
        batch_size=512,
        mixture_pick="graph",
        graph_rounds=20,
        self_label_epochs=5,
        **_SIMCLR_VIEWS,
    ),
    "contrastive-small": dict(
        encoder="convnet",
        dim=64,
        width=16,
        epochs=20,
        batch_size=256,
        mixture_pick="likelihood",
        graph_rounds=20,
        self_label_epochs=0,
        **_SIMCLR_VIEWS,
    ),
}

_RECIPE_RULE = "must be " + ", ".join(["auto", *RECIPES][:-1]) + " or " + [*RECIPES][-1]


def setting(default, help: str):
    """A Config field and its help text, which `ice embed --help` and docs/cli.md show."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    # --- find and decode ---
    image_size: int | None = setting(
        None,
        (
            "square working size in pixels, a multiple of 16 from 16 to 256; unset: the images' median short "
            "side rounded up to a multiple of 16, at most 64"
        ),
    )
    max_pixels: int = setting(
        180_000_000, ("refuse images that declare more pixels (decompression bombs); 12000x12000 passes")
    )
    follow_symlinks: bool = setting(False, "follow symlinks that point outside the input folder")
    input_list: str | None = setting(
        None,
        (
            "read the images this file names instead of listing the input folder (slow for millions of files on "
            "a shared filesystem): one path per line relative to the input folder, or a .parquet with a `path` "
            "column; unset: every image in the folder"
        ),
    )
    labels_from_folders: bool = setting(False, "store each image's parent folder as `label` (evaluation only)")
    workers: int = setting(2, "DataLoader worker processes for decoding and training")
    engine: str = setting(
        "local",
        (
            "where images are decoded: 'local' (worker processes here) or 'ray' (Ray Data, on a local Ray or the "
            "cluster at --ray-address; needs pip install -e '.[ray]'); the run comes out the same"
        ),
    )
    ray_address: str | None = setting(
        None, "with --engine ray: a running Ray cluster's address (auto, or ray://HOST:10001); unset: a local Ray"
    )
    train_workers: int = setting(
        0,
        (
            "with --engine ray: processes that train the encoder together on Ray Train (PyTorch DDP: gloo on CPUs, "
            "NCCL on GPUs, a GPU each where the cluster has them), each on its share of every batch; 0: train in "
            "this process, as the local engine does"
        ),
    )
    # --- model and training ---
    recipe: str = setting(
        "auto",
        (
            "'autoencoder' (a small convnet autoencoder), 'contrastive' (SimCLR on a ResNet), "
            "'contrastive-small' (SimCLR on the autoencoder's small encoder) or 'auto': for images in "
            "colour, contrastive when training runs on a GPU and contrastive-small on a CPU; for greyscale "
            "images, autoencoder. The settings marked 'unset: the recipe's' take the chosen recipe's value "
            "unless given (docs/pipeline.md)"
        ),
    )
    dim: int | None = setting(None, "embedding width (the bottleneck); unset: the recipe's")
    width: int | None = setting(
        None, ("channels of the first conv layer, doubling at each downsampling; unset: the recipe's")
    )
    encoder: str | None = setting(
        None, ("'convnet' (strided convs) or 'resnet' (residual blocks, pooled); unset: the recipe's")
    )
    depth: int = setting(1, "residual blocks per stage of the resnet encoder")
    epochs: int | None = setting(None, "passes over the images; unset: the recipe's")
    batch_size: int | None = setting(None, "images per training step; unset: the recipe's")
    lr: float = setting(2e-3, "peak learning rate of the one-cycle schedule (AdamW)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    contrastive: float | None = setting(
        None, ("weight of an NT-Xent term between two augmented views (0 = off); unset: the recipe's")
    )
    temperature: float = setting(0.2, "NT-Xent temperature")
    reconstruction: float | None = setting(
        None, ("weight of the reconstruction loss (0 = no decoding); unset: the recipe's")
    )
    noise: float | None = setting(
        None, ("std of the Gaussian noise added to the encoder input (denoising); unset: the recipe's")
    )
    crop: float | None = setting(None, "smallest crop side, as a share of the image side; unset: the recipe's")
    flip: bool | None = setting(
        None, ("random horizontal flips (they turn some digits into others); unset: the recipe's")
    )
    jitter: float | None = setting(
        None, ("strength of brightness/contrast/saturation jitter (0 = off); unset: the recipe's")
    )
    aspect: float | None = setting(None, "largest aspect ratio of a crop (1 = square crops); unset: the recipe's")
    hue: float | None = setting(
        None, ("largest hue turn, as a share of the colour circle (0 = off); unset: the recipe's")
    )
    gray: float | None = setting(None, "probability of turning a view grey; unset: the recipe's")
    device: str = setting("auto", "'auto', 'cpu' or 'cuda'")
    compile: bool = setting(
        False,
        (
            "train through torch.compile: fewer, fused kernels, after the first steps compile them; meant for "
            "GPUs, where a training step waits on Python launching its operations"
        ),
    )
    # --- cluster ---
    clusters: int | None = setting(None, "K for k-means; unset chooses K automatically (docs/pipeline.md)")
    kmeans_iters: int = setting(50, "k-means iterations per restart")
    kmeans_restarts: int = setting(5, "k-means runs with different seeds; the best is kept")
    cluster_space: str = setting("manifold", "'manifold' (UMAP to manifold_dim first, as in N2D) or 'embeddings'")
    refine: str = setting("gmm", "after k-means: 'gmm' (a full-covariance Gaussian mixture, as in N2D) or 'none'")
    mixture_pick: str | None = setting(
        None,
        (
            "how the mixture's restarts are judged: 'graph', by the modularity of their clusters on the "
            "embeddings' neighbour graph, or 'likelihood'; unset: the recipe's ('graph' for the contrastive "
            "recipe, 'likelihood' for the others)"
        ),
    )
    graph_rounds: int | None = setting(
        None,
        (
            "after the mixture, move images to the cluster their links on the embeddings' neighbour graph favour, "
            "round by round, while the clusters' modularity on it rises: at most this many rounds (0 = off); "
            "unset: the recipe's (20 for the contrastive recipes, 0 for the autoencoder's)"
        ),
    )
    manifold_dim: int = setting(10, "dimensions of the UMAP manifold that k-means runs on")
    self_label_epochs: int | None = setting(
        None,
        (
            "then fine-tune the encoder to predict the clusters and relabel (SCAN's last step), seeing at most "
            "250k images of the fit sample; 0 = off; unset: the recipe's (5; 0 for contrastive-small, where it lost)"
        ),
    )
    # --- project ---
    neighbors: int = setting(15, "UMAP n_neighbors, for the manifold and the 2-D map")
    umap_sample: int = setting(
        200_000,
        (
            "up to this many images UMAP fits on all of them; above, a 100k sample is laid out first, then the "
            "manifold refines all of them and the map places the rest (project.umap_reduce)"
        ),
    )
    fit_sample: int = setting(
        100_000,
        (
            "up to this many images every learning stage (neighbour graph, manifold, choice of K, mixture, "
            "self-labelling, map) fits on all of them; above, on a seeded sample of this many, and every other "
            "image is placed from its nearest sampled images (docs/pipeline.md)"
        ),
    )
    parallel_layout: bool | None = setting(
        None,
        (
            "run UMAP's layout epochs on every core, unseeded: faster, but not reproducible; unset: on when "
            "training runs on a GPU, whose runs differ anyway (cudnn picks kernels by timing)"
        ),
    )
    seed: int = setting(0, "seeds training, k-means and UMAP: the same seed gives the same run")
    encoder_from: str | None = setting(
        None,
        (
            "a complete run directory whose trained encoder this run uses, with no training (its working size "
            "and recipe too); unset: train one"
        ),
    )

    def validate(self) -> "Config":
        """Raise IceError naming the first bad value; return self."""

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise IceError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {rule}")

        for f in fields(self):  # inf passes every bound below; nan fails them with a puzzling rule
            value = getattr(self, f.name)
            need(not isinstance(value, float) or math.isfinite(value), f.name, "must be a finite number")
        need(
            self.image_size is None or (16 <= self.image_size <= 256 and self.image_size % 16 == 0),
            "image_size",
            "must be a multiple of 16 between 16 and 256",
        )
        need(self.max_pixels >= 1, "max_pixels", "must be at least 1")
        need(self.workers >= 0, "workers", "must be 0 or more")
        need(self.engine in ("local", "ray"), "engine", "must be local or ray")
        need(self.train_workers >= 0, "train_workers", "must be 0 or more")
        need(self.train_workers == 0 or self.engine == "ray", "train_workers", "needs --engine ray")
        need(self.recipe in ("auto", *RECIPES), "recipe", _RECIPE_RULE)
        need(self.dim is None or 2 <= self.dim <= 4096, "dim", "must be between 2 and 4096")
        need(self.width is None or 4 <= self.width <= 512, "width", "must be between 4 and 512")
        need(self.encoder in (None, "convnet", "resnet"), "encoder", "must be convnet or resnet")
        need(1 <= self.depth <= 8, "depth", "must be between 1 and 8")
        need(self.epochs is None or self.epochs >= 1, "epochs", "must be at least 1")
        need(self.batch_size is None or self.batch_size >= 2, "batch_size", "must be at least 2")
        need(self.lr > 0, "lr", "must be positive")
        need(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        need(self.contrastive is None or self.contrastive >= 0, "contrastive", "must be 0 or more")
        need(self.temperature > 0, "temperature", "must be positive")
        need(self.reconstruction is None or self.reconstruction >= 0, "reconstruction", "must be 0 or more")
        used = self._filled(self.recipe) if self.recipe in RECIPES else self  # "auto": known after decoding
        if used.contrastive == 0 and used.reconstruction == 0:
            raise IceError("--contrastive 0 with --reconstruction 0: nothing would be learned")
        need(self.noise is None or self.noise >= 0, "noise", "must be 0 or more")
        need(self.crop is None or 0.1 <= self.crop <= 1, "crop", "must be between 0.1 and 1")
        need(self.jitter is None or self.jitter >= 0, "jitter", "must be 0 or more")
        need(self.aspect is None or 1 <= self.aspect <= 4, "aspect", "must be between 1 and 4")
        need(self.hue is None or 0 <= self.hue <= 0.5, "hue", "must be between 0 and 0.5")
        need(self.gray is None or 0 <= self.gray <= 1, "gray", "must be between 0 and 1")
        need(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
        need(
            self.clusters is None or self.clusters >= 2,
            "clusters",
            "must be 2 or more (leave it out to choose K automatically)",
        )
        need(self.kmeans_iters >= 1, "kmeans_iters", "must be at least 1")
        need(self.kmeans_restarts >= 1, "kmeans_restarts", "must be at least 1")
        need(self.refine in ("gmm", "none"), "refine", "must be gmm or none")
        need(self.graph_rounds is None or self.graph_rounds >= 0, "graph_rounds", "must be 0 or more")
        need(self.mixture_pick in (None, "graph", "likelihood"), "mixture_pick", "must be graph or likelihood")
        need(self.cluster_space in ("manifold", "embeddings"), "cluster_space", "must be manifold or embeddings")
        need(self.self_label_epochs is None or self.self_label_epochs >= 0, "self_label_epochs", "must be 0 or more")
        need(2 <= self.manifold_dim <= 100, "manifold_dim", "must be between 2 and 100")
        need(2 <= self.neighbors <= 200, "neighbors", "must be between 2 and 200")
        need(self.umap_sample >= 100, "umap_sample", "must be at least 100")
        need(self.fit_sample >= 100, "fit_sample", "must be at least 100")
        need(
            self.clusters is None or self.clusters <= self.fit_sample // 2,
            "clusters",
            f"must be at most half of --fit-sample ({self.fit_sample})",
        )
        need(0 <= self.seed < 2**31, "seed", f"must be between 0 and {2**31 - 1}")  # numpy: >= 0; faiss: int32
        return self

    def resolved(self, recipe: str | None = None) -> "Config":
        """This config with `recipe` (default: its own, autoencoder for "auto") and every setting
        left unset filled from that recipe."""
        name = recipe or (self.recipe if self.recipe != "auto" else "autoencoder")
        if name not in RECIPES:
            raise IceError(f"--recipe {name!r}: {_RECIPE_RULE}")
        return self._filled(name).validate()

    def _filled(self, name: str) -> "Config":
        return self.replace(recipe=name, **{k: v for k, v in RECIPES[name].items() if getattr(self, k) is None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def option_type(name: str, of: type | None = None) -> type:
    """The type of field `name` of the dataclass `of` (Config by default) without its `| None`:
    int, float, str or bool (for the CLI's options and the benchmarks' --set)."""
    kind = str((of or Config).__dataclass_fields__[name].type).split(" |")[0]
    return {"int": int, "float": float, "str": str, "bool": bool}[kind]


def pick_recipe(cfg: Config, gpu: bool, colour: bool) -> str:
    """What "auto" means for this run. The contrastive recipes need colour: colour jitter, hue
    turns and grey views are what they learn invariance to, and on greyscale digits the
    contrastive term hurt (BENCHMARKS.md history, 2026-11-27). The ResNet needs a GPU: on a CPU
    it trains far slower per image than the small encoder, which is what a CPU gets."""
    if cfg.recipe != "auto":
        return cfg.recipe
    if not colour:
        return "autoencoder"
    return "contrastive" if gpu else "contrastive-small"


UNMARKED = ("negatives", "pseudo", "consistency")  # TeachSettings.unmarked


@dataclass(frozen=True)
class TeachSettings:
    """How the teach loop's learner trains (embeddings.teach): `ice find` and the explorer."""

    steps: int = 200  # optimiser steps per round
    batch: int = 64  # images per side per step: marked in, marked out, and unmarked
    weak_negative: float = 0.3  # weight of an unmarked image as a negative, against 1 for one marked out
    # what else the unmarked images teach (embeddings.teach.fit): "negatives", nothing
    # more; "pseudo", those the network is sure of on their plain view count as in the group;
    # "consistency", their augmented view also learns the plain view's probability
    unmarked: str = "negatives"
    # where above 0, the round's model is the exponential moving average of its weights over
    # its steps, with this decay, rather than the weights of its last step
    average: float = 0.0
    lr: float = 1e-3  # peak learning rate of the one-cycle schedule (AdamW)
    seed: int = 0
    # a round goes on from the last round's model rather than from the run's encoder: as good
    # on MNIST, better on CIFAR-10 (BENCHMARKS.md, find_group)
    incremental: bool = True
    # the share of an image's score that comes from a logistic regression of the marks on the
    # run's embeddings and manifold (ice.likeness), the rest from the network (BENCHMARKS.md)
    blend: float = 0.5
    # the regression also reads the images' pixel features (embeddings.patches): on CIFAR-10
    # they find more of a group than the CPU encoder's embeddings alone (BENCHMARKS.md)
    pixel_features: bool = True

    def validate(self) -> "TeachSettings":
        for name, ok, rule in (
            ("steps", self.steps >= 1, "at least 1"),
            ("batch", self.batch >= 1, "at least 1"),
            ("weak_negative", 0 <= self.weak_negative <= 1, "between 0 and 1"),
            ("unmarked", self.unmarked in UNMARKED, f"one of {', '.join(UNMARKED)}"),
            ("blend", 0 <= self.blend <= 1, "between 0 and 1"),
            ("average", 0 <= self.average < 1, "at least 0 and below 1"),
            ("lr", 0 < self.lr < 1, "between 0 and 1"),
            ("seed", 0 <= self.seed < 2**31, f"between 0 and {2**31 - 1}"),
        ):
            if not ok:
                raise IceError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: must be {rule}")
        return self


# `--fast`: a short training budget for quick looks and tests.
FAST = dict(epochs=10)
