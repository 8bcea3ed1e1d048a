"""PolyLoss, Poly-1 (Leng, Tan, Liu, Cubuk, Shi, Cheng, Anguelov and Tan, "PolyLoss: A Polynomial
Expansion Perspective of Classification Loss Functions", ICLR 2022, arXiv:2204.12511).

Cross entropy is ``sum_j (1 - p_t)^j / j``; Poly-1 perturbs the first polynomial coefficient by
epsilon (their Eq. 3)::

    L_Poly-1 = -log p_t + epsilon (1 - p_t)

epsilon = 0 is cross entropy. One real parameter: a grid over epsilon, each value trained and the
best on the validation split kept, is the simplest possible "loss search", a control for the
searched families (``benchmarks/methods/poly1_grid.yaml``: the ``poly1`` family of :mod:`lfs` with
the ``grid`` searcher). The loss is defined once, :func:`lfs.families.poly.poly1_loss`.
"""
from __future__ import annotations

from lfs.loss import validated

import torch
from torch import Tensor

from lfs.families.poly import poly1_loss
from lfs.heads import HeadLoss

from .registry import register

__all__ = ["poly1", "Poly1Loss"]


@validated("poly1")
def poly1(cos: Tensor, target: Tensor, scale=1.0, epsilon: float = 1.0, reduction: str = "mean") -> Tensor:
    """Poly-1 (Eq. 3 of Leng et al., ICLR 2022): ``-log p_t + epsilon (1 - p_t)`` with ``p_t`` the
    softmax probability of the target under ``scale * cos``; ``1 - p_t = -expm1(log p_t)``.

    Args:
        cos: N x C cosines (or logits with ``scale=1``).
        target: N int64 class indices.
        scale: a number s, an N x 1 tensor or an N x C tensor.
        epsilon: the first coefficient's perturbation (the paper's default for ImageNet is 2;
            epsilon = 0 is cross entropy; epsilon >= -1 keeps the loss decreasing in p_t).
        reduction: "mean", "sum" or "none".
    """
    return poly1_loss(cos, target, epsilon, scale, reduction)


def _poly1_tau(epsilon: float = 1.0):
    """tau(p) = p e^{-epsilon (1 - p)}, so that -log tau(p) = -log p + epsilon (1 - p)."""
    return None, (lambda p: p * torch.exp(-epsilon * (1.0 - p)))


@register("poly1", fn=poly1, transform=_poly1_tau,
          reference="Leng et al. PolyLoss: A Polynomial Expansion Perspective of Classification Loss "
                    "Functions. ICLR 2022, arXiv:2204.12511")
class Poly1Loss(HeadLoss):
    """Poly-1 with its own class weights (default ``normalize="none"``: a plain linear head)."""

    default_normalize = "none"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 epsilon: float = 1.0, reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.epsilon = float(epsilon)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return poly1(cos, target, scale, self.epsilon, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
