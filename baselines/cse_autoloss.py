"""CSE-Autoloss-A's classification loss, a published found loss (Liu, Zhang, Zhao, Zhao, Li, Li
and Wang, "Loss Function Discovery for Object Detection via Convergence-Simulation Driven Search",
ICLR 2021, arXiv:2102.04700; searched for Faster R-CNN R50 on COCO)::

    CSE-Autoloss-A_cls(x, y, w) = -dot((1 + sin(w)) y, log(softmax(x))) = -(1 + sin(w)) log p_y

with ``w`` the IoU of the sample's predicted box with its ground truth. A classification task has
no box, so ``w`` is our choice (REPRODUCE.md, "Evolved losses"), a keyword of the loss:

- ``w="p_y"`` (default): the target's softmax probability, like the IoU a measure in [0, 1] of how
  well the sample is already predicted, used as a weight and not differentiated (``detach``);
- ``w="one"``: w = 1, which makes the loss a constant (1 + sin 1 = 1.84) times cross entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lfs.heads import HeadLoss
from lfs.loss import as_scale, gather_target, reduce_loss, validated

from .registry import register

__all__ = ["cse_autoloss_a", "CSEAutolossALoss", "W_CHOICES"]

W_CHOICES = ("p_y", "one")


@validated("cse_autoloss_a")
def cse_autoloss_a(cos: Tensor, target: Tensor, scale=1.0, w: str = "p_y", reduction: str = "mean") -> Tensor:
    """``-(1 + sin(w)) log p_y`` on ``scale * cos`` (the module docstring; ``w`` in
    :data:`W_CHOICES`); ``log p_y`` from ``log_softmax``.

    Args:
        cos: N x C cosines (or logits with ``scale=1``).
        target: N int64 class indices.
        scale: a number s, an N x 1 tensor or an N x C tensor.
        w: "p_y" (the detached target probability) or "one".
        reduction: "mean", "sum" or "none".
    """
    if w not in W_CHOICES:
        raise ValueError(f"cse_autoloss_a: w must be one of {', '.join(W_CHOICES)}, got {w!r}")
    log_p = gather_target(F.log_softmax(as_scale(scale, cos) * cos, dim=-1), target)
    weight = 1.0 + torch.sin(log_p.detach().exp() if w == "p_y" else torch.ones_like(log_p))
    return reduce_loss(-weight * log_p, reduction)


def _cse_tau(w: str = "p_y"):
    """tau(p) = p^(1 + sin(w)), so that -log tau(p) = -(1 + sin(w)) log p (w = p or 1)."""
    if w not in W_CHOICES:
        raise ValueError(f"cse_autoloss_a: w must be one of {', '.join(W_CHOICES)}, got {w!r}")
    if w == "one":
        return None, (lambda p: p ** (1.0 + torch.sin(torch.ones_like(p))))
    return None, (lambda p: p.clamp_min(torch.finfo(p.dtype).tiny) ** (1.0 + torch.sin(p)))


@register("cse_autoloss_a", fn=cse_autoloss_a, transform=_cse_tau,
          reference="Liu et al. Loss Function Discovery for Object Detection via Convergence-Simulation Driven "
                    "Search. ICLR 2021, arXiv:2102.04700 (CSE-Autoloss-A, classification branch)")
class CSEAutolossALoss(HeadLoss):
    """CSE-Autoloss-A's classification loss with its own class weights (default ``normalize="none"``)."""

    default_normalize = "none"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 w: str = "p_y", reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        if w not in W_CHOICES:
            raise ValueError(f"cse_autoloss_a: w must be one of {', '.join(W_CHOICES)}, got {w!r}")
        self.w = w

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return cse_autoloss_a(cos, target, scale, self.w, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"w={self.w}"
