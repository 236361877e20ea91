"""Every setting of the batch job, with its default. Saved into the run's manifest.

Each field maps one-to-one to an `ice embed` option (underscores become dashes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from .errors import IceError


@dataclass(frozen=True)
class Config:
    # --- find and decode ---
    # square working size in pixels, a multiple of 16 from 16 to 256; unset: the images'
    # median short side rounded up to a multiple of 16, at most 64
    image_size: int | None = None
    max_pixels: int = 180_000_000  # refuse images that declare more pixels (decompression bombs); 12000x12000 passes
    follow_symlinks: bool = False  # follow symlinks that point outside the input folder
    labels_from_folders: bool = False  # store each image's parent folder as `label` (evaluation only)
    workers: int = 2  # DataLoader worker processes for decoding and training
    # --- model ---
    dim: int = 64  # embedding width (the bottleneck)
    width: int = 16  # channels of the first conv layer; doubles at each downsampling
    encoder: str = "convnet"  # "convnet" (strided convs) or "resnet" (residual blocks, pooled; for contrastive training)
    depth: int = 1  # residual blocks per stage of the resnet encoder
    # --- train ---
    epochs: int = 20  # passes over the images
    batch_size: int = 256  # images per training step
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule (AdamW)
    weight_decay: float = 1e-4  # AdamW weight decay
    contrastive: float = 0.0  # weight of an NT-Xent term between two augmented views (0 = off; hurt MNIST, see BENCHMARKS.md)
    temperature: float = 0.2  # NT-Xent temperature
    reconstruction: float = 1.0  # weight of the reconstruction loss (0 = contrastive only, no decoding)
    noise: float = 0.1  # std of the Gaussian noise added to the encoder input (denoising)
    crop: float = 0.6  # smallest crop side, as a share of the image side
    flip: bool = False  # random horizontal flips (they turn some digits and letters into others)
    jitter: float = 0.3  # strength of brightness/contrast/saturation jitter (0 = off)
    aspect: float = 1.0  # largest aspect ratio of a crop (1 = square crops)
    hue: float = 0.0  # largest hue turn, as a share of the colour circle (0 = off)
    gray: float = 0.0  # probability of turning a view grey
    device: str = "auto"  # "auto", "cpu" or "cuda"
    # --- cluster ---
    clusters: int | None = None  # K for k-means; unset chooses K automatically (see README)
    kmeans_iters: int = 50  # k-means iterations per restart
    kmeans_restarts: int = 5  # k-means runs with different seeds; the best is kept
    cluster_space: str = "manifold"  # "manifold" (UMAP to manifold_dim first, as in N2D) or "embeddings"
    refine: str = "gmm"  # after k-means: "gmm" (a full-covariance Gaussian mixture, as in N2D) or "none"
    manifold_dim: int = 10  # dimensions of the UMAP manifold that k-means runs on
    self_label_epochs: int = 5  # then fine-tune the encoder to predict the clusters and relabel (SCAN), seeing at most 500k images; 0 = off
    # --- project ---
    neighbors: int = 15  # UMAP n_neighbors, for the manifold and the 2-D map
    umap_sample: int = 200_000  # up to this many images UMAP fits on all of them; above, a 100k sample is laid out first
    seed: int = 0  # seeds training, k-means and UMAP: the same seed gives the same run

    def validate(self) -> "Config":
        """Raise IceError naming the first bad value; return self."""
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise IceError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {rule}")

        need(self.image_size is None or (16 <= self.image_size <= 256 and self.image_size % 16 == 0), "image_size",
             "must be a multiple of 16 between 16 and 256")
        need(self.max_pixels >= 1, "max_pixels", "must be at least 1")
        need(self.workers >= 0, "workers", "must be 0 or more")
        need(2 <= self.dim <= 4096, "dim", "must be between 2 and 4096")
        need(4 <= self.width <= 512, "width", "must be between 4 and 512")
        need(self.epochs >= 1, "epochs", "must be at least 1")
        need(self.batch_size >= 2, "batch_size", "must be at least 2")
        need(self.lr > 0, "lr", "must be positive")
        need(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        need(self.encoder in ("convnet", "resnet"), "encoder", "must be convnet or resnet")
        need(1 <= self.depth <= 8, "depth", "must be between 1 and 8")
        need(self.contrastive >= 0, "contrastive", "must be 0 or more")
        need(self.reconstruction >= 0, "reconstruction", "must be 0 or more")
        need(self.contrastive > 0 or self.reconstruction > 0, "reconstruction",
             "must be above 0 when --contrastive is 0 (nothing would be learned)")
        need(self.temperature > 0, "temperature", "must be positive")
        need(self.noise >= 0, "noise", "must be 0 or more")
        need(0.1 <= self.crop <= 1, "crop", "must be between 0.1 and 1")
        need(self.jitter >= 0, "jitter", "must be 0 or more")
        need(1 <= self.aspect <= 4, "aspect", "must be between 1 and 4")
        need(0 <= self.hue <= 0.5, "hue", "must be between 0 and 0.5")
        need(0 <= self.gray <= 1, "gray", "must be between 0 and 1")
        need(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
        need(self.clusters is None or self.clusters >= 2, "clusters",
             "must be 2 or more (leave it out to choose K automatically)")
        need(self.kmeans_iters >= 1, "kmeans_iters", "must be at least 1")
        need(self.kmeans_restarts >= 1, "kmeans_restarts", "must be at least 1")
        need(self.refine in ("gmm", "none"), "refine", "must be gmm or none")
        need(self.cluster_space in ("manifold", "embeddings"), "cluster_space",
             "must be manifold or embeddings")
        need(self.self_label_epochs >= 0, "self_label_epochs", "must be 0 or more")
        need(2 <= self.manifold_dim <= 100, "manifold_dim", "must be between 2 and 100")
        need(2 <= self.neighbors <= 200, "neighbors", "must be between 2 and 200")
        need(self.umap_sample >= 100, "umap_sample", "must be at least 100")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


# `--fast`: a short training budget for quick looks and tests.
FAST = dict(epochs=10)
