"""Softmax cross entropy on ``scale * cos``: the plain baseline (AM-LFS's identity theta)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lfs.heads import HeadLoss
from lfs.loss import as_scale, reduce_loss, validated

from .registry import register

__all__ = ["cross_entropy", "CrossEntropyLoss"]


@validated("cross_entropy")
def cross_entropy(cos: Tensor, target: Tensor, scale=1.0, reduction: str = "mean") -> Tensor:
    """Softmax cross entropy ``-log softmax(scale * cos)_y``: the standard softmax loss with
    logits ``f_j = ||W_j|| ||x|| cos(theta_j)`` (as L-Softmax, Liu et al. ICML 2016, rewrites it).

    Args:
        cos: N x C cosines between features and class weights.
        target: N int64 class indices.
        scale: a number s, an N x 1 tensor ``||x_i||`` or an N x C tensor ``||W_j|| ||x_i||``.
        reduction: "mean", "sum" or "none".
    """
    logits = as_scale(scale, cos) * cos
    return reduce_loss(F.cross_entropy(logits, target, reduction="none"), reduction)


@register("cross_entropy", fn=cross_entropy, transform=lambda: (None, None),
          reference="softmax cross entropy (the plain classification loss)")
class CrossEntropyLoss(HeadLoss):
    """Cross entropy with its own class weights; by default an unnormalized linear head
    (``normalize="none"``, logits ``W x``)."""

    default_normalize = "none"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return cross_entropy(cos, target, scale, reduction=self.reduction)
