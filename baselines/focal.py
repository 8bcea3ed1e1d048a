"""Focal loss (Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object Detection",
ICCV 2017, arXiv:1708.02002), in its softmax (multi-class) form on ``scale * cos``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lfs.heads import HeadLoss
from lfs.loss import as_scale, gather_target, reduce_loss, validated

from .registry import register

__all__ = ["focal", "FocalLoss"]


@validated("focal")
def focal(cos: Tensor, target: Tensor, scale=1.0, gamma: float = 2.0, alpha=None,
          reduction: str = "mean") -> Tensor:
    """Focal loss ``FL = -alpha_y (1 - p_y)^gamma log p_y`` (Eq. 4, and Eq. 5 with alpha, of
    Lin et al., ICCV 2017), ``p_y`` the softmax probability of the target under ``scale * cos``.

    ``log p_y`` comes from ``log_softmax`` (stable at any logit size, no ``log(0)``) and
    ``1 - p_y`` from ``-expm1(log p_y)`` (no rounding of ``exp`` near 1); ``1 - p_y`` is floored
    at the dtype's smallest normal number so that the gradient stays finite for ``gamma < 1``
    at ``p_y = 1``.

    Args:
        cos: N x C cosines.
        target: N int64 class indices.
        scale: a number s, an N x 1 tensor or an N x C tensor.
        gamma: focusing parameter >= 0 (gamma = 0 is cross entropy).
        alpha: None (no weight), a number (a constant factor), or a length-C sequence/tensor of
            per-class weights (``alpha_y = alpha[target]``).
        reduction: "mean", "sum" or "none" ("mean" is the plain average over examples).
    """
    logits = as_scale(scale, cos) * cos
    log_p = gather_target(F.log_softmax(logits, dim=-1), target)
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
    loss = -one_minus_p.pow(gamma) * log_p
    if alpha is not None:
        if isinstance(alpha, (int, float)):
            loss = loss * float(alpha)
        else:
            alpha = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
            loss = loss * alpha[target]
    return reduce_loss(loss, reduction)


def _focal_tau(gamma: float = 2.0, alpha=None):
    """tau(p) = p^((1-p)^gamma), so that -log tau(p) = -(1-p)^gamma log p (alpha = None)."""
    if alpha is not None:
        raise ValueError("focal loss with alpha has no (t, tau) form")
    return None, (lambda p: p.clamp_min(1e-300) ** ((1.0 - p) ** gamma))


@register("focal", fn=focal, transform=_focal_tau,
          reference="Lin, Goyal, Girshick, He, Dollar. Focal Loss for Dense Object Detection. "
                    "ICCV 2017, arXiv:1708.02002")
class FocalLoss(HeadLoss):
    """Focal loss with its own class weights (default ``normalize="none"``: logits ``W x``)."""

    default_normalize = "none"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 gamma: float = 2.0, alpha=None, reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.gamma = float(gamma)
        if alpha is None or isinstance(alpha, (int, float)):
            self.alpha = None if alpha is None else float(alpha)
        else:
            self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.get_default_dtype()))

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return focal(cos, target, scale, self.gamma, self.alpha, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}"
