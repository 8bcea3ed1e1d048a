"""ResNet-20 for CIFAR (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2).

The model of the AM-LFS paper's CIFAR-10 experiments (Table 2). Architecture as in §4.2 of He et
al.: a 3x3 convolution with 16 filters, then three stages of ``n`` BasicBlocks (two 3x3
convolutions each) with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps (the first block of
stages 2 and 3 subsamples with stride 2), BatchNorm after every convolution, ReLU, global average
pooling; depth ``6n + 2`` (n = 3 -> 20 layers). Shortcuts are identities; where the shape changes
they are option A of the paper: subsample by taking every other pixel and pad the new channels
with zeros, which adds no parameters. Weights use He (Kaiming normal) initialization.

Here the final 10-way fully connected layer of He et al. is the benchmark's head: the 64-d pooled
feature is the embedding and the head defaults to ``normalize="none"``, a plain linear layer
without bias, as Eq. 4 of AM-LFS reads for CIFAR. (He et al.'s FC has a bias; the AM-LFS logit
``||W_y|| ||x|| cos(theta_y)`` has none: 640 parameters instead of 650 for 10 classes.) The head
weight is Kaiming-normal initialized like the rest, as common CIFAR ResNet code does for its
linear layer. 0.27M parameters for 10 classes (269,722 with He et al.'s biased FC).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import EmbeddingClassifier
from .registry import register_model


class ShortcutA(nn.Module):
    """Option-A shortcut: ``x[:, :, ::stride, ::stride]`` zero-padded to ``out_channels``. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("option-A shortcut only widens")
        self.stride = int(stride)
        extra = out_channels - in_channels
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[..., :: self.stride, :: self.stride]
        # pad the channel dimension (dim -3): F.pad's pairs run from the last dimension backwards
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; option A where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet backbone of depth ``6n+2``: input (n, 3, H, W) -> (n, 4*width) embedding."""

    def __init__(self, depth: int = 20, in_channels: int = 3, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, c = [], width
        for out_c, stride in [(width, 1), (2 * width, 2), (4 * width, 2)]:
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, out_c, stride if j == 0 else 1))
                c = out_c
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.out_features = c
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean(dim=(-2, -1))  # global average pooling


def _resnet_cifar(depth: int, num_classes: int, normalize: str, s: float, in_channels: int, width: int,
                  image_size: int) -> EmbeddingClassifier:
    backbone = ResNetCifar(depth, in_channels=in_channels, width=width)
    model = EmbeddingClassifier(backbone, backbone.out_features, num_classes, normalize=normalize, s=s,
                                input_shape=(in_channels, image_size, image_size))
    nn.init.kaiming_normal_(model.head.weight)
    return model


@register_model("resnet20")
def resnet20(num_classes: int = 10, normalize: str = "none", s: float = 30.0, in_channels: int = 3,
             width: int = 16, image_size: int = 32) -> EmbeddingClassifier:
    """ResNet-20 (CIFAR, option-A shortcuts), 64-d embedding, bias-free linear head by default."""
    return _resnet_cifar(20, num_classes, normalize, s, in_channels, width, image_size)

