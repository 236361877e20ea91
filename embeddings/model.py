"""The convolutional autoencoder, whole.

encoder: [conv(stride 2) -> BN -> GELU] x L, down to 4x4, then a linear bottleneck of `dim`
decoder: linear back to 4x4, then [transposed conv(stride 2) -> BN -> GELU] x L, then a 1x1
conv to RGB. L = log2(image_size / 4); channels start at `width` and double each step
(at most 8 x width).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelArgs:
    image_size: int = 64
    dim: int = 64
    width: int = 32


def _channels(args: ModelArgs) -> list[int]:
    steps = int(math.log2(args.image_size // 4))
    return [min(args.width * 2 ** i, args.width * 8) for i in range(steps)]


def _block(cin: int, cout: int, transpose: bool, refine: bool = True) -> nn.Sequential:
    conv = (nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False) if transpose
            else nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False))
    layers = [conv, nn.BatchNorm2d(cout), nn.GELU()]
    if refine:  # a 3x3 conv after each resampling step gives every scale some depth
        layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        chans = _channels(args)
        self.convs = nn.Sequential(*[_block(cin, cout, False) for cin, cout in zip([3] + chans, chans)])
        self.fc = nn.Linear(chans[-1] * 16, args.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).flatten(1))


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        chans = _channels(args)[::-1]
        self.first = chans[0]
        self.fc = nn.Linear(args.dim, chans[0] * 16)
        # no 3x3 at full resolution: it would cost as much as the whole encoder
        pairs = list(zip(chans, chans[1:] + [chans[-1]]))
        self.deconvs = nn.Sequential(*[_block(cin, cout, True, refine=i < len(pairs) - 1)
                                       for i, (cin, cout) in enumerate(pairs)])
        self.out = nn.Conv2d(chans[-1], 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(z)).view(-1, self.first, 4, 4)
        return self.out(self.deconvs(h))


class AutoEncoder(nn.Module):
    """Images (b, 3, s, s) in [-1, 1] -> embeddings (b, dim) -> reconstructions (b, 3, s, s).

    A small projection head maps embeddings to the space where the contrastive loss is
    computed, as in SimCLR: the embedding itself keeps more than the invariances.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.encoder = Encoder(args)
        self.decoder = Decoder(args)
        self.head = nn.Sequential(nn.Linear(args.dim, args.dim), nn.GELU(), nn.Linear(args.dim, args.dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)

    def checkpoint_args(self) -> dict:
        return asdict(self.args)


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (b, s, s, 3) -> float (b, 3, s, s) in [-1, 1]."""
    return pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
