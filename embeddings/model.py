"""The convolutional autoencoder, whole.

encoder "convnet": [conv(stride 2) -> BN -> GELU] x L, down to b x b, then a linear
bottleneck of `dim`. encoder "resnet": a 3x3 stem, then ResNet basic blocks (`depth` per
stage), a stride-2 stage down to each of the L scales, global average pooling and the
linear bottleneck; a deeper encoder for contrastive training on photos.
decoder: linear back to b x b, then [transposed conv(stride 2) -> BN -> GELU] x L, then a
1x1 conv to RGB. The side is halved while it is even and the half is at least 4 (_halvings),
so b = 4 for powers of two (L = log2(image_size / 4)), and 48 -> 6, 80 -> 5, 112 -> 7;
channels start at `width` and double each step (at most 8 x width).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelArgs:
    image_size: int = 64
    dim: int = 64
    width: int = 32
    encoder: str = "convnet"  # or "resnet"
    depth: int = 1  # residual blocks per stage of the resnet encoder
    decoder: bool = True  # False: an encoder trained without reconstruction carries no decoder


def _channels(width: int, stages: int) -> list[int]:
    """Channels of each stage: `width`, doubling at each, at most 8 x width."""
    return [min(width * 2**i, width * 8) for i in range(stages)]


def _halvings(size: int) -> int:
    """How many exact halvings take `size` to a side of at least 4 (a power of two: to 4)."""
    steps = 0
    while size % 2 == 0 and size // 2 >= 4:
        size, steps = size // 2, steps + 1
    return steps


def _bottom(size: int) -> int:
    """The side that _halvings(size) halvings leave: 4 for powers of two, 6 for 48, 5 for 80."""
    return size >> _halvings(size)


def _block(cin: int, cout: int, transpose: bool, refine: bool = True) -> nn.Sequential:
    conv = (
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)
        if transpose
        else nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False)
    )
    layers = [conv, nn.BatchNorm2d(cout), nn.GELU()]
    if refine:  # a 3x3 conv after each resampling step gives every scale some depth
        layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        chans = _channels(args.width, _halvings(args.image_size))
        self.convs = nn.Sequential(*[_block(cin, cout, False) for cin, cout in zip([3] + chans, chans)])
        self.fc = nn.Linear(chans[-1] * _bottom(args.image_size) ** 2, args.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).flatten(1))


class _Residual(nn.Module):
    """A ResNet basic block: two 3x3 convs beside a shortcut (a 1x1 conv where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ResEncoder(nn.Module):
    """The CIFAR-style ResNet: full resolution up to 32x32 (a stride-2 stem above that), a
    first stage at the stem's resolution, then one stride-2 stage per halving (_halvings)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        stem_stride = 2 if args.image_size >= 64 else 1
        w = args.width
        chans = _channels(w, _halvings(args.image_size // stem_stride) + 1)
        layers = [nn.Conv2d(3, w, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        for i, cout in enumerate(chans):
            cin = w if i == 0 else chans[i - 1]
            layers += [_Residual(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1) for j in range(args.depth)]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], args.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).mean((2, 3)))


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        chans = _channels(args.width, _halvings(args.image_size))[::-1]
        self.first, self.side = chans[0], _bottom(args.image_size)
        self.fc = nn.Linear(args.dim, chans[0] * self.side**2)
        # no 3x3 at full resolution: it would cost as much as the whole encoder
        pairs = list(zip(chans, chans[1:] + [chans[-1]]))
        self.deconvs = nn.Sequential(
            *[_block(cin, cout, True, refine=i < len(pairs) - 1) for i, (cin, cout) in enumerate(pairs)]
        )
        self.out = nn.Conv2d(chans[-1], 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(z)).view(-1, self.first, self.side, self.side)
        return self.out(self.deconvs(h))


class AutoEncoder(nn.Module):
    """Images (b, 3, s, s) in [-1, 1] -> embeddings (b, dim) -> reconstructions (b, 3, s, s),
    or None where the model has no decoder (trained without reconstruction).

    A small projection head maps embeddings to the space where the contrastive loss is
    computed, as in SimCLR: the embedding itself keeps more than the invariances.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.encoder = ResEncoder(args) if args.encoder == "resnet" else Encoder(args)
        self.decoder = Decoder(args) if args.decoder else None
        if args.encoder == "resnet":  # SimCLR's head: wider, with batch norm
            self.head = nn.Sequential(
                nn.Linear(args.dim, 4 * args.dim),
                nn.BatchNorm1d(4 * args.dim),
                nn.ReLU(inplace=True),
                nn.Linear(4 * args.dim, args.dim),
            )
        else:
            self.head = nn.Sequential(nn.Linear(args.dim, args.dim), nn.GELU(), nn.Linear(args.dim, args.dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.encoder(x)
        return z, self.decoder(z) if self.decoder is not None else None

    def checkpoint_args(self) -> dict:
        return asdict(self.args)


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (b, s, s, 3) -> float (b, 3, s, s) in [-1, 1]."""
    return pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
