"""Mini-tier models (CPU scale): a 1-D CNN for mnist1d and an MLP for flat inputs.

Both are plain ``nn.Module`` compositions with no Python-side state and no data-dependent control
flow, so B copies can be trained at once with ``torch.func.stack_module_state`` /
``functional_call`` + ``vmap``, BatchNorm included (stacked running statistics are updated per copy;
see ``tests/test_models.py``). They use PyTorch's default initialization.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import EmbeddingClassifier
from .registry import register_model


def _conv_out(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


CONV_IMPLS = ("native", "matmul")


def matmul_conv1d(h: Tensor, conv: nn.Conv1d) -> Tensor:
    """``conv`` applied to a channels-last input ``h`` (n, L, c) -> (n, L', o), as one matrix product
    of the unfolded patches: ``patches (n L', c k) @ W (o, c k)^T (+ bias)``. The same function
    as ``conv(h.transpose(1, 2)).transpose(1, 2)`` (same parameters; float rounding differs).

    Why: under ``vmap`` over B model copies (the vectorized executor), ``nn.Conv1d`` becomes one
    grouped convolution with B groups, which oneDNN runs slowly at these sizes, and its backward
    more slowly still; this product becomes one batched matmul (``bmm``) over the copies. The
    patches are flattened to 2-D per copy on purpose: a 3-D (n, L', c k) operand under ``vmap``
    turns into n x B tiny matrix products.
    """
    (k,), (stride,), (pad,), (dil,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if dil != 1 or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError("matmul_conv1d supports dilation 1, groups 1 and zero padding only")
    if pad:
        h = F.pad(h, (0, 0, pad, pad))
    n, length = h.shape[0], (h.shape[1] - k) // stride + 1
    # The patches (n, L', c, k), made contiguous in one copy as k strided slices: the same tensor
    # as ``h.unfold(1, k, stride)``, but unfold's backward (a generic scatter) took a quarter of
    # an mnist1d search's time; a slice's backward is a strided copy (gradients bit for bit the
    # same: two windows overlap by at most one element at stride 2, k = 3, and a sum of two
    # terms does not depend on their order; tests/test_models.py).
    patches = torch.stack([h[:, j:j + stride * (length - 1) + 1:stride] for j in range(k)], dim=-1)
    w = conv.weight.reshape(conv.weight.shape[0], -1)  # (o, c k), the patches' (c, k) order
    out = patches.view(n * length, -1) @ w.t()
    if conv.bias is not None:
        out = out + conv.bias
    return out.view(n, length, -1)


class CNN1d(nn.Module):
    """mnist1d's reference ``ConvBase`` trunk with an embedding layer: (n, 1, L) or (n, L) -> (n, d).

    Conv1d(1, c, 5, stride 2, padding 1) - ReLU - Conv1d(c, c, 3, 2, 1) - ReLU - Conv1d(c, c, 3, 2, 1)
    - ReLU - flatten - Linear(c * L', embedding_dim). For L = 40 and c = 25: L' = 5, 125 features,
    as in the reference (whose final Linear maps them to the 10 logits; here it gives the embedding
    and the head classifies). ``bn=True`` inserts BatchNorm1d after each convolution (and drops the
    then redundant convolution biases).

    ``conv`` picks how the convolutions are computed, with the same parameters (and state_dict):
    ``"native"`` by ``nn.Conv1d``; ``"matmul"`` channels-last as one matrix product of unfolded
    patches (:func:`matmul_conv1d`), which is what makes B vmapped copies fast (a vmapped
    ``Conv1d`` is a slow grouped convolution); see ``benchmarks/perf`` for both executors.
    """

    def __init__(self, input_length: int = 40, channels: int = 25, embedding_dim: int = 64, bn: bool = False,
                 in_channels: int = 1, conv: str = "native"):
        super().__init__()
        if conv not in CONV_IMPLS:
            raise ValueError(f"conv must be one of {CONV_IMPLS}, got {conv!r}")
        self.conv = conv
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
        if self.conv == "native":
            return self.embedding(self.features(x).flatten(1))
        h = x.transpose(1, 2)  # (n, L, c): channels last
        for m in self.features:
            if isinstance(m, nn.Conv1d):
                h = matmul_conv1d(h, m)
            elif isinstance(m, nn.BatchNorm1d):
                h = m(h.transpose(1, 2)).transpose(1, 2)
            else:
                h = m(h)
        return self.embedding(h.transpose(1, 2).flatten(1))  # flattened channel-major, as native


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
          channels: int = 25, embedding_dim: int = 64, bn: bool = False, conv: str = "native") -> EmbeddingClassifier:
    """The mnist1d ConvBase-like 1-D CNN, 64-d embedding, bias-free linear head by default.
    ``conv``: "native" (nn.Conv1d) or "matmul" (the same convolutions as matrix products, fast
    under vmap); see :class:`CNN1d`."""
    backbone = CNN1d(input_length, channels, embedding_dim, bn, conv=conv)
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
