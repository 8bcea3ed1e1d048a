"""Mini-tier models (CPU scale): a 1-D CNN for mnist1d and an MLP for flat inputs.

Both are plain ``nn.Module`` compositions with no Python-side state and no data-dependent control
flow, so B copies can be trained at once with ``torch.func.stack_module_state`` /
``functional_call`` + ``vmap``, BatchNorm included (stacked running statistics are updated per copy;
see ``tests/test_models.py``). They use PyTorch's default initialization.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

from .base import EmbeddingClassifier
from .registry import register_model


def _conv_out(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


class CNN1d(nn.Module):
    """mnist1d's reference ``ConvBase`` trunk with an embedding layer: (n, 1, L) or (n, L) -> (n, d).

    Conv1d(1, c, 5, stride 2, padding 1) - ReLU - Conv1d(c, c, 3, 2, 1) - ReLU - Conv1d(c, c, 3, 2, 1)
    - ReLU - flatten - Linear(c * L', embedding_dim). For L = 40 and c = 25: L' = 5, 125 features,
    as in the reference (whose final Linear maps them to the 10 logits; here it gives the embedding
    and the head classifies). ``bn=True`` inserts BatchNorm1d after each convolution (and drops the
    then redundant convolution biases).
    """

    def __init__(self, input_length: int = 40, channels: int = 25, embedding_dim: int = 64, bn: bool = False,
                 in_channels: int = 1):
        super().__init__()
        layers, c, n = [], in_channels, int(input_length)
        for k in (5, 3, 3):
            layers.append(nn.Conv1d(c, channels, k, stride=2, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm1d(channels))
            layers.append(nn.ReLU())
            c, n = channels, _conv_out(n, k, 2, 1)
        if n < 1:
            raise ValueError(f"input_length {input_length} is too short for three stride-2 convolutions")
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.flat_features = c * n
        self.embedding = nn.Linear(self.flat_features, embedding_dim)
        self.out_features = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        return self.embedding(self.features(x).flatten(1))


class MLP(nn.Module):
    """Flat input (anything, flattened from dim 1) -> [Linear (-BN) - ReLU] x len(hidden) -> Linear -> embedding."""

    def __init__(self, in_features: int = 64, hidden: Sequence[int] = (128,), embedding_dim: int = 64,
                 bn: bool = False):
        super().__init__()
        layers, c = [], int(in_features)
        for h in hidden:
            h = int(h)
            layers.append(nn.Linear(c, h, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            c = h
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Linear(c, embedding_dim)
        self.out_features = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding(self.features(x.flatten(1)))


@register_model("cnn1d")
def cnn1d(num_classes: int = 10, normalize: str = "none", s: float = 30.0, input_length: int = 40,
          channels: int = 25, embedding_dim: int = 64, bn: bool = False) -> EmbeddingClassifier:
    """The mnist1d ConvBase-like 1-D CNN, 64-d embedding, bias-free linear head by default."""
    backbone = CNN1d(input_length, channels, embedding_dim, bn)
    return EmbeddingClassifier(backbone, embedding_dim, num_classes, normalize=normalize, s=s,
                               input_shape=(1, int(input_length)))


@register_model("mlp")
def mlp(num_classes: int, normalize: str = "none", s: float = 30.0, in_features: int = 64,
        hidden: Sequence[int] = (128,), embedding_dim: int = 64, bn: bool = False) -> EmbeddingClassifier:
    """An MLP for flat inputs (sklearn digits: 64 features; the synthetic identity set: its d).

    Bias-free linear head by default; the face / re-ID analogues pass ``normalize="both"``.
    """
    backbone = MLP(in_features, tuple(int(h) for h in hidden), embedding_dim, bn)
    return EmbeddingClassifier(backbone, embedding_dim, num_classes, normalize=normalize, s=s,
                               input_shape=(int(in_features),))
