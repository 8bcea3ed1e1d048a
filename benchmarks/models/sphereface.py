"""SphereFace-20 ("sphere20a"): the 20-layer face CNN of SphereFace (Liu et al., CVPR 2017).

Follows ``train/code/sphereface_model.prototxt`` of the SphereFace release (``SpherefaceNet-20``)
and its common PyTorch port ``sphere20a``: input 3x112x96 (aligned faces, pixels mapped to
``(p - 127.5) / 128`` by the data pipeline), four stages, each a stride-2 3x3 convolution followed
by 1, 2, 4 and 1 residual units of two 3x3 convolutions (64, 128, 256, 512 channels), PReLU after
every convolution, the residual unit being ``x + prelu(conv(prelu(conv(x))))``; then a fully
connected layer ``fc5`` (512 * 7 * 6 -> 512) giving the 512-d face embedding. No BatchNorm, no
pooling. 20 weight layers: 4 + 2 * (1 + 2 + 4 + 1) convolutions = 20, plus fc5.

Initialization as in the prototxt: stride-2 convolutions and fc5 use Caffe's ``xavier`` filler
(uniform with variance ``1 / fan_in``) and zero biases; the residual units' convolutions use
N(0, 0.01^2). Their biases are zero with learning-rate multiplier 0 in the prototxt, i.e. fixed at
zero, so here they are ``bias=False`` (same function, no dead parameters). PReLU slopes start at
0.25 per channel (Caffe's and PyTorch's default).

Deviations: none in the backbone. The head is the benchmark's: by default ``normalize="both"``
with ``s=30`` (a normalized cosine head as the AM-LFS face experiments use); SphereFace's own
A-softmax head is ``normalize="weights"`` (pass it). ``input_size`` other than 112x96 changes
only fc5's input width (the spatial size after four stride-2 convolutions).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch.nn as nn
from torch import Tensor

from .base import EmbeddingClassifier
from .registry import register_model


def _caffe_xavier_(weight: Tensor) -> None:
    """Caffe's default ``xavier`` filler: U(-a, a) with ``a = sqrt(3 / fan_in)``."""
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(weight, -bound, bound)


class SphereResidualUnit(nn.Module):
    """``x + prelu(conv(prelu(conv(x))))`` with 3x3 convolutions (bias fixed at zero)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.prelu1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.prelu2 = nn.PReLU(channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.prelu2(self.conv2(self.prelu1(self.conv1(x))))


class SphereStage(nn.Module):
    """A stride-2 3x3 convolution + PReLU, then ``units`` residual units."""

    def __init__(self, in_channels: int, out_channels: int, units: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.prelu = nn.PReLU(out_channels)
        self.units = nn.Sequential(*[SphereResidualUnit(out_channels) for _ in range(units)])
        _caffe_xavier_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.units(self.prelu(self.conv(x)))


def _stride2_size(n: int, times: int) -> int:
    for _ in range(times):
        n = (n - 1) // 2 + 1  # 3x3, stride 2, padding 1
    return n


class Sphere20a(nn.Module):
    """The SphereFace-20 backbone: (n, 3, H, W) -> (n, 512) (fc5)."""

    def __init__(self, in_channels: int = 3, input_size: Sequence[int] = (112, 96), embedding_dim: int = 512,
                 channels: Sequence[int] = (64, 128, 256, 512), units: Sequence[int] = (1, 2, 4, 1)):
        super().__init__()
        if len(channels) != len(units):
            raise ValueError("channels and units must have the same length")
        stages, c = [], in_channels
        for out_c, u in zip(channels, units):
            stages.append(SphereStage(c, out_c, u))
            c = out_c
        self.stages = nn.Sequential(*stages)
        h, w = (_stride2_size(int(d), len(channels)) for d in input_size)
        self.feature_shape = (c, h, w)
        self.fc5 = nn.Linear(c * h * w, embedding_dim)
        _caffe_xavier_(self.fc5.weight)
        nn.init.zeros_(self.fc5.bias)
        self.out_features = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.fc5(self.stages(x).flatten(1))


@register_model("sphereface20")
def sphereface20(num_classes: int, normalize: str = "both", s: float = 30.0, input_size: Sequence[int] = (112, 96),
                 embedding_dim: int = 512, in_channels: int = 3) -> EmbeddingClassifier:
    """SphereFace-20 ("sphere20a") backbone, 512-d embedding, normalized head (s=30) by default."""
    input_size = tuple(int(d) for d in input_size)
    backbone = Sphere20a(in_channels, input_size, embedding_dim)
    return EmbeddingClassifier(backbone, embedding_dim, num_classes, normalize=normalize, s=s,
                               input_shape=(in_channels, *input_size))
