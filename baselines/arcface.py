"""ArcFace / additive angular margin loss (Deng, Guo, Xue and Zafeiriou, "ArcFace: Additive
Angular Margin Loss for Deep Face Recognition", CVPR 2019, arXiv:1801.07698).

The target logit ``s cos(theta_y)`` becomes ``s cos(theta_y + m)`` (Eq. 3), computed in the
classic insightface form without ``arccos``::

    sin   = sqrt(1 - cos^2)
    phi   = cos cos(m) - sin sin(m)                    # = cos(theta + m)
    phi   = where(cos > th, phi, cos - mm)             # th = cos(pi - m), mm = sin(pi - m) m
    (easy_margin: phi = where(cos > 0, phi, cos))

The fallback ``cos - m sin(m)`` keeps the target logit decreasing in theta when
``theta + m > pi`` (where cos(theta + m) would increase again).

``sin`` is computed safely: ``sqrt`` only ever sees positive arguments, and where
``1 - cos^2 <= 0`` (cos = +-1 or rounding beyond) ``sin = 0`` with zero gradient, so the
gradient is finite everywhere (``sqrt(1 - cos^2)`` has an infinite derivative at cos = +-1, and
whether ``sqrt(clamp(1 - cos^2, 0, 1))`` hides it depends on how ``clamp``'s backward treats
its bound).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from lfs.heads import HeadLoss

from lfs.loss import margin_cross_entropy, validated
from .registry import register

__all__ = ["arcface", "arcface_target_cosine", "ArcFaceLoss"]


def _safe_sin(cos: Tensor) -> Tensor:
    """``sqrt(1 - cos^2)``, 0 with zero gradient where ``1 - cos^2 <= 0``."""
    x = 1.0 - cos * cos
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def arcface_target_cosine(cos_y: Tensor, m: float = 0.5, easy_margin: bool = False) -> Tensor:
    """``cos(theta_y + m)`` with the insightface fallback (see the module docstring)."""
    m = float(m)
    phi = cos_y * math.cos(m) - _safe_sin(cos_y) * math.sin(m)
    if easy_margin:
        return torch.where(cos_y > 0, phi, cos_y)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    return torch.where(cos_y > th, phi, cos_y - mm)


@validated("arcface")
def arcface(cos: Tensor, target: Tensor, scale=64.0, m: float = 0.5, easy_margin: bool = False,
            reduction: str = "mean") -> Tensor:
    """ArcFace (Eq. 3 of Deng et al., CVPR 2019): the target logit ``s cos(theta_y)`` becomes
    ``s cos(theta_y + m)``; s = 64, m = 0.5 by default.

    Args:
        cos: N x C cosines.
        target: N int64 class indices.
        scale: s (normalized head), or an N x 1 / N x C tensor.
        m: additive angular margin in radians (m = 0 is cross entropy on ``scale * cos``).
        easy_margin: apply the margin only where ``cos(theta_y) > 0`` (insightface's option);
            otherwise use the ``cos - m sin(m)`` fallback for ``theta_y > pi - m``.
        reduction: "mean", "sum" or "none".
    """
    return margin_cross_entropy(cos, target, scale, lambda cos_y: arcface_target_cosine(cos_y, m, easy_margin),
                                reduction)


def _arcface_t(m: float = 0.5, easy_margin: bool = False):
    """t = :func:`arcface_target_cosine`, the fallback included (what training uses)."""
    return (lambda x: arcface_target_cosine(x, m, easy_margin)), None


@register("arcface", fn=arcface, transform=_arcface_t,
          reference="Deng, Guo, Xue, Zafeiriou. ArcFace: Additive Angular Margin Loss for Deep Face "
                    "Recognition. CVPR 2019, arXiv:1801.07698")
class ArcFaceLoss(HeadLoss):
    """ArcFace with its own class weights (default ``normalize="both"``, ``scale = s``)."""

    default_normalize = "both"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 64.0,
                 m: float = 0.5, easy_margin: bool = False, reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.m, self.easy_margin = float(m), bool(easy_margin)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return arcface(cos, target, scale, self.m, self.easy_margin, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"m={self.m}, easy_margin={self.easy_margin}"
